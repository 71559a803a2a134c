/**
 * Status is input: a placement or host status that disagrees with the manifests is a finding,
 * never a ready move, never silently dropped (issue 9, item 11).
 */
import { planMigrations } from '../../../src/planner/plan';
import { renderPlanJson, renderPlanMarkdown, renderPlanTable } from '../../../src/planner/render';
import type { DiskPlacement, HostStatus } from '../../../src/types';
import { actualState, desiredState, disk, GiB, host, hostStatus, vm, vmStatus } from '../../support/builders';

const A = '/var/lib/vmplace/a';
const B = '/var/lib/vmplace/b';

function fleet() {
  return desiredState([
    host('hv-a', { storage: { a: A, b: B } }),
    host('hv-b', { storage: { a: A, b: B } }),
    vm('web', 'hv-a', 'b'),
  ]);
}

function hostStatuses(over: Partial<Record<string, HostStatus>> = {}): HostStatus[] {
  const ok = (name: string) =>
    hostStatus(name, {
      storage: [
        { name: 'a', path: A, free: 100 * GiB },
        { name: 'b', path: B, free: 100 * GiB },
      ],
    });
  return ['hv-a', 'hv-b'].map((h) => over[h] ?? ok(h));
}

type Case = [
  string,
  { host?: string; disks: DiskPlacement[]; hosts?: Partial<Record<string, HostStatus>> },
  string,
];

describe('planMigrations: status checked against the manifests', () => {
  it.each<Case>([
    [
      'a path outside every storage, labelled a',
      { disks: [disk('vda', '/etc/shadow', { storage: 'a' })] },
      'DiskOutsideStorage',
    ],
    [
      'a path outside every storage, labelled a (label)',
      { disks: [disk('vda', '/etc/shadow', { storage: 'a' })] },
      'DiskStorageMismatch',
    ],
    ['a path outside every storage, no label', { disks: [disk('vda', '/etc/shadow')] }, 'DiskOutsideStorage'],
    [
      'a path climbing out of its storage with ..',
      { disks: [disk('vda', `${A}/../../../etc/passwd`, { storage: 'a' })] },
      'DiskPathNotNormalised',
    ],
    [
      'a path with an empty segment',
      { disks: [disk('vda', `${A}//web.qcow2`, { storage: 'a' })] },
      'DiskPathNotNormalised',
    ],
    ['a relative path', { disks: [disk('vda', 'web.qcow2')] }, 'DiskPathNotNormalised'],
    [
      'a label naming no storage of the host',
      { disks: [disk('vda', `${A}/web.qcow2`, { storage: 'zz' })] },
      'DiskStorageMismatch',
    ],
    [
      'a placement host declared nowhere',
      {
        host: 'hv-ghost',
        disks: [disk('vda', `${A}/web.qcow2`, { storage: 'a' })],
        hosts: { 'hv-b': hostStatus('hv-ghost', { storage: [{ name: 'a', path: A, free: 100 * GiB }] }) },
      },
      'PlacementHostUndeclared',
    ],
    [
      'two disks with one target',
      {
        disks: [
          disk('vda', `${A}/web.qcow2`, { storage: 'a' }),
          disk('vda', `${A}/web-2.qcow2`, { storage: 'a' }),
        ],
      },
      'DuplicateDiskTarget',
    ],
    [
      'two disks with one path',
      {
        disks: [
          disk('vda', `${A}/web.qcow2`, { storage: 'a' }),
          disk('vdb', `${A}/web.qcow2`, { storage: 'a' }),
        ],
      },
      'DuplicateDiskPath',
    ],
    [
      'a host status giving a storage another path than its manifest',
      {
        disks: [disk('vda', `${A}/web.qcow2`, { storage: 'a' })],
        hosts: {
          'hv-a': hostStatus('hv-a', {
            storage: [
              { name: 'a', path: A, free: 100 * GiB },
              { name: 'b', path: '/tmp/b', free: 100 * GiB },
            ],
          }),
        },
      },
      'HostStorageMismatch',
    ],
  ])('%s: blocked by an error finding, no ready move', (_title, c, reason) => {
    const plan = planMigrations(
      fleet(),
      actualState([...hostStatuses(c.hosts), vmStatus('web', { host: c.host ?? 'hv-a', disks: c.disks })]),
    );
    expect(plan.migrations).toHaveLength(1);
    const m = plan.migrations[0]!;
    expect(m.blocked).toBe(true);
    expect(m.findings).toContainEqual(expect.objectContaining({ severity: 'error', reason }));
    expect(plan.unchanged).toEqual([]);
    // every output format says so
    expect(renderPlanTable(plan)).toContain(reason);
    expect(renderPlanMarkdown(plan)).toContain(reason);
    expect(renderPlanJson(plan)).toContain(reason);
  });

  it('a clean status plans a ready move (control)', () => {
    const plan = planMigrations(
      fleet(),
      actualState([
        ...hostStatuses(),
        vmStatus('web', { host: 'hv-a', disks: [disk('vda', `${A}/web.qcow2`, { storage: 'a' })] }),
      ]),
    );
    expect(plan.migrations.map((m) => [m.vm, m.blocked, m.findings])).toEqual([['web', false, []]]);
    expect(plan.findings).toBeUndefined();
  });

  it('two disks with one target where the VM already is: a finding about the VM, not dropped', () => {
    const plan = planMigrations(
      fleet(),
      actualState([
        ...hostStatuses(),
        vmStatus('web', {
          host: 'hv-a',
          disks: [
            disk('vda', `${B}/web.qcow2`, { storage: 'b' }),
            disk('vda', `${B}/web-2.qcow2`, { storage: 'b' }),
          ],
        }),
      ]),
    );
    expect(plan.migrations).toEqual([]);
    expect(plan.findings).toEqual([
      expect.objectContaining({
        subject: 'VirtualMachine/web',
        severity: 'error',
        reason: 'DuplicateDiskTarget',
      }),
    ]);
    expect(renderPlanTable(plan)).toContain('VirtualMachine/web');
    expect(JSON.parse(renderPlanJson(plan)).findings[0].reason).toBe('DuplicateDiskTarget');
  });

  it('a host status that disagrees with its manifest, with no move touching the host: a finding about the host', () => {
    const plan = planMigrations(
      fleet(),
      actualState([
        ...hostStatuses({
          'hv-b': hostStatus('hv-b', { storage: [{ name: 'a', path: '/etc', free: 100 * GiB }] }),
        }),
        vmStatus('web', { host: 'hv-a', disks: [disk('vda', `${B}/web.qcow2`, { storage: 'b' })] }),
      ]),
    );
    expect(plan.unchanged).toEqual(['web']);
    expect(plan.findings).toEqual([
      expect.objectContaining({ subject: 'Host/hv-b', severity: 'error', reason: 'HostStorageMismatch' }),
    ]);
    expect(renderPlanMarkdown(plan)).toContain('HostStorageMismatch');
  });
});
