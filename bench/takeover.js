/**
 * Takeover benchmark (issue 12): three real `vmplace daemon` replicas (bin/vmplace.js) share one
 * fleet through a real 3-member etcd on loopback (src/lab/etcd.ts) and follow one bare git
 * remote. A clone pushes a move of the lab guest's disk (storage a <-> b, strategy quick); once
 * the owning replica logs the step CopyingBase (its base copy slowed by `limits.bandwidth` so
 * that it is in flight), the bench kill -9's that replica and measures, from the kill:
 *   - takeover: the survivor's 'taking over migration' log line (pino `time`),
 *   - next step: the survivor's first 'migration step' of that VM after the takeover (the
 *     resumed migration's next persisted step; its base copy runs again first),
 * then waits for the migration to complete, checks the VM runs, restarts the killed replica
 * under the same name and goes on with the next run. Ratio = takeover / lease TTL; the goal is
 * takeover <= TTL + 1 s.
 *
 * Topology: one libvirt host (the local lab). Takeover is decided by etcd's lease and the
 * replicas' watches, not by where the disks are; the move itself is the local lab's.
 */
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { ROOT, MiB, run, sleep, log, loadavg } = require('./lib/util');
const lab = require('./lib/lab');

const VMPLACE = path.join(ROOT, 'bin', 'vmplace.js');

function startReplica({ name, repo, root, etcd, prefix, ttl }) {
  const stateDir = fs.mkdtempSync(path.join(root, `${name}-state-`));
  const child = spawn(
    process.execPath,
    [
      VMPLACE,
      'daemon',
      '--repo',
      repo,
      '--workdir',
      path.join(stateDir, 'repo'),
      '--state-dir',
      stateDir,
      '--interval',
      '1s',
      '--listen',
      '127.0.0.1:0',
      '--author-name',
      'vmplace-bench',
      '--author-email',
      'bench@vmplace.test',
      '--etcd-endpoints',
      etcd.join(','),
      '--etcd-prefix',
      prefix,
      '--replica-id',
      name,
      '--lease-ttl',
      ttl,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const logs = [];
  const waiters = [];
  let buf = '';
  const onData = (s) => {
    buf += s;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      let l;
      try {
        l = JSON.parse(buf.slice(0, i));
      } catch {
        l = { msg: buf.slice(0, i), time: Date.now() };
      }
      buf = buf.slice(i + 1);
      logs.push(l);
      for (const w of [...waiters]) {
        if (!w.pred(l)) continue;
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(l);
      }
    }
  };
  child.stderr.setEncoding('utf8').on('data', onData);
  child.stdout.setEncoding('utf8').on('data', onData);
  const exited = new Promise((r) => child.on('exit', r));
  const waitFor = (pred, timeoutMs = 120_000) => {
    const found = logs.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const w = { pred, resolve: (l) => (clearTimeout(t), resolve(l)) };
      const t = setTimeout(() => {
        waiters.splice(waiters.indexOf(w), 1);
        reject(
          new Error(
            `${name}: timed out; last lines:\n${logs
              .slice(-10)
              .map((l) => JSON.stringify(l))
              .join('\n')}`,
          ),
        );
      }, timeoutMs);
      waiters.push(w);
    });
  };
  return { name, child, logs, exited, waitFor };
}

async function takeoverBench({ runs, smoke = false, ttl = '3s' }) {
  const ttlMs = Number(/^(\d+)s$/.exec(ttl)[1]) * 1000;
  await lab.ensureLab();
  const guest = await lab.buildGuest();
  const core = lab.dist('lab/index');
  const { LibvirtDriver } = lab.dist('drivers/libvirt/driver');
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'vmplace-bench-takeover-'));
  const dirs = { a: path.join(root, 'a'), b: path.join(root, 'b') };
  for (const d of Object.values(dirs)) fs.mkdirSync(d);
  const drv = new LibvirtDriver(
    'lab',
    { driver: 'libvirt', uri: 'qemu:///system' },
    { allowedRoots: [root] },
  );
  const vm = `vmpb-t-${process.pid}`;
  // the base copy runs at `bandwidth` for about `copySeconds`: long enough to be in flight at the kill
  const dataMiB = smoke ? 6 : 12;
  const bandwidth = '2MiB/s';
  const results = [];
  const loadBefore = loadavg();
  const replicas = new Map();
  let cluster;
  const prefix = `/vmplace-bench-${process.pid}/`;
  try {
    cluster = await core.startEtcdCluster({ dir: path.join(root, 'etcd'), name: 'bench' });
    const file = path.join(dirs.a, `${vm}-vda.qcow2`);
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', file, String(64 * MiB)]);
    // data in the base, so that its copy takes a while (the guest writes only a few records)
    await run('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x5a 32M ${dataMiB}M`, file]);
    const serialLog = path.join(root, `${vm}.serial.log`);
    await drv.define(
      lab.guestXml({ name: vm, disks: [{ target: 'vda', path: file }], serialLog, guest, memoryMiB: 128 }),
    );
    await drv.start(vm);
    await lab.waitForAcks(serialLog, 'vda', 3);

    const bare = path.join(root, 'remote.git');
    await run('git', ['init', '-q', '--bare', '-b', 'main', bare]);
    const human = path.join(root, 'human');
    await run('git', ['clone', '-q', bare, human]);
    const git = (...a) =>
      run('git', ['-C', human, '-c', 'user.name=Bench', '-c', 'user.email=bench@example.test', ...a]);
    const push = async (storage, msg) => {
      await git('pull', '-q', '--rebase').catch(() => undefined); // empty remote at first
      fs.mkdirSync(path.join(human, 'manifests'), { recursive: true });
      fs.writeFileSync(path.join(human, 'vmplace.yaml'), `limits:\n  bandwidth: ${bandwidth}\n`);
      fs.writeFileSync(
        path.join(human, 'manifests', 'fleet.yaml'),
        `apiVersion: vmplace.dev/v1alpha1\nkind: Host\nmetadata: {name: lab}\nspec:\n  driver: libvirt\n  uri: qemu:///system\n` +
          `  storage:\n    - {name: a, path: ${dirs.a}}\n    - {name: b, path: ${dirs.b}}\n---\n` +
          `apiVersion: vmplace.dev/v1alpha1\nkind: VirtualMachine\nmetadata: {name: ${vm}}\nspec: {host: lab, storage: ${storage}, strategy: quick}\n`,
      );
      await git('add', '-A');
      await git('commit', '-q', '-m', msg);
      await git('push', '-q', 'origin', 'HEAD:main');
    };
    await push('a', 'initial placement');
    const start = (name) => {
      const r = startReplica({ name, repo: bare, root, etcd: cluster.endpoints, prefix, ttl });
      replicas.set(name, r);
      return r;
    };
    for (const name of ['replica-1', 'replica-2', 'replica-3']) start(name);
    await Promise.all(
      [...replicas.values()].map((r) => r.waitFor((l) => l.msg === 'joined the fleet', 60_000)),
    );
    let on = 'a';
    for (let i = 0; i < runs; i++) {
      const to = on === 'a' ? 'b' : 'a';
      const since = new Map([...replicas].map(([n, r]) => [n, r.logs.length]));
      const fresh = (r, l) => r.logs.indexOf(l) >= (since.get(r.name) ?? 0);
      await push(to, `move ${vm} to ${to}`);
      const load = loadavg();
      // the owner: the replica whose run reaches CopyingBase
      const owner = await Promise.any(
        [...replicas.values()].map((r) =>
          r
            .waitFor(
              (l) => l.msg === 'migration step' && l.vm === vm && l.step === 'CopyingBase' && fresh(r, l),
              120_000,
            )
            .then(() => r),
        ),
      );
      await sleep(300); // well inside the copy
      const tKill = Date.now();
      owner.child.kill('SIGKILL');
      await owner.exited;
      const survivors = [...replicas.values()].filter((r) => r !== owner);
      const [taken, by] = await Promise.any(
        survivors.map((r) =>
          r
            .waitFor((l) => l.msg === 'taking over migration' && l.vm === vm && fresh(r, l), 30_000)
            .then((l) => [l, r]),
        ),
      );
      const next = await by.waitFor(
        (l) => l.msg === 'migration step' && l.vm === vm && by.logs.indexOf(l) > by.logs.indexOf(taken),
        120_000,
      );
      const done = await by.waitFor(
        (l) => l.msg === 'migration finished' && l.vm === vm && fresh(by, l),
        180_000,
      );
      const state = await drv.domainState(vm);
      const r = {
        run: i + 1,
        to,
        killed: owner.name,
        by: by.name,
        takenInStep: taken.step,
        takeoverMs: taken.time - tKill,
        nextStep: next.step,
        nextStepMs: next.time - tKill,
        finalStep: done.step,
        vmState: state,
        ttlMs,
        load,
      };
      results.push(r);
      log(
        `takeover: run ${i + 1}: killed ${owner.name} in CopyingBase; ${by.name} took over (step ${taken.step}) after ${r.takeoverMs} ms ` +
          `(TTL ${ttlMs} ms, ratio ${(r.takeoverMs / ttlMs).toFixed(2)}), next step ${next.step} after ${r.nextStepMs} ms; ` +
          `finished ${done.step}, VM ${state}; load ${load}`,
      );
      if (done.step !== 'Completed') throw new Error(`run ${i + 1}: the migration ended ${done.step}`);
      on = to;
      // the killed replica comes back under its name (a fresh state dir; the state is in etcd)
      const back = start(owner.name);
      await back.waitFor((l) => l.msg === 'joined the fleet', 60_000);
      await sleep(1000); // ownership settles back (the VM's lock returns to its rendezvous owner)
    }
  } finally {
    await Promise.all(
      [...replicas.values()].map(async (r) => {
        if (r.child.exitCode !== null || r.child.signalCode !== null) return;
        r.child.kill('SIGTERM');
        await Promise.race([r.exited, sleep(15_000)]);
        if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGKILL');
      }),
    );
    await cluster?.stop().catch(() => undefined);
    await drv.destroy(vm).catch(() => undefined);
    await drv.undefine(vm).catch(() => undefined);
    await drv.close();
    fs.rmSync(root, { recursive: true, force: true });
  }
  return {
    section: 'takeover',
    date: new Date().toISOString(),
    opts: { runs, ttl, ttlMs, topology: 'one libvirt host (local lab)', bandwidth, dataMiB, smoke },
    loadBefore,
    loadAfter: loadavg(),
    results,
  };
}

module.exports = { takeoverBench };

if (require.main === module) {
  const smoke = process.argv.includes('--smoke');
  takeoverBench({ runs: smoke ? 1 : 5, smoke })
    .then((r) => console.log(JSON.stringify(r, null, 1)))
    .catch((err) => {
      console.error(err && err.stack ? err.stack : err);
      process.exit(1);
    });
}
