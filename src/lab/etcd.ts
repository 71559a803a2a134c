/**
 * A real etcd cluster on loopback for lab tests and benchmarks: Debian's `etcd` (3.4), one
 * child process per member, no systemd. Members run under `setpriv --pdeathsig KILL`, so the
 * kernel kills them when the process that started them dies (even by SIGKILL); they are also
 * recorded in the lab's registry (see etcd-registry.ts) for `reapStaleEtcd()` and
 * scripts/lab/down.sh. Spawn them from the main thread: the parent-death signal follows the
 * thread that forked. Each member logs to `<dir>/<name>.log`; data lives in `<dir>/<name>.etcd`.
 * Election settings are etcd's defaults (heartbeat 100 ms, election timeout 1000 ms).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync, promises as fs } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';

import { reapStaleEtcd, registerEtcdMember, unregisterEtcdMember } from './etcd-registry';

export interface EtcdMember {
  name: string;
  /** pid of the running process (changes on restart); undefined while it is down */
  pid: number | undefined;
  clientUrl: string;
  peerUrl: string;
  dataDir: string;
  logFile: string;
}

export interface EtcdClusterOptions {
  /** directory for the members' data and logs (created if missing) */
  dir: string;
  /** number of members (default 3) */
  members?: number;
  /** prefix of member names and the cluster token (default `etcd`): members `etcd-1`... */
  name?: string;
  /** how long to wait for the cluster to become healthy (default 20 s) */
  startTimeoutMs?: number;
}

export interface EtcdCluster {
  /** client URLs of all members, in member order */
  readonly endpoints: string[];
  readonly members: readonly EtcdMember[];
  /** member name of the current raft leader, as the running members agree on it */
  leader(): Promise<string>;
  /** send a signal (default SIGKILL) and wait until the member exited */
  kill(name: string, signal?: NodeJS.Signals): Promise<void>;
  /** start a member that was killed again, on its data dir; resolves once it is healthy */
  restart(name: string, timeoutMs?: number): Promise<void>;
  /** wait until every running member reports healthy (it has a leader) */
  waitHealthy(timeoutMs?: number): Promise<void>;
  /** stop every member (SIGTERM, SIGKILL after 3 s), then remove their data dirs; idempotent */
  stop(): Promise<void>;
}

/** The cluster did not become healthy, or a member misbehaved. */
export class EtcdLabError extends Error {
  constructor(
    readonly reason: 'EtcdNotHealthy' | 'EtcdMemberExited' | 'EtcdUnknownMember' | 'EtcdNoLeader',
    message: string,
  ) {
    super(message);
    this.name = 'EtcdLabError';
  }
}

interface RunningMember extends EtcdMember {
  child: ChildProcess | undefined;
  exited: Promise<void>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Start a cluster; retries with new ports when a port was taken between picking and binding. */
export async function startEtcdCluster(opts: EtcdClusterOptions): Promise<EtcdCluster> {
  await reapStaleEtcd();
  await fs.mkdir(opts.dir, { recursive: true });
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const cluster = new LabEtcdCluster(opts, await freePorts(2 * (opts.members ?? 3)));
    try {
      await cluster.start(opts.startTimeoutMs ?? 20_000);
      return cluster;
    } catch (err) {
      lastError = err;
      await cluster.stop();
      if (!(await cluster.portCollision())) throw err;
    }
  }
  throw lastError;
}

/** Ports free right now on 127.0.0.1 (all bound at once, so they differ, then released). */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<net.Server>((resolve, reject) => {
          const s = net.createServer();
          s.once('error', reject);
          s.listen(0, '127.0.0.1', () => resolve(s));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  return ports;
}

/** POST to the member's grpc-gateway (JSON; 64-bit ids come back as strings). */
async function gateway<T>(clientUrl: string, route: string, timeoutMs = 1000): Promise<T> {
  const res = await fetch(`${clientUrl}/v3/${route}`, {
    method: 'POST',
    body: '{}',
    signal: AbortSignal.timeout(timeoutMs),
  });
  if (!res.ok) throw new Error(`${route}: HTTP ${res.status}`);
  return (await res.json()) as T;
}

async function healthy(clientUrl: string): Promise<boolean> {
  try {
    const res = await fetch(`${clientUrl}/health`, { signal: AbortSignal.timeout(1000) });
    return res.ok && ((await res.json()) as { health?: string }).health === 'true';
  } catch {
    return false;
  }
}

class LabEtcdCluster implements EtcdCluster {
  private readonly running: RunningMember[];
  private readonly token: string;

  constructor(opts: EtcdClusterOptions, ports: number[]) {
    const prefix = opts.name ?? 'etcd';
    this.token = `${prefix}-${process.pid}-${Date.now()}`;
    this.running = Array.from({ length: opts.members ?? 3 }, (_, i) => {
      const name = `${prefix}-${i + 1}`;
      return {
        name,
        pid: undefined,
        clientUrl: `http://127.0.0.1:${ports[2 * i]}`,
        peerUrl: `http://127.0.0.1:${ports[2 * i + 1]}`,
        dataDir: path.join(opts.dir, `${name}.etcd`),
        logFile: path.join(opts.dir, `${name}.log`),
        child: undefined,
        exited: Promise.resolve(),
      };
    });
  }

  get endpoints(): string[] {
    return this.running.map((m) => m.clientUrl);
  }

  get members(): readonly EtcdMember[] {
    return this.running.map(({ name, pid, clientUrl, peerUrl, dataDir, logFile }) => ({
      name,
      pid,
      clientUrl,
      peerUrl,
      dataDir,
      logFile,
    }));
  }

  async start(timeoutMs: number): Promise<void> {
    for (const m of this.running) await this.spawnMember(m);
    await this.waitHealthy(timeoutMs);
  }

  private async spawnMember(m: RunningMember): Promise<void> {
    const initialCluster = this.running.map((x) => `${x.name}=${x.peerUrl}`).join(',');
    const args = [
      '--pdeathsig',
      'KILL',
      '--',
      'etcd',
      `--name=${m.name}`,
      `--data-dir=${m.dataDir}`,
      `--listen-client-urls=${m.clientUrl}`,
      `--advertise-client-urls=${m.clientUrl}`,
      `--listen-peer-urls=${m.peerUrl}`,
      `--initial-advertise-peer-urls=${m.peerUrl}`,
      `--initial-cluster=${initialCluster}`,
      `--initial-cluster-token=${this.token}`,
      '--initial-cluster-state=new', // ignored once the data dir exists (restart)
    ];
    const log = openSync(m.logFile, 'a');
    try {
      // etcd first for the CPU and the disk (nice -10, best-effort I/O class at its highest), as
      // etcd's tuning guide asks of a shared machine: on a busy 2-core CI machine beside QEMU,
      // three daemons and the tests, its keepalive answers took over a second (measured)
      const child = spawn('nice', ['-n', '-10', 'ionice', '-c2', '-n0', 'setpriv', ...args], {
        stdio: ['ignore', log, log],
      });
      m.child = child;
      m.pid = child.pid;
      m.exited = new Promise((resolve) => child.once('exit', () => resolve()));
      child.once('exit', () => {
        if (m.child === child) {
          m.child = undefined;
          m.pid = undefined;
        }
        if (child.pid !== undefined) void unregisterEtcdMember(child.pid);
      });
      if (child.pid !== undefined) await registerEtcdMember(child.pid, m.dataDir);
    } finally {
      closeSync(log);
    }
  }

  private member(name: string): RunningMember {
    const m = this.running.find((x) => x.name === name);
    if (!m) throw new EtcdLabError('EtcdUnknownMember', `no etcd member ${name}`);
    return m;
  }

  async waitHealthy(timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const up = this.running.filter((m) => m.child);
      if (up.length === 0) throw new EtcdLabError('EtcdMemberExited', 'no etcd member is running');
      const ok = await Promise.all(up.map((m) => healthy(m.clientUrl)));
      if (ok.every(Boolean)) return;
      if (Date.now() > deadline) {
        const bad = up.filter((_, i) => !ok[i]).map((m) => `${m.name} (log ${m.logFile})`);
        throw new EtcdLabError('EtcdNotHealthy', `etcd not healthy after ${timeoutMs} ms: ${bad.join(', ')}`);
      }
      await sleep(100);
    }
  }

  async leader(): Promise<string> {
    type Status = { header: { member_id: string }; leader: string };
    const up = this.running.filter((m) => m.child);
    const answers = await Promise.all(
      up.map((m) => gateway<Status>(m.clientUrl, 'maintenance/status').catch(() => undefined)),
    );
    const idToName = new Map<string, string>();
    const votes = new Map<string, number>();
    answers.forEach((a, i) => {
      if (!a) return;
      idToName.set(a.header.member_id, up[i]!.name);
      if (a.leader !== '0') votes.set(a.leader, (votes.get(a.leader) ?? 0) + 1);
    });
    const quorum = Math.floor(this.running.length / 2) + 1;
    for (const [id, n] of votes) {
      const name = idToName.get(id);
      if (n >= quorum && name) return name;
    }
    throw new EtcdLabError('EtcdNoLeader', `no leader agreed by ${quorum} running members`);
  }

  async kill(name: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const m = this.member(name);
    if (!m.child) return;
    m.child.kill(signal);
    await m.exited;
  }

  async restart(name: string, timeoutMs = 20_000): Promise<void> {
    const m = this.member(name);
    if (m.child) throw new EtcdLabError('EtcdMemberExited', `etcd member ${name} is still running`);
    await this.spawnMember(m);
    const deadline = Date.now() + timeoutMs;
    while (!(await healthy(m.clientUrl))) {
      if (!m.child)
        throw new EtcdLabError('EtcdMemberExited', `etcd member ${name} exited (log ${m.logFile})`);
      if (Date.now() > deadline)
        throw new EtcdLabError('EtcdNotHealthy', `${name} not healthy after restart`);
      await sleep(100);
    }
  }

  async stop(): Promise<void> {
    await Promise.all(
      this.running.map(async (m) => {
        const child = m.child;
        if (!child) return;
        child.kill('SIGTERM');
        // a leader whose peers are gone may spend seconds handing over leadership
        const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
        await m.exited;
        clearTimeout(timer);
      }),
    );
    // only after every member stopped: a member whose data dir vanished may hang
    await Promise.all(this.running.map((m) => fs.rm(m.dataDir, { recursive: true, force: true })));
  }

  /** Did a member fail to start because its port was taken? (then start() is retried) */
  async portCollision(): Promise<boolean> {
    const logs = await Promise.all(this.running.map((m) => fs.readFile(m.logFile, 'utf8').catch(() => '')));
    return logs.some((l) => l.includes('address already in use'));
  }
}
