import { planMigrations } from '../../../src/planner/plan';
import { planHasChanges } from '../../../src/planner/render';
import type { DiskPlacement, ManifestObject, PlannedMigration, Plan, Strategy } from '../../../src/types';
import {
  actualState,
  CSV1,
  desiredState,
  disk,
  fleet,
  GiB,
  host,
  hostStatus,
  LOCAL,
  vm,
  vmStatus,
  type FleetOptions,
} from '../../support/builders';

interface VmCase {
  name: string;
  /** desired host and storage */
  to: [string, string];
  /** actual host and disks */
  at: [string, DiskPlacement[]];
  memory?: number;
  disks?: Record<string, string>;
  strategy?: Strategy;
  suspend?: boolean;
}

/** Plan the standard fleet with the given VMs. */
function planFleet(vms: VmCase[], opts: FleetOptions & { margin?: number; ratio?: number } = {}): Plan {
  const { objects, hostStatuses } = fleet(opts);
  const all: ManifestObject[] = [...objects];
  const statuses = [];
  for (const v of vms) {
    all.push(
      vm(v.name, v.to[0], v.to[1], {
        ...(v.disks ? { disks: v.disks } : {}),
        ...(v.strategy ? { strategy: v.strategy } : {}),
        ...(v.suspend !== undefined ? { suspend: v.suspend } : {}),
      }),
    );
    statuses.push(vmStatus(v.name, { host: v.at[0], memoryBytes: v.memory ?? 0, disks: v.at[1] }));
  }
  return planMigrations(desiredState(all), actualState([...hostStatuses, ...statuses]), {
    targetMarginBytes: opts.margin ?? 1 * GiB,
    sourceHeadroomRatio: opts.ratio ?? 0.1,
  });
}

function only(plan: Plan): PlannedMigration {
  expect(plan.migrations).toHaveLength(1);
  return plan.migrations[0]!;
}

function byVm(plan: Plan, name: string): PlannedMigration {
  const m = plan.migrations.find((x) => x.vm === name);
  if (!m) throw new Error(`no migration for ${name}`);
  return m;
}

function reasons(m: PlannedMigration): string[] {
  return m.findings.map((f) => `${f.severity}:${f.reason}`);
}

const local = (file: string, opts: Parameters<typeof disk>[2] = {}) => disk('vda', `${LOCAL}/${file}`, opts);
const csv1 = (file: string, opts: Parameters<typeof disk>[2] = {}) => disk('vda', `${CSV1}/${file}`, opts);

describe('planMigrations: kinds and disk moves', () => {
  it.each<[string, VmCase, Pick<PlannedMigration, 'kind' | 'stateOnly' | 'disks'> & { fromHost: string }]>([
    [
      'same host, local -> shared',
      { name: 'db-01', to: ['hv-a', 'csv'], at: ['hv-a', [local('db.qcow2', { allocated: 3 * GiB })]] },
      {
        kind: 'same-host',
        stateOnly: false,
        fromHost: 'hv-a',
        disks: [
          { target: 'vda', from: 'local', to: 'csv', toPath: `${CSV1}/db-01/db.qcow2`, bytes: 3 * GiB },
        ],
      },
    ],
    [
      'cross host in one cluster, local -> local',
      { name: 'db-01', to: ['hv-b', 'local'], at: ['hv-a', [local('db.qcow2', { allocated: 3 * GiB })]] },
      {
        kind: 'cross-host',
        stateOnly: false,
        fromHost: 'hv-a',
        disks: [
          { target: 'vda', from: 'local', to: 'local', toPath: `${LOCAL}/db-01/db.qcow2`, bytes: 3 * GiB },
        ],
      },
    ],
    [
      'cross host to a standalone host',
      { name: 'db-01', to: ['hv-s', 'local'], at: ['hv-a', [csv1('db.qcow2', { allocated: 1 * GiB })]] },
      {
        kind: 'cross-host',
        stateOnly: false,
        fromHost: 'hv-a',
        disks: [
          { target: 'vda', from: 'csv', to: 'local', toPath: `${LOCAL}/db-01/db.qcow2`, bytes: 1 * GiB },
        ],
      },
    ],
    [
      'cross cluster, shared -> shared of the same name (still a copy)',
      { name: 'db-01', to: ['hv-c', 'csv'], at: ['hv-a', [csv1('db.qcow2', { allocated: 4 * GiB })]] },
      {
        kind: 'cross-cluster',
        stateOnly: false,
        fromHost: 'hv-a',
        disks: [
          { target: 'vda', from: 'csv', to: 'csv', toPath: '/cluster/c2/csv/db-01/db.qcow2', bytes: 4 * GiB },
        ],
      },
    ],
    [
      'host change inside a cluster on shared storage: state only, disk listed with 0 bytes',
      {
        name: 'db-01',
        to: ['hv-b', 'csv'],
        at: ['hv-a', [csv1('db.qcow2', { allocated: 4 * GiB })]],
        memory: 2 * GiB,
      },
      {
        kind: 'cross-host',
        stateOnly: true,
        fromHost: 'hv-a',
        disks: [{ target: 'vda', from: 'csv', to: 'csv', toPath: `${CSV1}/db.qcow2`, bytes: 0 }],
      },
    ],
    [
      'host change with one shared disk and one local disk: only the local one copies',
      {
        name: 'db-01',
        to: ['hv-b', 'csv'],
        disks: { vdb: 'local' },
        at: [
          'hv-a',
          [
            csv1('os.qcow2', { allocated: 4 * GiB }),
            disk('vdb', `${LOCAL}/data.qcow2`, { allocated: 1 * GiB }),
          ],
        ],
      },
      {
        kind: 'cross-host',
        stateOnly: false,
        fromHost: 'hv-a',
        disks: [
          { target: 'vda', from: 'csv', to: 'csv', toPath: `${CSV1}/os.qcow2`, bytes: 0 },
          { target: 'vdb', from: 'local', to: 'local', toPath: `${LOCAL}/db-01/data.qcow2`, bytes: 1 * GiB },
        ],
      },
    ],
    [
      'per-disk override: only the overridden disk moves',
      {
        name: 'db-01',
        to: ['hv-a', 'local'],
        disks: { vdb: 'csv' },
        at: ['hv-a', [disk('vdb', `${LOCAL}/data.qcow2`, { allocated: 5 * GiB }), local('os.qcow2')]],
      },
      {
        kind: 'same-host',
        stateOnly: false,
        fromHost: 'hv-a',
        disks: [
          { target: 'vdb', from: 'local', to: 'csv', toPath: `${CSV1}/db-01/data.qcow2`, bytes: 5 * GiB },
        ],
      },
    ],
  ])('%s', (_title, vmCase, expected) => {
    const m = only(planFleet([vmCase]));
    expect(m.kind).toBe(expected.kind);
    expect(m.stateOnly).toBe(expected.stateOnly);
    expect(m.from.host).toBe(expected.fromHost);
    expect(m.to.host).toBe(vmCase.to[0]);
    expect(m.disks).toEqual(expected.disks);
    expect(m.strategy).toBe('quick');
    expect(m.blocked).toBe(false);
    expect(m.order).toBe(1);
  });

  it.each<Strategy>(['live', 'cold', 'auto'])('takes strategy %s from the spec', (strategy) => {
    const m = only(
      planFleet([{ name: 'a', to: ['hv-a', 'csv'], at: ['hv-a', [local('a.qcow2')]], strategy }]),
    );
    expect(m.strategy).toBe(strategy);
  });
});

describe('planMigrations: buckets', () => {
  it('puts each VM in exactly one bucket', () => {
    const { objects, hostStatuses } = fleet();
    const desired = desiredState([
      ...objects,
      vm('moving', 'hv-a', 'csv'),
      vm('placed', 'hv-a', 'local'),
      vm('no-status', 'hv-a', 'local'),
      vm('no-placement', 'hv-a', 'local'),
      vm('paused', 'hv-b', 'csv', { suspend: true }),
      vm('not-paused', 'hv-a', 'local', { suspend: false }),
    ]);
    const actual = actualState([
      ...hostStatuses,
      vmStatus('moving', { host: 'hv-a', disks: [local('m.qcow2')] }),
      vmStatus('placed', { host: 'hv-a', disks: [local('p.qcow2')] }),
      vmStatus('no-placement'),
      vmStatus('paused', { host: 'hv-a', disks: [local('s.qcow2')] }),
      vmStatus('not-paused', { host: 'hv-a', disks: [local('n.qcow2')] }),
      vmStatus('orphan', { host: 'hv-a', disks: [local('o.qcow2')] }),
    ]);
    const plan = planMigrations(desired, actual, undefined, { revision: 'abc123' });
    expect(plan.revision).toBe('abc123');
    expect(plan.migrations.map((m) => m.vm)).toEqual(['moving']);
    expect(plan.unchanged).toEqual(['not-paused', 'placed']);
    expect(plan.unknown).toEqual(['no-placement', 'no-status']);
    expect(plan.suspended).toEqual(['paused']);
    expect(planHasChanges(plan)).toBe(true);
  });

  it('has no changes when everything is placed', () => {
    const plan = planFleet([{ name: 'a', to: ['hv-a', 'local'], at: ['hv-a', [local('a.qcow2')]] }]);
    expect(plan.unchanged).toEqual(['a']);
    expect(plan.migrations).toEqual([]);
    expect(planHasChanges(plan)).toBe(false);
  });

  it('omits the revision when none is given and uses default policy', () => {
    const { objects, hostStatuses } = fleet({ free: { 'hv-a:csv': 2 * GiB } });
    const plan = planMigrations(
      desiredState([...objects, vm('a', 'hv-a', 'csv')]),
      actualState([
        ...hostStatuses,
        vmStatus('a', { host: 'hv-a', disks: [local('a.qcow2', { allocated: 1.5 * GiB })] }),
      ]),
    );
    expect(plan.revision).toBeUndefined();
    // 1.5 GiB + default 1 GiB margin does not fit in 2 GiB
    expect(reasons(only(plan))).toEqual(['error:TargetSpaceInsufficient']);
  });
});

describe('planMigrations: storage derivation from paths', () => {
  const objects = (): ManifestObject[] => [
    host('hv-x', { storage: { a: '/srv/a', ab: '/srv/ab', fast: '/srv/a/fast/', root: '/', dest: '/dest' } }),
  ];
  const statuses = () => [
    hostStatus('hv-x', {
      storage: ['a', 'ab', 'fast', 'root', 'dest'].map((name) => ({
        name,
        path: `/srv/${name}`,
        free: 100 * GiB,
      })),
    }),
  ];

  it.each<[string, DiskPlacement, string]>([
    ['segment-aware: /srv/ab/x is in ab, not a', disk('vda', '/srv/ab/x.qcow2'), 'ab'],
    ['plain match', disk('vda', '/srv/a/x.qcow2'), 'a'],
    ['longest prefix wins', disk('vda', '/srv/a/fast/x.qcow2'), 'fast'],
    ['nested dir of a location', disk('vda', '/srv/a/deep/er/x.qcow2'), 'a'],
    ['no declared prefix falls back to /', disk('vda', '/srv/abc/x.qcow2'), 'root'],
    [
      'a label whose storage does not hold the path: the path decides',
      disk('vda', '/srv/a/x.qcow2', { storage: 'ab' }),
      'a',
    ],
    ['a label whose storage holds the path', disk('vda', '/srv/ab/x.qcow2', { storage: 'ab' }), 'ab'],
    [
      'unknown explicit storage falls back to the path',
      disk('vda', '/srv/ab/x.qcow2', { storage: 'nope' }),
      'ab',
    ],
  ])('%s', (_title, d, expected) => {
    const plan = planMigrations(
      desiredState([...objects(), vm('v', 'hv-x', 'dest')]),
      actualState([...statuses(), vmStatus('v', { host: 'hv-x', disks: [d] })]),
    );
    expect(only(plan).disks[0]!.from).toBe(expected);
  });

  it('a disk already on the desired location by path is unchanged', () => {
    const plan = planMigrations(
      desiredState([...objects(), vm('v', 'hv-x', 'ab')]),
      actualState([...statuses(), vmStatus('v', { host: 'hv-x', disks: [disk('vda', '/srv/ab/x.qcow2')] })]),
    );
    expect(plan.unchanged).toEqual(['v']);
  });

  it('a disk outside every location is never a ready move: it reports its path and blocks', () => {
    const plan = planMigrations(
      desiredState([host('hv-y', { storage: { a: '/srv/a' } }), vm('v', 'hv-y', 'a')]),
      actualState([
        hostStatus('hv-y', { storage: [{ name: 'a', path: '/srv/a', free: 100 * GiB }] }),
        vmStatus('v', { host: 'hv-y', disks: [disk('vda', '/srv/ab/x.qcow2')] }),
      ]),
    );
    const m = only(plan);
    expect(m.disks[0]!.from).toBe('/srv/ab/x.qcow2');
    expect(reasons(m)).toEqual(['error:DiskOutsideStorage']);
    expect(m.blocked).toBe(true);
  });
});

describe('planMigrations: pre-flight findings', () => {
  it.each<[string, VmCase, FleetOptions & { margin?: number; ratio?: number }, string[]]>([
    [
      'fits: no findings',
      {
        name: 'a',
        to: ['hv-a', 'csv'],
        at: ['hv-a', [local('a.qcow2', { allocated: 3 * GiB })]],
        memory: 1 * GiB,
      },
      // exactly disks + memory + margin (ratio 0: no differencing disks)
      { free: { 'hv-a:csv': 5 * GiB }, ratio: 0 },
      [],
    ],
    [
      'differencing disks count on the target too (the space model Preflight uses)',
      {
        name: 'a',
        to: ['hv-a', 'csv'],
        at: ['hv-a', [local('a.qcow2', { allocated: 3 * GiB })]],
        memory: 1 * GiB,
      },
      { free: { 'hv-a:csv': 5 * GiB } },
      ['error:TargetSpaceInsufficient'],
    ],
    [
      'a cold move writes no memory state and no differencing disks',
      {
        name: 'a',
        to: ['hv-a', 'csv'],
        at: ['hv-a', [local('a.qcow2', { allocated: 3 * GiB, virtual: 100 * GiB })]],
        memory: 64 * GiB,
        strategy: 'cold',
      },
      { free: { 'hv-a:csv': 4 * GiB, 'hv-a:local': 0 } },
      [],
    ],
    [
      'a live move writes no memory state and no differencing disks',
      {
        name: 'a',
        to: ['hv-a', 'csv'],
        at: ['hv-a', [local('a.qcow2', { allocated: 3 * GiB, virtual: 100 * GiB })]],
        memory: 64 * GiB,
        strategy: 'live',
      },
      { free: { 'hv-a:csv': 4 * GiB, 'hv-a:local': 0 } },
      [],
    ],
    [
      'memory state counts on the target',
      {
        name: 'a',
        to: ['hv-a', 'csv'],
        at: ['hv-a', [local('a.qcow2', { allocated: 3 * GiB })]],
        memory: 1 * GiB + 1,
      },
      { free: { 'hv-a:csv': 5 * GiB } },
      ['error:TargetSpaceInsufficient'],
    ],
    [
      'margin counts on the target',
      { name: 'a', to: ['hv-a', 'csv'], at: ['hv-a', [local('a.qcow2', { allocated: 3 * GiB })]] },
      { free: { 'hv-a:csv': 5 * GiB }, margin: 2 * GiB + 1 },
      ['error:TargetSpaceInsufficient'],
    ],
    [
      'shared free space is the smallest any member reports',
      { name: 'a', to: ['hv-a', 'csv'], at: ['hv-a', [local('a.qcow2', { allocated: 3 * GiB })]] },
      { free: { 'hv-a:csv': 100 * GiB, 'hv-b:csv': 3 * GiB } },
      ['error:TargetSpaceInsufficient'],
    ],
    [
      'state-only move still needs room for the memory state',
      {
        name: 'a',
        to: ['hv-b', 'csv'],
        at: ['hv-a', [csv1('a.qcow2', { allocated: 50 * GiB })]],
        memory: 8 * GiB,
      },
      { free: { 'hv-a:csv': 8 * GiB } },
      ['error:TargetSpaceInsufficient'],
    ],
    [
      'source headroom for the differencing disk',
      {
        name: 'a',
        to: ['hv-a', 'csv'],
        at: ['hv-a', [local('a.qcow2', { allocated: 1 * GiB, virtual: 100 * GiB })]],
      },
      { free: { 'hv-a:local': 9 * GiB } },
      ['error:SourceHeadroomInsufficient'],
    ],
    [
      'source headroom follows the ratio',
      {
        name: 'a',
        to: ['hv-a', 'csv'],
        at: ['hv-a', [local('a.qcow2', { allocated: 1 * GiB, virtual: 100 * GiB })]],
      },
      { free: { 'hv-a:local': 9 * GiB }, ratio: 0.05 },
      [],
    ],
    [
      'CPU vendor mismatch blocks',
      { name: 'a', to: ['hv-b', 'local'], at: ['hv-a', [local('a.qcow2')]] },
      { cpu: { 'hv-b': { vendor: 'AuthenticAMD', model: 'EPYC' } } },
      ['error:CpuVendorMismatch'],
    ],
    [
      'CPU vendor mismatch only warns for a cold move',
      { name: 'a', to: ['hv-b', 'local'], at: ['hv-a', [local('a.qcow2')]], strategy: 'cold' },
      { cpu: { 'hv-b': { vendor: 'AuthenticAMD', model: 'EPYC' } } },
      ['warning:CpuVendorMismatch'],
    ],
    [
      'CPU model mismatch warns',
      { name: 'a', to: ['hv-b', 'local'], at: ['hv-a', [local('a.qcow2')]] },
      { cpu: { 'hv-b': { vendor: 'GenuineIntel', model: 'Skylake-Server' } } },
      ['warning:CpuModelMismatch'],
    ],
    [
      'CPU is not compared on the same host',
      { name: 'a', to: ['hv-a', 'csv'], at: ['hv-a', [local('a.qcow2')]] },
      { cpu: { 'hv-a': { vendor: 'AuthenticAMD' } } },
      [],
    ],
    [
      'unknown target host status warns and skips its space checks',
      { name: 'a', to: ['hv-s', 'local'], at: ['hv-a', [local('a.qcow2', { allocated: 900 * GiB })]] },
      { noStatus: ['hv-s'] },
      ['warning:HostStatusUnknown'],
    ],
    [
      'unknown source host status warns and skips headroom checks',
      {
        name: 'a',
        to: ['hv-s', 'local'],
        at: ['hv-a', [local('a.qcow2', { allocated: 1 * GiB, virtual: 9000 * GiB })]],
      },
      { noStatus: ['hv-a'], free: { 'hv-s:local': 2000 * GiB } },
      ['warning:HostStatusUnknown'],
    ],
    [
      'shared target known through another member when the target host has no status',
      { name: 'a', to: ['hv-b', 'csv'], at: ['hv-s', [local('a.qcow2', { allocated: 10 * GiB })]] },
      { noStatus: ['hv-b'], free: { 'hv-a:csv': 5 * GiB } },
      ['warning:HostStatusUnknown', 'error:TargetSpaceInsufficient'],
    ],
    [
      'desired storage name not declared on the target',
      { name: 'a', to: ['hv-s', 'csv'], at: ['hv-a', [local('a.qcow2')]] },
      {},
      ['error:StorageUnresolved'],
    ],
  ])('%s', (_title, vmCase, opts, expected) => {
    const m = only(planFleet([vmCase], opts));
    expect(reasons(m)).toEqual(expected);
    expect(m.blocked).toBe(expected.some((r) => r.startsWith('error:')));
    for (const f of m.findings) expect(f.message.length).toBeGreaterThan(10);
  });

  it('warns when the target host status does not report the desired storage', () => {
    const { objects, hostStatuses } = fleet();
    const statuses = hostStatuses.map((h) =>
      h.metadata.name === 'hv-a' || h.metadata.name === 'hv-b'
        ? { ...h, storage: h.storage.filter((s) => s.name !== 'csv') }
        : h,
    );
    const plan = planMigrations(
      desiredState([...objects, vm('a', 'hv-a', 'csv')]),
      actualState([
        ...statuses,
        vmStatus('a', { host: 'hv-a', disks: [local('a.qcow2', { allocated: 900 * GiB })] }),
      ]),
    );
    const m = only(plan);
    expect(reasons(m)).toEqual(['warning:StorageStatusUnknown']);
    expect(m.findings[0]!.message).toContain('csv (cluster c1)');
  });

  it('explains the numbers in a space finding', () => {
    const m = only(
      planFleet(
        [
          {
            name: 'a',
            to: ['hv-a', 'csv'],
            at: ['hv-a', [local('a.qcow2', { allocated: 3 * GiB })]],
            memory: 2 * GiB,
          },
        ],
        { free: { 'hv-a:csv': 5 * GiB } },
      ),
    );
    expect(m.findings[0]!.message).toBe(
      'needs 6.3 GiB free on csv (cluster c1) (3.0 GiB disks + 307.2 MiB differencing disks + 2.0 GiB memory state + 1.0 GiB margin) but at most 5.0 GiB will be free after the other planned moves',
    );
  });
});

describe('planMigrations: cumulative space and ordering', () => {
  it('accounts cumulatively for several moves to one target', () => {
    // Each needs 3 GiB + 1 GiB transient memory + 1 GiB margin = 5 GiB; 10 GiB free.
    const vms: VmCase[] = ['a', 'b', 'c'].map((name) => ({
      name,
      to: ['hv-a', 'csv'],
      at: ['hv-a', [local(`${name}.qcow2`, { allocated: 3 * GiB })]],
      memory: 1 * GiB,
    }));
    const plan = planFleet(vms, { free: { 'hv-a:csv': 10 * GiB } });
    expect(plan.migrations.map((m) => [m.vm, m.order, m.blocked])).toEqual([
      ['a', 1, false],
      ['b', 2, false],
      ['c', 3, true],
    ]);
    expect(reasons(byVm(plan, 'c'))).toEqual(['error:TargetSpaceInsufficient']);
  });

  it('keys shared storage by cluster, not by host', () => {
    const vms: VmCase[] = [
      { name: 'a', to: ['hv-a', 'csv'], at: ['hv-a', [local('a.qcow2', { allocated: 4 * GiB })]] },
      { name: 'b', to: ['hv-b', 'csv'], at: ['hv-b', [local('b.qcow2', { allocated: 4 * GiB })]] },
    ];
    const plan = planFleet(vms, { free: { 'hv-a:csv': 8 * GiB, 'hv-b:csv': 8 * GiB } });
    expect(byVm(plan, 'a').blocked).toBe(false);
    expect(reasons(byVm(plan, 'b'))).toEqual(['error:TargetSpaceInsufficient']);
  });

  it('runs a move that frees space before the move that needs it', () => {
    // aaa needs hv-a:local which only has 1 GiB until zzz moves off it.
    const vms: VmCase[] = [
      { name: 'aaa', to: ['hv-a', 'local'], at: ['hv-a', [csv1('aaa.qcow2', { allocated: 3 * GiB })]] },
      { name: 'zzz', to: ['hv-a', 'csv'], at: ['hv-a', [local('zzz.qcow2', { allocated: 5 * GiB })]] },
    ];
    const plan = planFleet(vms, { free: { 'hv-a:local': 1 * GiB }, ratio: 0 });
    expect(plan.migrations.map((m) => [m.vm, m.order, m.blocked])).toEqual([
      ['zzz', 1, false],
      ['aaa', 2, false],
    ]);
  });

  it('chains: each move waits for the previous one', () => {
    // c frees local for b, b frees csv for a.
    const vms: VmCase[] = [
      { name: 'a', to: ['hv-a', 'csv'], at: ['hv-b', [local('a.qcow2', { allocated: 4 * GiB })]] },
      { name: 'b', to: ['hv-a', 'local'], at: ['hv-a', [csv1('b.qcow2', { allocated: 4 * GiB })]] },
      { name: 'c', to: ['hv-s', 'local'], at: ['hv-a', [local('c.qcow2', { allocated: 4 * GiB })]] },
    ];
    const plan = planFleet(vms, { free: { 'hv-a:local': 1 * GiB, 'hv-a:csv': 1 * GiB }, ratio: 0 });
    expect(plan.migrations.map((m) => [m.vm, m.order, m.blocked])).toEqual([
      ['c', 1, false],
      ['b', 2, false],
      ['a', 3, false],
    ]);
  });

  it.each<[string, string[], string[]]>([
    ['two-move cycle', ['db-01', 'web-01'], ['db-01 -> web-01 -> db-01', 'web-01 -> db-01 -> web-01']],
    [
      'three-move cycle',
      ['db-01', 'mq-01', 'web-01'],
      [
        'db-01 -> mq-01 -> web-01 -> db-01',
        'mq-01 -> web-01 -> db-01 -> mq-01',
        'web-01 -> db-01 -> mq-01 -> web-01',
      ],
    ],
  ])('names a %s and blocks its members', (_title, names, cycles) => {
    // Each VM sits on the location the previous one in the ring wants, on standalone-style
    // locations chained through hosts' local storage: names[i] moves from host i to host i+1.
    const hostsRing = ['hv-a', 'hv-b', 'hv-s'].slice(0, names.length);
    const vms: VmCase[] = names.map((name, i) => ({
      name,
      to: [hostsRing[(i + 1) % names.length]!, 'local'],
      at: [hostsRing[i]!, [local(`${name}.qcow2`, { allocated: 4 * GiB })]],
    }));
    const free = Object.fromEntries(hostsRing.map((h) => [`${h}:local`, 1 * GiB]));
    const plan = planFleet(
      [
        ...vms,
        { name: 'zz-ok', to: ['hv-c', 'csv'], at: ['hv-c', [local('ok.qcow2', { allocated: 1 * GiB })]] },
      ],
      { free, ratio: 0 },
    );
    expect(byVm(plan, 'zz-ok')).toMatchObject({ order: 1, blocked: false });
    names.forEach((name, i) => {
      const m = byVm(plan, name);
      expect(m.blocked).toBe(true);
      expect(reasons(m)).toEqual(['error:OrderingCycle']);
      expect(m.findings[0]!.message).toContain(cycles[i]!);
    });
    expect(plan.migrations.map((m) => m.order)).toEqual(
      names
        .map((_, i) => i + 1)
        .concat(names.length + 1)
        .sort(),
    );
  });

  it('blocks a move waiting on a cycle as a dependency, not as a cycle member', () => {
    const vms: VmCase[] = [
      { name: 'db-01', to: ['hv-b', 'local'], at: ['hv-a', [local('db.qcow2', { allocated: 4 * GiB })]] },
      { name: 'web-01', to: ['hv-a', 'local'], at: ['hv-b', [local('web.qcow2', { allocated: 4 * GiB })]] },
      // wants hv-a local too, and only a cycle member would free it
      { name: 'app-01', to: ['hv-a', 'local'], at: ['hv-s', [local('app.qcow2', { allocated: 2 * GiB })]] },
    ];
    const plan = planFleet(vms, { free: { 'hv-a:local': 1 * GiB, 'hv-b:local': 1 * GiB }, ratio: 0 });
    expect(reasons(byVm(plan, 'db-01'))).toEqual(['error:OrderingCycle']);
    expect(reasons(byVm(plan, 'web-01'))).toEqual(['error:OrderingCycle']);
    expect(reasons(byVm(plan, 'app-01'))).toEqual(['error:SpaceDependencyBlocked']);
    expect(byVm(plan, 'app-01').findings[0]!.message).toContain('db-01');
  });

  it('orders blocked migrations after all unblocked ones', () => {
    const vms: VmCase[] = [
      { name: 'a-blocked', to: ['hv-b', 'local'], at: ['hv-a', [local('a.qcow2')]] },
      { name: 'b-ok', to: ['hv-a', 'csv'], at: ['hv-a', [local('b.qcow2')]] },
      { name: 'c-full', to: ['hv-s', 'local'], at: ['hv-a', [local('c.qcow2', { allocated: 10 * GiB })]] },
      { name: 'd-ok', to: ['hv-a', 'csv'], at: ['hv-a', [local('d.qcow2')]] },
    ];
    const plan = planFleet(vms, {
      cpu: { 'hv-b': { vendor: 'AuthenticAMD' } },
      free: { 'hv-s:local': 5 * GiB },
    });
    expect(plan.migrations.map((m) => [m.order, m.vm, m.blocked])).toEqual([
      [1, 'b-ok', false],
      [2, 'd-ok', false],
      [3, 'a-blocked', true],
      [4, 'c-full', true],
    ]);
  });

  it('is deterministic whatever the map insertion order', () => {
    const vms: VmCase[] = ['e', 'c', 'a', 'd', 'b'].map((name) => ({
      name,
      to: ['hv-a', 'csv'],
      at: ['hv-a', [local(`${name}.qcow2`, { allocated: 3 * GiB })]],
    }));
    const one = planFleet(vms, { free: { 'hv-a:csv': 12 * GiB } });
    const two = planFleet([...vms].reverse(), { free: { 'hv-a:csv': 12 * GiB } });
    expect(two).toEqual(one);
    expect(one.migrations.map((m) => [m.vm, m.blocked])).toEqual([
      ['a', false],
      ['b', false],
      ['c', false],
      ['d', true],
      ['e', true],
    ]);
  });

  it('does not let a migration wait on space it frees itself', () => {
    // Swap: vda local -> csv, vdb csv -> local on one VM; both locations nearly full.
    const m = only(
      planFleet(
        [
          {
            name: 'swap',
            to: ['hv-a', 'csv'],
            disks: { vdb: 'local' },
            at: [
              'hv-a',
              [
                local('a.qcow2', { allocated: 4 * GiB }),
                disk('vdb', `${CSV1}/b.qcow2`, { allocated: 4 * GiB }),
              ],
            ],
          },
        ],
        { free: { 'hv-a:local': 1 * GiB, 'hv-a:csv': 1 * GiB }, ratio: 0 },
      ),
    );
    expect(reasons(m)).toEqual(['error:TargetSpaceInsufficient', 'error:TargetSpaceInsufficient']);
  });
});

describe('planMigrations: shared storage with a separate cluster path', () => {
  it('treats cluster c2 csv as a different location from c1 csv', () => {
    const m = only(planFleet([{ name: 'a', to: ['hv-c', 'csv'], at: ['hv-b', [csv1('a.qcow2')]] }]));
    expect(m.stateOnly).toBe(false);
    expect(m.kind).toBe('cross-cluster');
    expect(m.disks).toEqual([
      { target: 'vda', from: 'csv', to: 'csv', toPath: '/cluster/c2/csv/a/a.qcow2', bytes: 2 * GiB },
    ]);
  });
});
