/**
 * One mapping from an error to what happens next (outcomeOf), and its two consumers: the
 * migration machine (a stalled error past the point of no return ends as Failed, not retried)
 * and the reconciler (a waiting error's retryAfterMs is the VM's wait; a stalled one holds the
 * VM until its world changes). FAKE hypervisor and stand-in steps for the reconciler.
 */
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import {
  CommandError,
  REASONS,
  StalledError,
  VmplaceError,
  WaitingError,
  outcomeOf,
  type Outcome,
  type OutcomeContext,
} from '../../../src/errors';
import { MigrationStore } from '../../../src/machine/store';
import { Reconciler } from '../../../src/reconciler/reconciler';
import { defaultSettings } from '../../../src/settings';
import type { ActualState } from '../../../src/types';
import { fleet, standInSteps, type StepScript } from './fake-fleet';

const half = () => 0; // backoffDelay's jitter at its low end: half the ceiling

describe('outcomeOf', () => {
  it.each<[string, unknown, OutcomeContext, Outcome]>([
    ['a cancel: replanned at once', new VmplaceError('Cancelled', 'x'), {}, { next: 'requeue', afterMs: 0 }],
    ['a persisted cancel', { reason: 'Cancelled', message: 'x' }, {}, { next: 'requeue', afterMs: 0 }],
    ['stalled before the point of no return', new StalledError('DiskNotFile', 'x'), {}, { next: 'stalled' }],
    [
      'stalled after it: Failed',
      new StalledError('DomainRunningOnSource', 'x'),
      { committed: true },
      { next: 'failed' },
    ],
    [
      'a persisted stalled error',
      { reason: 'TargetSpaceInsufficient', kind: 'stalled' },
      {},
      { next: 'stalled' },
    ],
    ['needs a human, before', new VmplaceError('SavedStateLost', 'x'), {}, { next: 'failed' }],
    [
      'needs a human, after',
      new StalledError('SavedStateLost', 'x'),
      { committed: true },
      { next: 'failed' },
    ],
    [
      'waiting: its retryAfterMs',
      new WaitingError('GitBusy', 'x', 12_345),
      {},
      { next: 'requeue', afterMs: 12_345 },
    ],
    [
      'waiting after the point of no return: still its retryAfterMs',
      new WaitingError('BlockJobBusy', 'x', 500),
      { committed: true },
      { next: 'requeue', afterMs: 500 },
    ],
    [
      'a persisted waiting error',
      { reason: 'StatusPushFailed', kind: 'waiting', retryAfterMs: 7000 },
      {},
      { next: 'requeue', afterMs: 7000 },
    ],
    [
      'transient, first failure: the backoff base',
      new CommandError('CommandFailed', ['virsh'], 1, 'x'),
      { random: half },
      { next: 'requeue', afterMs: 15_000 },
    ],
    [
      'transient, third failure: doubled twice',
      new VmplaceError('TransferFailed', 'x'),
      { failures: 3, backoffBaseMs: 1000, random: half },
      { next: 'requeue', afterMs: 2000 },
    ],
    [
      'transient after the point of no return (the machine retries forward)',
      new VmplaceError('VerifyFailed', 'x'),
      { committed: true, backoffBaseMs: 1000, random: half },
      { next: 'requeue', afterMs: 500 },
    ],
    [
      'a plain Error',
      new Error('boom'),
      { backoffBaseMs: 10, random: half },
      { next: 'requeue', afterMs: 5 },
    ],
    ['a thrown string', 'boom', { backoffBaseMs: 10, random: half }, { next: 'requeue', afterMs: 5 }],
    [
      'backoff ceiling',
      new Error('boom'),
      { failures: 40, random: half },
      { next: 'requeue', afterMs: 1_800_000 },
    ],
  ])('%s', (_, error, at, expected) => {
    expect(outcomeOf(error, at)).toEqual(expected);
  });

  it('reasons are PascalCase constants, each listed once', () => {
    for (const r of REASONS) expect(r).toMatch(/^[A-Z][A-Za-z0-9]+$/);
    expect(new Set(REASONS).size).toBe(REASONS.length);
  });
});

let dir: string;
beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmplace-outcome-'));
});
afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

const previous: ActualState = { vms: new Map(), hosts: new Map() };
const NOW = new Date('2026-11-26T12:00:00Z');

/** One VM, one migration run by the daemon's reconciler with `script`; then a second pass. */
async function migrateOnce(script: StepScript) {
  const { fake, desired } = fleet(1);
  const store = new MigrationStore(dir);
  await store.init();
  const calls: string[] = [];
  const rec = new Reconciler({
    driverFor: (h) => (h === 'hv' ? fake.driver('hv') : undefined),
    store,
    logger: pino({ level: 'silent' }),
    actorsFor: standInSteps(fake, calls, script),
    now: () => NOW,
    backoffBaseMs: 10,
  });
  const input = { desired, previous, settings: defaultSettings() };
  expect((await rec.pass(input)).started).toEqual(['vm-0']);
  await rec.settled();
  const second = await rec.pass(input);
  return { calls, second, rec, store };
}

describe('what the machine and the reconciler do with an outcome', () => {
  it("honours a WaitingError's retryAfterMs: the VM waits exactly that long, not the backoff", async () => {
    const { second } = await migrateOnce({
      copyBase: async () => {
        throw new WaitingError('BlockJobBusy', 'another block job runs', 90_000);
      },
    });
    expect(second.started).toEqual([]);
    const until = new Date(NOW.getTime() + 90_000).toISOString();
    expect(second.deferred.get('vm-0')).toBe(`backing off after 1 failure(s) until ${until}`);
  });

  it('ends a migration as Failed with its reason when a stalled error comes after the point of no return', async () => {
    const { calls, second } = await migrateOnce({
      mergeOverlays: async () => {
        throw new StalledError('DomainRunningOnSource', 'vm-0 is running on hv too; never on both');
      },
    });
    // not retried forward: one attempt, straight to Failed
    expect(calls.filter((c) => c === 'vm-0:mergeOverlays')).toHaveLength(1);
    const s = second.statuses[0]!;
    expect(s.migration?.step).toBe('Failed');
    expect(s.migration?.lastError).toEqual({
      reason: 'DomainRunningOnSource',
      message: 'vm-0 is running on hv too; never on both',
    });
    // and the VM is held for a human (until its manifests or its world change), not retried
    expect(second.started).toEqual([]);
    expect(second.deferred.get('vm-0')).toBe('blocked until its manifests or the world change');
  });

  it('holds a VM whose migration rolled back on a stalled error until its world changes', async () => {
    const { second, rec } = await migrateOnce({
      copyBase: async () => {
        throw new StalledError('TargetSpaceInsufficient', 'no room');
      },
    });
    expect(second.statuses[0]!.migration?.step).toBe('RolledBack');
    expect(second.deferred.get('vm-0')).toBe('blocked until its manifests or the world change');
    expect(rec.inFlight()).toEqual([]);
  });
});
