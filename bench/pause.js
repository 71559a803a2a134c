/**
 * Pause benchmark: how long a VM stops while vmplace moves it, measured three ways per run:
 *  - QEMU's own STOP (source) -> RESUME (target) monitor events, with libvirt's timestamps
 *    (`virsh qemu-monitor-event --loop --timestamp` running on each host during the move);
 *  - libvirt lifecycle events Suspended (source) -> Resumed (target) (`virsh event --all`);
 *  - `migration.pauseMs` in the VM's status file (vmplace's own clock: before `virsh save`
 *    is called until `virsh restore` returned).
 *
 * Topologies (`--topologies`, default both) of the cross-host modes: `nothing-shared` (hv1 and hv2
 * with no Cluster manifest: each host only its own local storage, so the memory state is saved
 * on the source and crosses hosts inside the pause) and `cluster` (both hosts in cluster c1 with
 * the shared storage csv: the state file is saved where the target reads it).
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
 * then back, and so on: one VM per size, filled once. Runs rotate: each run of each topology
 * and mode, then the baselines, then the next run.
 *
 * Baselines (`--baselines`, default both), the same VM in the same run:
 *  - `floor`: plain `virsh save` + `virsh restore` of the VM on the host it is on (state file on
 *    that host's local storage), both in one shell on that host: the fixed cost of the method;
 *  - `seed`: the seed's steps by hand across hosts without shared storage: `virsh
 *    snapshot-create-as --disk-only` overlay, rsync of the base while the VM runs, `virsh save`,
 *    scp of overlay and state file (and `virsh save-image-dumpxml` beside it), then on the target
 *    the XML written, `qemu-img rebase -u`, `virsh restore --xml`; afterwards (outside the pause)
 *    `blockcommit --active --pivot`, define from the live XML, undefine and clean up the source.
 * Pause of both: QEMU STOP -> RESUME events, as for vmplace.
 *
 * Parts of vmplace's quick pause come from its debug log (`VMPLACE_LOG_LEVEL=debug`: the steps'
 * "step start"/"step done" and the "pause part: ..." lines of src/machine/steps/pause.ts, with
 * pino's timestamps), clipped to the QEMU STOP -> RESUME interval (see pauseParts).
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

/** Cross-host topologies: cluster c1 with the shared storage csv, or each host only its own. */
const TOPOLOGIES = ['nothing-shared', 'cluster'];

function hostDoc(env, h, topology) {
  const x = env.hosts[h];
  return `apiVersion: vmplace.dev/v1alpha1
kind: Host
metadata: {name: ${h}}
spec:
  driver: libvirt
  uri: ${x.uri}
  ssh: {host: ${x.addr}, user: root, identityFile: ${env.mgmtKey}, knownHostsFile: ${env.mgmtKnownHosts}}${topology === 'cluster' ? '\n  cluster: c1' : ''}
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

function crossManifests(env, vm, host, mode, maxPause, topology) {
  const cluster =
    topology === 'cluster'
      ? `apiVersion: vmplace.dev/v1alpha1
kind: Cluster
metadata: {name: c1}
spec:
  storage: [{name: csv, path: ${env.csvPath}}]
---
`
      : '';
  return `${hostDoc(env, 'hv1', topology)}---\n${hostDoc(env, 'hv2', topology)}---
${cluster}${vmDoc(vm, host, 'local', mode, maxPause)}`;
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
    // debug: the steps' start/done lines and the pause's parts (see pauseParts)
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
      env: { ...process.env, VMPLACE_LOG_LEVEL: 'debug' },
    },
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
  if (code !== 0) {
    // what went wrong: vmplace's warnings and errors, and the migration's last error in the status
    const said = logs
      .filter((l) => (l.level ?? 50) >= 40)
      .map((l) => `${l.msg}${l.reason ? ` (${l.reason})` : ''}${l.err?.message ? `: ${l.err.message}` : ''}`);
    let lastError = '';
    try {
      const st = YAML.parse(fs.readFileSync(path.join(repo, 'status', 'vms', `${vm}.yaml`), 'utf8'));
      const le = st?.migration?.lastError;
      if (le) lastError = ` last error: ${le.reason}: ${le.message}`;
    } catch {
      // no status written
    }
    const err = new Error(
      `vmplace apply exited ${code}:${lastError} ${said.slice(-12).join(' | ').slice(-3000)}`,
    );
    err.applyFailed = true;
    throw err;
  }
  const status = YAML.parse(fs.readFileSync(path.join(repo, 'status', 'vms', `${vm}.yaml`), 'utf8'));
  const ctx = finishedContext(stateDir) ?? {};
  const ev = lab.pauseFromEvents(monSrc, monDst, vm, t0);
  const marks = stopResume(monSrc, monDst, vm, t0);
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
    parts: marks ? pauseParts(logs, marks.stop, marks.resume) : undefined,
    events: marks ? eventMarks(monSrc, monDst, vm, marks) : undefined,
    stateBytes: job?.data?.data_processed,
    injectedBytesBeforeSave: injectedBeforeSave,
    injectedMBps: inject ? injector.rate() / 1e6 : 0,
    maxWriteLatencyMs: lat.length ? Math.max(...lat) : undefined,
    writeErrors: injector.errors.slice(0, 3),
    injectorStoppedLate: writesDuringPause > 0,
  };
}

/**
 * vmplace.yaml of a run: the seed's single round for quick:single; policy.quickMemory and
 * policy.pauseTransfer when given
 */
function vmplaceYaml(mode, quickMemory, pauseTransfer) {
  const policy = [
    ...(mode === 'quick:single' ? ['  maxDeltaRounds: 1'] : []),
    ...(quickMemory && mode.startsWith('quick') ? [`  quickMemory: ${quickMemory}`] : []),
    ...(pauseTransfer && mode.startsWith('quick') ? [`  pauseTransfer: ${pauseTransfer}`] : []),
    // the lab's guests are emulated (TCG): live across hosts, and quickMemory live, need the opt-in
    ...(mode === 'live:cross' || quickMemory === 'live' ? ['  liveEmulated: true'] : []),
  ];
  return policy.length ? `policy:\n${policy.join('\n')}\n` : '';
}

/** The last STOP on the source and the first RESUME on the target after it (one pause). */
function stopResume(monSrc, monDst, vm, since) {
  const stops = monSrc.of(vm, since).filter((e) => e.kind === 'STOP');
  const stop = stops[stops.length - 1]?.t;
  const resume = monDst.of(vm, since).find((e) => e.kind === 'RESUME' && e.t >= stop)?.t;
  return stop === undefined || resume === undefined ? undefined : { stop, resume };
}

/** The lifecycle and QEMU events around the pause, relative to the STOP (for the raw results). */
function eventMarks(monSrc, monDst, vm, { stop, resume }) {
  const mons = monDst === monSrc ? [monSrc] : [monSrc, monDst];
  return (
    mons
      .flatMap((m) => m.of(vm, stop - 1000))
      // QEMU's other events (MIGRATION, BLOCK_JOB_*, ...) only inside the pause: they show where a
      // switch-over goes
      .filter(
        (e) =>
          e.t <= resume + 1000 &&
          (['STOP', 'RESUME', 'lifecycle'].includes(e.kind) || (e.t >= stop && e.t <= resume)),
      )
      .sort((a, b) => a.t - b.t)
      .map((e) => ({ host: e.host, kind: e.kind, detail: e.detail || undefined, dt: e.t - stop }))
  );
}

/**
 * Where vmplace's quick pause goes, from its debug log: every part is an interval on this
 * machine's clock (pino's `time` is when the line was written, `ms` how long the part took),
 * clipped to the pause (QEMU STOP on the source -> RESUME on the target, the clock every lab host
 * shares). save: `virsh save` until it returned; afterSave: the rest of the step Saving (it waits
 * for the delta copy begun during the save, `earlyDelta`); copyingDelta: the step copyDelta, inside which
 * `stateTransfer` (the state file to the target, nothing-shared only) and `delta` (the last
 * overlay compared or copied, then relinked) run side by side; restore: `virsh restore`; checks:
 * the pause minus save, afterSave, copyingDelta and restore (step transitions with their
 * persisted snapshots, the restore lookups, the last look at the source, the write-ahead intents).
 * The paused way (policy.quickMemory: paused): save = `virsh suspend`, state transfer = QEMU's
 * migration of the paused VM (in Restoring, after CopyingDelta), restore = `virsh resume`.
 * `log`: vmplace's debug lines written during the pause (time relative to the STOP), to see what
 * the checks are.
 */
function pauseParts(logs, stop, resume) {
  const last = (msg, pred = () => true) =>
    [...logs].reverse().find((l) => l.msg === msg && typeof l.time === 'number' && pred(l));
  const clip = (span) => (span ? Math.max(0, Math.min(span[1], resume) - Math.max(span[0], stop)) : 0);
  const timed = (l) => (l && typeof l.ms === 'number' ? [l.time - l.ms, l.time] : undefined);
  const stepSpan = (step) => {
    const a = last('step start', (l) => l.step === step);
    const b = last('step done', (l) => l.step === step);
    return a && b && b.time >= a.time ? [a.time, b.time] : undefined;
  };
  const pause = resume - stop;
  // how the memory crossed (policy.quickMemory): a state file (save, copy, restore), or QEMU's
  // migration of the paused VM (pause, migrate in Restoring, resume); live: only a switch-over
  const paused = last('paused VM moved to the target by migration (no state file)');
  // the state file through the tcp channel (policy.pauseTransfer: tcp) is its own way
  const way = last('pause part: save')
    ? last('pause part: state transfer')?.channel === 'tcp'
      ? 'stateFile+tcp'
      : 'stateFile'
    : paused
      ? 'paused'
      : last('VM live-migrated onto the copied layers (top layer mirrored, no state file)')
        ? 'live'
        : undefined;
  const saveLine = way === 'paused' ? last('pause part: pause') : last('pause part: save');
  const restoreLine = way === 'paused' ? last('pause part: resume') : last('pause part: restore');
  const save = clip(timed(saveLine));
  const savingStep = stepSpan('saveVm');
  const afterSave = saveLine && savingStep ? clip([saveLine.time, savingStep[1]]) : 0;
  const copyingDelta = clip(stepSpan('copyDelta'));
  const restore = clip(timed(restoreLine));
  // the paused way moves the memory in Restoring, after CopyingDelta
  const memoryMigration = way === 'paused' ? clip(timed(paused)) : 0;
  const deltas = logs.filter((l) => l.msg === 'pause part: delta');
  const msOf = (msg) => last(msg)?.ms;
  return {
    way,
    pause,
    save,
    earlyDelta: msOf('pause part: delta during save'),
    afterSave,
    copyingDelta,
    stateTransfer: way === 'paused' ? memoryMigration : msOf('pause part: state transfer'),
    delta: deltas.length ? Math.max(...deltas.map((l) => l.ms + (l.relinkMs ?? 0))) : undefined,
    restoreLookups: msOf(way === 'paused' ? 'pause part: arrival lookups' : 'pause part: restore lookups'),
    restore,
    checks: pause - save - afterSave - copyingDelta - memoryMigration - restore,
    // whether the log had every line this needs (an older build logs none of the parts; the live
    // way has no parts of its own: its pause is the migration's switch-over)
    complete: Boolean(
      (way === 'stateFile' || way === 'stateFile+tcp' || way === 'paused') &&
      saveLine &&
      savingStep &&
      restoreLine &&
      stepSpan('copyDelta'),
    ),
    log: logs
      .filter((l) => typeof l.time === 'number' && l.time >= stop - 50 && l.time <= resume + 50)
      .map((l) => ({
        dt: l.time - stop,
        msg: l.msg,
        ...(l.step ? { step: l.step } : {}),
        ...(l.host ? { host: l.host } : {}),
        ...(typeof l.ms === 'number' ? { ms: l.ms } : {}),
        ...(Array.isArray(l.argv)
          ? { argv: l.argv.filter((a) => !/^(env|LC_ALL=C|-c|qemu\+\w+:.*)$/.test(a)).join(' ') }
          : {}),
      })),
  };
}

/** Cross-host quick (single, iterative) and live: one VM per size, moved back and forth. */
async function crossHost({
  env,
  guest,
  root,
  sizes,
  modes,
  topologies,
  baselines,
  runs,
  maxPause,
  quickMemory,
  pauseTransfer,
  inject,
  guestBulk,
  guestCache,
  results,
  failures = [],
}) {
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
          disks: [{ target: 'vda', path: file, ...(guestCache ? { cache: guestCache } : {}) }],
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
      const other = (h) => (h === 'hv1' ? 'hv2' : 'hv1');
      // every topology and mode, then the baselines, once per run: load drifts alike for all
      // policy.pauseTransfer may list several ways (`ssh,tcp`): each quick mode once per way
      const transfers = pauseTransfer ? String(pauseTransfer).split(',') : [undefined];
      const combos = topologies.flatMap((topology) =>
        modes.flatMap((mode) =>
          (mode.startsWith('quick') ? transfers : [undefined]).map((transfer) => ({
            topology,
            mode,
            transfer,
            fellBack: false,
          })),
        ),
      );
      for (let i = 0; i < runs; i++) {
        for (const c of combos) {
          if (c.fellBack) continue;
          const { topology, mode, transfer } = c;
          const from = on;
          const to = other(on);
          fs.writeFileSync(
            path.join(repo, 'manifests', 'fleet.yaml'),
            crossManifests(env, vm, to, mode, maxPause, topology),
          );
          // the seed's single round: no delta rounds before the pause
          fs.writeFileSync(path.join(repo, 'vmplace.yaml'), vmplaceYaml(mode, quickMemory, transfer));
          const stateDir = path.join(
            root,
            vm,
            `state-${topology}-${mode.replace(':', '-')}${transfer ? `-${transfer}` : ''}-${i}`,
          );
          const load = loadavg();
          // live across hosts migrates with QEMU's own migration: writes from the monitor are not
          // safe around its switch-over, so only the guest's own writer runs then
          const doInject = inject && mode !== 'live:cross';
          let r;
          try {
            r = await measuredApply({
              repo,
              stateDir,
              vm,
              src: { name: on, where: where[on] },
              dst: { name: to, where: where[to] },
              injector,
              inject: doInject,
            });
          } catch (err) {
            // a failed move is counted, not hidden; the bench goes on while the VM runs on one host
            if (!err.applyFailed) throw err;
            await injector.stop();
            const states = await Promise.all(
              ['hv1', 'hv2'].map((h) => d[h].getDomain(vm).then((x) => x?.state)),
            );
            const running = ['hv1', 'hv2'].filter((_, k) => states[k] === 'running');
            failures.push({
              topology,
              mode,
              sizeBytes: size,
              run: i + 1,
              from,
              to,
              load,
              error: err.message,
              vmOn: running,
            });
            log(
              `pause: ${topology} ${mode} ${size / MiB} MiB run ${i + 1} FAILED (VM running on ${running.join(', ') || 'no host'}): ${err.message.slice(0, 1500)}`,
            );
            if (running.length !== 1) throw err;
            on = running[0];
            fs.rmSync(stateDir, { recursive: true, force: true });
            continue;
          }
          if (r.placedOn !== to) throw new Error(`${vm} ended on ${r.placedOn}, expected ${to}`);
          on = to;
          const row = { topology, mode, sizeBytes: size, run: i + 1, from, to, load, ...r };
          // how the memory crossed, as vmplace's log says (policy.quickMemory)
          if (r.parts?.way) row.memory = r.parts.way;
          if (mode === 'live:cross' && r.effectiveStrategy !== 'live') {
            row.note = `vmplace ran ${r.effectiveStrategy}: live across hosts not available yet`;
            c.fellBack = true;
          }
          results.push(row);
          const pp = r.parts;
          log(
            `pause: ${topology} ${mode} ${size / MiB} MiB run ${i + 1}: events ${fmt(r.pauseQemuMs)} ms (lifecycle ${fmt(r.pauseLifecycleMs)}), ` +
              `status ${fmt(r.pauseMs)} ms, rounds ${r.rounds}, ${r.effectiveStrategy}, ` +
              (pp?.way ? `memory ${pp.way}, ` : '') +
              (pp?.complete
                ? `parts: save ${fmt(pp.save)} state ${fmt(pp.stateTransfer)} delta ${fmt(pp.delta)} CopyingDelta ${fmt(pp.copyingDelta)} restore ${fmt(pp.restore)} checks ${fmt(pp.checks)}, `
                : '') +
              `injected ${r.injectedMBps.toFixed(1)} MB/s, ${((r.injectedBytesBeforeSave ?? 0) / MiB).toFixed(0)} MiB before save, load ${load}`,
          );
          fs.rmSync(stateDir, { recursive: true, force: true });
        }
        if (baselines.includes('floor')) {
          const load = loadavg();
          const r = await floorRun({
            vm,
            drv: d[on],
            where: where[on],
            host: on,
            storage: env.hosts[on].storage,
            injector,
            inject,
          });
          results.push({
            topology: 'one-host',
            mode: 'base:floor',
            sizeBytes: size,
            run: i + 1,
            from: on,
            to: on,
            load,
            ...r,
          });
          log(
            `pause: floor (virsh save + restore on ${on}) ${size / MiB} MiB run ${i + 1}: events ${fmt(r.pauseQemuMs)} ms ` +
              `(lifecycle ${fmt(r.pauseLifecycleMs)}), save ${fmt(r.parts?.save)} restore ${fmt(r.parts?.restore)}, load ${load}`,
          );
        }
        if (baselines.includes('seed')) {
          const from = on;
          const to = other(on);
          const load = loadavg();
          const r = await seedRun({ env, vm, d, where, from, to, injector, inject });
          on = to;
          results.push({
            topology: 'nothing-shared',
            mode: 'base:seed',
            sizeBytes: size,
            run: i + 1,
            from,
            to,
            load,
            ...r,
          });
          log(
            `pause: seed by hand ${from} -> ${to} ${size / MiB} MiB run ${i + 1}: events ${fmt(r.pauseQemuMs)} ms, ` +
              `save ${fmt(r.parts?.save)} transfer ${fmt(r.parts?.stateTransfer)} restore ${fmt(r.parts?.restore)} checks ${fmt(r.parts?.checks)}, ` +
              `overlay ${fmt((r.overlayBytes ?? 0) / 1e6)} MB, state ${fmt((r.stateBytes ?? 0) / 1e6)} MB, load ${load}`,
          );
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
        // the disks made for it and the folder a move made for it on the target (<storage>/<vm>/)
        await d[h].exec
          .run(lab.labVmCleanupArgv([env.hosts[h].storage, env.csvPath], vm))
          .catch(() => undefined);
      await d[h].close();
    }
  }
}

const VIRSH = ['virsh', '-q', '-c', 'qemu:///system'];

/** the VM's one disk (vda) on `drv`, a single qcow2 file (no backing file) */
async function soleDisk(drv, vm) {
  const dom = await drv.getDomain(vm);
  const disk = dom?.disks.find((x) => x.target === 'vda')?.path;
  if (dom?.state !== 'running' || !disk) throw new Error(`${vm} does not run on ${drv.hostName} with a vda`);
  const info = JSON.parse((await drv.exec.run(['qemu-img', 'info', '-U', '--output=json', disk])).stdout);
  if (info['backing-filename']) throw new Error(`${disk} has a backing file: not a single-file disk`);
  return disk;
}

/** let the write load run a second, then stop it (nothing may write while a save runs) */
async function writeAWhile(injector, where, inject) {
  if (!inject) return;
  injector.start(where);
  await sleep(1000);
  await injector.stop();
}

/** a command on a lab host, timed on this machine's clock (the clock the events have) */
async function timed(exec, argv, opts = {}) {
  const start = Date.now();
  const r = await exec.run(argv, { timeoutMs: 600_000, ...opts });
  return { start, end: Date.now(), stdout: r.stdout };
}

/** length of the part of [a, b] inside [stop, resume] */
const clipTo = ({ stop, resume }, a, b) => Math.max(0, Math.min(b, resume) - Math.max(a, stop));

/**
 * Baseline (a), the floor of the method: `virsh save` then `virsh restore` of the VM in one shell
 * on the host it runs on, the state file on that host's local storage. Parts from the events:
 * save = STOP -> lifecycle "Stopped Saved"; restore = from there to RESUME (the second virsh's
 * start included).
 */
async function floorRun({ vm, drv, where, host, storage, injector, inject }) {
  const state = path.posix.join(storage, `${vm}.floor-state`);
  const mon = new lab.EventMonitor(where, host);
  await mon.ready();
  const t0 = Date.now();
  try {
    await soleDisk(drv, vm);
    await writeAWhile(injector, where, inject);
    await drv.exec.run(
      [
        'sh',
        '-c',
        'virsh -q -c qemu:///system save "$1" "$2" && virsh -q -c qemu:///system restore "$2"',
        'sh',
        vm,
        state,
      ],
      { timeoutMs: 600_000 },
    );
    await sleep(300); // late events
  } finally {
    await mon.stop();
    await drv.exec.run(['rm', '-f', '--', state]).catch(() => undefined);
  }
  const ev = lab.pauseFromEvents(mon, mon, vm, t0);
  const marks = stopResume(mon, mon, vm, t0);
  const saved = mon.of(vm, t0).find((e) => e.kind === 'lifecycle' && /^Stopped Saved/.test(e.detail))?.t;
  const job = mon.of(vm, t0).find((e) => e.kind === 'job-completed' && e.data);
  return {
    pauseQemuMs: ev.qemu,
    pauseLifecycleMs: ev.lifecycle,
    stateBytes: job?.data?.data_processed,
    parts:
      marks && saved !== undefined
        ? {
            pause: marks.resume - marks.stop,
            save: clipTo(marks, marks.stop, saved),
            restore: clipTo(marks, saved, marks.resume),
            checks: 0,
            complete: true,
          }
        : undefined,
    events: marks ? eventMarks(mon, mon, vm, marks) : undefined,
  };
}

/** scp's argv for host `from` copying `files` into directory `dir` on `to` (the lab's host-to-host key) */
function scpArgv(env, from, to, files, dir) {
  const { sshOptions } = lab.dist('exec/exec');
  const hop = lab.transferSsh(env.hosts[from], env.hosts[to]);
  const o = sshOptions({ ...hop, user: undefined });
  // ssh's -p is scp's -P
  const args = o.map((a, k) => (a === '-p' && o[k - 1] !== '-o' ? '-P' : a));
  return ['scp', '-q', ...args, '--', ...files, `${hop.user ?? 'root'}@${hop.host}:${dir}/`];
}

/** rsync's argv for host `from` copying `file` to `dest` on `to`, as the seed did */
function rsyncArgv(env, from, to, file, dest) {
  const { sshOptions, quoteShellArgs } = lab.dist('exec/exec');
  const hop = lab.transferSsh(env.hosts[from], env.hosts[to]);
  return [
    'rsync',
    '-a',
    '--sparse',
    '-e',
    quoteShellArgs(['ssh', ...sshOptions(hop)]),
    '--',
    file,
    `${hop.host}:${dest}`,
  ];
}

/**
 * Baseline (b): the seed's steps by hand from `from` to `to`, hosts without shared storage (see
 * the file's header). The write load runs during the snapshot and the base copy and stops before
 * the save (as for vmplace); it is not restarted on the target. Parts, on this machine's clock and
 * clipped to STOP -> RESUME: save (`virsh save` over ssh), stateTransfer (scp of overlay and state,
 * the saved XML read beside it), restore (XML written, rebase, `virsh restore --xml`, one shell on
 * the target); checks = the rest (here only the hand-offs between those commands).
 */
async function seedRun({ env, vm, d, where, from, to, injector, inject }) {
  const src = d[from];
  const dst = d[to];
  const srcDir = env.hosts[from].storage;
  const dstDir = env.hosts[to].storage;
  const base = await soleDisk(src, vm);
  const name = path.posix.basename(base);
  const ovl = path.posix.join(srcDir, `${vm}.seed-overlay.qcow2`);
  const state = path.posix.join(srcDir, `${vm}.seed-state`);
  const dstBase = path.posix.join(dstDir, name);
  const dstOvl = path.posix.join(dstDir, path.posix.basename(ovl));
  const dstState = path.posix.join(dstDir, path.posix.basename(state));
  const dstXml = path.posix.join(dstDir, `${vm}.seed-restore.xml`);
  const monSrc = new lab.EventMonitor(where[from], from);
  const monDst = new lab.EventMonitor(where[to], to);
  await Promise.all([monSrc.ready(), monDst.ready()]);
  const t0 = Date.now();
  const out = {};
  try {
    if (inject) injector.start(where[from]);
    await sleep(inject ? 1000 : 0);
    const snap = await timed(src.exec, [
      ...VIRSH,
      'snapshot-create-as',
      vm,
      '--disk-only',
      '--no-metadata',
      '--atomic',
      '--diskspec',
      `vda,file=${ovl}`,
    ]);
    const copy = await timed(src.exec, rsyncArgv(env, from, to, base, dstBase));
    await injector.stop();
    const save = await timed(src.exec, [...VIRSH, 'save', vm, state]);
    const [scp, xml] = await Promise.all([
      timed(src.exec, scpArgv(env, from, to, [ovl, state], dstDir)),
      timed(src.exec, [...VIRSH, 'save-image-dumpxml', state]),
    ]);
    const def = xml.stdout.split(ovl).join(dstOvl).split(base).join(dstBase);
    const restore = await timed(
      dst.exec,
      [
        'sh',
        '-c',
        'cat >"$1" && qemu-img rebase -u -F qcow2 -b "$2" "$3" && virsh -q -c qemu:///system restore "$4" --xml "$1"',
        'sh',
        dstXml,
        dstBase,
        dstOvl,
        dstState,
      ],
      { input: def },
    );
    await sleep(300); // late events
    const sizes = (await src.exec.run(['stat', '-c', '%s', '--', ovl, state])).stdout
      .trim()
      .split('\n')
      .map(Number);
    Object.assign(out, {
      overlayBytes: sizes[0],
      stateFileBytes: sizes[1],
      snapshotMs: snap.end - snap.start,
      baseCopyMs: copy.end - copy.start,
      spans: { save, scp, xml, restore },
    });
    // outside the pause: merge the overlay into the base copy, make the target's definition
    // persistent, and remove the source's
    await dst.exec.run([...VIRSH, 'blockcommit', vm, 'vda', '--active', '--pivot', '--wait'], {
      timeoutMs: 600_000,
    });
    await dst.exec.run([
      'sh',
      '-c',
      'virsh -q -c qemu:///system dumpxml "$1" >"$2" && virsh -q -c qemu:///system define "$2" >/dev/null',
      'sh',
      vm,
      dstXml,
    ]);
    await src.exec.run([...VIRSH, 'undefine', vm]);
    await src.exec.run(['rm', '-f', '--', base, ovl, state]);
  } finally {
    await injector.stop();
    await Promise.all([monSrc.stop(), monDst.stop()]);
    await dst.exec.run(['rm', '-f', '--', dstOvl, dstState, dstXml]).catch(() => undefined);
  }
  const ev = lab.pauseFromEvents(monSrc, monDst, vm, t0);
  const marks = stopResume(monSrc, monDst, vm, t0);
  const job = monSrc.of(vm, t0).find((e) => e.kind === 'job-completed' && e.data);
  const { spans, ...rest } = out;
  let parts;
  if (marks && spans) {
    const save = clipTo(marks, spans.save.start, spans.save.end);
    const transfer = clipTo(marks, spans.save.end, Math.max(spans.scp.end, spans.xml.end));
    const restore = clipTo(marks, spans.restore.start, spans.restore.end);
    parts = {
      pause: marks.resume - marks.stop,
      save,
      stateTransfer: clipTo(marks, spans.scp.start, spans.scp.end),
      copyingDelta: transfer,
      restore,
      checks: marks.resume - marks.stop - save - transfer - restore,
      complete: true,
    };
  }
  return {
    pauseQemuMs: ev.qemu,
    pauseLifecycleMs: ev.lifecycle,
    stateBytes: job?.data?.data_processed,
    ...rest,
    parts,
    events: marks ? eventMarks(monSrc, monDst, vm, marks) : undefined,
  };
}

/** Same host, strategy live (blockcopy --pivot), storage a <-> b on the local lab. */
async function sameHostLive({ guest, root, sizes, runs, inject, guestBulk, guestCache, results }) {
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
          disks: [{ target: 'vda', path: file, ...(guestCache ? { cache: guestCache } : {}) }],
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
          topology: 'one-host',
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
 * topologies of the cross-host modes (nothing-shared, cluster; default both), baselines (floor,
 * seed; default both), maxPause ('1s'), quickMemory (policy.quickMemory of the quick runs: live,
 * paused, stateFile; default: vmplace's own), pauseTransfer (policy.pauseTransfer of the quick runs:
 * ssh, tcp; default: vmplace's own), inject (default true), guestBulk, guestCache (the guest disks'
 * libvirt cache mode, e.g. none; default: libvirt's).
 */
async function pauseBench(opts) {
  const results = [];
  const failures = [];
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'vmplace-bench-pause-'));
  const guest = await lab.buildGuest();
  const cross = opts.modes.filter((m) => m !== 'live:same');
  const topologies = opts.topologies ?? TOPOLOGIES;
  const baselines = opts.baselines ?? ['floor', 'seed'];
  for (const t of topologies)
    if (!TOPOLOGIES.includes(t)) throw new Error(`unknown topology ${t} (${TOPOLOGIES})`);
  for (const b of baselines)
    if (!['floor', 'seed'].includes(b)) throw new Error(`unknown baseline ${b} (floor, seed)`);
  const loadBefore = loadavg();
  let error;
  try {
    if (cross.length || baselines.length) {
      const env = await lab.ensureHosts();
      await crossHost({
        env,
        guest,
        root,
        sizes: opts.sizes,
        modes: cross,
        topologies,
        baselines,
        runs: opts.runs,
        maxPause: opts.maxPause,
        quickMemory: opts.quickMemory,
        pauseTransfer: opts.pauseTransfer,
        inject: opts.inject,
        guestBulk: opts.guestBulk ?? 0,
        guestCache: opts.guestCache,
        results,
        failures,
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
        guestCache: opts.guestCache,
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
    failures,
    error,
  };
}

module.exports = { pauseBench, pauseParts, TOPOLOGIES, GiB };
