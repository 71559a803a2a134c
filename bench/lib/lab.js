/**
 * The labs the benchmarks run on, from plain JavaScript: the lab library itself is `src/lab`
 * (the same one the lab tests use), loaded from its build in `dist/lab`; here are only what the
 * benchmarks add to it: the benchmarks' own two-host lab, libvirt event monitors with
 * timestamps, and a host-side writer that puts ~10 MB/s into a running VM's disk.
 *
 * Uses the built vmplace (dist/): run `npm run build` first.
 */
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { ROOT, MiB, sleep } = require('./util');

function dist(mod) {
  const p = path.join(ROOT, 'dist', mod);
  if (!fs.existsSync(`${p}.js`)) throw new Error(`${p}.js missing: run npm run build first`);
  return require(p);
}

/** The lab library (src/lab/index.ts, built), loaded on first use. */
const core = () => dist('lab/index');

/**
 * The benchmarks' own two-host lab (prefix `vmpbench`, network 10.231.77.0/24 unless
 * VMPLACE_BENCH_HOSTS_PREFIX / VMPLACE_BENCH_HOSTS_NET say otherwise): other engineers' test
 * runs bring the default lab (`vmpl`) up and down, which must not cut a benchmark in half.
 */
const BENCH_HOSTS = {
  prefix: process.env.VMPLACE_BENCH_HOSTS_PREFIX ?? 'vmpbench',
  net: process.env.VMPLACE_BENCH_HOSTS_NET ?? '10.231.77',
};

/** The local lab's libvirt (qemu:///system, scripts/lab/up.sh); returns the URI. */
const ensureLab = () => core().ensureLab();
/** The benchmarks' two-host lab (hv1, hv2 in network namespaces, reached over ssh); returns its env. */
const ensureHosts = () => core().ensureHosts(BENCH_HOSTS);
/** Stop the benchmarks' two-host lab if this process brought it up (keys and config stay). */
const hostsDown = () => core().hostsDown(BENCH_HOSTS);

/**
 * Domain XML of the lab guest with the benchmarks' defaults: 256 MiB of memory (a save writes
 * a realistic state), 10 acknowledged records per second per disk.
 */
const guestXml = (spec) => core().guestDomainXml({ memoryMiB: 256, rateHz: 10, ...spec });

/**
 * Where a long-running command runs: locally (the local lab) or on a lab host over ssh
 * (`SshExec.sshArgv`, sharing its master connection).
 */
function local() {
  return { label: 'local', argv: (a) => a, virsh: ['virsh', '-c', 'qemu:///system'] };
}
function remote(exec) {
  return { label: exec.label, argv: (a) => exec.sshArgv(a), virsh: ['virsh', '-c', 'qemu:///system'] };
}

/**
 * Spawn `argv` at `where`, stopped by closing its stdin: the remote side runs it under a shell
 * that kills it when its stdin ends, so nothing lingers on the host after the ssh client goes.
 */
function spawnStoppable(where, argv) {
  const script = `"$@" </dev/null & p=$!; cat >/dev/null; kill $p 2>/dev/null; wait $p 2>/dev/null; exit 0`;
  const full = where.argv(['sh', '-c', script, 'sh', ...argv]);
  const child = spawn(full[0], full.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdin.on('error', () => undefined);
  return child;
}

/** virsh prints `2025-01-01 12:00:00.123+0000: event ...` */
const EVENT_RE =
  /^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d\.\d+)\+0000: event '?([\w-]+)'? for domain '([^']+)':?\s*(.*)$/;

/**
 * libvirt lifecycle events (`virsh event --all --loop --timestamp`) and QEMU monitor events
 * (`virsh qemu-monitor-event --loop --timestamp`: STOP, RESUME) of one host, with libvirt's
 * timestamps. Every host of the lab shares this machine's clock.
 */
class EventMonitor {
  constructor(where, hostName) {
    this.hostName = hostName;
    this.events = [];
    this.children = [
      spawnStoppable(where, [...where.virsh, 'event', '--all', '--loop', '--timestamp']),
      spawnStoppable(where, [...where.virsh, 'qemu-monitor-event', '--loop', '--timestamp']),
    ];
    this.exited = this.children.map((c) => new Promise((r) => c.on('close', r)));
    for (const c of this.children) {
      let buf = '';
      c.stdout.setEncoding('utf8');
      c.stdout.on('data', (s) => {
        buf += s;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          const m = EVENT_RE.exec(line);
          if (!m && /^\s+\w+: /.test(line) && this.events.length) {
            // continuation of a multi-line event (job-completed statistics)
            const last = this.events[this.events.length - 1];
            const [k, v] = line.trim().split(/:\s*/);
            (last.data ??= {})[k] = Number(v);
          }
          if (m) {
            this.events.push({
              host: hostName,
              t: Date.parse(`${m[1]}T${m[2]}Z`),
              kind: m[3],
              domain: m[4],
              detail: m[5],
              line,
            });
          }
        }
      });
      c.stderr.resume();
    }
  }
  /** give both virsh processes time to connect and register */
  ready() {
    return sleep(1200);
  }
  of(domain, since = 0) {
    return this.events.filter((e) => e.domain === domain && e.t >= since);
  }
  async stop() {
    for (const c of this.children) c.stdin.end();
    await Promise.race([Promise.all(this.exited), sleep(5000)]);
    for (const c of this.children) if (c.exitCode === null) c.kill('SIGKILL');
  }
}

/**
 * Pause of a move from the events: (first resume on the target after the source stopped) -
 * (last stop on the source before it). `qemu`: QEMU's STOP -> RESUME; `lifecycle`: libvirt's
 * Suspended -> Resumed. Same host: source and target monitors are the same.
 */
function pauseFromEvents(src, dst, domain, since) {
  const pick = (mon, pred) => mon.of(domain, since).filter(pred);
  const out = {};
  for (const [key, isStop, isResume] of [
    ['qemu', (e) => e.kind === 'STOP', (e) => e.kind === 'RESUME'],
    [
      'lifecycle',
      (e) => e.kind === 'lifecycle' && /^Suspended/.test(e.detail),
      (e) => e.kind === 'lifecycle' && /^Resumed/.test(e.detail),
    ],
  ]) {
    const stops = pick(src, isStop);
    const resumes = pick(dst, isResume);
    if (!stops.length && !resumes.length) {
      out[key] = 0; // never paused
      continue;
    }
    let total = 0;
    let ok = false;
    // pair every stop with the first resume after it (a live move may pause more than once)
    for (const s of stops) {
      const r = resumes.find((x) => x.t >= s.t);
      if (r) {
        total += r.t - s.t;
        ok = true;
      }
    }
    out[key] = ok ? total : undefined;
  }
  return out;
}

/**
 * Writes into a running VM's disk from the host, through QEMU's block layer as the guest's
 * own device would (HMP `qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend`), one
 * `chunk` at a time at `ratePerSec` per second, to fresh offsets (each write grows the
 * overlay by a chunk). One long-lived interactive `virsh` per host: no process per write.
 * At most one write is in flight, so `stop()` returns once nothing more can reach QEMU (it
 * must never write while `virsh save` has inactivated the disks: QEMU aborts).
 */
class WriteInjector {
  constructor({
    where,
    domain,
    diskBytes,
    chunk = MiB,
    ratePerSec = 10,
    startOffset = 32 * MiB,
    device = 'virtio-disk0',
  }) {
    this.where = where;
    this.domain = domain;
    this.chunk = chunk;
    this.period = 1000 / ratePerSec;
    this.lo = startOffset;
    this.hi = diskBytes - chunk;
    this.offset = startOffset;
    this.device = device;
    this.written = 0;
    this.errors = [];
    this.latencies = [];
    this.activeMs = 0;
    this.running = false;
  }
  start(where = this.where) {
    if (this.running) return;
    this.where = where;
    this.running = true;
    // interactive virsh: reads commands from stdin, ends at EOF
    const argv = where.argv([...where.virsh, '-q']);
    this.child = spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdin.on('error', () => undefined);
    this.child.stdout.setEncoding('utf8');
    this.child.stderr.setEncoding('utf8');
    let buf = '';
    this.waiting = undefined;
    // virsh flushes a command's output when it prompts for the next line: every command is
    // followed by `echo "M""K" N` and an empty line, and "MK N" (which the echoed command line
    // never contains) marks the end of write N
    this.child.stdout.on('data', (s) => {
      buf += s;
      let m;
      const re = /MK (\d+)/g;
      let end = 0;
      while ((m = re.exec(buf))) {
        end = re.lastIndex;
        if (this.waiting && Number(m[1]) === this.waiting.n) this.waiting.resolve();
      }
      buf = buf.slice(Math.max(end, buf.length - 64));
    });
    this.child.stderr.on('data', (s) => {
      if (this.errors.length < 20) this.errors.push(s.trim());
    });
    this.loop = this.run();
  }
  async run() {
    let n = 0;
    const t0 = Date.now();
    while (this.running) {
      const start = Date.now();
      const off = this.offset;
      this.offset += this.chunk;
      if (this.offset > this.hi) this.offset = this.lo;
      n++;
      const done = new Promise((resolve) => (this.waiting = { n, resolve }));
      const cmd =
        `qemu-monitor-command ${this.domain} --hmp 'qemu-io -d /machine/peripheral/${this.device}/virtio-backend ` +
        `"write -P 0xab ${off} ${this.chunk}"'\necho "M""K" ${n}\n\n`;
      this.child.stdin.write(cmd);
      const timedOut = await Promise.race([done.then(() => false), sleep(10_000).then(() => true)]);
      if (timedOut) {
        this.errors.push(`write ${n} got no answer in 10 s`);
        break;
      }
      this.written += this.chunk;
      this.latencies.push({ t: start, ms: Date.now() - start });
      const wait = this.period - (Date.now() - start);
      if (wait > 0 && this.running) await sleep(wait);
    }
    this.activeMs += Date.now() - t0;
  }
  /** stop writing; resolves when the write in flight (if any) is answered */
  async stop() {
    if (!this.running) return;
    this.running = false;
    await this.loop;
    this.child.stdin.end();
    await new Promise((r) => (this.child.exitCode !== null ? r() : this.child.on('close', r)));
  }
  /** bytes per second while writing */
  rate() {
    return this.activeMs ? this.written / (this.activeMs / 1000) : 0;
  }
}

module.exports = {
  dist,
  ensureLab,
  ensureHosts,
  hostsDown,
  transferSsh: (from, to) => core().transferSsh(from, to),
  buildGuest: () => core().buildGuest(),
  guestXml,
  labVmCleanupArgv: (dirs, vm) => core().labVmCleanupArgv(dirs, vm),
  /** Wait until the guest acknowledged `atLeast` records on `disk` (management-side path of the serial log). */
  waitForAcks: (serialLog, disk, atLeast = 3, timeoutMs = 120_000) =>
    core().waitForAcks(serialLog, { disk, atLeast, timeoutMs, pollMs: 200 }),
  local,
  remote,
  spawnStoppable,
  EventMonitor,
  pauseFromEvents,
  WriteInjector,
};
