/**
 * The machine's input takes the target host's path rules (issue 15): POSIX paths stay as they
 * always were on libvirt; Windows paths on Hyper-V reach the machine as declared.
 */
import { Topology } from '../../../src/planner/topology';
import { migrationInput } from '../../../src/reconciler/migration-input';
import { DEFAULT_POLICY, type ManifestObject, type PlannedMigration } from '../../../src/types';
import { actualState, cluster, desiredState, host } from '../../support/builders';

function planned(from: string, to: string, disks: [string, string][]): PlannedMigration {
  return {
    vm: 'web',
    kind: from === to ? 'same-host' : 'cross-host',
    strategy: 'quick',
    from: { host: from },
    to: { host: to },
    disks: disks.map(([f, t], i) => ({ target: `sd${'abc'[i]}`, from: f, to: t, bytes: 1 })),
    stateOnly: false,
    blocked: false,
    findings: [],
    order: 1,
  };
}

const objects: ManifestObject[] = [
  cluster('csv', { volume1: 'C:\\ClusterStorage\\Volume1' }, { driver: 'hyperv' }),
  host('hv-w1', { driver: 'hyperv', cluster: 'csv', storage: { local: 'D:\\VMs' } }),
  host('hv-w2', { driver: 'hyperv', cluster: 'csv', storage: { local: 'D:\\VMs' } }),
  cluster('c1', { csv: '/cluster/c1/csv/' }),
  host('kvm-a', { cluster: 'c1', storage: { local: '/var/lib/vmplace/local/' } }),
  host('kvm-b', { cluster: 'c1', storage: { local: '/var/lib/vmplace/local' } }),
];
const topo = new Topology(desiredState(objects), actualState([]));

describe('migrationInput', () => {
  it.each<[string, PlannedMigration, string[], string | undefined]>([
    [
      'Hyper-V, across the cluster: Windows paths as declared, the state on the CSV',
      planned('hv-w1', 'hv-w2', [
        ['local', 'local'],
        ['volume1', 'volume1'],
      ]),
      ['D:\\VMs', 'C:\\ClusterStorage\\Volume1'],
      'C:\\ClusterStorage\\Volume1',
    ],
    [
      'Hyper-V, on one host',
      planned('hv-w1', 'hv-w1', [['local', 'volume1']]),
      ['C:\\ClusterStorage\\Volume1'],
      undefined,
    ],
    [
      'libvirt: POSIX paths, trailing slashes dropped as before',
      planned('kvm-a', 'kvm-b', [
        ['local', 'local'],
        ['csv', 'csv'],
      ]),
      ['/var/lib/vmplace/local', '/cluster/c1/csv'],
      '/cluster/c1/csv',
    ],
  ])('%s', (_title, m, toPaths, sharedStatePath) => {
    const input = migrationInput(m, 'id-1', topo);
    expect(input.moves.map((d) => d.toPath)).toEqual(toPaths);
    expect(input.sharedStatePath).toBe(sharedStatePath);
  });
});

describe('migrationInput: policy.pauseTransfer', () => {
  const m = planned('kvm-a', 'kvm-b', [['local', 'local']]);
  it.each([
    [undefined, undefined],
    ['ssh' as const, undefined],
    ['tcp' as const, 'tcp'],
  ])('%s reaches the machine as %s', (pauseTransfer, want) => {
    const policy = { ...DEFAULT_POLICY, ...(pauseTransfer ? { pauseTransfer } : {}) };
    expect(migrationInput(m, 'id-1', topo, policy).pauseTransfer).toBe(want);
  });
});
