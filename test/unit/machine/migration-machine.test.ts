import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { STEP_ACTORS, type StepActorName } from '../../../src/machine/migration-machine';
import { actorsFromSteps, runMigration, startMigration, type StepActors } from '../../../src/machine/runner';
import { MigrationStore } from '../../../src/machine/store';
import type { MigrationContext, MigrationInput, StepOutput } from '../../../src/machine/types';
import { StalledError, VmplaceError } from '../../../src/errors';

const input: MigrationInput = {
  id: 'm1',
  vm: 'web-01',
  strategy: 'quick',
  fromHost: 'hv-a',
  toHost: 'hv-a',
  moves: [{ target: 'vda', fromStorage: 'a', toStorage: 'b', toPath: '/srv/b' }],
  targetMarginBytes: 0,
  sourceHeadroomRatio: 0.1,
  maxForwardAttempts: 2,
};

type Behaviour = (
  ctx: MigrationContext,
  call: number,
  signal: AbortSignal,
) => Promise<StepOutput> | StepOutput;

/**
 * Stand-in steps (FAKE: no hypervisor) that record the order of calls and do what `overrides`
 * says, wrapped by the real `actorsFromSteps` (so `settleStep` waits for them as in production).
 */
function standIns(overrides: Partial<Record<StepActorName, Behaviour>> = {}) {
  const calls: StepActorName[] = [];
  const counts = new Map<StepActorName, number>();
  const steps = Object.fromEntries(
    STEP_ACTORS.filter((n) => n !== 'settleStep').map((name) => [
      name,
      async (ctx: MigrationContext, signal: AbortSignal): Promise<StepOutput> => {
        calls.push(name);
        const n = (counts.get(name) ?? 0) + 1;
        counts.set(name, n);
        const b = overrides[name];
        if (b) return await b(ctx, n, signal);
        if (name === 'preflight') return { effectiveStrategy: 'quick', memoryBytes: 1 };
        if (name === 'restoreVm') return { committed: true, pauseMs: 5 };
        return {};
      },
    ]),
  ) as Parameters<typeof actorsFromSteps>[0];
  const actors: StepActors = actorsFromSteps(steps);
  return { actors, calls };
}

let dir: string;
let store: MigrationStore;
beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmplace-machine-'));
  store = new MigrationStore(dir);
  await store.init();
});
afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

describe('migration machine', () => {
  it('runs the quick sequence in the order of Quick Storage Migration', async () => {
    const { actors, calls } = standIns();
    const steps: string[] = [];
    const res = await runMigration({ input }, { actors, store, onTransition: (s) => void steps.push(s) });
    expect(res.step).toBe('Completed');
    expect(calls).toEqual([
      'preflight',
      'snapshotDisks',
      'copyBase',
      'saveVm',
      'copyDelta',
      'restoreVm',
      'mergeOverlays',
      'verifyTarget',
      'finalizeDefinition',
      'cleanUpSource',
    ]);
    expect(steps[0]).toBe('Preflight');
    expect(steps.at(-1)).toBe('Completed');
    expect(res.context.pauseMs).toBe(5);
    expect(res.context.finishedAt).toBeDefined();
    // finished migrations leave the active set
    expect((await store.listActive()).records).toHaveLength(0);
    expect(await store.lastDone('web-01')).toBeDefined();
  });

  it.each([
    ['cold', ['preflight', 'copyBase', 'verifyTarget', 'finalizeDefinition', 'cleanUpSource']],
    ['live', ['preflight', 'liveMigrate', 'verifyTarget', 'finalizeDefinition', 'cleanUpSource']],
  ] as const)('runs the %s route', async (strategy, expected) => {
    const { actors, calls } = standIns({ preflight: () => ({ effectiveStrategy: strategy }) });
    const res = await runMigration({ input }, { actors, store });
    expect(res.step).toBe('Completed');
    expect(calls).toEqual(expected);
  });

  it('shows each delta round as a state of its own, its round in the context, persisted', async () => {
    const seen: { step: string; round?: number }[] = [];
    const { actors, calls } = standIns({
      copyBase: () => ({ deltaRounds: { baseBytesPerMs: 1000, copiedThrough: 0 } }),
      // three rounds taken, then the last delta fits
      deltaRound: (ctx) => {
        const r = ctx.rounds ?? 1;
        return r < 3
          ? { rounds: r + 1, deltaRounds: { ...ctx.deltaRounds!, copiedThrough: r, previousDelta: 100 / r } }
          : { rounds: r, deltaRounds: { ...ctx.deltaRounds!, done: true } };
      },
    });
    const res = await runMigration(
      { input },
      {
        actors,
        store,
        onTransition: (step, ctx) => {
          seen.push({ step, ...(step === 'DeltaRound' ? { round: ctx.rounds ?? 1 } : {}) });
        },
      },
    );
    expect(res.step).toBe('Completed');
    expect(calls.filter((c) => c === 'deltaRound')).toHaveLength(3);
    // every round is a transition of its own: status and logs show its number
    expect(seen.filter((s) => s.step === 'DeltaRound').map((s) => s.round)).toEqual([1, 2, 3]);
    expect(res.context.rounds).toBe(3);
    expect(calls.indexOf('saveVm')).toBeGreaterThan(calls.lastIndexOf('deltaRound'));
  });

  it('a CANCEL during a delta round waits for it, then rolls back', async () => {
    let reached!: () => void;
    const atRound = new Promise<void>((r) => (reached = r));
    const events: string[] = [];
    const { actors } = standIns({
      copyBase: () => ({ deltaRounds: { baseBytesPerMs: 1000, copiedThrough: 0 } }),
      deltaRound: (_ctx, _n, signal) =>
        new Promise<StepOutput>((_resolve, reject) => {
          reached();
          signal.addEventListener('abort', () =>
            setTimeout(() => {
              events.push('round settled');
              reject(new VmplaceError('Cancelled', 'cancelled during the delta rounds'));
            }, 20),
          );
        }),
      rollBack: () => {
        events.push('rollback');
        return {};
      },
    });
    const handle = startMigration({ input }, { actors, store });
    await atRound;
    expect(handle.step()).toBe('DeltaRound');
    handle.cancel('desired placement changed');
    const res = await handle.done;
    expect(res.step).toBe('RolledBack');
    expect(events).toEqual(['round settled', 'rollback']);
  });

  it('ends Blocked on a stalled pre-flight finding and changes nothing', async () => {
    const { actors, calls } = standIns({
      preflight: () => {
        throw new StalledError('TargetSpaceInsufficient', 'no room');
      },
    });
    const res = await runMigration({ input }, { actors, store });
    expect(res.step).toBe('Blocked');
    expect(res.context.blockedReason).toBe('TargetSpaceInsufficient');
    expect(calls).toEqual(['preflight']);
  });

  it.each(['snapshotDisks', 'copyBase', 'saveVm', 'copyDelta', 'restoreVm'] as const)(
    'rolls back on a failure in %s (before the point of no return)',
    async (failing) => {
      const { actors, calls } = standIns({
        [failing]: () => {
          throw new VmplaceError('CommandFailed', `failed in ${failing}`);
        },
      });
      const res = await runMigration({ input }, { actors, store });
      expect(res.step).toBe('RolledBack');
      expect(res.context.lastError).toEqual({ reason: 'CommandFailed', message: `failed in ${failing}` });
      expect(calls.at(-1)).toBe('rollBack');
      expect(calls).not.toContain('cleanUpSource');
    },
  );

  it.each(['mergeOverlays', 'verifyTarget', 'finalizeDefinition', 'cleanUpSource'] as const)(
    'after the point of no return retries %s forward and never rolls back',
    async (failing) => {
      const { actors, calls } = standIns({
        [failing]: (_ctx: MigrationContext, call: number) => {
          if (call === 1) throw new VmplaceError('CommandTimedOut', 'once');
          return {};
        },
      });
      const res = await runMigration({ input }, { actors, store });
      expect(res.step).toBe('Completed');
      expect(calls.filter((c) => c === failing)).toHaveLength(2);
      expect(calls).not.toContain('rollBack');
    },
  );

  it('fails (without rolling back) when a forward step keeps failing after the point of no return', async () => {
    const { actors, calls } = standIns({
      mergeOverlays: () => {
        throw new VmplaceError('CommandFailed', 'always');
      },
    });
    const res = await runMigration({ input }, { actors, store });
    expect(res.step).toBe('Failed');
    expect(res.context.committed).toBe(true);
    expect(calls.filter((c) => c === 'mergeOverlays')).toHaveLength(3);
    expect(calls).not.toContain('rollBack');
  });

  it('survives a JSON round-trip of the persisted snapshot mid-migration and re-runs the interrupted step', async () => {
    // First process: copyBase never finishes (the process "dies" during CopyingBase).
    let reached!: () => void;
    const atCopy = new Promise<void>((r) => (reached = r));
    const first = standIns({
      preflight: () => ({ effectiveStrategy: 'quick', memoryBytes: 42, bytesTotal: 100 }),
      copyBase: () => {
        reached();
        return new Promise<StepOutput>(() => undefined);
      },
    });
    // detached on purpose: this "first process" never settles (copyBase hangs); its persisted snapshot is read
    void runMigration({ input }, { actors: first.actors, store });
    await atCopy;
    // wait for the persist of the CopyingBase transition
    let records = (await store.listActive()).records;
    for (
      let i = 0;
      i < 50 && !String(JSON.stringify(records[0]?.snapshot ?? null)).includes('CopyingBase');
      i++
    ) {
      await new Promise((r) => setTimeout(r, 10));
      records = (await store.listActive()).records;
    }
    expect(records).toHaveLength(1);
    const persisted = JSON.parse(JSON.stringify(records[0]!.snapshot)) as {
      value: string;
      context: MigrationContext;
    };
    expect(persisted.value).toBe('CopyingBase');
    expect(persisted.context.memoryBytes).toBe(42);

    // Second process: restore from the file; copyBase runs again from its start.
    const second = standIns();
    const res = await runMigration({ snapshot: persisted }, { actors: second.actors, store });
    expect(res.step).toBe('Completed');
    expect(second.calls[0]).toBe('copyBase');
    expect(second.calls).not.toContain('preflight');
    expect(second.calls).not.toContain('snapshotDisks');
    expect(res.context.memoryBytes).toBe(42);
  });
});

describe('cancel and shutdown checkpoints', () => {
  it('a CANCEL before the VM is paused rolls back', async () => {
    let reached!: () => void;
    const atCopy = new Promise<void>((r) => (reached = r));
    let release!: (v: StepOutput) => void;
    const { actors, calls } = standIns({
      copyBase: () => {
        reached();
        return new Promise<StepOutput>((r) => (release = r));
      },
    });
    const handle = startMigration({ input }, { actors, store });
    await atCopy;
    handle.cancel('desired placement changed');
    release({});
    const res = await handle.done;
    expect(res.step).toBe('RolledBack');
    expect(res.context.lastError?.reason).toBe('Cancelled');
    expect(calls).not.toContain('saveVm');
    expect(calls.at(-1)).toBe('rollBack');
  });

  it('a CANCEL waits for the running step to stop and settle before any rollback action', async () => {
    const events: string[] = [];
    let reached!: () => void;
    const atCopy = new Promise<void>((r) => (reached = r));
    const { actors } = standIns({
      copyBase: (_ctx, _n, signal) =>
        new Promise<StepOutput>((_resolve, reject) => {
          reached();
          signal.addEventListener('abort', () => {
            events.push('copy aborted');
            // undoing the copy in flight takes a while (kill rsync, abort a block job)
            setTimeout(() => {
              events.push('copy settled');
              reject(new VmplaceError('Cancelled', 'cancelled'));
            }, 50);
          });
        }),
      rollBack: () => {
        events.push('rollback');
        return {};
      },
    });
    const handle = startMigration({ input }, { actors, store });
    await atCopy;
    handle.cancel('desired placement changed');
    const res = await handle.done;
    expect(res.step).toBe('RolledBack');
    expect(res.context.lastError?.reason).toBe('Cancelled');
    expect(events).toEqual(['copy aborted', 'copy settled', 'rollback']);
  });

  it('a CANCEL that lands after a live pivot goes forward, never back', async () => {
    let reached!: () => void;
    const atCopy = new Promise<void>((r) => (reached = r));
    const { actors, calls } = standIns({
      preflight: () => ({ effectiveStrategy: 'live', memoryBytes: 1 }),
      liveMigrate: (_ctx, _n, signal) =>
        new Promise<StepOutput>((resolve) => {
          reached();
          // the mirror had already pivoted when the abort arrived
          signal.addEventListener('abort', () =>
            setTimeout(() => resolve({ committed: true, pauseMs: 0 }), 20),
          );
        }),
    });
    const handle = startMigration({ input }, { actors, store });
    await atCopy;
    handle.cancel('desired placement changed');
    const res = await handle.done;
    expect(res.step).toBe('Completed');
    expect(calls).not.toContain('rollBack');
    expect(calls).toContain('verifyTarget');
  });

  it('a migration persisted in Cancelling resumes into the rollback (nothing is in flight after a restart)', async () => {
    let reached!: () => void;
    const atCopy = new Promise<void>((r) => (reached = r));
    const first = standIns({
      copyBase: () => {
        reached();
        return new Promise<StepOutput>(() => undefined); // never settles: the process "dies"
      },
    });
    const handle = startMigration({ input }, { actors: first.actors, store });
    await atCopy;
    handle.cancel('desired placement changed');
    // the snapshot is persisted after the transition (fsync'd): on a busy machine that takes a
    // while, so wait for the store to show Cancelling rather than a fixed time
    let records: Awaited<ReturnType<MigrationStore['listActive']>>['records'] = [];
    for (let i = 0; i < 500; i++) {
      ({ records } = await store.listActive());
      if ((records[0]?.snapshot as { value?: unknown } | undefined)?.value === 'Cancelling') break;
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(handle.step()).toBe('Cancelling');
    const snapshot = JSON.parse(JSON.stringify(records[0]!.snapshot)) as unknown;
    const second = standIns();
    const res = await runMigration({ snapshot }, { actors: second.actors, store: new MigrationStore(dir) });
    expect(res.step).toBe('RolledBack');
    expect(second.calls).toEqual(['rollBack']);
  });

  it('a CANCEL after the VM was paused is ignored: the migration completes', async () => {
    let reached!: () => void;
    const atDelta = new Promise<void>((r) => (reached = r));
    let release!: (v: StepOutput) => void;
    const { actors } = standIns({
      copyDelta: () => {
        reached();
        return new Promise<StepOutput>((r) => (release = r));
      },
    });
    const handle = startMigration({ input }, { actors, store });
    await atDelta;
    handle.cancel('too late');
    release({});
    expect((await handle.done).step).toBe('Completed');
  });

  it('a shutdown stops at the next step where the VM runs, never while it is offline', async () => {
    let stopping = false;
    const { actors, calls } = standIns({
      saveVm: async () => {
        await new Promise((r) => setTimeout(r, 5));
        stopping = true; // SIGTERM arrives while the VM is being saved
        return { pausedAt: 1 };
      },
    });
    const res = await startMigration({ input }, { actors, store, shouldStop: () => stopping }).done;
    // CopyingDelta and Restoring must finish (the VM is offline); the run stops at Merging
    expect(res.stopped).toBe(true);
    expect(res.step).toBe('Merging');
    expect(calls.slice(0, 6)).toEqual([
      'preflight',
      'snapshotDisks',
      'copyBase',
      'saveVm',
      'copyDelta',
      'restoreVm',
    ]);
    // (stand-ins do not check `stopping`; the real step wrapper does not start the next step)
    expect(calls).not.toContain('verifyTarget');
    const persisted = (await store.listActive()).records[0]!.snapshot as { value: string };
    expect(persisted.value).toBe('Merging');
    // a new process resumes from the checkpoint
    const second = standIns();
    const done = await runMigration(
      { snapshot: JSON.parse(JSON.stringify(persisted)) },
      { actors: second.actors, store },
    );
    expect(done.step).toBe('Completed');
    expect(second.calls[0]).toBe('mergeOverlays');
  });
});
