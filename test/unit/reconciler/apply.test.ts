/**
 * `vmplace apply` is the daemon's reconciler run to rest (ApplyRun over Reconciler): suspend,
 * maintenance windows and limits hold for it as for the daemon. FAKE hypervisor and stand-in
 * steps (see fake-fleet.ts): this is the scheduling logic, not the migration.
 */
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import { MigrationStore } from '../../../src/machine/store';
import { ApplyRun } from '../../../src/reconciler/apply';
import { Reconciler } from '../../../src/reconciler/reconciler';
import { defaultSettings, type Settings } from '../../../src/settings';
import type { ActualState, VirtualMachineStatus } from '../../../src/types';
import { fleet, standInSteps, type StepScript } from './fake-fleet';

let dir: string;
beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmplace-apply-'));
});
afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

const previous: ActualState = { vms: new Map(), hosts: new Map() };

async function apply(
  n: number,
  settings: Partial<Settings> = {},
  o: { now?: Date; script?: StepScript } = {},
) {
  const { fake, desired } = fleet(n);
  const store = new MigrationStore(dir);
  await store.init();
  const calls: string[] = [];
  const written: VirtualMachineStatus[][] = [];
  const rec: Reconciler = new Reconciler({
    driverFor: (h) => (h === 'hv' ? fake.driver('hv') : undefined),
    store,
    logger: pino({ level: 'silent' }),
    actorsFor: standInSteps(fake, calls, o.script),
    ...(o.now ? { now: () => o.now! } : {}),
    onTransition: () => run.statusChanged(),
    onFinished: (vm, r) => run.finished(vm, r),
  });
  const run = new ApplyRun(rec, { writeStatus: async (vms) => void written.push(vms) });
  const res = await run.run({ desired, previous, settings: { ...defaultSettings(), ...settings } });
  return { res, calls, written, fake };
}

describe('vmplace apply: one reconciler, run to rest', () => {
  it('starts nothing while vmplace.yaml says suspend, and says so', async () => {
    const { res, calls } = await apply(2, { suspend: true });
    expect(calls).toEqual([]);
    expect(res.deferred.get('vm-0')).toBe('suspended by vmplace.yaml');
    expect(res.converged).toBe(false);
  });

  it('starts nothing outside every maintenance window', async () => {
    const { res, calls } = await apply(
      2,
      { maintenanceWindows: [{ start: '01:00', end: '02:00' }] },
      { now: new Date('2026-11-26T12:00:00Z') },
    );
    expect(calls).toEqual([]);
    expect(res.deferred.get('vm-1')).toBe('outside every maintenance window');
  });

  it('keeps the per-host limit, starts the held-back VMs as slots free, and converges in one run', async () => {
    let inFlight = 0;
    let most = 0;
    const slowCopy = async () => {
      most = Math.max(most, ++inFlight);
      await new Promise((r) => setTimeout(r, 20));
      inFlight--;
      return {};
    };
    const { res, calls, written } = await apply(
      3,
      { limits: { ...defaultSettings().limits, perHost: 1 } },
      {
        script: { copyBase: slowCopy },
      },
    );
    expect(most).toBe(1);
    expect(calls.filter((c) => c.endsWith(':cleanUpSource')).sort()).toEqual([
      'vm-0:cleanUpSource',
      'vm-1:cleanUpSource',
      'vm-2:cleanUpSource',
    ]);
    expect(res.converged).toBe(true);
    expect(res.anyFailed).toBe(false);
    expect(res.statuses.map((s) => s.phase)).toEqual(['Placed', 'Placed', 'Placed']);
    // status was written while the migrations ran, not only at the end
    expect(written.some((vms) => vms.some((s) => s.phase === 'Migrating'))).toBe(true);
  });

  it('starts a VM at most once per run: a failed migration is not retried by the same apply', async () => {
    const { res, calls } = await apply(
      1,
      {},
      {
        script: {
          copyBase: async () => {
            throw Object.assign(new Error('copy failed'), { reason: 'TransferFailed' });
          },
        },
      },
    );
    expect(calls.filter((c) => c === 'vm-0:preflight')).toHaveLength(1);
    expect(res.results.get('vm-0')?.step).toBe('RolledBack');
    expect(res.anyFailed).toBe(true);
  });
});
