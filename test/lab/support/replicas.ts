/**
 * Several real `vmplace daemon` replicas sharing one fleet through a real etcd (issue 12), for
 * the lab's failover tests: start them against one bare git remote (each with its own workdir
 * and state dir), read who owns a VM and which step its migration persisted in etcd, kill,
 * stop and resume a replica, and sample where the VM runs every 100 ms.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { Etcd3 } from 'etcd3';
import { newPartitionTarget, run, type PartitionTarget } from '../../../src/lab';
import { startDaemon, type LogLine, type RunningDaemon } from './daemon';

export interface Replica {
  readonly name: string;
  readonly workdir: string;
  readonly stateDir: string;
  /** its group id: `partitionFromEtcd(replica.target, cluster)` cuts it off from etcd */
  readonly target: PartitionTarget;
  /** the process running now (replaced by `restart`) */
  daemon: RunningDaemon;
  /** every process this replica ran, oldest first (their logs stay readable after a kill) */
  readonly runs: RunningDaemon[];
}

export interface ReplicasOptions {
  root: string;
  /** the bare git remote every replica follows */
  repo: string;
  endpoints: readonly string[];
  prefix: string;
  names: readonly string[];
  /** `--lease-ttl` (default 2s) */
  leaseTtl?: string;
  /** `--interval` (default 1s) */
  interval?: string;
}

/** A migration as persisted in etcd (`<prefix>migrations/<vm>/<id>`). */
export interface PersistedMigration {
  id: string;
  step: string;
  /** when this test read it */
  seenAt: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class Replicas {
  readonly etcd: Etcd3;
  private readonly replicas = new Map<string, Replica>();
  /** groups this object added to /etc/group (removed by `close`) */
  private readonly groups: number[] = [];

  private constructor(private readonly opts: ReplicasOptions) {
    this.etcd = new Etcd3({ hosts: [...opts.endpoints], dialTimeout: 2000 });
  }

  /** Start every replica (one after another) and wait until each joined the fleet. */
  static async start(opts: ReplicasOptions): Promise<Replicas> {
    const r = new Replicas(opts);
    for (const name of opts.names) await r.launch(name);
    return r;
  }

  get(name: string): Replica {
    const r = this.replicas.get(name);
    if (!r) throw new Error(`no replica ${name}`);
    return r;
  }

  all(): Replica[] {
    return [...this.replicas.values()];
  }

  private async launch(name: string): Promise<Replica> {
    const old = this.replicas.get(name);
    const dir = path.join(this.opts.root, 'replicas', name);
    const workdir = old?.workdir ?? path.join(dir, 'work', 'repo');
    const stateDir = old?.stateDir ?? path.join(dir, 'state');
    const target = old?.target ?? newPartitionTarget();
    if (!old) await this.ensureGroup(target.gid);
    const daemon = await startDaemon({
      repo: this.opts.repo,
      workdir,
      stateDir,
      interval: this.opts.interval ?? '1s',
      gid: target.gid,
      extra: [
        '--etcd-endpoints',
        this.opts.endpoints.join(','),
        '--etcd-prefix',
        this.opts.prefix,
        '--replica-id',
        name,
        '--lease-ttl',
        this.opts.leaseTtl ?? '2s',
      ],
    });
    await daemon.waitFor((l) => l.msg === 'joined the fleet', 60_000);
    const replica: Replica = {
      name,
      workdir,
      stateDir,
      target,
      daemon,
      runs: [...(old?.runs ?? []), daemon],
    };
    this.replicas.set(name, replica);
    return replica;
  }

  /**
   * libvirt's client refuses to connect from a process whose group id has no record
   * ("Failed to find group record for gid"): give the partition target's gid a name.
   */
  private async ensureGroup(gid: number): Promise<void> {
    const known = await run('getent', ['group', String(gid)]).then(
      () => true,
      () => false,
    );
    if (known) return;
    await run('groupadd', ['-g', String(gid), `vmplace-lab-${gid}`]);
    this.groups.push(gid);
  }

  /** Start a replica again (after a kill) on its own workdir and state dir. */
  restart(name: string): Promise<Replica> {
    return this.launch(name);
  }

  /** Is the replica's current process still there (not killed, not exited)? */
  alive(name: string): boolean {
    const c = this.get(name).daemon.child;
    return c.exitCode === null && c.signalCode === null;
  }

  /** Send `signal` to the replica's whole process group (its virsh, rsync... too). */
  signal(name: string, signal: NodeJS.Signals): void {
    process.kill(-this.get(name).daemon.child.pid!, signal);
  }

  /** kill -9 of the replica's process group; resolves once the daemon exited. */
  async kill(name: string): Promise<void> {
    this.signal(name, 'SIGKILL');
    await this.get(name).daemon.exited;
  }

  /** The replica holding `<prefix>locks/<vm>` now, if any. */
  async ownerOf(vm: string): Promise<string | undefined> {
    return (await this.etcd.get(`${this.opts.prefix}locks/${encodeURIComponent(vm)}`).string()) ?? undefined;
  }

  /** Wait until some replica holds the VM's lock. */
  async waitForOwner(vm: string, timeoutMs = 60_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const o = await this.ownerOf(vm).catch(() => undefined);
      if (o) return o;
      if (Date.now() > deadline) throw new Error(`no replica took the lock of ${vm} in ${timeoutMs} ms`);
      await sleep(100);
    }
  }

  /** The VM's migration in flight as persisted in etcd (none: undefined). */
  async persisted(vm: string): Promise<PersistedMigration | undefined> {
    const all = await this.etcd
      .getAll()
      .prefix(`${this.opts.prefix}migrations/${encodeURIComponent(vm)}/`)
      .strings();
    for (const text of Object.values(all)) {
      const rec = JSON.parse(text) as { id: string; snapshot: { value: string } };
      return { id: rec.id, step: rec.snapshot.value, seenAt: Date.now() };
    }
    return undefined;
  }

  /** The VM's last finished migration (`<prefix>done/<vm>`). */
  async lastDone(vm: string): Promise<PersistedMigration | undefined> {
    const text = await this.etcd.get(`${this.opts.prefix}done/${encodeURIComponent(vm)}`).string();
    if (text === null) return undefined;
    const rec = JSON.parse(text) as { id: string; snapshot: { value: string } };
    return { id: rec.id, step: rec.snapshot.value, seenAt: Date.now() };
  }

  /**
   * Poll etcd every `everyMs` until the VM's migration in flight is persisted in `step`; returns
   * at the first read naming it (the caller acts at once, e.g. kills the owner). Also returns
   * the steps seen on the way, to tell how a miss happened.
   */
  async waitForStep(
    vm: string,
    step: string,
    opts: { everyMs?: number; timeoutMs?: number } = {},
  ): Promise<PersistedMigration & { seen: string[] }> {
    const deadline = Date.now() + (opts.timeoutMs ?? 180_000);
    const seen: string[] = [];
    for (;;) {
      const p = await this.persisted(vm).catch(() => undefined);
      if (p && seen[seen.length - 1] !== p.step) seen.push(p.step);
      if (p?.step === step) return { ...p, seen };
      if (Date.now() > deadline)
        throw new Error(`${vm}: step ${step} not persisted in time; steps seen: ${seen.join(' → ')}`);
      await sleep(opts.everyMs ?? 20);
    }
  }

  /** Wait until no migration of the VM is in flight in etcd and its last finished one is `id`. */
  async waitForDone(vm: string, id: string, timeoutMs = 180_000): Promise<PersistedMigration> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const done = await this.lastDone(vm).catch(() => undefined);
      if (done?.id === id && (await this.persisted(vm).catch(() => ({}) as PersistedMigration)) === undefined)
        return done;
      if (Date.now() > deadline) throw new Error(`${vm}: migration ${id} not finished in ${timeoutMs} ms`);
      await sleep(100);
    }
  }

  /** Every log line of every run of every replica matching `pred`, with the replica's name. */
  logs(pred: (l: LogLine) => boolean): (LogLine & { replica: string })[] {
    return this.all().flatMap((r) =>
      r.runs.flatMap((d) => d.logs.filter(pred).map((l) => ({ ...l, replica: r.name }))),
    );
  }

  /** The first log line matching `pred` from any live replica (polls all of them). */
  async waitForLog(
    pred: (l: LogLine) => boolean,
    timeoutMs = 120_000,
  ): Promise<LogLine & { replica: string }> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.logs(pred)[0];
      if (found) return found;
      if (Date.now() > deadline) throw new Error('timed out waiting for a log line of any replica');
      await sleep(50);
    }
  }

  /** A metric's value on one replica (`/metrics`), or undefined. */
  async metric(name: string, metric: string): Promise<number | undefined> {
    const text = await (await fetch(`${this.get(name).daemon.url}/metrics`)).text();
    const m = new RegExp(`^${metric}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text);
    return m ? Number(m[1]) : undefined;
  }

  /** SIGKILL every process still running, close the etcd client. */
  async close(): Promise<void> {
    for (const r of this.all())
      for (const d of r.runs) {
        if (d.child.exitCode !== null || d.child.signalCode !== null) continue;
        try {
          process.kill(-d.child.pid!, 'SIGCONT');
          process.kill(-d.child.pid!, 'SIGKILL');
        } catch {
          // gone
        }
        await d.exited;
      }
    this.etcd.close();
    for (const gid of this.groups.splice(0))
      await run('groupdel', [`vmplace-lab-${gid}`]).catch(() => undefined);
  }
}

/** One observation of where the VM runs. */
export interface PlacementSample {
  /** ms since the sampler started */
  t: number;
  /** `virsh domstate` on each connection (undefined: not defined there) */
  states: Record<string, string | undefined>;
  /** QEMU processes of this guest on this machine (as `pgrep -f guest=VM,` counts them) */
  qemus: number;
  /** connections on which the VM counts as running: state `running` or `paused` */
  runningOn: string[];
}

export interface PlacementSampler {
  /** Stop sampling; resolves with every observation, oldest first. */
  stop(): Promise<PlacementSample[]>;
}

/**
 * One long-lived `virsh` reading commands from its stdin: a sampler that spawned a virsh (and a
 * connection to libvirtd) ten times a second added much of the load of the busy machine it
 * measures. `domstate` answers what one `virsh domstate` would (undefined: no such domain).
 */
class VirshSession {
  private child: ChildProcess | undefined;
  private out = '';
  private n = 0;
  private pending: { marker: string; resolve: (text: string | undefined) => void } | undefined;

  constructor(private readonly uri: string) {}

  private start(): ChildProcess {
    const child = spawn('virsh', ['-q', '-c', this.uri], { stdio: ['pipe', 'pipe', 'ignore'] });
    child.stdout.on('data', (d: Buffer) => {
      this.out += d.toString();
      const p = this.pending;
      // the echo's output, not the echoed command line (which spells it with quotes)
      const at = p ? this.out.indexOf(p.marker) : -1;
      if (p && at >= 0) {
        const text = this.out.slice(0, at);
        this.out = this.out.slice(at + p.marker.length);
        this.pending = undefined;
        p.resolve(text);
      }
    });
    const gone = (): void => {
      if (this.child === child) this.child = undefined;
      this.pending?.resolve(undefined);
      this.pending = undefined;
    };
    child.on('exit', gone);
    child.on('error', gone);
    child.stdin.on('error', () => undefined);
    return child;
  }

  /** The domain's state, undefined if not defined there (or the session failed: asked again next time). */
  async domstate(vm: string): Promise<string | undefined> {
    this.child ??= this.start();
    const id = `@@vmplace-sample-${++this.n}`;
    const child = this.child;
    const text = await new Promise<string | undefined>((resolve) => {
      // a libvirtd that does not answer in 10 s: this observation says nothing, a new session next
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      this.pending = {
        marker: `${id}@@`,
        resolve: (t) => {
          clearTimeout(timer);
          resolve(t);
        },
      };
      child.stdin!.write(`domstate ${vm}\necho "${id}""@@"\n`);
    });
    if (text === undefined) return undefined;
    // what is left once the prompts and the echoed command lines are taken out: the state
    const lines = text
      .split('\n')
      .map((l) => l.replace(/^(virsh # )+/, '').trim())
      .filter((l) => l && l !== `domstate ${vm}` && !l.startsWith('echo "@@vmplace-sample-'));
    return lines[0];
  }

  close(): void {
    this.child?.stdin?.end();
    this.child = undefined;
  }
}

/**
 * Every `everyMs` (default 100; an observation that takes longer delays the next one) ask each
 * libvirt connection for the VM's state and count the guest's QEMU processes on this machine.
 * The VM counts as running on a connection while its state there is `running` or `paused`
 * (paused: the first moment of `virsh save`, or a pause for the move); `shut off` (saved to its
 * state file, or not there) does not count.
 */
export function samplePlacement(vm: string, uris: readonly string[], everyMs = 100): PlacementSampler {
  const samples: PlacementSample[] = [];
  const t0 = Date.now();
  let stopped = false;
  const sessions = uris.map((uri) => new VirshSession(uri));
  const loop = (async () => {
    while (!stopped) {
      const started = Date.now();
      const states: Record<string, string | undefined> = {};
      await Promise.all(
        uris.map(async (uri, i) => {
          states[uri] = await sessions[i]!.domstate(vm);
        }),
      );
      const qemus = await countProcesses(`guest=${vm},`);
      const runningOn = uris.filter((u) => states[u] === 'running' || states[u] === 'paused');
      samples.push({ t: started - t0, states, qemus, runningOn });
      await sleep(Math.max(0, everyMs - (Date.now() - started)));
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      await loop;
      for (const s of sessions) s.close();
      return samples;
    },
  };
}

/**
 * What the samples say: never on two hosts and never two QEMU processes; the stretches where the
 * VM ran nowhere (the pause of a quick migration: saved, not yet restored); the longest of them.
 */
export function summarisePlacement(samples: readonly PlacementSample[]): {
  observations: number;
  maxHosts: number;
  maxQemus: number;
  /** stretches of consecutive observations where it ran nowhere, in ms (first to last + 1 interval) */
  gapsMs: number[];
} {
  const gapsMs: number[] = [];
  let gapStart: number | undefined;
  let lastT = 0;
  for (const s of samples) {
    if (s.runningOn.length === 0 && gapStart === undefined) gapStart = s.t;
    if (s.runningOn.length > 0 && gapStart !== undefined) {
      gapsMs.push(s.t - gapStart);
      gapStart = undefined;
    }
    lastT = s.t;
  }
  if (gapStart !== undefined) gapsMs.push(lastT - gapStart);
  return {
    observations: samples.length,
    maxHosts: Math.max(0, ...samples.map((s) => s.runningOn.length)),
    maxQemus: Math.max(0, ...samples.map((s) => s.qemus)),
    gapsMs,
  };
}

/**
 * How many processes have `needle` in their command line (what `pgrep -f` matches), read from
 * /proc in this process: a sampler that spawned pgrep 10 times a second added to the load of
 * the busy machine it measures.
 */
export async function countProcesses(needle: string): Promise<number> {
  let n = 0;
  for (const pid of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    const cmdline = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.replace(/\0/g, ' ').includes(needle)) n++;
  }
  return n;
}

export async function exists(p: string): Promise<boolean> {
  return fs.access(p).then(
    () => true,
    () => false,
  );
}
