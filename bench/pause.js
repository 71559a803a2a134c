/**
 * Pause benchmark: how long a VM stops while vmplace moves it, measured three ways per run:
 *  - QEMU's own STOP (source) -> RESUME (target) monitor events, with libvirt's timestamps
 *    (`virsh qemu-monitor-event --loop --timestamp` running on each host during the move);
 *  - libvirt lifecycle events Suspended (source) -> Resumed (target) (`virsh event --all`);
 *  - `migration.pauseMs` in the VM's status file (vmplace's own clock: before `virsh save`
 *    is called until `virsh restore` returned).
 *
 * Modes (`--modes`, default all): `quick:single` and `quick:iterative` (cross-host, the real CLI
 * `vmplace apply` on the two-host lab; iterative sets `spec.maxPause` in the manifest, so
 * whatever the machine does with it is measured without changes here; single sets
 * `policy.maxDeltaRounds: 1` in vmplace.yaml: the seed's one copy of the delta during the pause), `live:same` (one host,
 * blockcopy --pivot) and `live:cross` (strategy live across hosts; reported as "runs quick"
 * while vmplace falls back to quick).
 *
 * The VM: the lab guest (Debian kernel + busybox, TCG), 256 MiB RAM, one disk of each size,
 * half full, and its own writer (~10 records of 4 KiB/s). On top, ~10 MB/s of writes are put
 * into the disk from the host through QEMU's block layer (see WriteInjector), stopped as soon
 * as the persisted step is Saving (QEMU aborts on a write while the save has the disks
 * inactive) and started again on the target once the VM runs there. The VM moves hv1 -> hv2,
 * then back, and so on: one VM per size, filled once.
 */
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const YAML = require('yaml');
const { ROOT, MiB, GiB, run, sleep, log, loadavg } = require('./lib/util');
const lab = require('./lib/lab');

const VMPLACE = path.join(ROOT, 'bin', 'vmplace.js');
const PAUSED_STEPS = new Set(['Saving', 'CopyingDelta', 'Restoring']);
const AFTER_RESTORE = new Set(['Merging', 'Verifying', 'Finalizing', 'CleaningUp', 'Completed']);

function hostDoc(env, h) {
  const x = env.hosts[h];
  return `apiVersion: vmplace.dev/v1alpha1
kind: Host
metadata: {name: ${h}}
spec:
  driver: libvirt
  uri: ${x.uri}
  ssh: {host: ${x.addr}, user: root, identityFile: ${env.mgmtKey}, knownHostsFile: ${env.mgmtKnownHosts}}
  cluster: c1
  transferAddress: ${x.addr}
  storage: [{name: local, path: ${x.storage}}]
`;
}

function vmDoc(vm, host, storage, mode, maxPause) {
  const [strategy, variant] = mode.split(':');
  const extra = strategy === 'quick' && variant === 'iterative' ? `\n  maxPause: ${maxPause}` : '';
  return `apiVersion: vmplace.dev/v1alpha1
kind: VirtualMachine
metadata: {name: ${vm}}
spec:
  host: ${host}
  storage: ${storage}
  strategy: ${strategy}${extra}
`;
}

function crossManifests(env, vm, host, mode, maxPause) {
  return `${hostDoc(env, 'hv1')}---\n${hostDoc(env, 'hv2')}---
apiVersion: vmplace.dev/v1alpha1
kind: Cluster
metadata: {name: c1}
spec:
  storage: [{name: csv, path: ${env.csvPath}}]
---
${vmDoc(vm, host, 'local', mode, maxPause)}`;
}

function localManifests(dirs, vm, storage, mode) {
  return `apiVersion: vmplace.dev/v1alpha1
kind: Host
metadata: {name: lab}
spec:
  driver: libvirt
  uri: qemu:///system
  storage:
    - {name: a, path: ${dirs.a}}
    - {name: b, path: ${dirs.b}}
---
${vmDoc(vm, 'lab', storage, mode)}`;
}

function persistedStep(stateDir) {
  const dir = path.join(stateDir, 'migrations');
  let names = [];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return undefined;
  }
  for (const n of names) {
    if (!n.endsWith('.json')) continue;
    try {
      return JSON.parse(fs.readFileSync(path.join(dir, n), 'utf8')).snapshot.value;
    } catch {
      // being replaced
    }
  }
  return undefined;
}

function finishedContext(stateDir) {
  for (const sub of ['done', 'migrations']) {
    const dir = path.join(stateDir, sub);
    let names = [];
    try {
      names = fs.readdirSync(dir).filter((n) => n.endsWith('.json'));
    } catch {
      continue;
    }
    for (const n of names) {
      try {
        return JSON.parse(fs.readFileSync(path.join(dir, n), 'utf8')).snapshot.context;
      } catch {
        // ignore
      }
    }
  }
  return undefined;
}

/**
 * One `vmplace apply` of a prepared repository, with event monitors on the source and target
 * and the write injector steered by the persisted step. Returns the measurements.
 */
async function measuredApply({ repo, stateDir, vm, src, dst, injector, inject }) {
  const monSrc = new lab.EventMonitor(src.where, src.name);
  const monDst = dst.name === src.name ? monSrc : new lab.EventMonitor(dst.where, dst.name);
  await Promise.all([monSrc.ready(), monDst.ready()]);
  const t0 = Date.now();
  const written0 = injector.written;
  if (inject) injector.start(src.where);
  await sleep(inject ? 1000 : 0); // the disk is being written to when the migration starts
  const child = spawn(
    process.execPath,
    [VMPLACE, 'apply', repo, '--yes', '--state-dir', stateDir, '--log-format', 'json'],
    { stdio: ['ignore', 'pipe', 'pipe'], detached: true },
  );
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (s) => (stderr += s));
  child.stdout.resume();
  let exited = false;
  const exitP = new Promise((r) => child.on('exit', (code) => ((exited = true), r(code))));
  const tApply = Date.now();
  const steps = [];
  let last;
  let injectedBeforeSave;
  let restarted = false;
  let writesDuringPause = 0;
  while (!exited) {
    const step = persistedStep(stateDir);
    if (step && step !== last) {
      steps.push({ step, t: Date.now() });
      last = step;
    }
    const stopped = monSrc.of(vm, t0).some((e) => e.kind === 'STOP');
    if (injector.running && injector.where === src.where && (PAUSED_STEPS.has(step) || stopped)) {
      if (stopped && !PAUSED_STEPS.has(step)) writesDuringPause++;
      await injector.stop();
      injectedBeforeSave = injector.written - written0;
    }
    if (inject && !restarted && injectedBeforeSave !== undefined && dst.name !== src.name) {
      const resumed = monDst.of(vm, t0).some((e) => e.kind === 'RESUME');
      if (AFTER_RESTORE.has(step) || resumed) {
        injector.start(dst.where);
        restarted = true;
      }
    }
    await sleep(10);
  }
  const code = await exitP;
  const tEnd = Date.now();
  await injector.stop();
  await sleep(300); // late events
  await Promise.all([monSrc.stop(), monDst === monSrc ? undefined : monDst.stop()]);
  const logs = stderr
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      try {
        return JSON.parse(l);
      } catch {
        return { msg: l };
      }
    });
  if (code !== 0) throw new Error(`vmplace apply exited ${code}: ${stderr.slice(-3000)}`);
  const status = YAML.parse(fs.readFileSync(path.join(repo, 'status', 'vms', `${vm}.yaml`), 'utf8'));
  const ctx = finishedContext(stateDir) ?? {};
  const ev = lab.pauseFromEvents(monSrc, monDst, vm, t0);
  const stepMs = {};
  for (let i = 0; i < steps.length; i++) {
    const next = steps[i + 1]?.t ?? tEnd;
    stepMs[steps[i].step] = (stepMs[steps[i].step] ?? 0) + (next - steps[i].t);
  }
  const job = monSrc.of(vm, t0).find((e) => e.kind === 'job-completed' && e.data);
  const lat = injector.latencies.filter((x) => x.t >= tApply).map((x) => x.ms);
  return {
    placedOn: status.placement?.host,
    placedStorage: status.placement?.disks?.map((d) => d.storage),
    phase: status.phase,
    strategy: status.migration?.strategy,
    effectiveStrategy: ctx.effectiveStrategy ?? status.migration?.strategy,
    rounds: ctx.rounds ?? 1,
    deltaRounds: logs
      .filter((l) => l.msg === 'delta round')
      .map((l) => ({
        round: l.round,
        deltaBytes: l.deltaBytes,
        predictedMs: l.predictedMs,
        budgetMs: l.budgetMs,
      })),
    pauseMs: status.migration?.pauseMs,
    pauseQemuMs: ev.qemu,
    pauseLifecycleMs: ev.lifecycle,
    migrationMs: Date.parse(status.migration?.finishedAt) - Date.parse(status.migration?.startedAt),
    applyMs: tEnd - tApply,
    stepMs,
    stateBytes: job?.data?.data_processed,
    injectedBytesBeforeSave: injectedBeforeSave,
    injectedMBps: inject ? injector.rate() / 1e6 : 0,
    maxWriteLatencyMs: lat.length ? Math.max(...lat) : undefined,
    writeErrors: injector.errors.slice(0, 3),
    injectorStoppedLate: writesDuringPause > 0,
  };
}

/** Cross-host quick (single, iterative) and live: one VM per size, moved back and forth. */
async function crossHost({ env, guest, root, sizes, modes, runs, maxPause, inject, guestBulk, results }) {
  const { LibvirtDriver } = lab.dist('drivers/libvirt/driver');
  const d = {};
  for (const h of ['hv1', 'hv2'])
    d[h] = new LibvirtDriver(h, env.hosts[h].hostSpec, { allowedRoots: [env.hosts[h].storage, env.csvPath] });
  const where = { hv1: lab.remote(d.hv1.exec), hv2: lab.remote(d.hv2.exec) };
  const made = [];
  // leftovers of an interrupted benchmark on the benchmarks' own lab
  for (const h of ['hv1', 'hv2'])
    for (const old of (await d[h].listDomains()).filter((n) => n.startsWith('vmpb-'))) {
      await d[h].destroy(old).catch(() => undefined);
      await d[h].undefine(old).catch(() => undefined);
    }
  try {
    for (const size of sizes) {
      const vm = `vmpb-x${Math.round(size / MiB)}m-${process.pid}`;
      made.push(vm);
      const file = path.posix.join(env.hosts.hv1.storage, `${vm}-vda.qcow2`);
      const serialLog = path.posix.join(env.csvPath, `${vm}.serial.log`);
      log(`pause: preparing ${vm} on hv1: ${size / MiB} MiB disk, ${size / 2 / MiB} MiB written`);
      await d.hv1.exec.run(['qemu-img', 'create', '-q', '-f', 'qcow2', file, String(size)]);
      await d.hv1.exec.run(['qemu-io', '-f', 'qcow2', ...fillCommands(size), file], { timeoutMs: 600_000 });
      await d.hv1.define(
        lab.guestXml({
          name: vm,
          disks: [{ target: 'vda', path: file }],
          serialLog,
          guest,
          ...bulkOf(size, guestBulk),
        }),
      );
      await d.hv1.start(vm);
      await lab.waitForAcks(path.join(env.csvMgmtPath, path.basename(serialLog)), 'vda', 3);
      const repo = path.join(root, vm, 'repo');
      fs.mkdirSync(path.join(repo, 'manifests'), { recursive: true });
      const injector = new lab.WriteInjector({ where: where.hv1, domain: vm, diskBytes: size });
      let on = 'hv1';
      for (const mode of modes) {
        let fellBack = false;
        for (let i = 0; i < runs && !fellBack; i++) {
          const from = on;
          const to = on === 'hv1' ? 'hv2' : 'hv1';
          fs.writeFileSync(
            path.join(repo, 'manifests', 'fleet.yaml'),
            crossManifests(env, vm, to, mode, maxPause),
          );
          // the seed's single round: no delta rounds before the pause
          fs.writeFileSync(
            path.join(repo, 'vmplace.yaml'),
            mode === 'quick:single' ? 'policy:\n  maxDeltaRounds: 1\n' : '',
          );
          const stateDir = path.join(root, vm, `state-${mode.replace(':', '-')}-${i}`);
          const load = loadavg();
          // live across hosts migrates with QEMU's own migration: writes from the monitor are not
          // safe around its switch-over, so only the guest's own writer runs then
          const doInject = inject && mode !== 'live:cross';
          const r = await measuredApply({
            repo,
            stateDir,
            vm,
            src: { name: on, where: where[on] },
            dst: { name: to, where: where[to] },
            injector,
            inject: doInject,
          });
          if (r.placedOn !== to) throw new Error(`${vm} ended on ${r.placedOn}, expected ${to}`);
          on = to;
          const row = { mode, sizeBytes: size, run: i + 1, from, to, load, ...r };
          if (mode === 'live:cross' && r.effectiveStrategy !== 'live') {
            row.note = `vmplace ran ${r.effectiveStrategy}: live across hosts not available yet`;
            fellBack = true;
          }
          results.push(row);
          log(
            `pause: ${mode} ${size / MiB} MiB run ${i + 1}: events ${fmt(r.pauseQemuMs)} ms (lifecycle ${fmt(r.pauseLifecycleMs)}), ` +
              `status ${fmt(r.pauseMs)} ms, rounds ${r.rounds}, ${r.effectiveStrategy}, steps ${JSON.stringify(r.stepMs)}, ` +
              `injected ${r.injectedMBps.toFixed(1)} MB/s, ${((r.injectedBytesBeforeSave ?? 0) / MiB).toFixed(0)} MiB before save, load ${load}`,
          );
          fs.rmSync(stateDir, { recursive: true, force: true });
        }
      }
    }
  } finally {
    for (const vm of made) {
      for (const h of ['hv1', 'hv2']) {
        await d[h].destroy(vm).catch(() => undefined);
        await d[h].undefine(vm).catch(() => undefined);
      }
    }
    for (const h of ['hv1', 'hv2']) {
      for (const vm of made)
        await d[h].exec
          .run(['sh', '-c', `rm -f ${env.hosts[h].storage}/${vm}[-.]* ${env.csvPath}/${vm}.*`])
          .catch(() => undefined);
      await d[h].close();
    }
  }
}

/** Same host, strategy live (blockcopy --pivot), storage a <-> b on the local lab. */
async function sameHostLive({ guest, root, sizes, runs, inject, guestBulk, results }) {
  const { LibvirtDriver } = lab.dist('drivers/libvirt/driver');
  const base = fs.mkdtempSync(path.join(root, 'live-'));
  const dirs = { a: path.join(base, 'a'), b: path.join(base, 'b') };
  for (const x of Object.values(dirs)) fs.mkdirSync(x, { recursive: true });
  const drv = new LibvirtDriver(
    'lab',
    { driver: 'libvirt', uri: 'qemu:///system' },
    { allowedRoots: [base] },
  );
  const where = lab.local();
  const made = [];
  try {
    for (const size of sizes) {
      const vm = `vmpb-l${Math.round(size / MiB)}m-${process.pid}`;
      made.push(vm);
      const file = path.join(dirs.a, `${vm}-vda.qcow2`);
      const serialLog = path.join(base, `${vm}.serial.log`);
      log(`pause: preparing ${vm} on the local lab: ${size / MiB} MiB disk, ${size / 2 / MiB} MiB written`);
      await run('qemu-img', ['create', '-q', '-f', 'qcow2', file, String(size)]);
      await run('qemu-io', ['-f', 'qcow2', ...fillCommands(size), file]);
      await drv.define(
        lab.guestXml({
          name: vm,
          disks: [{ target: 'vda', path: file }],
          serialLog,
          guest,
          ...bulkOf(size, guestBulk),
        }),
      );
      await drv.start(vm);
      await lab.waitForAcks(serialLog, 'vda', 3);
      const repo = path.join(base, vm, 'repo');
      fs.mkdirSync(path.join(repo, 'manifests'), { recursive: true });
      const injector = new lab.WriteInjector({ where, domain: vm, diskBytes: size });
      let on = 'a';
      for (let i = 0; i < runs; i++) {
        const to = on === 'a' ? 'b' : 'a';
        fs.writeFileSync(
          path.join(repo, 'manifests', 'fleet.yaml'),
          localManifests(dirs, vm, to, 'live:same'),
        );
        const stateDir = path.join(base, vm, `state-${i}`);
        const load = loadavg();
        const r = await measuredApply({
          repo,
          stateDir,
          vm,
          src: { name: 'lab', where },
          dst: { name: 'lab', where },
          injector,
          inject,
        });
        if (String(r.placedStorage) !== to)
          throw new Error(`${vm} ended on ${r.placedStorage}, expected ${to}`);
        on = to;
        results.push({
          mode: 'live:same',
          sizeBytes: size,
          run: i + 1,
          from: to === 'a' ? 'b' : 'a',
          to,
          load,
          ...r,
        });
        log(
          `pause: live:same ${size / MiB} MiB run ${i + 1}: events ${fmt(r.pauseQemuMs)} ms, status ${fmt(r.pauseMs)} ms, ` +
            `migration ${r.migrationMs} ms, longest injected write ${fmt(r.maxWriteLatencyMs)} ms, ${r.injectedMBps.toFixed(1)} MB/s, load ${load}`,
        );
        fs.rmSync(stateDir, { recursive: true, force: true });
      }
    }
  } finally {
    for (const vm of made) {
      await drv.destroy(vm).catch(() => undefined);
      await drv.undefine(vm).catch(() => undefined);
    }
    await drv.close();
    fs.rmSync(base, { recursive: true, force: true });
  }
}

/** qemu-io commands writing half of the disk from 32 MiB on, in requests of at most 256 MiB */
function fillCommands(size) {
  const out = [];
  for (let off = 0; off < size / 2; off += 256 * MiB)
    out.push('-c', `write -P 0x5a ${32 * MiB + off} ${Math.min(256 * MiB, size / 2 - off)}`);
  return out;
}

/** the guest's own bulk writer over (most of) the disk's second half, when asked for */
const bulkOf = (size, mibps) =>
  mibps > 0 ? { bulkMiBps: mibps, bulkSpanMiB: Math.max(1, Math.floor((size / 2 - 32 * MiB) / MiB)) } : {};

const fmt = (x) => (typeof x === 'number' ? x.toFixed(0) : String(x));

/**
 * opts: runs, sizes (bytes), modes (quick:single, quick:iterative, live:same, live:cross),
 * maxPause ('1s'), inject (default true).
 */
async function pauseBench(opts) {
  const results = [];
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'vmplace-bench-pause-'));
  const guest = await lab.buildGuest();
  const cross = opts.modes.filter((m) => m !== 'live:same');
  const loadBefore = loadavg();
  let error;
  try {
    if (cross.length) {
      const env = await lab.ensureHosts();
      await crossHost({
        env,
        guest,
        root,
        sizes: opts.sizes,
        modes: cross,
        runs: opts.runs,
        maxPause: opts.maxPause,
        inject: opts.inject,
        guestBulk: opts.guestBulk ?? 0,
        results,
      });
    }
    if (opts.modes.includes('live:same')) {
      await lab.ensureLab();
      await sameHostLive({
        guest,
        root,
        sizes: opts.sizes,
        runs: opts.runs,
        inject: opts.inject,
        guestBulk: opts.guestBulk ?? 0,
        results,
      });
    }
  } catch (err) {
    // keep what was measured; the caller reports the error and fails the run
    error = String(err && err.stack ? err.stack : err);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
  return {
    section: 'pause',
    date: new Date().toISOString(),
    opts,
    loadBefore,
    loadAfter: loadavg(),
    results,
    error,
  };
}

module.exports = { pauseBench, GiB };
