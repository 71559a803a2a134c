/**
 * Lose the lock at every op: two daemon replicas share a fleet, and replica A, which runs a
 * migration, loses the VM's lock (its lease expired: it was stopped, or cut off from etcd) right
 * after each driver or transport op of the migration in turn. The real runner, steps and fence
 * wiring (`stepGate`, `fencedDriver`, `fencedTransport`, `storeRecords(store, fence)`, the
 * runner's `fence`) run against the FAKE hypervisor (test/support/fake-hypervisor.ts: the lab
 * tests prove libvirt). For every case:
 * - after the fence closed, A starts no call that changes a host and writes no state;
 * - A's run ends abandoned (`lost`), unless it had already finished;
 * - replica B, which took the lock, resumes from the state A persisted (the store is shared, as
 *   etcd is) once A's step in flight has settled (the lease's margin: a replica starts nothing
 *   after half its TTL without a keepalive, the lock is free only after the whole TTL), and
 *   finishes with the VM running on exactly one host, every acknowledged guest write in its
 *   disks and no file of the migration left.
 */
import { fencedDriver, fencedTransport, READ_ONLY_DRIVER_METHODS } from '../../../src/coord/fenced';
import { FencedError } from '../../../src/errors';
import type { HypervisorDriver } from '../../../src/drivers/driver';
import type { Fence } from '../../../src/machine/fence';
import { startMigration, stepGate, type RunResult } from '../../../src/machine/runner';
import { createStepActors, type StepDeps, storeRecords } from '../../../src/machine/steps';
import type { Transport } from '../../../src/transfer/transport';
import { FakeDriver, type OpRecord } from '../../support/fake-hypervisor';
import {
  buildScenario,
  describeOp,
  dryRun,
  MemoryStore,
  outcomeProblems,
  STRATEGIES,
  type StrategyCase,
} from '../../support/machine-harness';

/** A fence that closes when `lose()` is called. */
function testFence(): Fence & { lose(): void; lost: boolean } {
  const f = {
    lost: false,
    revision: '7',
    lose() {
      f.lost = true;
    },
    held: () => !f.lost,
    ready: () => (f.lost ? Promise.reject(new FencedError('the lock is lost')) : Promise.resolve()),
    check() {
      if (f.lost) throw new FencedError('the lock is lost');
    },
  };
  return f;
}

/** Calls that passed the fence (reached the driver or transport) after it closed. */
function recorder(fence: { lost: boolean }) {
  const late: string[] = [];
  const driver = (d: HypervisorDriver, host: string): HypervisorDriver =>
    new Proxy(d, {
      get(target, prop, receiver) {
        const v: unknown = Reflect.get(target, prop, receiver);
        if (typeof v !== 'function' || typeof prop !== 'string') return v;
        return (...args: unknown[]) => {
          if (fence.lost && !READ_ONLY_DRIVER_METHODS.has(prop)) late.push(`${prop} on ${host}`);
          return (v as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
  const transport = (t: Transport): Transport => ({
    ...t,
    reachable: () => t.reachable(),
    copy: (...args: Parameters<Transport['copy']>) => {
      if (fence.lost) late.push(`copy ${args[0]} -> ${args[1]}`);
      return t.copy(...args);
    },
  });
  return { late, driver, transport };
}

/** One replica's run: the reconciler's wiring (see Reconciler.launch and app/compose.ts). */
function replicaRun(
  s: ReturnType<typeof buildScenario>,
  store: MemoryStore,
  fence: Fence,
  wrap: ReturnType<typeof recorder>,
  start: Parameters<typeof startMigration>[0],
) {
  const w = s.world;
  const gate = stepGate(fence);
  const drivers = new Map<string, HypervisorDriver>();
  const deps: StepDeps = {
    driverFor: (h) => {
      let d = drivers.get(h);
      if (!d)
        drivers.set(h, (d = fencedDriver(wrap.driver(new FakeDriver(w, w.host(h), w.epoch), h), fence)));
      return d;
    },
    transportFor: (a, b) => {
      const t = w.transport(a, b);
      return t && fencedTransport(wrap.transport(t), fence);
    },
    hostSpecFor: (h) => ({ driver: 'libvirt', uri: `fake://${h}`, transferAddress: h }),
    retryBaseMs: 1,
    now: () => w.clock,
    ...storeRecords(store, fence),
    ...gate.hooks,
  };
  const handle = startMigration(start, { actors: createStepActors(deps), store, fence });
  gate.bind(handle);
  return { handle, gate };
}

async function loseLockAfter(kind: StrategyCase, op: OpRecord): Promise<string[]> {
  const s = buildScenario(kind);
  const w = s.world;
  const store = new MemoryStore(w);
  const fenceA = testFence();
  const seen = recorder(fenceA);
  const guest = w.afterOp;
  w.afterOp = (world, o) => {
    guest?.(world, o);
    if (o.n === op.n) fenceA.lose();
  };
  // state writes that reach the store after the fence closed
  const writes: string[] = [];
  for (const m of ['save', 'markIntent', 'recordOwned', 'finish'] as const) {
    const real = store[m].bind(store) as (...a: unknown[]) => Promise<void>;
    (store as unknown as Record<string, unknown>)[m] = (...a: unknown[]) => {
      if (fenceA.lost) writes.push(m);
      return real(...a);
    };
  }
  const realNow = Date.now;
  Date.now = () => w.clock;
  try {
    const a = replicaRun(s, store, fenceA, seen, {
      input: s.input,
      startedAt: new Date(w.clock).toISOString(),
    });
    const resA: RunResult = await a.handle.done;
    await a.gate.lastStep();
    const problems: string[] = [];
    if (seen.late.length) problems.push(`A acted after losing the lock: ${seen.late.join(', ')}`);
    if (writes.length) problems.push(`A wrote state after losing the lock: ${writes.join(', ')}`);
    if (!fenceA.lost) return [...problems, ...outcomeProblems(s, resA)];
    if (!resA.lost && !['Completed', 'RolledBack'].includes(resA.step))
      problems.push(`A ended ${resA.step}, neither abandoned nor finished`);
    // B: the lock is its own now; it resumes whatever A persisted
    w.afterOp = guest;
    const rec = (await store.listActive()).records.find((r) => r.id === s.input.id);
    if (!rec) return [...problems, ...outcomeProblems(s, resA)];
    const fenceB = testFence();
    const b = replicaRun(s, store, fenceB, recorder(fenceB), { snapshot: rec.snapshot });
    const resB = await b.handle.done;
    if (resB.step !== 'Completed')
      problems.push(`B ended ${resB.step} (${resB.context.lastError?.reason ?? ''})`);
    return [...problems, ...outcomeProblems(s, resB)];
  } finally {
    Date.now = realNow;
  }
}

const counts: Record<string, number> = {};
afterAll(() => {
  console.log(
    Object.entries(counts)
      .map(([k, n]) => `${k}: lock lost after each of ${n} ops`)
      .join('\n'),
  );
});

describe.each(STRATEGIES)('%s: the lock is lost after each op', (kind) => {
  let ops: OpRecord[] = [];
  beforeAll(async () => {
    const d = await dryRun(kind);
    expect(d.problems).toEqual([]);
    ops = d.ops;
    counts[kind] = ops.length;
  });

  it('A stops at once and B finishes with nothing lost', async () => {
    expect(ops.length).toBeGreaterThan(20);
    const failures: string[] = [];
    for (const op of ops) {
      const problems = await loseLockAfter(kind, op);
      if (problems.length) failures.push(`${describeOp(op)}: ${problems.join('; ')}`);
    }
    expect(failures).toEqual([]);
    // a case per op: tens of seconds on a busy machine
  }, 120_000);
});
