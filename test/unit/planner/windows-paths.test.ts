/**
 * Issue 15, planner side: on Hyper-V hosts (`driver: hyperv`) storage and disk paths are Windows
 * paths, built, located and compared by the driver's path rules (case-insensitively); a libvirt
 * host keeps the POSIX rules (case-sensitive). Target paths, collisions, the status checks and a
 * move between hypervisors, as table tests.
 */
import Ajv2020 from 'ajv/dist/2020';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { planMigrations } from '../../../src/planner/plan';
import { renderPlanJson } from '../../../src/planner/render';
import { hostsSharingPath } from '../../../src/planner/shared-storage';
import type {
  DiskPlacement,
  HostStatus,
  ManifestObject,
  Plan,
  VirtualMachineStatus,
} from '../../../src/types';
import {
  actualState,
  CPU,
  cluster,
  desiredState,
  disk,
  GiB,
  host,
  hostStatus,
  vm,
  vmStatus,
} from '../../support/builders';

const planSchema = new Ajv2020({ allErrors: true, strict: true }).compile(
  JSON.parse(readFileSync(join(__dirname, '../../../schemas/plan.schema.json'), 'utf8')) as object,
);

const LOCAL = 'D:\\VMs';
const VOLUME1 = 'C:\\ClusterStorage\\Volume1';
const VOLUME2 = 'C:\\ClusterStorage\\Volume2';
const SHARE = '\\\\fs\\vms\\hyperv';
const KVM_LOCAL = '/var/lib/vmplace/local';
const KVM_FAST = '/srv/fast';

/**
 * Cluster `csv` (Hyper-V: hv-w1, hv-w2, each with local `D:\VMs`; shared volume1, volume2), a
 * standalone Hyper-V host hv-w3 (`data` D:\VMs, `share` on an SMB share) and a libvirt host
 * kvm-1 (`local`, `fast`). Plenty of free space everywhere.
 */
function fleetObjects(): { objects: ManifestObject[]; hostStatuses: HostStatus[] } {
  const free = 500 * GiB;
  const objects: ManifestObject[] = [
    cluster('csv', { volume1: VOLUME1, volume2: VOLUME2 }, { driver: 'hyperv' }),
    host('hv-w1', { driver: 'hyperv', cluster: 'csv', storage: { local: LOCAL } }),
    host('hv-w2', { driver: 'hyperv', cluster: 'csv', storage: { local: LOCAL } }),
    host('hv-w3', { driver: 'hyperv', storage: { data: LOCAL, share: SHARE } }),
    host('kvm-1', { storage: { local: KVM_LOCAL, fast: KVM_FAST } }),
  ];
  const clustered = (name: string) =>
    hostStatus(name, {
      cpu: CPU,
      storage: [
        { name: 'local', path: LOCAL, free },
        { name: 'volume1', path: VOLUME1, free },
        { name: 'volume2', path: VOLUME2, free },
      ],
    });
  const hostStatuses = [
    clustered('hv-w1'),
    clustered('hv-w2'),
    hostStatus('hv-w3', {
      cpu: CPU,
      storage: [
        { name: 'data', path: LOCAL, free },
        { name: 'share', path: SHARE, free },
      ],
    }),
    hostStatus('kvm-1', {
      cpu: CPU,
      storage: [
        { name: 'local', path: KVM_LOCAL, free },
        { name: 'fast', path: KVM_FAST, free },
      ],
    }),
  ];
  return { objects, hostStatuses };
}

interface Case {
  name: string;
  /** desired host and storage */
  to: [string, string];
  /** actual host and disks */
  at: [string, DiskPlacement[]];
}

function planOf(cases: Case[], statusOverride?: HostStatus[]): Plan {
  const { objects, hostStatuses } = fleetObjects();
  const statuses: VirtualMachineStatus[] = [];
  for (const c of cases) {
    // auto: the Hyper-V driver has no quick storage migration (quick, the default, is blocked:
    // StrategyUnsupported, see test/unit/examples/hyperv-fleet.test.ts); these tests are about paths
    objects.push(vm(c.name, c.to[0], c.to[1], { strategy: 'auto' }));
    statuses.push(vmStatus(c.name, { host: c.at[0], disks: c.at[1] }));
  }
  return planMigrations(
    desiredState(objects),
    actualState([...(statusOverride ?? hostStatuses), ...statuses]),
  );
}

/** What a test expects of one VM's entry in the plan. */
interface Expect {
  /** target device -> final path */
  toPaths?: Record<string, string>;
  blocked: boolean;
  /** `severity:Reason` of the error findings */
  reasons: string[];
}

function entryOf(plan: Plan, name: string): Expect & { messages: string[] } {
  const m = plan.migrations.find((x) => x.vm === name);
  if (!m) throw new Error(`no migration for ${name}`);
  const errors = m.findings.filter((f) => f.severity === 'error');
  return {
    toPaths: Object.fromEntries(
      m.disks.flatMap((d) => (d.toPath === undefined ? [] : [[d.target, d.toPath]])),
    ),
    blocked: m.blocked,
    reasons: errors.map((f) => `${f.severity}:${f.reason}`),
    messages: errors.map((f) => f.message),
  };
}

const at = (dir: string, target: string, rel: string, storage?: string) =>
  disk(target, `${dir}\\${rel}`, storage === undefined ? {} : { storage });

describe('Windows target paths: <location>\\<vm>\\<file>, by the target host driver', () => {
  it.each<[string, Case[], Record<string, Expect>]>([
    [
      'local D:\\VMs -> Cluster Shared Volume on the same host',
      [
        {
          name: 'sql-01',
          to: ['hv-w1', 'volume1'],
          at: ['hv-w1', [at(LOCAL, 'sda', 'sql-01\\sql-01.vhdx')]],
        },
      ],
      {
        'sql-01': {
          toPaths: { sda: 'C:\\ClusterStorage\\Volume1\\sql-01\\sql-01.vhdx' },
          blocked: false,
          reasons: [],
        },
      },
    ],
    [
      'one volume to another',
      [
        {
          name: 'web-01',
          to: ['hv-w1', 'volume2'],
          at: ['hv-w1', [at(VOLUME1, 'sda', 'web-01\\web-01.vhdx')]],
        },
      ],
      {
        'web-01': {
          toPaths: { sda: 'C:\\ClusterStorage\\Volume2\\web-01\\web-01.vhdx' },
          blocked: false,
          reasons: [],
        },
      },
    ],
    [
      'across hosts, to a standalone host',
      [{ name: 'app-01', to: ['hv-w3', 'data'], at: ['hv-w2', [at(LOCAL, 'sda', 'app-01\\app-01.vhdx')]] }],
      { 'app-01': { toPaths: { sda: 'D:\\VMs\\app-01\\app-01.vhdx' }, blocked: false, reasons: [] } },
    ],
    [
      'onto an SMB share',
      [{ name: 'app-01', to: ['hv-w3', 'share'], at: ['hv-w3', [at(LOCAL, 'sda', 'app-01.vhdx')]] }],
      {
        'app-01': {
          toPaths: { sda: '\\\\fs\\vms\\hyperv\\app-01\\app-01.vhdx' },
          blocked: false,
          reasons: [],
        },
      },
    ],
    [
      'two disks of one VM whose names differ only in case get their device as a prefix',
      [
        {
          name: 'sql-01',
          to: ['hv-w1', 'volume1'],
          at: ['hv-w1', [at(LOCAL, 'sda', 'sql-01\\Data.vhdx'), at(LOCAL, 'sdb', 'sql-01\\logs\\DATA.VHDX')]],
        },
      ],
      {
        'sql-01': {
          toPaths: {
            sda: 'C:\\ClusterStorage\\Volume1\\sql-01\\sda-Data.vhdx',
            sdb: 'C:\\ClusterStorage\\Volume1\\sql-01\\sdb-DATA.VHDX',
          },
          blocked: false,
          reasons: [],
        },
      },
    ],
    [
      'a file name shared by two VMs: each lands in its own folder, no collision',
      [
        { name: 'vm1', to: ['hv-w1', 'volume1'], at: ['hv-w1', [at(LOCAL, 'sda', 'disk.vhdx')]] },
        { name: 'vm2', to: ['hv-w1', 'volume1'], at: ['hv-w1', [at(LOCAL, 'sda', 'other\\Disk.vhdx')]] },
      ],
      {
        vm1: { toPaths: { sda: 'C:\\ClusterStorage\\Volume1\\vm1\\disk.vhdx' }, blocked: false, reasons: [] },
        vm2: { toPaths: { sda: 'C:\\ClusterStorage\\Volume1\\vm2\\Disk.vhdx' }, blocked: false, reasons: [] },
      },
    ],
    [
      'a disk on the CSV while the VM changes host keeps its path (state only)',
      [
        {
          name: 'web-02',
          to: ['hv-w2', 'volume1'],
          at: ['hv-w1', [at(VOLUME1, 'sda', 'web-02\\web-02.vhdx')]],
        },
      ],
      {
        'web-02': {
          toPaths: { sda: 'C:\\ClusterStorage\\Volume1\\web-02\\web-02.vhdx' },
          blocked: false,
          reasons: [],
        },
      },
    ],
    [
      'a disk path in another case than the manifest lies in its storage all the same',
      [
        {
          name: 'app-01',
          to: ['hv-w1', 'volume1'],
          at: ['hv-w1', [disk('sda', 'd:\\vms\\app-01\\App-01.vhdx', { storage: 'local' })]],
        },
      ],
      {
        'app-01': {
          toPaths: { sda: 'C:\\ClusterStorage\\Volume1\\app-01\\App-01.vhdx' },
          blocked: false,
          reasons: [],
        },
      },
    ],
  ])('%s', (_title, cases, expected) => {
    const plan = planOf(cases);
    for (const [name, want] of Object.entries(expected)) {
      const { messages: _m, ...got } = entryOf(plan, name);
      expect(got).toEqual(want);
    }
    expect(plan.findings).toBeUndefined();
    expect(planSchema(JSON.parse(renderPlanJson(plan)))).toBe(true);
  });
});

describe('Windows collisions compare case-insensitively, in their scope', () => {
  it.each<[string, Case[], Record<string, Expect>, RegExp | undefined]>([
    [
      'a move onto D:\\VMs\\vm1\\A.vhdx where another VM has d:\\vms\\vm1\\a.vhdx (one host)',
      [
        { name: 'vm1', to: ['hv-w1', 'local'], at: ['hv-w1', [at(VOLUME1, 'sda', 'vm1\\A.vhdx')]] },
        { name: 'vm2', to: ['hv-w1', 'volume2'], at: ['hv-w1', [disk('sda', 'd:\\vms\\vm1\\a.vhdx')]] },
      ],
      {
        vm1: {
          toPaths: { sda: 'D:\\VMs\\vm1\\A.vhdx' },
          blocked: true,
          reasons: ['error:TargetPathCollision'],
        },
        vm2: {
          toPaths: { sda: 'C:\\ClusterStorage\\Volume2\\vm2\\a.vhdx' },
          blocked: true,
          reasons: ['error:TargetPathCollision'],
        },
      },
      /^D:\\VMs\\vm1\\A\.vhdx on host hv-w1 would be used by two disks: vm1 disk sda would be moved there, vm2 disk sda is there now;/,
    ],
    [
      'a move onto the CSV where a VM on the other node has the same file in another case',
      [
        { name: 'vm1', to: ['hv-w2', 'volume1'], at: ['hv-w2', [at(LOCAL, 'sda', 'vm1\\A.vhdx')]] },
        {
          name: 'vm2',
          to: ['hv-w1', 'local'],
          at: ['hv-w1', [disk('sda', 'c:\\clusterstorage\\volume1\\VM1\\a.VHDX')]],
        },
      ],
      {
        vm1: {
          toPaths: { sda: 'C:\\ClusterStorage\\Volume1\\vm1\\A.vhdx' },
          blocked: true,
          reasons: ['error:TargetPathCollision'],
        },
        vm2: {
          toPaths: { sda: 'D:\\VMs\\vm2\\a.VHDX' },
          blocked: true,
          reasons: ['error:TargetPathCollision'],
        },
      },
      /^C:\\ClusterStorage\\Volume1\\vm1\\A\.vhdx on cluster csv would be used by two disks/,
    ],
    [
      'the same path on the local storage of two hosts is two files (control)',
      [
        { name: 'vm1', to: ['hv-w1', 'local'], at: ['hv-w1', [at(VOLUME1, 'sda', 'vm1\\A.vhdx')]] },
        { name: 'vm2', to: ['hv-w2', 'volume2'], at: ['hv-w2', [disk('sda', 'd:\\vms\\vm1\\a.vhdx')]] },
      ],
      {
        vm1: { toPaths: { sda: 'D:\\VMs\\vm1\\A.vhdx' }, blocked: false, reasons: [] },
        vm2: { toPaths: { sda: 'C:\\ClusterStorage\\Volume2\\vm2\\a.vhdx' }, blocked: false, reasons: [] },
      },
      undefined,
    ],
    [
      'libvirt keeps comparing byte for byte: A.qcow2 and a.qcow2 are two files (control)',
      [
        { name: 'vm1', to: ['kvm-1', 'local'], at: ['kvm-1', [disk('vda', `${KVM_FAST}/vm1/A.qcow2`)]] },
        { name: 'vm2', to: ['kvm-1', 'fast'], at: ['kvm-1', [disk('vda', `${KVM_LOCAL}/vm1/a.qcow2`)]] },
      ],
      {
        vm1: { toPaths: { vda: `${KVM_LOCAL}/vm1/A.qcow2` }, blocked: false, reasons: [] },
        vm2: { toPaths: { vda: `${KVM_FAST}/vm2/a.qcow2` }, blocked: false, reasons: [] },
      },
      undefined,
    ],
  ])('%s', (_title, cases, expected, message) => {
    const plan = planOf(cases);
    for (const [name, want] of Object.entries(expected)) {
      const { messages, ...got } = entryOf(plan, name);
      expect(got).toEqual(want);
      if (message && want.blocked) expect(messages[0]).toMatch(message);
    }
  });
});

describe('status on a Hyper-V host is checked by the Windows rules', () => {
  it.each<[string, string, DiskPlacement[]]>([
    ['a path climbing out with ..', 'DiskPathNotNormalised', [disk('sda', 'D:\\VMs\\..\\Windows\\x.vhdx')]],
    ['an alternate data stream', 'DiskPathNotNormalised', [disk('sda', 'D:\\VMs\\web\\x.vhdx:ads')]],
    ['an 8.3 short name', 'DiskPathNotNormalised', [disk('sda', 'D:\\VMs\\PROGRA~1\\x.vhdx')]],
    ['a verbatim path', 'DiskPathNotNormalised', [disk('sda', '\\\\?\\D:\\VMs\\web\\x.vhdx')]],
    ['forward slashes', 'DiskPathNotNormalised', [disk('sda', 'D:/VMs/web/x.vhdx')]],
    ['a reserved device name', 'DiskPathNotNormalised', [disk('sda', 'D:\\VMs\\web\\CON.vhdx')]],
    ['a POSIX path', 'DiskPathNotNormalised', [disk('sda', `${KVM_LOCAL}/web/x.qcow2`)]],
    ['a path in no storage of the host', 'DiskOutsideStorage', [disk('sda', 'E:\\Other\\x.vhdx')]],
    [
      'a path outside the storage its label names',
      'DiskStorageMismatch',
      [disk('sda', 'C:\\ClusterStorage\\Volume1\\web\\x.vhdx', { storage: 'local' })],
    ],
    [
      'two disks with one path but for case',
      'DuplicateDiskPath',
      [disk('sda', 'D:\\VMs\\web\\a.vhdx'), disk('sdb', 'd:\\vms\\WEB\\A.VHDX')],
    ],
  ])('%s: blocked by %s', (_title, reason, disks) => {
    const plan = planOf([{ name: 'web', to: ['hv-w1', 'volume2'], at: ['hv-w1', disks] }]);
    const m = plan.migrations.find((x) => x.vm === 'web')!;
    expect(m.blocked).toBe(true);
    expect(m.findings).toContainEqual(expect.objectContaining({ severity: 'error', reason }));
  });

  it.each<[string, string, boolean]>([
    ['the manifest path in another case', 'd:\\vms', false],
    ['another path', 'D:\\VMs2', true],
    ['a path not in normal form', 'D:\\VMs\\', true],
  ])('a host status giving local %s (%j): HostStorageMismatch %s', (_title, path, mismatch) => {
    const { hostStatuses } = fleetObjects();
    const statuses = hostStatuses.map((s) =>
      s.metadata.name !== 'hv-w1'
        ? s
        : { ...s, storage: s.storage.map((l) => (l.name === 'local' ? { ...l, path } : l)) },
    );
    const plan = planOf(
      [{ name: 'web', to: ['hv-w1', 'volume2'], at: ['hv-w1', [at(LOCAL, 'sda', 'web\\web.vhdx')]] }],
      statuses,
    );
    const reasons = plan.migrations[0]!.findings.map((f) => f.reason);
    expect(reasons.includes('HostStorageMismatch')).toBe(mismatch);
  });
});

describe('a move between hypervisors', () => {
  it.each<[string, Case]>([
    [
      'libvirt -> Hyper-V',
      { name: 'vm1', to: ['hv-w3', 'data'], at: ['kvm-1', [disk('vda', `${KVM_LOCAL}/vm1/vm1.qcow2`)]] },
    ],
    [
      'Hyper-V -> libvirt',
      { name: 'vm1', to: ['kvm-1', 'local'], at: ['hv-w3', [at(LOCAL, 'sda', 'vm1.vhdx')]] },
    ],
  ])('%s is blocked (MixedHypervisors)', (_title, c) => {
    const m = planOf([c]).migrations[0]!;
    expect(m.blocked).toBe(true);
    expect(m.findings).toContainEqual(
      expect.objectContaining({ severity: 'error', reason: 'MixedHypervisors' }),
    );
  });
});

describe('hostsSharingPath on a Hyper-V cluster', () => {
  const { objects } = fleetObjects();
  const desired = desiredState(objects);
  it.each<[string, string, string[]]>([
    ['a file on a CSV, in another case', 'c:\\clusterstorage\\VOLUME1\\vm1\\a.vhdx', ['hv-w2']],
    ['a file on local storage', 'D:\\VMs\\vm1\\a.vhdx', []],
    ['a path the rules refuse', 'C:\\ClusterStorage\\Volume1\\..\\x.vhdx', []],
  ])('%s: %j', (_title, p, others) => {
    expect(hostsSharingPath(desired, 'hv-w1', p)).toEqual(others);
  });
});
