/**
 * The daemon's reconciler with a labelled fake: an in-memory hypervisor that answers the
 * observation calls, and stand-in step actors that move a VM's disks in that memory when the
 * test lets them. The real steps are proven on real libvirt in test/lab.
 */
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import type { StepActors } from '../../../src/machine/runner';
import { MigrationStore } from '../../../src/machine/store';
import { Reconciler } from '../../../src/reconciler/reconciler';
import { stabiliseHosts } from '../../../src/reconciler/compose-status';
import { defaultSettings, insideMaintenanceWindow, type Settings } from '../../../src/settings';
import type { ActualState, HostStatus } from '../../../src/types';
import { desiredState, host, vm } from '../../support/builders';
import { FakeHost, standInSteps } from './fake-fleet';

const GiB = 1024 ** 3;

/** Stand-in steps (fake-fleet's): copyBase waits for the test to open its gate. */
function stepsFor(
  fake: FakeHost,
  gate: Map<string, () => void>,
  calls: string[],
): (vm: string) => StepActors {
  return standInSteps(fake, calls, {
    copyBase: async (vm) => {
      await new Promise<void>((r) => gate.set(vm, r));
      return {};
    },
  });
}

let dir: string;
beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmplace-rec-'));
});
afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

function fleet(n: number, desired: 'a' | 'b' = 'b') {
  const fake = new FakeHost();
  const objects = [host('hv', { storage: { a: '/srv/a', b: '/srv/b' } })];
  for (let i = 0; i < n; i++) {
    const name = `vm-${i}`;
    objects.push(vm(name, 'hv', desired) as never);
    fake.domains.set(name, { disks: [{ target: 'vda', path: `/srv/a/${name}.qcow2` }] });
  }
  return { fake, desired: desiredState(objects) };
}

const previous: ActualState = { vms: new Map(), hosts: new Map() };
const until = async (cond: () => boolean) => {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
  expect(cond()).toBe(true);
};

async function setup(n: number, settings: Partial<Settings> = {}, now?: () => Date) {
  const { fake, desired } = fleet(n);
  const gate = new Map<string, () => void>();
  const calls: string[] = [];
  const store = new MigrationStore(dir);
  await store.init();
  const rec = new Reconciler({
    driverFor: (h) => (h === 'hv' ? fake.driver('hv') : undefined),
    store,
    logger: pino({ level: 'silent' }),
    actorsFor: stepsFor(fake, gate, calls),
    backoffBaseMs: 10,
    ...(now ? { now } : {}),
  });
  const input = { desired, previous, settings: { ...defaultSettings(), ...settings } };
  return { fake, desired, gate, calls, store, rec, input };
}

describe('reconciler (fake hypervisor, stand-in steps)', () => {
  it('starts at most `perHost` migrations on one host, then the next ones as they finish', async () => {
    const { rec, input, gate } = await setup(5);
    const first = await rec.pass(input);
    expect(first.started).toEqual(['vm-0', 'vm-1']);
    expect([...first.deferred.keys()].sort()).toEqual(['vm-2', 'vm-3', 'vm-4']);
    expect(first.deferred.get('vm-2')).toMatch(/per host/);
    expect(first.phases.Migrating).toBe(2);
    await until(() => gate.has('vm-0') && gate.has('vm-1'));
    gate.get('vm-0')!();
    await until(() => !rec.inFlight().includes('vm-0'));
    const second = await rec.pass(input);
    expect(second.started).toEqual(['vm-2']);
    const placed = second.statuses.find((s) => s.metadata.name === 'vm-0')!;
    expect(placed.phase).toBe('Placed');
    expect(placed.migration?.pauseMs).toBe(7);
    // drain
    for (let i = 0; i < 100 && rec.inFlight().length; i++) {
      for (const release of gate.values()) release();
      await new Promise((r) => setTimeout(r, 5));
    }
    expect(rec.inFlight()).toEqual([]);
  });

  it('starts nothing when suspended in vmplace.yaml, or outside every maintenance window', async () => {
    const a = await setup(2, { suspend: true });
    expect((await a.rec.pass(a.input)).started).toEqual([]);
    expect((await a.rec.pass(a.input)).deferred.get('vm-0')).toMatch(/suspended/);
    const b = await setup(
      2,
      { maintenanceWindows: [{ start: '01:00', end: '02:00' }] },
      () => new Date('2026-11-26T12:00:00Z'),
    );
    const res = await b.rec.pass(b.input);
    expect(res.started).toEqual([]);
    expect(res.deferred.get('vm-0')).toMatch(/maintenance window/);
  });

  it('cancels a migration whose desired placement changed before the pause: it rolls back', async () => {
    const { rec, input, gate, calls, desired } = await setup(1);
    await rec.pass(input);
    await until(() => gate.has('vm-0'));
    // the manifests now want storage a again: nothing to do, the running move is cancelled
    const back = { ...input, desired: fleet(1, 'a').desired };
    const res = await rec.pass(back);
    expect(res.cancelled).toEqual(['vm-0']);
    gate.get('vm-0')!();
    await until(() => rec.inFlight().length === 0);
    expect(calls).toContain('vm-0:rollBack');
    expect(calls).not.toContain('vm-0:saveVm');
    void desired;
  });
  it('does not cancel a migration whose VM is observed where it is taking it (mid-restore)', async () => {
    const { rec, input, gate, calls, fake } = await setup(1);
    await rec.pass(input);
    await until(() => gate.has('vm-0'));
    // the observation already sees the VM's disk on storage b, where this migration goes
    fake.domains.get('vm-0')!.disks = [{ target: 'vda', path: '/srv/b/vm-0.qcow2' }];
    const res = await rec.pass(input);
    expect(res.cancelled).toEqual([]);
    gate.get('vm-0')!();
    await until(() => rec.inFlight().length === 0);
    expect(calls).not.toContain('vm-0:rollBack');
    expect(calls).toContain('vm-0:cleanUpSource');
  });

  it('starts no migration of a VM defined on two hosts, and says so in its status', async () => {
    // both hosts' fake drivers list the same domain: vm-0 is defined on hv and on hv2
    const fake = new FakeHost();
    fake.domains.set('vm-0', { disks: [{ target: 'vda', path: '/srv/a/vm-0.qcow2' }] });
    const desired = desiredState([
      host('hv', { storage: { a: '/srv/a', b: '/srv/b' } }),
      host('hv2', { storage: { a: '/srv/a', b: '/srv/b' } }),
      vm('vm-0', 'hv', 'b'),
    ]);
    const calls: string[] = [];
    const store = new MigrationStore(dir);
    await store.init();
    const rec = new Reconciler({
      driverFor: (h) => (h === 'hv' || h === 'hv2' ? fake.driver(h) : undefined),
      store,
      logger: pino({ level: 'silent' }),
      actorsFor: stepsFor(fake, new Map(), calls),
    });
    const res = await rec.pass({ desired, previous, settings: defaultSettings() });
    expect(res.started).toEqual([]);
    expect(res.plan.migrations.map((m) => [m.vm, m.blocked])).toEqual([['vm-0', true]]);
    const status = res.statuses.find((s) => s.metadata.name === 'vm-0')!;
    expect(status.definedOn).toEqual(['hv', 'hv2']);
    expect(status.phase).toBe('Blocked');
    expect(status.conditions[0]!.reason).toBe('DefinedOnSeveralHosts');
    expect(calls).toEqual([]);
  });
});

describe('maintenance windows', () => {
  it.each([
    ['2026-11-26T22:30:00Z', [{ start: '22:00', end: '06:00' }], true],
    ['2026-11-26T05:59:00Z', [{ start: '22:00', end: '06:00' }], true],
    ['2026-11-26T06:00:00Z', [{ start: '22:00', end: '06:00' }], false],
    ['2026-11-26T12:00:00Z', [{ start: '09:00', end: '17:00', days: ['thu'] }], true], // a Thursday
    ['2026-11-26T12:00:00Z', [{ start: '09:00', end: '17:00', days: ['fri'] }], false],
    ['2026-11-27T01:00:00Z', [{ start: '22:00', end: '06:00', days: ['thu'] }], true], // Thursday's night
    ['2026-11-26T12:00:00Z', [{ start: '13:00', end: '14:00', timezone: 'Europe/Berlin' }], true],
    ['2026-11-26T12:00:00Z', [], true],
  ] as const)('%s in %j -> %s', (at, windows, expected) => {
    expect(insideMaintenanceWindow(windows as never, new Date(at))).toBe(expected);
  });
});

describe('host status stabilisation', () => {
  const h = (free: number, at: string): HostStatus => ({
    apiVersion: 'vmplace.dev/v1alpha1',
    kind: 'HostStatus',
    metadata: { name: 'hv' },
    observedAt: at,
    storage: [{ name: 'a', path: '/srv/a', capacityBytes: 100 * GiB, freeBytes: free }],
  });
  it('keeps the committed host status while only free bytes moved by < 1%, for up to 10 minutes', () => {
    const prev = new Map([['hv', h(50 * GiB, '2026-11-26T12:00:00Z')]]);
    expect(
      stabiliseHosts([h(50 * GiB + 1e6, '2026-11-26T12:01:00Z')], prev, new Date('2026-11-26T12:01:00Z'))[0]!
        .observedAt,
    ).toBe('2026-11-26T12:00:00Z');
    expect(
      stabiliseHosts([h(45 * GiB, '2026-11-26T12:01:00Z')], prev, new Date('2026-11-26T12:01:00Z'))[0]!
        .observedAt,
    ).toBe('2026-11-26T12:01:00Z');
    expect(
      stabiliseHosts([h(50 * GiB, '2026-11-26T12:11:00Z')], prev, new Date('2026-11-26T12:11:00Z'))[0]!
        .observedAt,
    ).toBe('2026-11-26T12:11:00Z');
  });
});
