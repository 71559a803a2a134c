import { assign, fromPromise, setup, type AnyEventObject } from 'xstate';
import type { MigrationContext, MigrationInput, StepOutput } from './types';
import type { MigrationStep } from '../types';
import { errorFacts, outcomeOf } from '../errors';

/**
 * The names of the effects the machine invokes. Each takes the whole (JSON) context as input
 * and resolves with the context fields it changed. Real implementations come from
 * `createStepActors` (src/machine/steps.ts) through `machine.provide({ actors })`; tests inject
 * stand-ins the same way.
 *
 * Every effect must be idempotent and look at the actual state first: a restored machine runs
 * the step that was in flight again from its start.
 */
export const STEP_ACTORS = [
  'preflight',
  'snapshotDisks',
  'copyBase',
  'deltaRound',
  'liveMigrate',
  'saveVm',
  'copyDelta',
  'restoreVm',
  'mergeOverlays',
  'verifyTarget',
  'finalizeDefinition',
  'cleanUpSource',
  'rollBack',
  // waits until the step a CANCEL interrupted has stopped and settled (see actorsFromSteps)
  'settleStep',
] as const;
export type StepActorName = (typeof STEP_ACTORS)[number];

/** A step error as it reaches the machine. */
export interface StepErrorLike {
  reason?: string;
  kind?: string;
  message?: string;
}

/** Bumped whenever states or context change incompatibly; stored beside each snapshot. */
export const MACHINE_VERSION = 1;

const placeholder = fromPromise<StepOutput, MigrationContext>(async () => {
  throw new Error('step actor not provided');
});

function errorInfo(error: unknown): NonNullable<MigrationContext['lastError']> {
  const f = errorFacts(error);
  const e = (error ?? {}) as StepErrorLike;
  const message = typeof e.message === 'string' ? e.message : String(error);
  // the kind is kept (when not transient) so that the reconciler decides with outcomeOf too
  return {
    reason: f.reason,
    message,
    ...(f.kind !== 'transient' ? { kind: f.kind } : {}),
    ...(f.retryAfterMs !== undefined ? { retryAfterMs: f.retryAfterMs } : {}),
  };
}

type Ev = AnyEventObject;

function strategyOf(context: MigrationContext, event: Ev): string | undefined {
  const out = (event as { output?: StepOutput }).output;
  return out?.effectiveStrategy ?? context.effectiveStrategy;
}

/**
 * The per-VM migration machine, strategy by strategy:
 *
 * - quick: Preflight → Snapshotting → CopyingBase → DeltaRound (each round) → Saving →
 *   CopyingDelta → Restoring → Merging → Verifying → Finalizing → CleaningUp → Completed
 * - cold (VM shut off): Preflight → CopyingBase → Verifying → Finalizing → CleaningUp → Completed
 * - live (a mirror on one host, a live migration across hosts): Preflight → LiveMigrating →
 *   Verifying → Finalizing → CleaningUp → Completed
 *
 * A pre-flight finding ends in Blocked with nothing changed. Any failure before the point of
 * no return (`committed`: the VM runs from the target) goes to RollingBack → RolledBack; after
 * it the step is retried (only forward, never back to stale source data) up to
 * `maxForwardAttempts`, then Failed with the VM still running on the target.
 */
export const migrationMachine = setup({
  types: {
    context: {} as MigrationContext,
    input: {} as MigrationInput & { startedAt: string },
    events: {} as Ev,
  },
  actors: Object.fromEntries(STEP_ACTORS.map((n) => [n, placeholder])) as {
    [K in StepActorName]: typeof placeholder;
  },
  guards: {
    committed: ({ context }) => context.committed,
    canRetryForward: ({ context }) => context.attempts < context.maxForwardAttempts,
    // On Preflight's onDone the strategy is in the output, not yet in the context.
    isCold: ({ context, event }) => strategyOf(context, event) === 'cold',
    isLive: ({ context, event }) => strategyOf(context, event) === 'live',
    isStalled: (_, params: { error: unknown }) => outcomeOf(params.error).next === 'stalled',
    // CopyingBase's output asks for delta rounds; a round's output says they are done
    wantsRounds: ({ event }) => (event as { output?: StepOutput }).output?.deltaRounds !== undefined,
    roundsDone: ({ event }) => (event as { output?: StepOutput }).output?.deltaRounds?.done === true,
    // the interrupted step had passed the point of no return before it stopped
    settledCommitted: ({ event }) => (event as { output?: StepOutput }).output?.committed === true,
  },
  actions: {
    applyOutput: assign(({ event }) => {
      const out = (event as { output?: StepOutput }).output ?? {};
      return { ...out, attempts: 0 };
    }),
    recordError: assign(({ context, event }, params: { step: MigrationStep }) => {
      return {
        lastError: errorInfo((event as { error?: unknown }).error),
        failedStep: params.step,
        attempts: context.attempts + 1,
      };
    }),
    recordCancel: assign(({ event }) => ({
      lastError: {
        reason: 'Cancelled',
        message:
          (event as { reason?: string }).reason ?? 'the desired placement changed before the VM was paused',
      },
    })),
    recordBlocked: assign(({ event }) => {
      const info = errorInfo((event as { error?: unknown }).error);
      return { lastError: { ...info, kind: 'stalled' as const }, blockedReason: info.reason };
    }),
    finish: assign(() => ({ finishedAt: new Date().toISOString() })),
    goForward: assign(({ event }) => {
      const info = errorInfo((event as { error?: unknown }).error);
      return { committed: true, attempts: 0, lastError: { reason: info.reason, message: info.message } };
    }),
  },
}).createMachine({
  id: 'migration',
  context: ({ input }) => ({
    ...input,
    disks: [],
    memoryBytes: 0,
    bytesDone: 0,
    bytesTotal: 0,
    committed: false,
    attempts: 0,
  }),
  initial: 'Preflight',
  states: {
    Preflight: {
      on: { CANCEL: { target: 'Cancelling', actions: 'recordCancel' } },
      invoke: {
        src: 'preflight',
        input: ({ context }) => context,
        onDone: [
          { guard: 'isLive', target: 'LiveMigrating', actions: 'applyOutput' },
          { guard: 'isCold', target: 'CopyingBase', actions: 'applyOutput' },
          { target: 'Snapshotting', actions: 'applyOutput' },
        ],
        onError: [
          {
            guard: { type: 'isStalled', params: ({ event }) => ({ error: event.error }) },
            target: 'Blocked',
            actions: 'recordBlocked',
          },
          // Preflight changes nothing, but a transient error may leave our own leftovers
          // from an earlier attempt: roll back cleans them.
          { target: 'RollingBack', actions: { type: 'recordError', params: { step: 'Preflight' } } },
        ],
      },
    },
    Snapshotting: {
      ...forwardStep('snapshotDisks', 'CopyingBase', 'Snapshotting'),
      on: { CANCEL: { target: 'Cancelling', actions: 'recordCancel' } },
    },
    CopyingBase: {
      on: { CANCEL: { target: 'Cancelling', actions: 'recordCancel' } },
      invoke: {
        src: 'copyBase',
        input: ({ context }) => context,
        onDone: [
          { guard: 'isCold', target: 'Verifying', actions: 'applyOutput' },
          { guard: 'wantsRounds', target: 'DeltaRound', actions: 'applyOutput' },
          { target: 'Saving', actions: 'applyOutput' },
        ],
        onError: errorRoute('CopyingBase'),
      },
    },
    // One iteration of the delta rounds per visit (the round is in the context and in status):
    // freeze the active overlay under a new one and copy it, until the last delta fits the pause.
    DeltaRound: {
      on: { CANCEL: { target: 'Cancelling', actions: 'recordCancel' } },
      invoke: {
        src: 'deltaRound',
        input: ({ context }) => context,
        onDone: [
          { guard: 'roundsDone', target: 'Saving', actions: 'applyOutput' },
          { target: 'DeltaRound', reenter: true, actions: 'applyOutput' },
        ],
        onError: errorRoute('DeltaRound'),
      },
    },
    // live: a mirror on one host (blockcopy + pivot) or a live migration with storage across
    // hosts; from the first pivot (or the switch-over) the VM runs from the target: forward only
    LiveMigrating: {
      on: {
        CANCEL: {
          guard: ({ context }) => !context.committed,
          target: 'Cancelling',
          actions: 'recordCancel',
        },
      },
      invoke: {
        src: 'liveMigrate',
        input: ({ context }) => context,
        onDone: { target: 'Verifying', actions: 'applyOutput' },
        onError: errorRoute('LiveMigrating'),
      },
    },
    // Leaving the step's state aborted its signal: the step stops what it runs (a copy, a block
    // job, a live migration) and settles; only then does the rollback touch anything. A step
    // that had already pivoted the VM onto the target goes forward instead.
    Cancelling: {
      invoke: {
        src: 'settleStep',
        input: ({ context }) => context,
        onDone: [
          { guard: 'settledCommitted', target: 'Verifying', actions: 'applyOutput' },
          { target: 'RollingBack' },
        ],
        onError: { target: 'RollingBack' },
      },
    },
    Saving: forwardStep('saveVm', 'CopyingDelta', 'Saving'),
    CopyingDelta: forwardStep('copyDelta', 'Restoring', 'CopyingDelta'),
    Restoring: forwardStep('restoreVm', 'Merging', 'Restoring'),
    Merging: forwardStep('mergeOverlays', 'Verifying', 'Merging'),
    Verifying: forwardStep('verifyTarget', 'Finalizing', 'Verifying'),
    Finalizing: forwardStep('finalizeDefinition', 'CleaningUp', 'Finalizing'),
    CleaningUp: forwardStep('cleanUpSource', 'Completed', 'CleaningUp'),
    Completed: { type: 'final', entry: 'finish' },
    RollingBack: {
      invoke: {
        src: 'rollBack',
        input: ({ context }) => context,
        onDone: { target: 'RolledBack', actions: 'applyOutput' },
        onError: [
          // The failed step's effect happened though its caller saw an error (a restore, a
          // pivot, a switch-over that answered with an error): the VM runs from the target, so
          // the point of no return is behind; forward again from the step that commits.
          ...(['Restoring', 'CopyingDelta', 'LiveMigrating'] as const).map((failed) => ({
            guard: ({ context, event }: { context: MigrationContext; event: Ev }) =>
              context.failedStep === failed &&
              errorInfo((event as { error?: unknown }).error).reason === 'AlreadyOnTarget',
            target: failed === 'CopyingDelta' ? 'Restoring' : failed,
            actions: 'goForward' as const,
          })),
          {
            guard: 'canRetryForward',
            target: 'RollingBack',
            reenter: true,
            actions: { type: 'recordError', params: { step: 'RollingBack' } },
          },
          { target: 'Failed', actions: { type: 'recordError', params: { step: 'RollingBack' } } },
        ],
      },
    },
    RolledBack: { type: 'final', entry: 'finish' },
    Blocked: { type: 'final', entry: 'finish' },
    Failed: { type: 'final', entry: 'finish' },
  },
});

/**
 * Where an error in `step` leads: Failed when {@link outcomeOf} says so (a reason that needs a
 * human, or a stalled error past the point of no return); else before the point of no return
 * back, after it forward again.
 */
function errorRoute(step: MigrationStep) {
  const record = { type: 'recordError' as const, params: { step } };
  return [
    {
      guard: ({ context, event }: { context: MigrationContext; event: Ev }) =>
        outcomeOf((event as { error?: unknown }).error, { committed: context.committed }).next === 'failed',
      target: 'Failed',
      actions: record,
    },
    {
      guard: ({ context }: { context: MigrationContext }) =>
        context.committed && context.attempts < context.maxForwardAttempts,
      target: step,
      reenter: true,
      actions: record,
    },
    { guard: 'committed' as const, target: 'Failed', actions: record },
    { target: 'RollingBack', actions: record },
  ];
}

function forwardStep(src: StepActorName, next: string, step: MigrationStep) {
  return {
    invoke: {
      src,
      input: ({ context }: { context: MigrationContext }) => context,
      onDone: { target: next, actions: 'applyOutput' as const },
      onError: errorRoute(step),
    },
  };
}

export type MigrationMachine = typeof migrationMachine;

/** Steps in which the machine has come to rest. */
export const FINAL_STEPS: ReadonlySet<string> = new Set(['Completed', 'RolledBack', 'Blocked', 'Failed']);
