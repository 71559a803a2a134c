/**
 * Saving resumed after a restart, with the real steps and a stand-in driver: a VM that vmplace
 * saved is resumed from its saved state or the migration stops with a reason; it is never
 * started afresh (issue 9, item 13).
 */
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fromPromise } from 'xstate';
import type { DomainInfo, HypervisorDriver } from '../../../src/drivers/driver';
import { runMigration, type StepActors } from '../../../src/machine/runner';
import {
  createStepActors,
  decideSave,
  type SaveObservation,
  type StepDeps,
} from '../../../src/machine/steps';
import { MigrationStore } from '../../../src/machine/store';
import type { MigrationContext, MigrationInput, StepOutput } from '../../../src/machine/types';

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
const STATE = '/srv/b/web-01.state.vmplace-m1';

describe('decideSave', () => {
  it.each<[SaveObservation, ReturnType<typeof decideSave>]>([
    [{ state: 'running', stateUsable: false, saveIssued: false }, 'save'],
    // a save that was issued but aborted (or never reached libvirt): the VM runs, save again
    [{ state: 'running', stateUsable: false, saveIssued: true }, 'save'],
    [{ state: 'shutoff', stateUsable: true, saveIssued: true }, 'saved'],
    [{ state: 'shutoff', stateUsable: true, saveIssued: false }, 'saved'],
    // the guest's memory is gone: a stop for a human, never a start
    [{ state: 'shutoff', stateUsable: false, saveIssued: true }, 'lost'],
    // shut off by someone before any save of ours: back to the source (which does not start it)
    [{ state: 'shutoff', stateUsable: false, saveIssued: false }, 'notRunning'],
    [{ state: 'paused', stateUsable: false, saveIssued: true }, 'notRunning'],
    [{ state: 'crashed', stateUsable: false, saveIssued: true }, 'notRunning'],
  ])('%j -> %s', (o, want) => {
    expect(decideSave(o)).toBe(want);
  });
});

/** A source host whose VM is shut off; records every call that changes the world. */
function standInDriver(opts: { stateUsable: boolean; saveJob?: boolean }) {
  const changes: string[] = [];
  const world = { stateUsable: opts.stateUsable };
  let job = opts.saveJob ?? false;
  let state: DomainInfo['state'] = job ? 'paused' : 'shutoff';
  const dom = (): DomainInfo => ({
    name: input.vm,
    uuid: 'u',
    state,
    persistent: true,
    memoryBytes: 1 << 20,
    vcpus: 1,
    disks: [],
    definition: { driver: 'libvirt', data: '<domain/>' },
  });
  const change =
    (name: string) =>
    async (...args: unknown[]): Promise<never> => {
      changes.push(`${name} ${JSON.stringify(args)}`);
      throw new Error(`stand-in driver: ${name} must not be called here`);
    };
  const driver = {
    hostName: 'hv-a',
    getDomain: async () => dom(),
    domainState: async () => state,
    waitForSaveJob: async () => {
      if (!job) return false;
      // libvirt finishes the save of the killed run: shut off, saved
      job = false;
      state = 'shutoff';
      return true;
    },
    holdsSavedState: async (file: string, vm: string) =>
      world.stateUsable && file === STATE && vm === input.vm,
    fileExists: async (file: string) => world.stateUsable && file === STATE,
    definition: async () => ({ driver: 'libvirt', data: '<domain/>' }),
    diskPathsOf: () => ({}),
    // observations of the rollback: no job to abort, no file in use
    abortJobs: async () => undefined,
    filesInUse: async () => new Map<string, Set<string>>(),
    start: change('start'),
    restore: change('restore'),
    save: change('save'),
    removeFile: change('removeFile'),
    resume: change('resume'),
    define: change('define'),
    destroy: change('destroy'),
  } as unknown as HypervisorDriver;
  return { driver, changes, world };
}

let dir: string;
let store: MigrationStore;
beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmplace-saving-'));
  store = new MigrationStore(dir);
  await store.init();
});
afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

/**
 * Real saveVm (and rollBack); the steps before it are stand-ins that bring the machine to
 * Saving as a restart finds it: the save was issued (its intent is marked), the process died.
 */
async function resumeSaving(
  driver: HypervisorDriver,
  intentMarked: boolean,
  overrides: Partial<StepActors> = {},
) {
  if (intentMarked) await store.markIntent(input.vm, input.id, 'save');
  const markedAt = intentMarked ? await store.intentAt(input.vm, input.id, 'save') : undefined;
  const deps: StepDeps = {
    driverFor: () => driver,
    transportFor: () => undefined,
    retryBaseMs: 1,
    now: () => Date.now(),
    intents: {
      mark: (c, what) => store.markIntent(c.vm, c.id, what),
      has: (c, what) => store.hasIntent(c.vm, c.id, what),
      at: (c, what) => store.intentAt(c.vm, c.id, what),
    },
  };
  const seen: MigrationContext[] = [];
  const stub = (out: StepOutput = {}) =>
    fromPromise<StepOutput, MigrationContext>(async ({ input: ctx }) => {
      seen.push(ctx);
      return out;
    });
  const actors: StepActors = {
    ...createStepActors(deps),
    preflight: stub({
      effectiveStrategy: 'quick',
      disks: [],
      memoryBytes: 1 << 20,
      stateFile: STATE,
      srcStateFile: STATE,
      copyState: false,
      wasRunning: true,
    }),
    snapshotDisks: stub(),
    copyBase: stub(),
    copyDelta: stub(),
    restoreVm: stub({ committed: true }),
    mergeOverlays: stub(),
    verifyTarget: stub(),
    finalizeDefinition: stub(),
    cleanUpSource: stub(),
    ...overrides,
  };
  const res = await runMigration({ input }, { actors, store });
  return { res, seen, markedAt };
}

describe('Saving resumed after a restart (real saveVm, stand-in driver)', () => {
  it('shut off after our save and no usable state file: Failed with SavedStateLost, never started', async () => {
    const { driver, changes } = standInDriver({ stateUsable: false });
    const { res } = await resumeSaving(driver, true);
    expect(res.step).toBe('Failed');
    expect(res.context.lastError?.reason).toBe('SavedStateLost');
    expect(res.context.failedStep).toBe('Saving');
    // left as it is: nothing started, restored, removed or redefined
    expect(changes).toEqual([]);
  });

  it('shut off with a complete saved state: goes on, the pause counted from when the save was issued', async () => {
    const { driver, changes } = standInDriver({ stateUsable: true });
    const { res, seen, markedAt } = await resumeSaving(driver, true);
    expect(res.step).toBe('Completed');
    expect(changes).toEqual([]);
    expect(markedAt).toBeDefined();
    // CopyingDelta sees the persisted start of the pause, not the time of the restart
    expect(seen.find((c) => c.pausedAt !== undefined)?.pausedAt).toBe(markedAt);
  });

  it('a save of the killed run still running in libvirt: waits for it, then goes on', async () => {
    const { driver, changes } = standInDriver({ stateUsable: true, saveJob: true });
    const { res } = await resumeSaving(driver, true);
    expect(res.step).toBe('Completed');
    expect(changes).toEqual([]);
  });

  it('rollback never starts a VM that ran at Preflight and is shut off now', async () => {
    // shut off by someone before any save of ours: back to the source, left shut off
    const { driver, changes } = standInDriver({ stateUsable: false });
    const { res } = await resumeSaving(driver, false);
    expect(res.step).toBe('RolledBack');
    expect(res.context.lastError?.reason).toBe('DomainNotRunning');
    expect(changes.filter((c) => c.startsWith('start'))).toEqual([]);
  });

  it('rollback after our save whose state is gone: Failed with SavedStateLost, never started', async () => {
    const { driver, changes, world } = standInDriver({ stateUsable: true });
    // saved; then the state file is gone and the step after Saving fails: back to the source
    const copyDelta = fromPromise<StepOutput, MigrationContext>(async () => {
      world.stateUsable = false;
      throw Object.assign(new Error('copy failed'), { reason: 'TransferFailed' });
    });
    const { res } = await resumeSaving(driver, true, { copyDelta });
    expect(res.step).toBe('Failed');
    expect(res.context.failedStep).toBe('RollingBack');
    expect(res.context.lastError?.reason).toBe('SavedStateLost');
    expect(changes.filter((c) => c.startsWith('start'))).toEqual([]);
  });
});
