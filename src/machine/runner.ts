import { createActor, type Snapshot } from 'xstate';
import { migrationMachine, FINAL_STEPS, type StepActorName } from './migration-machine';
import type { MigrationContext, MigrationInput } from './types';
import { FencedError, isFenced } from '../errors';
import { passFence, type Fence } from './fence';
import type { MigrationRecords } from './store';
import { fromPromise } from 'xstate';
import type { StepOutput } from './types';

export type StepActors = Record<StepActorName, ReturnType<typeof fromPromise<StepOutput, MigrationContext>>>;

export interface RunResult {
  step: string;
  context: MigrationContext;
  /** true when the run stopped at a checkpoint for a shutdown (the migration is not finished) */
  stopped?: boolean;
  /**
   * true when the run was abandoned because this replica lost the VM's lock (see `Fence`): the
   * migration is not finished, and the replica that holds the lock now resumes it
   */
  lost?: boolean;
}

export interface RunOptions {
  actors: StepActors;
  store: MigrationRecords;
  /**
   * Several replicas: every snapshot is written only while `fence.held()` (and the store's write
   * is fenced itself); a write refused by the fence abandons the run at once (`lost`).
   */
  fence?: Fence;
  /** called after each transition, once the snapshot is persisted */
  onTransition?: (step: string, context: MigrationContext) => void | Promise<void>;
  /** when true at a transition into a step where the VM runs, the run stops there (shutdown) */
  shouldStop?: () => boolean;
}

/** Steps during which the VM is offline or half-moved: a shutdown waits until they are done. */
export const MUST_FINISH_STEPS: ReadonlySet<string> = new Set([
  'CopyingDelta',
  'Restoring',
  'Cancelling',
  'RollingBack',
]);

/** A step: the migration's context in, the fields it changed out; stops when `signal` aborts. */
export type StepFn = (input: MigrationContext, signal: AbortSignal) => Promise<StepOutput>;

/** How long the outcome of a step stays known for a `settleStep` that may follow it. */
const SETTLED_KEEP_MS = 60_000;

/**
 * Step functions as XState actors, plus `settleStep`. XState aborts a promise actor's signal
 * when its state is left (a CANCEL) but cannot wait for the promise; `settleStep` does: it
 * resolves once the interrupted step of that migration has settled, with the step's output
 * when that output passed the point of no return (a live mirror that pivoted before the abort
 * landed), else with nothing. After a restart nothing is in flight: it resolves at once.
 */
export function actorsFromSteps(steps: Record<Exclude<StepActorName, 'settleStep'>, StepFn>): StepActors {
  const last = new Map<string, Promise<StepOutput | undefined>>();
  const actors: Record<string, ReturnType<typeof fromPromise<StepOutput, MigrationContext>>> = {};
  for (const [name, fn] of Object.entries(steps)) {
    actors[name] = fromPromise<StepOutput, MigrationContext>(async ({ input, signal }) => {
      const running = fn(input, signal);
      const settled = running.then(
        (out) => out,
        () => undefined,
      );
      last.set(input.id, settled);
      // detached: `settled` never rejects; this only forgets it a while after it settled
      void settled.then(() => {
        const t = setTimeout(() => {
          if (last.get(input.id) === settled) last.delete(input.id);
        }, SETTLED_KEEP_MS);
        t.unref();
      });
      return running;
    });
  }
  actors.settleStep = fromPromise<StepOutput, MigrationContext>(async ({ input }) => {
    const out = await last.get(input.id);
    last.delete(input.id);
    return out?.committed === true ? out : {};
  });
  return actors as StepActors;
}

export interface MigrationHandle {
  readonly id: string;
  readonly vm: string;
  done: Promise<RunResult>;
  /** roll back if the VM has not been paused yet; ignored otherwise */
  cancel(reason: string): void;
  step(): string;
  context(): MigrationContext;
  /**
   * Resolves once the latest snapshot is persisted. Steps wait for it before their first side
   * effect, so a step never runs ahead of the record naming it; rejects only when the write was
   * refused by the fence (the run is abandoned then).
   */
  persisted(): Promise<void>;
  /** Stop at once without writing anything more: this replica lost the VM's lock. */
  abandon(why: string): void;
}

/**
 * Run one migration to a final state: start from `input`, or resume from a persisted
 * snapshot (the step that was in flight runs again from its start). The snapshot is
 * persisted after every transition before `onTransition` sees it; the next transition's
 * persist waits for the previous one, so the file always holds the latest step.
 */
export function startMigration(
  start: { input: MigrationInput; startedAt?: string } | { snapshot: unknown },
  opts: RunOptions,
): MigrationHandle {
  const machine = migrationMachine.provide({ actors: opts.actors });
  const actor =
    'snapshot' in start
      ? createActor(machine, {
          snapshot: start.snapshot as Snapshot<unknown>,
          // ignored when a snapshot is given; the types want it
          input: (start.snapshot as { context: MigrationInput & { startedAt: string } }).context,
        })
      : createActor(machine, {
          input: { ...start.input, startedAt: start.startedAt ?? new Date().toISOString() },
        });

  let chain: Promise<void> = Promise.resolve();
  let lastValue: string | undefined;
  let lastRound: number | undefined;
  // the first failed save, boxed so that any thrown value (even a falsy one) counts
  let failure: { err: unknown } | undefined;
  let settled = false;
  let abandon: (why: string) => void = () => undefined;

  const done = new Promise<RunResult>((resolve, reject) => {
    abandon = (): void => {
      if (settled) return;
      settled = true;
      const snap = actor.getSnapshot();
      // stopping the actor aborts the step in flight (its signal): copies stop, nothing new starts
      actor.stop();
      resolve({ step: String(snap.value), context: snap.context, stopped: true, lost: true });
    };
    const persist = (): void => {
      if (settled) return;
      if (opts.fence && !opts.fence.held()) {
        abandon('the lock is no longer held');
        return;
      }
      const snap = actor.getSnapshot();
      const value = String(snap.value);
      const context = snap.context;
      const persisted = actor.getPersistedSnapshot();
      // a new step, or the next delta round (a state of its own, visited once per round)
      const changed = value !== lastValue || (value === 'DeltaRound' && context.rounds !== lastRound);
      lastValue = value;
      lastRound = context.rounds;
      chain = chain.then(async () => {
        // checked again when the write comes up: the lock may have gone while earlier writes ran
        if (opts.fence && !opts.fence.held())
          throw new FencedError(`the lock of VM ${context.vm} is no longer held: step ${value} not stored`);
        await opts.store.save(context.vm, context.id, JSON.parse(JSON.stringify(persisted)));
        if (changed && opts.onTransition) await opts.onTransition(value, context);
      });
      // detached: only records the failure; `done` rejects with it once the run settles (a
      // write refused by the fence abandons the run instead: another replica owns the VM now)
      void chain.catch((err) => {
        if (isFenced(err)) abandon('a write was refused by the fence');
        else failure ??= { err };
      });
      if (FINAL_STEPS.has(value)) {
        settled = true;
        // detached: settles `done` (resolve or reject), which the caller awaits
        void chain
          .then(() => opts.store.finish(context.vm, context.id))
          .then(() => {
            actor.stop();
            if (failure) reject(failure.err);
            else resolve({ step: value, context });
          }, reject);
      } else if (changed && opts.shouldStop?.() && !MUST_FINISH_STEPS.has(value)) {
        // A checkpoint: the snapshot names this step, which runs again from its start on resume.
        settled = true;
        actor.stop();
        // detached: settles `done` (resolve or reject), which the caller awaits
        void chain.then(() => resolve({ step: value, context, stopped: true }), reject);
      }
    };
    actor.subscribe({ next: persist, error: (err) => reject(err) });
    actor.start();
    // A restored snapshot in a final state emits nothing new.
    if (lastValue === undefined) persist();
  });
  const ctx0 = actor.getSnapshot().context;
  return {
    id: ctx0.id,
    vm: ctx0.vm,
    done,
    cancel: (reason) => actor.send({ type: 'CANCEL', reason }),
    step: () => String(actor.getSnapshot().value),
    context: () => actor.getSnapshot().context,
    persisted: () =>
      chain.then(
        () => undefined,
        (err: unknown) => {
          // a write that failed for another reason (a full disk) does not stop the steps: the
          // single daemon has always gone on then, and `done` reports the failure
          if (isFenced(err)) throw err;
        },
      ),
    abandon: (why) => abandon(why),
  };
}

/** Run one migration to a final state (or a shutdown checkpoint); see `startMigration`. */
export async function runMigration(
  start: { input: MigrationInput; startedAt?: string } | { snapshot: unknown },
  opts: RunOptions,
): Promise<RunResult> {
  return startMigration(start, opts).done;
}

/**
 * What ties one run's step actors to its runner and fence (build the actors with `hooks`, then
 * `bind` the handle): every step waits until the snapshot naming it is persisted and the fence
 * lets it act before its first effect, and the last step's promise is kept so that a run
 * abandoned after its lock was lost can be waited for before the VM is touched again.
 */
export function stepGate(fence: Fence): {
  hooks: { beforeStep: () => Promise<void>; track: (step: Promise<unknown>) => void };
  bind(handle: Pick<MigrationHandle, 'persisted'>): void;
  /** settles once the last step started has settled (never rejects) */
  lastStep(): Promise<void>;
} {
  let handle: Pick<MigrationHandle, 'persisted'> | undefined;
  let last: Promise<void> = Promise.resolve();
  return {
    hooks: {
      beforeStep: async () => {
        // XState invokes a step before the runner's observer persists the transition: let it
        await Promise.resolve();
        await handle?.persisted();
        await passFence(fence);
      },
      track: (step) => {
        last = step.then(
          () => undefined,
          () => undefined,
        );
      },
    },
    bind: (h) => {
      handle = h;
    },
    lastStep: () => last,
  };
}
