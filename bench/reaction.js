/**
 * Reaction benchmark: from a webhook to the start of the migration. The real `vmplace daemon`
 * follows a local bare repository (polling every hour, so only the webhook can wake it); a
 * human clone pushes a change of the VM's desired storage (a <-> b on the local lab), then
 * `POST /hooks/git`; the time is the daemon's 'migrations started' log line (pino `time`)
 * minus the moment the POST was sent. Each run waits for the move to finish and its status
 * commit to be pushed before the next push.
 */
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { ROOT, MiB, run, sleep, log, loadavg } = require('./lib/util');
const lab = require('./lib/lab');

const VMPLACE = path.join(ROOT, 'bin', 'vmplace.js');

function startDaemon({ repo, workdir, stateDir }) {
  const child = spawn(
    process.execPath,
    [
      VMPLACE,
      'daemon',
      '--repo',
      repo,
      '--workdir',
      workdir,
      '--state-dir',
      stateDir,
      '--interval',
      '1h',
      '--listen',
      '127.0.0.1:0',
      '--author-name',
      'vmplace-bench',
      '--author-email',
      'bench@vmplace.test',
      '--shutdown-timeout',
      '60s',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const logs = [];
  const waiters = [];
  let buf = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (s) => {
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
  });
  child.stdout.resume();
  const exited = new Promise((r) => child.on('exit', r));
  const waitFor = (pred, timeoutMs = 180_000) => {
    const found = logs.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const w = { pred, resolve: (l) => (clearTimeout(t), resolve(l)) };
      const t = setTimeout(() => {
        waiters.splice(waiters.indexOf(w), 1);
        reject(
          new Error(
            `daemon: timed out; last lines:\n${logs
              .slice(-10)
              .map((l) => JSON.stringify(l))
              .join('\n')}`,
          ),
        );
      }, timeoutMs);
      waiters.push(w);
    });
  };
  return { child, logs, exited, waitFor };
}

async function reactionBench({ runs }) {
  await lab.ensureLab();
  const guest = await lab.buildGuest();
  const { LibvirtDriver } = lab.dist('drivers/libvirt/driver');
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'vmplace-bench-reaction-'));
  const dirs = { a: path.join(root, 'a'), b: path.join(root, 'b') };
  for (const d of Object.values(dirs)) fs.mkdirSync(d);
  const drv = new LibvirtDriver(
    'lab',
    { driver: 'libvirt', uri: 'qemu:///system' },
    { allowedRoots: [root] },
  );
  const vm = `vmpb-r-${process.pid}`;
  const results = [];
  const loadBefore = loadavg();
  let daemon;
  try {
    const file = path.join(dirs.a, `${vm}-vda.qcow2`);
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', file, String(64 * MiB)]);
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
      fs.writeFileSync(
        path.join(human, 'manifests', 'fleet.yaml'),
        `apiVersion: vmplace.dev/v1alpha1\nkind: Host\nmetadata: {name: lab}\nspec:\n  driver: libvirt\n  uri: qemu:///system\n` +
          `  storage:\n    - {name: a, path: ${dirs.a}}\n    - {name: b, path: ${dirs.b}}\n---\n` +
          `apiVersion: vmplace.dev/v1alpha1\nkind: VirtualMachine\nmetadata: {name: ${vm}}\nspec: {host: lab, storage: ${storage}}\n`,
      );
      await git('add', '-A');
      await git('commit', '-q', '-m', msg);
      await git('push', '-q', 'origin', 'HEAD:main');
    };
    await push('a', 'initial placement');
    daemon = startDaemon({ repo: bare, workdir: path.join(root, 'wd'), stateDir: path.join(root, 'state') });
    const serving = await daemon.waitFor(
      (l) => l.msg === 'serving health, readiness, metrics and webhooks',
      60_000,
    );
    const url = String(serving.listen);
    await daemon.waitFor((l) => l.msg === 'status committed', 120_000);
    let on = 'a';
    for (let i = 0; i < runs; i++) {
      const to = on === 'a' ? 'b' : 'a';
      await push(to, `move ${vm} to ${to}`);
      const load = loadavg();
      const since = daemon.logs.length;
      const t0 = Date.now();
      const res = await fetch(`${url}/hooks/git`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{}',
      });
      const tAck = Date.now();
      const started = await daemon.waitFor(
        (l) =>
          l.msg === 'migrations started' && daemon.logs.indexOf(l) >= since && (l.vms ?? []).includes(vm),
      );
      const reactionMs = started.time - t0;
      await daemon.waitFor(
        (l) =>
          l.msg === 'status commit pushed after migration finished' &&
          l.vm === vm &&
          daemon.logs.indexOf(l) >= since,
        300_000,
      );
      on = to;
      results.push({ run: i + 1, status: res.status, reactionMs, webhookAnswerMs: tAck - t0, load });
      log(
        `reaction: run ${i + 1}: webhook ${res.status} in ${tAck - t0} ms, migration started after ${reactionMs} ms, load ${load}`,
      );
    }
  } finally {
    if (daemon) {
      // nothing is in flight here (every run waited for its status commit)
      const t = Date.now();
      daemon.child.kill('SIGTERM');
      await Promise.race([daemon.exited, sleep(15_000)]);
      if (daemon.child.exitCode === null) {
        log(`reaction: the daemon did not exit within 15 s of SIGTERM with nothing in flight; killed`);
        daemon.child.kill('SIGKILL');
      } else log(`reaction: the daemon exited ${Date.now() - t} ms after SIGTERM`);
    }
    await drv.destroy(vm).catch(() => undefined);
    await drv.undefine(vm).catch(() => undefined);
    await drv.close();
    fs.rmSync(root, { recursive: true, force: true });
  }
  return {
    section: 'reaction',
    date: new Date().toISOString(),
    opts: { runs },
    loadBefore,
    loadAfter: loadavg(),
    results,
  };
}

module.exports = { reactionBench };
