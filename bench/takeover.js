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
 * Topologies: `cross` (the general case: two hosts without shared storage, the benchmarks'
 * two-host lab) and `single` (one host, storage a <-> b; the favourable one). Takeover itself is
 * decided by etcd's lease and the replicas' watches; the topology decides how long the resumed
 * migration takes.
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

/**
 * The VM and the manifests of one topology. `cross`: hv1 and hv2 of the benchmarks' two-host
 * lab, each with its own local storage (no shared storage: the general case), the VM moved
 * hv1 <-> hv2. `single`: the local lab, one host, the VM moved between storage a and b.
 */
async function prepare(topology, { root, guest, vm, dataMiB }) {
  const { LibvirtDriver } = lab.dist('drivers/libvirt/driver');
  const vmDoc = (host, storage) =>
    `apiVersion: vmplace.dev/v1alpha1\nkind: VirtualMachine\nmetadata: {name: ${vm}}\nspec: {host: ${host}, storage: ${storage}, strategy: quick}\n`;
  const fill = (file) => ['qemu-io', '-f', 'qcow2', '-c', `write -P 0x5a 32M ${dataMiB}M`, file];
  if (topology === 'single') {
    await lab.ensureLab();
    const dirs = { a: path.join(root, 'a'), b: path.join(root, 'b') };
    for (const d of Object.values(dirs)) fs.mkdirSync(d);
    const drv = new LibvirtDriver(
      'lab',
      { driver: 'libvirt', uri: 'qemu:///system' },
      { allowedRoots: [root] },
    );
    const file = path.join(dirs.a, `${vm}-vda.qcow2`);
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', file, String(64 * MiB)]);
    // data in the base, so that its copy takes a while (the guest writes only a few records)
    await run(fill(file)[0], fill(file).slice(1));
    const serialLog = path.join(root, `${vm}.serial.log`);
    await drv.define(
      lab.guestXml({ name: vm, disks: [{ target: 'vda', path: file }], serialLog, guest, memoryMiB: 128 }),
    );
    await drv.start(vm);
    await lab.waitForAcks(serialLog, 'vda', 3);
    const host =
      `apiVersion: vmplace.dev/v1alpha1\nkind: Host\nmetadata: {name: lab}\nspec:\n  driver: libvirt\n  uri: qemu:///system\n` +
      `  storage:\n    - {name: a, path: ${dirs.a}}\n    - {name: b, path: ${dirs.b}}\n`;
    return {
      label: 'one libvirt host (local lab), storage a <-> b',
      places: ['a', 'b'],
      manifests: (place) => `${host}---\n${vmDoc('lab', place)}`,
      stateOn: () => drv.domainState(vm),
      cleanup: async () => {
        await drv.destroy(vm).catch(() => undefined);
        await drv.undefine(vm).catch(() => undefined);
        await drv.close();
      },
    };
  }
  const env = await lab.ensureHosts();
  const d = {};
  for (const h of ['hv1', 'hv2'])
    d[h] = new LibvirtDriver(h, env.hosts[h].hostSpec, { allowedRoots: [env.hosts[h].storage, env.csvPath] });
  for (const h of ['hv1', 'hv2'])
    for (const old of (await d[h].listDomains()).filter((n) => n.startsWith('vmpb-t-'))) {
      await d[h].destroy(old).catch(() => undefined);
      await d[h].undefine(old).catch(() => undefined);
    }
  const file = path.posix.join(env.hosts.hv1.storage, `${vm}-vda.qcow2`);
  const serialLog = path.posix.join(env.csvPath, `${vm}.serial.log`);
  await d.hv1.exec.run(['qemu-img', 'create', '-q', '-f', 'qcow2', file, String(64 * MiB)]);
  await d.hv1.exec.run(fill(file));
  await d.hv1.define(
    lab.guestXml({ name: vm, disks: [{ target: 'vda', path: file }], serialLog, guest, memoryMiB: 128 }),
  );
  await d.hv1.start(vm);
  await lab.waitForAcks(path.join(env.csvMgmtPath, path.basename(serialLog)), 'vda', 3);
  const hostDoc = (h) => {
    const x = env.hosts[h];
    return `apiVersion: vmplace.dev/v1alpha1\nkind: Host\nmetadata: {name: ${h}}\nspec:\n  driver: libvirt\n  uri: ${x.uri}\n  ssh: {host: ${x.addr}, user: root, identityFile: ${env.mgmtKey}, knownHostsFile: ${env.mgmtKnownHosts}}\n  transferAddress: ${x.addr}\n  storage: [{name: local, path: ${x.storage}}]\n`;
  };
  let on = 'hv1';
  return {
    label: 'two libvirt hosts, no shared storage (hv1 <-> hv2 over ssh)',
    places: ['hv1', 'hv2'],
    manifests: (place) => {
      on = place;
      return `${hostDoc('hv1')}---\n${hostDoc('hv2')}---\n${vmDoc(place, 'local')}`;
    },
    stateOn: async () => {
      const states = await Promise.all(
        ['hv1', 'hv2'].map((h) => d[h].domainState(vm).catch(() => undefined)),
      );
      return `hv1 ${states[0] ?? 'none'}, hv2 ${states[1] ?? 'none'} (wanted on ${on})`;
    },
    cleanup: async () => {
      for (const h of ['hv1', 'hv2']) {
        await d[h].destroy(vm).catch(() => undefined);
        await d[h].undefine(vm).catch(() => undefined);
        await d[h].close();
      }
    },
  };
}

async function takeoverBench({ runs, smoke = false, ttl = '3s', topology = 'cross' }) {
  const ttlMs = Number(/^(\d+)s$/.exec(ttl)[1]) * 1000;
  const guest = await lab.buildGuest();
  const core = lab.dist('lab/index');
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'vmplace-bench-takeover-'));
  const vm = `vmpb-t-${process.pid}`;
  // the base copy runs at `bandwidth` for a few seconds: in flight at the kill
  const dataMiB = smoke ? 6 : 12;
  const bandwidth = '2MiB/s';
  const results = [];
  const loadBefore = loadavg();
  const replicas = new Map();
  let cluster;
  let world;
  let error;
  const prefix = `/vmplace-bench-${process.pid}/`;
  try {
    world = await prepare(topology, { root, guest, vm, dataMiB });
    cluster = await core.startEtcdCluster({ dir: path.join(root, 'etcd'), name: 'bench' });
    const bare = path.join(root, 'remote.git');
    await run('git', ['init', '-q', '--bare', '-b', 'main', bare]);
    const human = path.join(root, 'human');
    await run('git', ['clone', '-q', bare, human]);
    const git = (...a) =>
      run('git', ['-C', human, '-c', 'user.name=Bench', '-c', 'user.email=bench@example.test', ...a]);
    const push = async (place, msg) => {
      await git('pull', '-q', '--rebase').catch(() => undefined); // empty remote at first
      fs.mkdirSync(path.join(human, 'manifests'), { recursive: true });
      fs.writeFileSync(path.join(human, 'vmplace.yaml'), `limits:\n  bandwidth: ${bandwidth}\n`);
      fs.writeFileSync(path.join(human, 'manifests', 'fleet.yaml'), world.manifests(place));
      await git('add', '-A');
      await git('commit', '-q', '-m', msg);
      // the replicas push status commits meanwhile: rebase onto them and push again
      for (let attempt = 1; ; attempt++) {
        try {
          await git('push', '-q', 'origin', 'HEAD:main');
          return;
        } catch (err) {
          if (attempt >= 10) throw err;
          await git('pull', '-q', '--rebase');
        }
      }
    };
    let on = world.places[0];
    await push(on, 'initial placement');
    const start = (name) => {
      const r = startReplica({ name, repo: bare, root, etcd: cluster.endpoints, prefix, ttl });
      replicas.set(name, r);
      return r;
    };
    for (const name of ['replica-1', 'replica-2', 'replica-3']) start(name);
    await Promise.all(
      [...replicas.values()].map((r) => r.waitFor((l) => l.msg === 'joined the fleet', 60_000)),
    );
    for (let i = 0; i < runs; i++) {
      const to = world.places.find((p) => p !== on);
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
        180_000,
      );
      const done = await by.waitFor(
        (l) => l.msg === 'migration finished' && l.vm === vm && fresh(by, l),
        300_000,
      );
      const state = await world.stateOn();
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
          `finished ${done.step}; VM ${state}; load ${load}`,
      );
      if (done.step !== 'Completed') throw new Error(`run ${i + 1}: the migration ended ${done.step}`);
      on = to;
      // the killed replica comes back under its name (a fresh state dir; the state is in etcd)
      const back = start(owner.name);
      await back.waitFor((l) => l.msg === 'joined the fleet', 60_000);
      await sleep(1000); // ownership settles back (the VM's lock returns to its rendezvous owner)
    }
  } catch (err) {
    // keep what was measured; the caller reports the error and fails the run
    error = String(err && err.stack ? err.stack : err);
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
    await world?.cleanup();
    fs.rmSync(root, { recursive: true, force: true });
  }
  return {
    section: `takeover-${topology}`,
    date: new Date().toISOString(),
    opts: { runs, ttl, ttlMs, topology: world?.label ?? topology, bandwidth, dataMiB, smoke },
    loadBefore,
    loadAfter: loadavg(),
    results,
    error,
  };
}

module.exports = { takeoverBench };

if (require.main === module) {
  const smoke = process.argv.includes('--smoke');
  const i = process.argv.indexOf('--topology');
  const runsAt = process.argv.indexOf('--runs');
  takeoverBench({
    runs: runsAt >= 0 ? Number(process.argv[runsAt + 1]) : smoke ? 1 : 5,
    smoke,
    topology: i >= 0 ? process.argv[i + 1] : 'cross',
  })
    .then((r) => console.log(JSON.stringify(r, null, 1)))
    .catch((err) => {
      console.error(err && err.stack ? err.stack : err);
      process.exit(1);
    });
}
