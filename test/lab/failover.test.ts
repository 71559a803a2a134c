/**
 * Several `vmplace daemon` replicas on one fleet (issue 12), end to end: a real 3-member etcd on
 * loopback, three real daemons following one bare git remote, real libvirt (qemu:///system,
 * storage a ↔ b on this machine) and a real writing guest. The owner of the VM's migration is
 * killed, stopped past its lease, or cut off from etcd in the middle of a step; another replica
 * finishes the migration once, every acknowledged guest write is on the target, and the VM
 * never runs twice.
 *
 * What "runs" means in the samples (every 100 ms, see samplePlacement): the domain's state on
 * the connection is `running` or `paused`, and separately the number of QEMU processes of the
 * guest on this machine. A saved domain (`shut off` between Saving and Restoring) runs nowhere.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { parse } from 'yaml';
import {
  ackedSequences,
  buildGuest,
  destroyVm,
  domState,
  dumpXml,
  ensureLab,
  LAB_URI,
  labTempDir,
  partitionFromEtcd,
  serialLogSize,
  serialSince,
  startEtcdCluster,
  verifyRecords,
  virsh,
  waitForAcks,
  type EtcdCluster,
} from '../../src/lab';
import { labHostManifest, labVmManifest, makeFleet, run, type Fleet } from './support/fleet';
import { humanClone, newBareRepo, readRemoteFile } from './support/daemon';
import { Replicas, samplePlacement, summarisePlacement, type PlacementSampler } from './support/replicas';
import { parseDomainXml } from '../../src/drivers/libvirt/xml';
import { ownerOf as rendezvousOwner } from '../../src/coord/rendezvous';
import type { VirtualMachineStatus } from '../../src/types';

jest.setTimeout(600_000);

const MiB = 1024 * 1024;
// 5 s, not the 3 s default: on this busy 2-core CI machine (three etcd members, three daemons,
// a TCG guest and the tests on two cores) etcd's keepalive answers took 0.7-1.5 s, and at 3 s a
// replica that was not killed lost its lease now and then (at 3/4 TTL without a proven
// keepalive) and handed the migration on: correct, but not the case under test. The takeover
// bound below is the TTL plus 3 s for the test's polling on such a machine.
const LEASE_TTL_MS = 5000;
const NAMES = ['r1', 'r2', 'r3'];

let root: string;
let bare: string;
let git: (...args: string[]) => Promise<string>;
let humanDir: string;
let etcd: EtcdCluster | undefined;
let replicas: Replicas | undefined;
let f: Fleet;
let desired: 'a' | 'b' = 'a';
let sampler: PlacementSampler | undefined;
/** serial log offset at the guest's latest boot by this test (its acks restart from 1 there) */
let bootOffset = 0;
const measured: string[] = [];

function manifests(): string {
  return labHostManifest(f.storage) + labVmManifest(f.vm, desired);
}

async function pushManifests(message: string): Promise<void> {
  await git('pull', '-q', '--rebase');
  await fs.writeFile(path.join(humanDir, 'manifests', 'fleet.yaml'), manifests());
  await git('add', '-A');
  await git('commit', '-q', '-m', message);
  for (let attempt = 1; ; attempt++) {
    try {
      await git('push', '-q', 'origin', 'main');
      return;
    } catch (err) {
      // a replica pushed a status commit between our pull and our push
      if (attempt >= 8) throw err;
      await git('pull', '-q', '--rebase');
    }
  }
}

async function until<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  timeoutMs = 180_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function placedOn(key: 'a' | 'b'): Promise<VirtualMachineStatus> {
  return until(`${f.vm} placed on ${key} in the remote's status`, async () => {
    const text = await readRemoteFile(bare, `status/vms/${f.vm}.yaml`);
    const s = text ? (parse(text) as VirtualMachineStatus) : undefined;
    return s?.phase === 'Placed' && s.placement?.disks.every((d) => d.storage === key) ? s : undefined;
  });
}

/**
 * Running once from storage `key` with every acknowledged record there, the guest going on from
 * its memory since `since` (no boot, no sequence going back). Ends by booting the guest again.
 */
async function expectRunningOnceWithAllData(key: 'a' | 'b', since: number): Promise<void> {
  const dir = f.storage[key];
  expect(await domState(f.vm)).toBe('running');
  const procs = (await run('pgrep', ['-f', `guest=${f.vm},`])).stdout.split('\n').filter(Boolean);
  expect(procs).toHaveLength(1);
  const want = f.disks.map((d) => path.join(dir, f.vm, path.basename(d.path)));
  expect(parseDomainXml(await dumpXml(f.vm)).disks.map((d) => d.path)).toEqual(want);
  expect(parseDomainXml(await dumpXml(f.vm, { inactive: true })).disks.map((d) => d.path)).toEqual(want);
  const before = (await serialSince(f.serialLog, bootOffset)).last;
  // the guest goes on writing after the move (acks of this boot, read from its boot on)
  await until(
    'the guest acknowledges new writes',
    async () => {
      const now = (await serialSince(f.serialLog, bootOffset)).last;
      return f.disks.every((d) => (now.get(d.target) ?? 0) >= (before.get(d.target) ?? 0) + 2);
    },
    30_000,
  );
  const seen = await serialSince(f.serialLog, since);
  expect({ boots: seen.boots, wentBack: seen.wentBack }).toEqual({ boots: 0, wentBack: [] });
  await virsh(['suspend', f.vm]);
  await virsh(['qemu-monitor-command', f.vm, '--hmp', 'info status']); // let QEMU settle
  const acked = await ackedSequences(f.serialLog);
  await virsh(['destroy', f.vm]);
  for (const d of f.disks) {
    const upTo = acked.get(d.target) ?? 0;
    expect(upTo).toBeGreaterThan(3);
    const check = await verifyRecords(path.join(dir, f.vm, path.basename(d.path)), d.target, upTo);
    expect({ disk: d.target, bad: check.bad }).toEqual({ disk: d.target, bad: [] });
  }
  bootOffset = await serialLogSize(f.serialLog);
  await virsh(['start', f.vm]);
  // wait until the guest is up and writing again (acks of this boot) before the next case moves it
  await until(
    'guest booted again and writing',
    async () => {
      const s = await serialSince(f.serialLog, bootOffset);
      return s.boots >= 1 && f.disks.every((d) => (s.last.get(d.target) ?? 0) >= 3);
    },
    90_000,
  );
}

interface Move {
  to: 'a' | 'b';
  since: number;
  owner: string;
}

/** Start moving the VM to the other storage; resolves with the replica that owns it. */
async function startMove(): Promise<Move> {
  const r = replicas!;
  // every replica runs (also one killed by a case that failed half-way) and sees all three
  for (const n of NAMES) if (!r.alive(n)) await r.restart(n);
  for (const n of NAMES)
    await until(
      `${n} sees 3 members`,
      async () => (await r.metric(n, 'vmplace_replica_members')) === 3,
      60_000,
    );
  // the lock is where rendezvous hashing puts it (a replica back from a kill takes its VMs
  // back from the one that held them meanwhile): that replica runs the migration
  const owner = rendezvousOwner(f.vm, NAMES)!;
  await until(`${owner} holds the lock of ${f.vm}`, async () => (await r.ownerOf(f.vm)) === owner, 60_000);
  const to = desired === 'a' ? 'b' : 'a';
  desired = to;
  const since = await serialLogSize(f.serialLog);
  // a case that failed half-way left its sampler running: stop it (else jest never exits)
  await sampler?.stop();
  sampler = samplePlacement(f.vm, [LAB_URI]);
  await pushManifests(`move ${f.vm} to ${to}`);
  return { to, since, owner };
}

/** The migration `id` finished once, Completed, by `by`; the VM ran on one host at every observation. */
async function expectFinishedOnce(id: string, by: string, label: string): Promise<{ pauseMs: unknown }> {
  const r = replicas!;
  const finished = await r.waitForLog((l) => l.msg === 'migration finished' && l.migration === id);
  // a moment for a late duplicate to show up before counting
  await r.waitForDone(f.vm, id);
  const all = r.logs((l) => l.msg === 'migration finished' && l.migration === id);
  expect(all.map((l) => ({ replica: l.replica, step: l.step }))).toEqual([
    { replica: by, step: 'Completed' },
  ]);
  const samples = await sampler!.stop();
  sampler = undefined;
  const p = summarisePlacement(samples);
  const odd = samples.filter((x) => x.qemus > 1 || x.runningOn.length > 1);
  if (odd.length) measured.push(`${label}: observations with two: ${JSON.stringify(odd.slice(0, 5))}`);
  expect(p.observations).toBeGreaterThan(10);
  expect(p.maxHosts).toBe(1);
  expect(p.maxQemus).toBe(1);
  // the VM was saved and restored once: one stretch where it ran nowhere
  expect(p.gapsMs.length).toBeLessThanOrEqual(1);
  measured.push(
    `${label}: ${p.observations} observations, never on two hosts or in two QEMU processes; ` +
      `ran nowhere ${p.gapsMs.map((g) => `${g} ms`).join(', ') || 'never'} (sampled); pauseMs ${String(finished.pauseMs)}`,
  );
  return { pauseMs: finished.pauseMs };
}

beforeAll(async () => {
  await ensureLab();
  await buildGuest();
  root = await labTempDir('vmplace-failover-');
  etcd = await startEtcdCluster({ dir: path.join(root, 'etcd'), name: `fo${process.pid}` });
  bare = await newBareRepo(root);
  humanDir = path.join(root, 'human');
  git = await humanClone(bare, humanDir);
  // two disks with 128 MiB of data each, copied at 64 MiB/s: CopyingBase lasts seconds
  f = await makeFleet(`vmp-fo-${process.pid}`, { fillBytes: 128 * MiB });
  await fs.mkdir(path.join(humanDir, 'manifests'), { recursive: true });
  await fs.writeFile(path.join(humanDir, 'manifests', 'fleet.yaml'), manifests());
  await fs.writeFile(path.join(humanDir, 'vmplace.yaml'), 'limits:\n  bandwidth: 64MiB/s\n');
  await git('add', '-A');
  await git('commit', '-q', '-m', 'fleet');
  await git('push', '-q', 'origin', 'HEAD:main');
  replicas = await Replicas.start({
    root,
    repo: bare,
    endpoints: etcd.endpoints,
    prefix: `/vmplace-fo-${process.pid}/`,
    names: NAMES,
    leaseTtl: `${LEASE_TTL_MS / 1000}s`,
  });
  for (const d of f.disks) await waitForAcks(f.serialLog, { disk: d.target, atLeast: 3, timeoutMs: 90_000 });
  await placedOn('a');
});

afterAll(async () => {
  if (sampler) await sampler.stop();
  // VMPLACE_FAILOVER_LOGS=DIR keeps every replica's log lines there (one file per replica)
  const keep = process.env.VMPLACE_FAILOVER_LOGS;
  if (keep && replicas) {
    await fs.mkdir(keep, { recursive: true });
    for (const r of replicas.all())
      await fs.writeFile(
        path.join(keep, `${r.name}.log`),
        r.runs.flatMap((d) => d.logs.map((l) => JSON.stringify(l))).join('\n') + '\n',
      );
  }
  await replicas?.close();
  await etcd?.stop();
  if (f) await destroyVm(f.vm).catch(() => undefined);
  console.log(`failover measurements (lease TTL ${LEASE_TTL_MS} ms):\n${measured.join('\n')}`);
  if (root) await fs.rm(root, { recursive: true, force: true }).catch(() => undefined);
});

describe('several daemons on one fleet (real etcd, real daemons, real libvirt)', () => {
  it.each(['CopyingBase', 'Saving', 'Merging'])(
    'kill -9 of the owner in %s: another replica finishes the migration once, nothing lost, the VM never runs twice',
    async (step) => {
      const r = replicas!;
      const { to, since, owner } = await startMove();
      const hit = await r.waitForStep(f.vm, step, { everyMs: 20 });
      const killedAt = Date.now();
      await r.kill(owner);
      // what the owner had persisted right after the kill (did it get further before dying?)
      const after = await r.persisted(f.vm);
      const takeover = await r.waitForLog(
        (l) => l.msg === 'taking over migration' && l.vm === f.vm && l.migration === hit.id,
        60_000,
      );
      expect(takeover.replica).not.toBe(owner);
      // the killed replica is the one that ran the migration up to the kill
      const ranBy = new Set(
        r
          .logs((l) => l.msg === 'migration step' && l.migration === hit.id && l.time <= killedAt)
          .map((l) => l.replica),
      );
      expect([...ranBy]).toEqual([owner]);
      const done = await r.waitForDone(f.vm, hit.id);
      const takeoverMs = takeover.time - killedAt;
      const completedMs = done.seenAt - killedAt;
      await placedOn(to);
      const { pauseMs } = await expectFinishedOnce(hit.id, takeover.replica, `kill -9 in ${step}`);
      measured.push(
        `kill -9 in ${step} (steps polled: ${hit.seen.join(' → ')}; persisted after the kill: ${after?.step ?? 'none'}; ` +
          `taken over in ${String(takeover.step)}): kill → 'taking over migration' ${takeoverMs} ms, ` +
          `kill → done in etcd ${completedMs} ms, pauseMs ${String(pauseMs)}`,
      );
      expect(takeoverMs).toBeLessThan(LEASE_TTL_MS + 3000);
      await expectRunningOnceWithAllData(to, since);
      await r.restart(owner);
    },
  );

  it('SIGSTOP of the owner past its lease, then SIGCONT: its writes are fenced, the other finishes once', async () => {
    const r = replicas!;
    const { to, since, owner } = await startMove();
    const hit = await r.waitForStep(f.vm, 'CopyingBase', { everyMs: 20 });
    const stoppedAt = Date.now();
    r.signal(owner, 'SIGSTOP');
    const takeover = await r.waitForLog(
      (l) => l.msg === 'taking over migration' && l.vm === f.vm && l.migration === hit.id,
      60_000,
    );
    expect(takeover.replica).not.toBe(owner);
    const woke = Date.now();
    r.signal(owner, 'SIGCONT');
    const stopped = r.get(owner).daemon;
    const logsBefore = stopped.logs.length;
    await r.waitForDone(f.vm, hit.id);
    await placedOn(to);
    await expectFinishedOnce(hit.id, takeover.replica, 'SIGSTOP/SIGCONT');
    // the woken replica learnt that it lost the VM, and never wrote a step of it again
    const after = stopped.logs.slice(logsBefore);
    const lostIt = after.filter((l) =>
      [
        'lease lost: this replica gives up its VMs',
        'lock lost: this replica stops the migration',
        'lock deleted under this replica',
        'migration handed over',
      ].includes(l.msg),
    );
    expect(lostIt.length).toBeGreaterThan(0);
    // A 'migration step' line is logged once etcd accepted the step's write. After the wake the
    // woken replica may still log the one write it had sent before it stopped, which etcd
    // committed while its lock was held (seen: logged 50 ms after the wake): then it is the step
    // the other replica found and took over in. Any other step would be a write after the loss.
    const stepsAfter = after.filter((l) => l.msg === 'migration step' && l.migration === hit.id);
    expect(stepsAfter.length).toBeLessThanOrEqual(1);
    for (const l of stepsAfter) expect(l.step).toBe(takeover.step);
    const fenced = await r.metric(owner, 'vmplace_replica_fenced_writes');
    measured.push(
      `SIGSTOP in CopyingBase: stop → 'taking over migration' ${takeover.time - stoppedAt} ms; ` +
        `after SIGCONT (${woke - stoppedAt} ms stopped) the woken replica logged: ${[...new Set(lostIt.map((l) => l.msg))].join('; ')}; ` +
        `its vmplace_replica_fenced_writes ${String(fenced)}`,
    );
    await expectRunningOnceWithAllData(to, since);
  });

  it('the owner cut off from etcd: /readyz says why, another replica finishes once; after the heal nothing is half-done', async () => {
    const r = replicas!;
    const { to, since, owner } = await startMove();
    const hit = await r.waitForStep(f.vm, 'CopyingBase', { everyMs: 20 });
    const cutAt = Date.now();
    const partition = await partitionFromEtcd(r.get(owner).target, etcd!);
    let why: string;
    try {
      why = await until(
        `${owner}'s /readyz says why while cut off`,
        async () => {
          const res = await fetch(`${r.get(owner).daemon.url}/readyz`);
          const text = await res.text();
          return res.status === 503 && /etcd/.test(text) ? text.trim() : undefined;
        },
        30_000,
      );
      const takeover = await r.waitForLog(
        (l) => l.msg === 'taking over migration' && l.vm === f.vm && l.migration === hit.id,
        60_000,
      );
      expect(takeover.replica).not.toBe(owner);
      measured.push(
        `partition in CopyingBase: cut → /readyz 503 "${why}"; cut → 'taking over migration' ${takeover.time - cutAt} ms`,
      );
      await r.waitForDone(f.vm, hit.id);
      await partition.heal();
      await placedOn(to);
      await expectFinishedOnce(hit.id, takeover.replica, 'partition');
    } finally {
      await partition.heal();
    }
    // healed: the cut-off replica is ready again and nothing of this migration is left in etcd
    await until(
      `${owner} ready again`,
      async () => (await fetch(`${r.get(owner).daemon.url}/readyz`)).status === 200,
      60_000,
    );
    expect(await r.persisted(f.vm)).toBeUndefined();
    expect(
      r
        .get(owner)
        .daemon.logs.filter(
          (l) => l.msg === 'migration step' && l.migration === hit.id && l.time > cutAt + LEASE_TTL_MS,
        ),
    ).toEqual([]);
    await expectRunningOnceWithAllData(to, since);
  });

  it("kill -9 of etcd's own leader during a migration: the migration completes, the daemons carry on", async () => {
    const r = replicas!;
    const { to, since } = await startMove();
    const hit = await r.waitForStep(f.vm, 'CopyingBase', { everyMs: 20 });
    const leader = await etcd!.leader();
    const killedAt = Date.now();
    await etcd!.kill(leader);
    const newLeader = await until('a new etcd leader', () => etcd!.leader(), 30_000);
    const electedMs = Date.now() - killedAt;
    const done = await r.waitForDone(f.vm, hit.id);
    await placedOn(to);
    const finished = r.logs((l) => l.msg === 'migration finished' && l.migration === hit.id);
    expect(finished.map((l) => l.step)).toEqual(['Completed']);
    await expectFinishedOnce(hit.id, finished[0]!.replica, 'etcd leader killed');
    for (const n of NAMES)
      await until(
        `${n} ready`,
        async () => (await fetch(`${r.get(n).daemon.url}/readyz`)).status === 200,
        60_000,
      );
    expect(NAMES.every((n) => r.alive(n))).toBe(true);
    measured.push(
      `etcd leader ${leader} killed in CopyingBase: new leader ${newLeader} seen after ${electedMs} ms; kill → migration done ${done.seenAt - killedAt} ms`,
    );
    await etcd!.restart(leader);
    await expectRunningOnceWithAllData(to, since);
  });
});
