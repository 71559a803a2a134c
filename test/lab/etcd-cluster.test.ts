/**
 * The lab's etcd (src/lab/etcd.ts) and its partition (src/lab/partition.ts), against real etcd
 * members and real processes: the cluster forms, survives SIGKILL of its leader, takes a member
 * back, and a child process can be cut off from etcd (and only from etcd) and healed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { noop } from 'cockatiel';
import { Etcd3 } from 'etcd3';

import {
  labTempDir,
  newPartitionTarget,
  partitionFromEtcd,
  processStartTime,
  reapStaleEtcd,
  spawnOptionsFor,
  startEtcdCluster,
  type EtcdCluster,
  type Partition,
} from '../../src/lab';

jest.setTimeout(120_000);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Put with a deadline, so a call to an unreachable cluster fails instead of hanging. */
async function putWithin(client: Etcd3, key: string, value: string, ms: number): Promise<void> {
  await client
    .put(key)
    .value(value)
    .options({ deadline: Date.now() + ms });
}

/** Lines a child printed, with the time each arrived. */
interface Line {
  at: number;
  text: string;
}

function collectLines(child: ChildProcess): Line[] {
  const lines: Line[] = [];
  let buf = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      lines.push({ at: Date.now(), text: buf.slice(0, nl) });
      buf = buf.slice(nl + 1);
    }
  });
  return lines;
}

async function waitFor<T>(what: string, timeoutMs: number, probe: () => T | undefined): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

describe('lab etcd cluster', () => {
  let dir: string;
  let cluster: EtcdCluster | undefined;
  let client: Etcd3 | undefined;
  const children: ChildProcess[] = [];
  const partitions: Partition[] = [];

  beforeAll(async () => {
    dir = await labTempDir('vmplace-etcd-');
  });

  afterAll(async () => {
    for (const p of partitions) await p.heal();
    for (const c of children) c.kill('SIGKILL');
    client?.close();
    await cluster?.stop();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  it('forms a 3-member cluster with one leader', async () => {
    const t0 = Date.now();
    cluster = await startEtcdCluster({ dir, name: `lab${process.pid}` });
    const startMs = Date.now() - t0;
    const leader = await cluster.leader();
    console.log(`etcd lab: 3-member cluster healthy after ${startMs} ms; leader ${leader}`);
    expect(cluster.members).toHaveLength(3);
    expect(cluster.endpoints).toHaveLength(3);
    expect(cluster.members.map((m) => m.name)).toContain(leader);
    for (const m of cluster.members) expect(await processStartTime(m.pid!)).toBeDefined();
    // every member is recorded for scripts/lab/down.sh and reapStaleEtcd()
    const registry = path.join(process.env.VMPLACE_LAB_STATE_DIR ?? '/run/vmplace-lab', 'etcd');
    const recorded = await fs.readdir(registry);
    for (const m of cluster.members) expect(recorded).toContain(String(m.pid));
  });

  it('takes a write through the etcd3 client', async () => {
    client = new Etcd3({ hosts: cluster!.endpoints });
    await putWithin(client, 'lab/hello', 'world', 5000);
    expect(await client.get('lab/hello').string()).toBe('world');
  });

  it('elects a new leader after SIGKILL of the leader; writes go on; the member rejoins', async () => {
    const c = cluster!;
    // etcd3's default fault handling opens a per-host circuit breaker for 5 s after 3 failures;
    // `tuned` retries at once on the next host (the figure a daemon can reach)
    const tuned = new Etcd3({ hosts: c.endpoints, faultHandling: { host: () => noop } });
    try {
      await putWithin(tuned, 'lab/warm', '1', 5000);
      const old = await c.leader();
      const t0 = Date.now();
      await c.kill(old, 'SIGKILL');
      /** put every 50 ms (deadline 500 ms) until one succeeds; ms after the kill */
      const firstWrite = async (cl: Etcd3, key: string): Promise<number> => {
        for (let n = 1; ; n++) {
          try {
            await putWithin(cl, key, String(n), 500);
            return Date.now() - t0;
          } catch {
            if (Date.now() - t0 > 20_000) throw new Error(`no write within 20 s of the leader kill (${key})`);
            await sleep(50);
          }
        }
      };
      const newLeader = (async (): Promise<[string, number]> => {
        for (;;) {
          const l = await c.leader().catch(() => undefined);
          if (l) return [l, Date.now() - t0];
          if (Date.now() - t0 > 20_000) throw new Error('no new leader within 20 s');
          await sleep(20);
        }
      })();
      const [defaultMs, tunedMs, [leader, electedMs]] = await Promise.all([
        firstWrite(client!, 'lab/after-kill'),
        firstWrite(tuned, 'lab/after-kill-tuned'),
        newLeader,
      ]);
      console.log(
        `etcd lab: leader ${old} killed; new leader ${leader} seen after ${electedMs} ms; first write ok after ` +
          `${tunedMs} ms (etcd3, no host breaker), ${defaultMs} ms (etcd3 defaults)`,
      );
      expect(leader).not.toBe(old);
      expect(c.members.find((m) => m.name === old)!.pid).toBeUndefined();

      const t1 = Date.now();
      await c.restart(old);
      await c.waitHealthy(15_000);
      console.log(`etcd lab: ${old} restarted and healthy after ${Date.now() - t1} ms`);
      // the rejoined member serves the write made while it was down; a subchannel of its own,
      // since grpc-js shares subchannels between clients and the old one may be in backoff
      const own = new Etcd3({
        hosts: c.members.find((m) => m.name === old)!.clientUrl,
        grpcOptions: { 'grpc.use_local_subchannel_pool': 1 },
      });
      try {
        expect(await own.get('lab/after-kill-tuned').string()).toBeDefined();
        const last = await client!.get('lab/after-kill').string();
        expect(await own.get('lab/after-kill').string()).toBe(last);
      } finally {
        own.close();
      }
    } finally {
      tuned.close();
    }
  });

  it('cuts a child process off from etcd (and only from etcd) and heals it', async () => {
    const c = cluster!;
    const web = http.createServer((_req, res) => res.end('ok'));
    await new Promise<void>((r) => web.listen(0, '127.0.0.1', () => r()));
    const probeUrl = `http://127.0.0.1:${(web.address() as AddressInfo).port}/`;
    try {
      const target = newPartitionTarget();
      const writer = spawn(
        process.execPath,
        [
          path.join(__dirname, 'support', 'etcd-writer.js'),
          c.endpoints.join(','),
          'lab/child',
          '100',
          '1000',
          probeUrl,
        ],
        { ...spawnOptionsFor(target), stdio: ['pipe', 'pipe', 'inherit'] },
      );
      children.push(writer);
      const lines = collectLines(writer);
      const oks = (from: number): Line[] => lines.filter((l) => l.at >= from && l.text.startsWith('OK '));
      await waitFor('the child writing', 15_000, () => (oks(0).length >= 3 ? true : undefined));

      const tCut = Date.now();
      const partition = await partitionFromEtcd(target, c);
      partitions.push(partition);
      const cutMs = Date.now() - tCut;
      const firstErr = await waitFor('the child failing', 15_000, () =>
        lines.find((l) => l.at >= tCut && l.text.startsWith('ERR ')),
      );
      const noticedMs = firstErr.at - tCut;
      // the test process (another gid) keeps writing while the child is cut off
      const tOwn = Date.now();
      let ownWrites = 0;
      while (Date.now() - tOwn < 2500) {
        await putWithin(client!, 'lab/parent', String(++ownWrites), 1000);
        await sleep(100);
      }
      const duringCut = lines.filter((l) => l.at > firstErr.at);
      const tHeal = Date.now();
      await partition.heal();
      const healMs = Date.now() - tHeal;
      const firstOk = await waitFor('the child writing again', 30_000, () => oks(tHeal)[0]);
      const recoveredMs = firstOk.at - tHeal;
      console.log(
        `etcd lab partition: rules in ${cutMs} ms; child's first failed put ${noticedMs} ms after the cut ` +
          `(${firstErr.text}); parent wrote ${ownWrites} times meanwhile; heal in ${healMs} ms; ` +
          `child's first ok put ${recoveredMs} ms after heal (${firstOk.text})`,
      );
      expect(duringCut.filter((l) => l.text.startsWith('OK '))).toEqual([]);
      expect(duringCut.filter((l) => l.text.startsWith('ERR ')).length).toBeGreaterThanOrEqual(2);
      // the child still reached a local HTTP server while cut off from etcd
      expect(duringCut.filter((l) => l.text === 'HTTP ok').length).toBeGreaterThanOrEqual(1);
      expect(duringCut.filter((l) => l.text === 'HTTP err')).toEqual([]);
      expect(ownWrites).toBeGreaterThan(10);
    } finally {
      await new Promise<void>((r) => web.close(() => r()));
    }
  });

  it('leaves no member behind when the process that started it is killed', async () => {
    // a separate owner process (the built lab library, dist/lab) with a registry of its own
    const stateDir = path.join(dir, 'state');
    const ownerDir = path.join(dir, 'orphan');
    const lab = path.resolve(__dirname, '..', '..', 'dist', 'lab');
    const script =
      `require(${JSON.stringify(lab)}).startEtcdCluster({ dir: ${JSON.stringify(ownerDir)}, members: 1, name: 'orphan' })` +
      `.then((c) => console.log('PIDS ' + c.members.map((m) => m.pid).join(' ')));setInterval(() => {}, 1000);`;
    const owner = spawn(process.execPath, ['-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, VMPLACE_LAB_STATE_DIR: stateDir },
    });
    children.push(owner);
    const lines = collectLines(owner);
    const pidsLine = await waitFor('the owner starting etcd', 20_000, () =>
      lines.find((l) => l.text.startsWith('PIDS ')),
    );
    const pids = pidsLine.text.split(' ').slice(1).map(Number);
    expect(await fs.readdir(path.join(stateDir, 'etcd'))).toEqual(pids.map(String));
    const t0 = Date.now();
    owner.kill('SIGKILL');
    // the kernel kills the members (parent-death signal); no reaper is needed for that
    for (;;) {
      const alive = await Promise.all(pids.map((p) => processStartTime(p)));
      if (alive.every((a) => a === undefined)) break;
      if (Date.now() - t0 > 5000) throw new Error(`etcd members outlived their owner: ${pids.join(' ')}`);
      await sleep(20);
    }
    console.log(`etcd lab: members died ${Date.now() - t0} ms after SIGKILL of their owner`);
    // what the dead owner left behind (registry entries, data dirs) is cleaned up by the reaper
    const reaped = await reapStaleEtcd(stateDir);
    expect(reaped.forgotten.sort()).toEqual([...pids].sort());
    expect(await fs.readdir(path.join(stateDir, 'etcd'))).toEqual([]);
    expect((await fs.readdir(ownerDir)).filter((f) => f.endsWith('.etcd'))).toEqual([]);
  });
});
