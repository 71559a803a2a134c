/**
 * 200 VMs shared by 3 replicas on a real etcd (3 members on loopback, src/lab/etcd.ts). Each
 * replica is what `vmplace daemon --etcd-endpoints` builds: a real `EtcdCoordination` and a real
 * `Reconciler` with the real migration machine and the real steps (src/app/compose.ts
 * `stepActorsFor`, fenced drivers), in one test process. The hypervisor is the labelled FAKE
 * world of test/support/fake-hypervisor.ts (20 hosts, 10 VMs each): this test proves how the
 * replicas divide and hand over work, not anything about libvirt. Copies take a while (a delay
 * in front of the fake transport) so that migrations are in flight when a replica dies.
 *
 * A replica "crashes": its etcd client is closed without revoking its lease (its keepalives
 * stop, its locks stay until the lease expires), its passes stop, and every later call of its
 * drivers and transports never returns (a dead process does nothing more on a host).
 */
import { performance } from 'node:perf_hooks';
import { promises as fs } from 'node:fs';
import pino from 'pino';
import type { Etcd3 } from 'etcd3';

import { stepActorsFor } from '../../src/app/compose';
import { READ_ONLY_DRIVER_METHODS } from '../../src/coord/fenced';
import { EtcdCoordination } from '../../src/coord/etcd/coordination';
import { etcdClient, type EtcdOptions } from '../../src/coord/etcd/options';
import { assign } from '../../src/coord/rendezvous';
import type { DriverSet } from '../../src/drivers/factory';
import type { HypervisorDriver } from '../../src/drivers/driver';
import { labTempDir, startEtcdCluster, type EtcdCluster } from '../../src/lab';
import type { RunResult } from '../../src/machine/runner';
import { MigrationStore } from '../../src/machine/store';
import { Reconciler, type PassInput } from '../../src/reconciler/reconciler';
import { defaultSettings } from '../../src/settings';
import type { DesiredState } from '../../src/types';
import type { Transport } from '../../src/transfer/transport';
import { desiredState, host, vm } from '../support/builders';
import { FakeWorld } from '../support/fake-hypervisor';

jest.setTimeout(180_000);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const HOSTS = 20;
const PER_HOST = 10;
const VMS = Array.from({ length: HOSTS * PER_HOST }, (_, i) => `vm-${String(i).padStart(3, '0')}`);
const hostOf = (i: number): string => `hv-${String(Math.floor(i / PER_HOST)).padStart(2, '0')}`;
/** every third VM is wanted on storage b: 67 migrations */
const MOVING = new Set(VMS.filter((_, i) => i % 3 === 0));
const REPLICAS = ['replica-1', 'replica-2', 'replica-3'];
const LEASE_TTL_MS = 3000;
/** the fleet-wide limit of vmplace.yaml (`limits.concurrent`) */
const CONCURRENT = 5;
/** how long one copy of the fake transport takes */
const COPY_MS = 400;

function fakeFleet(): { world: FakeWorld; stay: DesiredState; move: DesiredState } {
  const world = new FakeWorld();
  const hosts = Array.from({ length: HOSTS }, (_, h) => `hv-${String(h).padStart(2, '0')}`);
  for (const h of hosts) world.addHost(h, { roots: { '/pool/a': undefined, '/pool/b': undefined } });
  VMS.forEach((name, i) =>
    world.addVm(hostOf(i), {
      name,
      state: 'running',
      disks: [{ target: 'vda', path: `/pool/a/${name}/vda.qcow2`, blocks: 4 }],
    }),
  );
  const hostObjs = hosts.map((h) => host(h, { storage: { a: '/pool/a', b: '/pool/b' } }));
  const stay = desiredState([...hostObjs, ...VMS.map((n, i) => vm(n, hostOf(i), 'a'))]);
  const move = desiredState([...hostObjs, ...VMS.map((n, i) => vm(n, hostOf(i), MOVING.has(n) ? 'b' : 'a'))]);
  return { world, stay, move };
}

/** The VM a driver call is about: its name, or a path below `/pool/<x>/<vm>/`. */
function vmOfArgs(args: unknown[]): string | undefined {
  for (const a of args) {
    if (typeof a !== 'string') continue;
    const m = /vm-\d{3}/.exec(a);
    if (m) return m[0];
  }
  return undefined;
}

interface OpLog {
  replica: string;
  vm: string;
  op: string;
  at: number;
}

/** One replica's process: what `vmplace daemon --etcd-*` wires, over the fake world. */
class Replica {
  dead = false;
  stopped = false;
  readonly client: Etcd3;
  readonly coord: EtcdCoordination;
  readonly rec: Reconciler;
  readonly takenOver: { vm: string; step: string; at: number }[] = [];
  readonly finished: { vm: string; result: RunResult; at: number }[] = [];
  readonly started: string[] = [];
  readonly passErrors: unknown[] = [];
  /** each VM's persisted step, as this replica's runs reported it */
  readonly steps = new Map<string, string>();
  private wake: () => void = () => undefined;
  private loop?: Promise<void>;

  constructor(
    readonly name: string,
    world: FakeWorld,
    etcd: EtcdOptions,
    private readonly input: () => PassInput,
    ops: OpLog[],
    events: {
      started: (vm: string) => void;
      finished: (vm: string, r: RunResult) => void;
    },
  ) {
    const log = pino({ level: 'silent' });
    const opts = { ...etcd, replicaId: name };
    this.client = etcdClient(opts);
    this.coord = new EtcdCoordination(opts, log, this.client);
    const store = this.coord.store(new MigrationStore('/nonexistent/vmplace-scale'));
    // a dead process never answers again
    const hang = <T>(): Promise<T> => new Promise<T>(() => undefined);
    const driver = (h: string): HypervisorDriver => {
      const real = world.driver(h);
      return new Proxy(real, {
        get: (t, k, r) => {
          const v: unknown = Reflect.get(t, k, r);
          if (typeof v !== 'function') return v;
          return (...args: unknown[]): unknown => {
            if (this.dead) return hang();
            const vmName = READ_ONLY_DRIVER_METHODS.has(String(k)) ? undefined : vmOfArgs(args);
            if (vmName) ops.push({ replica: name, vm: vmName, op: String(k), at: performance.now() });
            return (v as (...a: unknown[]) => unknown).apply(t, args);
          };
        },
      });
    };
    const transport = (from: string, to: string): Transport | undefined => {
      const real = world.transport(from, to);
      if (!real) return undefined;
      return {
        name: real.name,
        reachable: () => (this.dead ? hang() : real.reachable()),
        copy: async (src, dst, o) => {
          if (this.dead) return hang();
          await sleep(COPY_MS);
          if (this.dead) return hang();
          const vmName = vmOfArgs([src]);
          if (vmName) ops.push({ replica: name, vm: vmName, op: 'copy', at: performance.now() });
          return real.copy(src, dst, o);
        },
      };
    };
    const drivers: DriverSet = {
      get: (h) => (world.hosts.has(h) ? driver(h) : undefined),
      transportFor: transport,
      closeAll: () => Promise.resolve(),
    };
    this.rec = new Reconciler({
      driverFor: (h) => drivers.get(h),
      store,
      coordination: this.coord,
      logger: log,
      backoffBaseMs: 50,
      actorsFor: (_vm, run) =>
        stepActorsFor({ drivers: () => drivers, desired: () => this.input().desired, store }, run),
      onStarted: (m) => {
        this.started.push(m.vm);
        events.started(m.vm);
      },
      onTransition: (v, step) => {
        this.steps.set(v, step);
      },
      onTakeover: (v, step) => this.takenOver.push({ vm: v, step, at: performance.now() }),
      onFinished: (v, result) => {
        if (this.dead) return;
        this.finished.push({ vm: v, result, at: performance.now() });
        events.finished(v, result);
      },
    });
    this.coord.onChange(() => this.wake());
  }

  start(): void {
    this.coord.start();
    this.loop = (async () => {
      while (!this.stopped && !this.dead) {
        try {
          await this.rec.pass(this.input());
        } catch (err) {
          this.passErrors.push(err);
        }
        // the daemon runs a pass when the members or locks change, and on a timer
        await new Promise<void>((r) => {
          this.wake = r;
          setTimeout(r, 200);
        });
      }
    })();
  }

  /** kill -9, as far as etcd and the hosts can tell */
  crash(): void {
    this.dead = true;
    this.wake();
    this.client.close();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wake();
    if (!this.dead) {
      await this.loop;
      return this.coord.close();
    }
    // a dead one's loop may sit forever in a pass whose driver call never returns (a crash in
    // the middle of a pass): it is not awaited. Its keepalive timer still runs against its
    // closed client: close() stops it at once; the rest of close() (cancelling watches,
    // revoking) waits on that client forever
    await Promise.race([this.coord.close().catch(() => undefined), sleep(1000)]);
  }
}

async function waitFor(
  what: string,
  timeoutMs: number,
  cond: () => boolean | Promise<boolean>,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await cond())) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

describe('200 VMs over 3 replicas on real etcd (FAKE hypervisor)', () => {
  let dir: string;
  let cluster: EtcdCluster | undefined;
  const replicas: Replica[] = [];

  beforeAll(async () => {
    dir = await labTempDir('vmplace-scale-');
    cluster = await startEtcdCluster({ dir, name: 'scale' });
  });
  afterAll(async () => {
    await Promise.all(replicas.map((r) => r.stop().catch(() => undefined)));
    await cluster?.stop();
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('balances ownership, keeps the fleet-wide limit, and hands a dead replica’s VMs and migrations to the others within TTL + 1 s', async () => {
    const { world, stay, move } = fakeFleet();
    const settings = {
      ...defaultSettings(),
      limits: { concurrent: CONCURRENT, perHost: 2, perStorage: 100 },
    };
    let input: PassInput = { desired: stay, previous: { vms: new Map(), hosts: new Map() }, settings };
    const etcd: EtcdOptions = {
      endpoints: cluster!.endpoints,
      prefix: `/vmplace-scale-${process.pid}/`,
      replicaId: '',
      leaseTtlMs: LEASE_TTL_MS,
    };
    const ops: OpLog[] = [];
    // the migrations in flight in the fleet at each moment (exact: one process sees every event)
    const inFlight = new Set<string>();
    let maxInFlight = 0;
    const completed = new Set<string>();
    const events = {
      started: (v: string) => {
        inFlight.add(v);
        maxInFlight = Math.max(maxInFlight, inFlight.size);
      },
      finished: (v: string, r: RunResult) => {
        if (r.lost) return; // handed over: still in flight in the fleet
        inFlight.delete(v);
        if (r.step === 'Completed') completed.add(v);
      },
    };
    for (const name of REPLICAS) replicas.push(new Replica(name, world, etcd, () => input, ops, events));
    for (const r of replicas) r.start();

    // ---- ownership: every VM owned by exactly one replica, as rendezvous hashing says
    const want = assign(VMS, REPLICAS);
    await waitFor('ownership to settle', 20_000, () =>
      replicas.every((r) => r.coord.stats().owned === want.get(r.name)!.length),
    );
    const owned = Object.fromEntries(replicas.map((r) => [r.name, r.coord.stats().owned]));
    const mean = VMS.length / REPLICAS.length;
    console.log(`ownership of ${VMS.length} VMs: ${JSON.stringify(owned)} (mean ${mean.toFixed(1)})`);
    for (const r of replicas) {
      expect(Math.abs(r.coord.stats().owned - mean) / mean).toBeLessThanOrEqual(0.2);
      for (const v of want.get(r.name)!) expect(r.coord.owns(v)).toBe(true);
    }
    for (const v of VMS) expect(replicas.filter((r) => r.coord.owns(v)).length).toBe(1);

    // ---- many migrations, one fleet-wide limit; etcd's claims sampled as a second witness
    let maxClaims = 0;
    const sampler = etcdClient({ ...etcd, replicaId: 'sampler' });
    let sampling = true;
    const sampled = (async () => {
      while (sampling) {
        const n = (
          await sampler
            .getAll()
            .prefix(`${etcd.prefix}claims/`)
            .keys()
            .catch(() => [])
        ).length;
        maxClaims = Math.max(maxClaims, n);
        await sleep(25);
      }
    })();
    input = { ...input, desired: move };

    // ---- crash a replica with two migrations in flight, at different steps
    let victim: Replica | undefined;
    await waitFor('a replica with two migrations in flight at different steps', 60_000, () => {
      victim = replicas.find(
        (r) => r.rec.inFlight().length >= 2 && new Set(r.rec.inFlight().map((v) => r.steps.get(v))).size >= 2,
      );
      return victim !== undefined && completed.size >= 5;
    });
    const dead = victim!;
    const orphans = want.get(dead.name)!;
    const orphanedRuns = dead.rec.inFlight();
    const stepsAtCrash = orphanedRuns.map((v) => `${v} in ${dead.steps.get(v)}`).join(', ');
    const leaseAgeAtCrash = dead.coord.stats().leaseAgeSeconds * 1000;
    const crashAt = performance.now();
    dead.crash();
    const survivors = replicas.filter((r) => r !== dead);

    // its VMs: taken by the survivors (every lock), spread over both
    await waitFor('the survivors to own every VM', 15_000, () =>
      orphans.every((v) => survivors.some((s) => s.coord.owns(v))),
    );
    const locksAt = performance.now() - crashAt;
    // its migrations in flight: taken over from their persisted step
    await waitFor('the takeover of every migration in flight', 15_000, () =>
      orphanedRuns.every((v) => survivors.some((s) => s.takenOver.some((t) => t.vm === v))),
    );
    const takeovers = survivors.flatMap((s) =>
      s.takenOver.filter((t) => orphanedRuns.includes(t.vm)).map((t) => ({ ...t, by: s.name })),
    );
    const firstTakeover = Math.min(...takeovers.map((t) => t.at)) - crashAt;
    const lastTakeover = Math.max(...takeovers.map((t) => t.at)) - crashAt;
    const spread = Object.fromEntries(
      survivors.map((s) => [s.name, orphans.filter((v) => s.coord.owns(v)).length]),
    );
    console.log(
      `${dead.name} crashed with ${orphanedRuns.length} migrations in flight (${stepsAtCrash}), ` +
        `last keepalive ${leaseAgeAtCrash.toFixed(0)} ms before; lease TTL ${LEASE_TTL_MS} ms\n` +
        `  all ${orphans.length} of its VMs owned by survivors after ${locksAt.toFixed(0)} ms: ${JSON.stringify(spread)}\n` +
        `  its migrations taken over after ${firstTakeover.toFixed(0)}..${lastTakeover.toFixed(0)} ms ` +
        `(${takeovers.map((t) => `${t.vm} in ${t.step} by ${t.by}`).join('; ')})`,
    );
    expect(lastTakeover).toBeLessThanOrEqual(LEASE_TTL_MS + 1000);
    expect(locksAt).toBeLessThanOrEqual(LEASE_TTL_MS + 1000);
    for (const s of survivors) expect(spread[s.name]).toBeGreaterThan(orphans.length / 4);
    for (const v of VMS) expect(survivors.filter((s) => s.coord.owns(v)).length).toBe(1);

    // ---- every migration finishes, the orphaned ones by their new owners
    await waitFor('every migration to complete', 120_000, () => completed.size === MOVING.size);
    sampling = false;
    await sampled;
    sampler.close();
    for (const v of orphanedRuns) {
      const by = survivors.find((s) => s.finished.some((f) => f.vm === v && f.result.step === 'Completed'));
      expect({ v, by: by?.name }).toEqual({ v, by: expect.any(String) });
    }
    console.log(
      `${MOVING.size} migrations completed; at most ${maxInFlight} in flight at once in the fleet ` +
        `(${maxClaims} claims seen in etcd at once), limit ${CONCURRENT}; ` +
        `started per replica ${JSON.stringify(Object.fromEntries(replicas.map((r) => [r.name, r.started.length])))}`,
    );
    expect(maxInFlight).toBeLessThanOrEqual(CONCURRENT);
    expect(maxClaims).toBeLessThanOrEqual(CONCURRENT);
    expect(maxInFlight).toBeGreaterThanOrEqual(CONCURRENT - 1);

    // ---- the world: every VM placed once, where it should be; never touched by two replicas at once
    expect(world.violations).toEqual([]);
    for (const [i, name] of VMS.entries()) {
      expect({ name, active: world.activeOn(name) }).toEqual({ name, active: [hostOf(i)] });
      const def = world.host(hostOf(i)).vms.get(name)!.persistent!;
      const root = MOVING.has(name) ? '/pool/b/' : '/pool/a/';
      expect({ name, path: def.disks[0]!.path.startsWith(root) }).toEqual({ name, path: true });
    }
    // a VM's ops come from one replica, then (after a crash) from another: never back and forth
    const byVm = new Map<string, string[]>();
    for (const o of ops) {
      const seq = byVm.get(o.vm) ?? [];
      if (seq[seq.length - 1] !== o.replica) seq.push(o.replica);
      byVm.set(o.vm, seq);
    }
    const interleaved = [...byVm].filter(([, seq]) => new Set(seq).size !== seq.length);
    expect(interleaved).toEqual([]);
    expect(ops.filter((o) => o.replica === dead.name && o.at > crashAt)).toEqual([]);
    // etcd holds no migration left behind
    const left = await (async () => {
      const c = etcdClient({ ...etcd, replicaId: 'check' });
      try {
        return await c.getAll().prefix(`${etcd.prefix}migrations/`).keys();
      } finally {
        c.close();
      }
    })();
    expect(left).toEqual([]);
    for (const s of survivors) expect(s.passErrors).toEqual([]);
  });
});
