/**
 * The migration's steps, by phase: preflight.ts (checks, decisions), copy.ts (snapshot, base
 * copy, delta rounds), live.ts (mirror, live migration), pause.ts (save, last delta, restore),
 * finish.ts (merge, verify, define, clean up), rollback.ts; ownership.ts (what this migration
 * created and may delete, who uses a file), common.ts (names and helpers), tuning.ts (the
 * numbers), deps.ts (what the steps need from the world). This file turns them into actors.
 */
import { backoffDelay } from '../../backoff';
import type { StepActorName } from '../migration-machine';
import { type StepActors, type StepFn, actorsFromSteps } from '../runner';
import type { MigrationContext, StepOutput } from '../types';
import { newStepMemo, type Step, type StepDeps } from './deps';
import { preflight } from './preflight';
import { copyBase, deltaRound, snapshotDisks } from './copy';
import { liveMigrate } from './live';
import { copyDelta, restoreVm, saveVm } from './pause';
import { cleanUpSource, finalizeDefinition, mergeOverlays, verifyTarget } from './finish';
import { rollBack } from './rollback';
import { STEP_RETRY_MAX_MS } from './tuning';

export type { StepDeps, StepMemo } from './deps';
export { newStepMemo, storeRecords } from './deps';
export { decideSave, type SaveObservation } from './pause';
export { dstOverlayAt, srcOverlayAt } from './common';

/** Steps that run even during a shutdown: the VM is offline or half-moved while they have not finished. */
const MUST_FINISH_ACTORS: ReadonlySet<string> = new Set(['copyDelta', 'restoreVm', 'rollBack']);

const STEPS: Record<Exclude<StepActorName, 'settleStep'>, Step> = {
  preflight,
  snapshotDisks,
  copyBase,
  deltaRound,
  liveMigrate,
  saveVm,
  copyDelta,
  restoreVm,
  mergeOverlays,
  verifyTarget,
  finalizeDefinition,
  cleanUpSource,
  rollBack,
};

/**
 * The real step actors. A step that runs again after a failure first waits a backoff that
 * grows with the attempts (the wait lives in the step, not in an `after` timer, because
 * timers do not survive a restore). Each step gets the actor's abort signal (see
 * `actorsFromSteps` for how a cancel waits for it to settle).
 */
export function createStepActors(deps: StepDeps): StepActors {
  const base = deps.retryBaseMs ?? 1000;
  const memo = deps.memo ?? newStepMemo();
  const fns = Object.fromEntries(
    Object.entries(STEPS).map(([name, step]) => [
      name,
      async (input: MigrationContext, signal: AbortSignal): Promise<StepOutput> => {
        if (deps.stopping?.() && !MUST_FINISH_ACTORS.has(name)) {
          // Shutting down: do not start work that can wait; the runner stops at this checkpoint.
          return await new Promise<StepOutput>(() => undefined);
        }
        if (input.attempts > 0) {
          // a WaitingError says how long the world needs (retryAfterMs): never retry sooner
          const delay = Math.max(
            backoffDelay(input.attempts, base, STEP_RETRY_MAX_MS),
            input.lastError?.retryAfterMs ?? 0,
          );
          await new Promise((r) => setTimeout(r, delay));
        }
        const log = deps.logger?.child({ step: name });
        log?.debug('step start');
        try {
          await deps.beforeStep?.(input);
          const running = step(input, { ...deps, memo, logger: log ?? deps.logger, signal });
          deps.track?.(running);
          const out = await running;
          log?.debug('step done');
          return out;
        } catch (err) {
          log?.warn({ err }, 'step failed');
          throw err;
        }
      },
    ]),
  ) as Record<Exclude<StepActorName, 'settleStep'>, StepFn>;
  return actorsFromSteps(fns);
}
