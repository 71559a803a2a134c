/**
 * The reconciler of one replica among several, with a labelled FAKE coordination (an in-memory
 * stand-in for etcd: who holds which VM, the fleet's claims) and the stand-in steps of
 * fake-fleet.ts. What the etcd coordination itself does (leases, locks, fenced transactions) is
 * proven against a real etcd in test/lab; here: what the loop does with what it is told.
 */
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import type { Coordination, MigrationClaim } from '../../../src/coord/coordination';
import { FencedError } from '../../../src/errors';
import type { Fence } from '../../../src/machine/fence';
import { MigrationStore } from '../../../src/machine/store';
import { Reconciler } from '../../../src/reconciler/reconciler';
import { defaultSettings, type Settings } from '../../../src/settings';
import type { ActualState } from '../../../src/types';
import { fleet, standInSteps } from './fake-fleet';

/** FAKE etcd: locks by VM and the fleet's claims, shared by the replicas of one test. */
class FakeEtcd {
  readonly locks = new Map<string, { replica: string; revision: number }>();
  readonly claims = new Map<string, MigrationClaim>();
  revision = 1;
  claimsToken = 0;
}

/** FAKE coordination of one replica (see the header). */
class FakeCoordination implements Coordination {
  readonly shared = true;
  ready = true;
  /** VMs this replica should take at its next balance */
  wants = new Set<string>();
  private acquiredQueue: string[] = [];
  private lostQueue: string[] = [];
  readonly taken = new Map<string, number>();
  constructor(
    readonly replicaId: string,
    private readonly etcd: FakeEtcd,
  ) {}
  balance(vms: readonly string[]) {
    for (const vm of vms) {
      if (!this.wants.has(vm) || this.taken.has(vm) || this.etcd.locks.has(vm)) continue;
      const revision = ++this.etcd.revision;
      this.etcd.locks.set(vm, { replica: this.replicaId, revision });
      this.taken.set(vm, revision);
      this.acquiredQueue.push(vm);
    }
    const out = { acquired: this.acquiredQueue, lost: this.lostQueue };
    this.acquiredQueue = [];
    this.lostQueue = [];
    return Promise.resolve(out);
  }
  /** the lease expired: every lock goes, as etcd deletes them */
  die(): void {
    for (const vm of this.taken.keys()) {
      this.etcd.locks.delete(vm);
      this.lostQueue.push(vm);
    }
    this.taken.clear();
    this.wants.clear();
  }
  owns(vm: string): boolean {
    return this.taken.has(vm);
  }
  fenceFor(vm: string): Fence {
    const revision = this.taken.get(vm);
    const held = () => revision !== undefined && this.etcd.locks.get(vm)?.revision === revision;
    return {
      revision: String(revision ?? 'none'),
      held,
      check: () => {
        if (!held()) throw new FencedError(`${this.replicaId} lost ${vm}`);
      },
      ready: () =>
        held() ? Promise.resolve() : Promise.reject(new FencedError(`${this.replicaId} lost ${vm}`)),
    };
  }
  fleetMigrations() {
    return Promise.resolve({
      migrations: [...this.etcd.claims.values()],
      token: String(this.etcd.claimsToken),
    });
  }
  claim(c: MigrationClaim, token: string) {
    if (!this.taken.has(c.vm) || String(this.etcd.claimsToken) !== token) return Promise.resolve(undefined);
    this.etcd.claimsToken++;
    this.etcd.claims.set(c.vm, { ...c, replica: this.replicaId });
    return Promise.resolve(String(this.etcd.claimsToken));
  }
  isLeader() {
    return this.replicaId === 'a';
  }
  health() {
    return this.ready ? { ready: true } : { ready: false, why: 'etcd unreachable: test' };
  }
  stats() {
    return {
      replica: this.replicaId,
      members: [],
      owned: this.taken.size,
      leader: this.isLeader(),
      leaseOk: this.ready,
      leaseAgeSeconds: 0,
      fencedWrites: 0,
    };
  }
  onChange(): void {}
  store(local: MigrationStore) {
    return local;
  }
  close() {
    return Promise.resolve();
  }
}

let dir: string;
beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmplace-coord-'));
});
afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

const previous: ActualState = { vms: new Map(), hosts: new Map() };
const until = async (cond: () => boolean) => {
  for (let i = 0; i < 400 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
  expect(cond()).toBe(true);
};

/** Two replicas over one fleet of `n` VMs on one fake host, sharing a store (as etcd is shared). */
async function replicas(n: number, settings: Partial<Settings> = {}) {
  const { fake, desired } = fleet(n);
  const etcd = new FakeEtcd();
  const store = new MigrationStore(dir);
  await store.init();
  const gate = new Map<string, () => void>();
  const calls: string[] = [];
  const takeovers: string[] = [];
  const make = (id: string) => {
    const coord = new FakeCoordination(id, etcd);
    const rec = new Reconciler({
      driverFor: (h) => (h === 'hv' ? fake.driver('hv') : undefined),
      store,
      coordination: coord,
      logger: pino({ level: 'silent' }),
      actorsFor: (vm, run) =>
        standInSteps(fake, calls, {
          copyBase: async (v) => {
            await run.beforeStep(); // as the real steps do: the step's snapshot is stored first
            await new Promise<void>((r) => gate.set(`${id}:${v}`, r));
            return {};
          },
        })(vm),
      backoffBaseMs: 10,
      onTakeover: (vm, step) => takeovers.push(`${id}:${vm}@${step}`),
    });
    return { coord, rec };
  };
  const input = { desired, previous, settings: { ...defaultSettings(), ...settings } };
  return { a: make('a'), b: make('b'), etcd, store, gate, calls, takeovers, input };
}

/** Let every migration of both replicas run to its end (before the directory goes). */
async function drain(r: Awaited<ReturnType<typeof replicas>>): Promise<void> {
  for (let i = 0; i < 400 && r.a.rec.inFlight().length + r.b.rec.inFlight().length > 0; i++) {
    for (const release of r.gate.values()) release();
    await new Promise((res) => setTimeout(res, 5));
  }
  expect(r.a.rec.inFlight().length + r.b.rec.inFlight().length).toBe(0);
}

describe('reconciler of one replica among several (fake coordination, stand-in steps)', () => {
  it('starts migrations only of the VMs its replica holds', async () => {
    const r = await replicas(4, { limits: { ...defaultSettings().limits, perHost: 10 } });
    r.a.coord.wants = new Set(['vm-0', 'vm-2']);
    r.b.coord.wants = new Set(['vm-1', 'vm-3']);
    const pa = await r.a.rec.pass(r.input);
    const pb = await r.b.rec.pass(r.input);
    expect(pa.started).toEqual(['vm-0', 'vm-2']);
    expect(pb.started).toEqual(['vm-1', 'vm-3']);
    expect([...r.etcd.claims.keys()].sort()).toEqual(['vm-0', 'vm-1', 'vm-2', 'vm-3']);
    await drain(r);
  });

  it('counts the other replicas’ migrations against the fleet-wide limits', async () => {
    const r = await replicas(4, { limits: { ...defaultSettings().limits, concurrent: 2, perHost: 10 } });
    r.a.coord.wants = new Set(['vm-0', 'vm-2']);
    r.b.coord.wants = new Set(['vm-1', 'vm-3']);
    expect((await r.a.rec.pass(r.input)).started).toEqual(['vm-0', 'vm-2']);
    const pb = await r.b.rec.pass(r.input);
    expect(pb.started).toEqual([]);
    expect(pb.deferred.get('vm-1')).toMatch(/concurrent|limit/);
    await drain(r);
  });

  it('loses a start to a claim another replica made meanwhile, and asks for the next pass soon', async () => {
    const r = await replicas(2);
    r.a.coord.wants = new Set(['vm-0']);
    const realClaim = r.a.coord.claim.bind(r.a.coord);
    r.a.coord.claim = (c, token) => {
      r.etcd.claimsToken++; // another replica claimed between the read and this claim
      return realClaim(c, token);
    };
    const p = await r.a.rec.pass(r.input);
    expect(p.started).toEqual([]);
    expect(p.deferred.get('vm-0')).toMatch(/another replica/);
    expect(p.retrySoon).toBe(true);
  });

  it('starts nothing while the replica cannot prove its lease, and says why', async () => {
    const r = await replicas(1);
    r.a.coord.wants = new Set(['vm-0']);
    r.a.coord.ready = false;
    const p = await r.a.rec.pass(r.input);
    expect(p.started).toEqual([]);
    expect(p.deferred.get('vm-0')).toMatch(/etcd unreachable/);
  });

  it('stops a migration whose lock was lost; the new owner resumes it from its stored step', async () => {
    const r = await replicas(1);
    r.a.coord.wants = new Set(['vm-0']);
    expect((await r.a.rec.pass(r.input)).started).toEqual(['vm-0']);
    await until(() => r.gate.has('a:vm-0'));
    // a's lease expires while vm-0 copies its base; b is the owner now
    r.a.coord.die();
    await r.a.rec.pass(r.input);
    await until(() => r.a.rec.inFlight().length === 0);
    r.b.coord.wants = new Set(['vm-0']);
    await r.b.rec.pass(r.input);
    expect(r.takeovers).toEqual(['b:vm-0@CopyingBase']);
    await until(() => r.gate.has('b:vm-0'));
    // a's copy ends late: a writes nothing and runs no further step
    r.gate.get('a:vm-0')!();
    r.gate.get('b:vm-0')!();
    await until(() => r.b.rec.inFlight().length === 0);
    const after = r.calls.filter((c) => c.startsWith('vm-0:'));
    expect(after.filter((c) => c === 'vm-0:copyBase')).toHaveLength(2); // a's and b's
    expect(after.filter((c) => c === 'vm-0:saveVm')).toHaveLength(1); // b's only
    expect(after.filter((c) => c === 'vm-0:cleanUpSource')).toHaveLength(1);
    expect((await r.store.listActive()).records).toEqual([]);
    expect((await r.store.lastDone('vm-0'))?.snapshot).toMatchObject({ value: 'Completed' });
  });
});
