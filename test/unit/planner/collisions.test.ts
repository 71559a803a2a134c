/**
 * Issue 9 items 1 and 5, planner side: every moved disk gets a path of its own
 * (`<location>/<vm>/<file>`), a path two disks would share blocks every migration involved
 * (TargetPathCollision), and a VM defined on two hosts is never moved (DefinedOnSeveralHosts).
 */
import Ajv2020 from 'ajv/dist/2020';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { planMigrations } from '../../../src/planner/plan';
import { renderPlanJson, renderPlanMarkdown, renderPlanTable } from '../../../src/planner/render';
import type { DiskPlacement, ManifestObject, Plan, VirtualMachineStatus } from '../../../src/types';
import { actualState, CSV1, desiredState, disk, fleet, LOCAL, vm, vmStatus } from '../../support/builders';

const planSchema = new Ajv2020({ allErrors: true, strict: true }).compile(
  JSON.parse(readFileSync(join(__dirname, '../../../schemas/plan.schema.json'), 'utf8')) as object,
);

interface Case {
  name: string;
  /** desired host and storage */
  to: [string, string];
  /** actual host and disks */
  at: [string, DiskPlacement[]];
  /** per-disk desired storage */
  disks?: Record<string, string>;
  /** hosts a domain of this name is defined on (status `definedOn`) */
  definedOn?: string[];
}

function planOf(cases: Case[]): Plan {
  const { objects, hostStatuses } = fleet();
  const all: ManifestObject[] = [...objects];
  const statuses: VirtualMachineStatus[] = [];
  for (const c of cases) {
    all.push(vm(c.name, c.to[0], c.to[1], c.disks ? { disks: c.disks } : {}));
    const s = vmStatus(c.name, { host: c.at[0], disks: c.at[1] });
    if (c.definedOn) s.definedOn = c.definedOn;
    statuses.push(s);
  }
  return planMigrations(desiredState(all), actualState([...hostStatuses, ...statuses]));
}

/** What a test expects of one VM's entry in the plan. */
interface Expect {
  /** target device -> final path */
  toPaths?: Record<string, string>;
  blocked: boolean;
  /** `severity:Reason` of the findings this test is about */
  reasons: string[];
}

const OURS = /TargetPathCollision|DefinedOnSeveralHosts/;

function entryOf(plan: Plan, name: string): Expect & { messages: string[] } {
  const m = plan.migrations.find((x) => x.vm === name);
  if (!m) throw new Error(`no migration for ${name}`);
  const ours = m.findings.filter((f) => OURS.test(f.reason));
  return {
    toPaths: Object.fromEntries(
      m.disks.flatMap((d) => (d.toPath === undefined ? [] : [[d.target, d.toPath]])),
    ),
    blocked: m.blocked,
    reasons: ours.map((f) => `${f.severity}:${f.reason}`),
    messages: ours.map((f) => f.message),
  };
}

const onLocal = (target: string, rel: string) => disk(target, `${LOCAL}/${rel}`);
const onCsv1 = (target: string, rel: string) => disk(target, `${CSV1}/${rel}`);

describe('target paths: per VM, never shared (issue 9 item 1)', () => {
  it.each<[string, Case[], Record<string, Expect>]>([
    [
      'two VMs whose disks share file names, moved to one storage in one plan',
      [
        {
          name: 'web-01',
          to: ['hv-a', 'csv'],
          at: ['hv-a', [onLocal('vda', 'web-01/disk.qcow2'), onLocal('vdb', 'web-01/data.qcow2')]],
        },
        {
          name: 'db-01',
          to: ['hv-a', 'csv'],
          at: ['hv-a', [onLocal('vda', 'db-01/disk.qcow2'), onLocal('vdb', 'db-01/data.qcow2')]],
        },
      ],
      {
        'web-01': {
          toPaths: { vda: `${CSV1}/web-01/disk.qcow2`, vdb: `${CSV1}/web-01/data.qcow2` },
          blocked: false,
          reasons: [],
        },
        'db-01': {
          toPaths: { vda: `${CSV1}/db-01/disk.qcow2`, vdb: `${CSV1}/db-01/data.qcow2` },
          blocked: false,
          reasons: [],
        },
      },
    ],
    [
      'two VMs on two hosts of one cluster, same file name, to the shared storage',
      [
        { name: 'web-01', to: ['hv-a', 'csv'], at: ['hv-a', [onLocal('vda', 'disk.qcow2')]] },
        { name: 'db-01', to: ['hv-b', 'csv'], at: ['hv-b', [onLocal('vda', 'disk.qcow2')]] },
      ],
      {
        'web-01': { toPaths: { vda: `${CSV1}/web-01/disk.qcow2` }, blocked: false, reasons: [] },
        'db-01': { toPaths: { vda: `${CSV1}/db-01/disk.qcow2` }, blocked: false, reasons: [] },
      },
    ],
    [
      'two disks of one VM with the same file name',
      [
        {
          name: 'app',
          to: ['hv-a', 'csv'],
          at: ['hv-a', [onLocal('vda', 'os/disk.qcow2'), onLocal('vdb', 'data/disk.qcow2')]],
        },
      ],
      {
        app: {
          toPaths: { vda: `${CSV1}/app/vda-disk.qcow2`, vdb: `${CSV1}/app/vdb-disk.qcow2` },
          blocked: false,
          reasons: [],
        },
      },
    ],
    [
      'two disks of one VM with the same file name, only one of them moved',
      [
        {
          name: 'app',
          to: ['hv-a', 'local'],
          disks: { vdb: 'csv' },
          at: ['hv-a', [onLocal('vda', 'app/disk.qcow2'), onLocal('vdb', 'data/disk.qcow2')]],
        },
      ],
      { app: { toPaths: { vdb: `${CSV1}/app/vdb-disk.qcow2` }, blocked: false, reasons: [] } },
    ],
    [
      'a staying disk of an unchanged VM at the path a moved disk would get',
      [
        { name: 'web-01', to: ['hv-a', 'csv'], at: ['hv-a', [onLocal('vda', 'web-01/disk.qcow2')]] },
        { name: 'squat', to: ['hv-a', 'csv'], at: ['hv-a', [onCsv1('vda', 'web-01/disk.qcow2')]] },
      ],
      {
        'web-01': {
          toPaths: { vda: `${CSV1}/web-01/disk.qcow2` },
          blocked: true,
          reasons: ['error:TargetPathCollision'],
        },
      },
    ],
    [
      'a staying disk on shared storage, seen from another host of the cluster',
      [
        { name: 'web-01', to: ['hv-b', 'csv'], at: ['hv-b', [onLocal('vda', 'disk.qcow2')]] },
        { name: 'squat', to: ['hv-a', 'csv'], at: ['hv-a', [onCsv1('vda', 'web-01/disk.qcow2')]] },
      ],
      {
        'web-01': {
          toPaths: { vda: `${CSV1}/web-01/disk.qcow2` },
          blocked: true,
          reasons: ['error:TargetPathCollision'],
        },
      },
    ],
    [
      'the same path on another host’s local storage is another file: no collision',
      [
        { name: 'web-01', to: ['hv-b', 'local'], at: ['hv-a', [onLocal('vda', 'disk.qcow2')]] },
        { name: 'other', to: ['hv-a', 'local'], at: ['hv-a', [onLocal('vda', 'web-01/disk.qcow2')]] },
      ],
      { 'web-01': { toPaths: { vda: `${LOCAL}/web-01/disk.qcow2` }, blocked: false, reasons: [] } },
    ],
    [
      'a moved disk onto the current path of a disk that is itself moving away: both blocked',
      [
        { name: 'web-01', to: ['hv-a', 'csv'], at: ['hv-a', [onLocal('vda', 'disk.qcow2')]] },
        { name: 'old', to: ['hv-a', 'local'], at: ['hv-a', [onCsv1('vda', 'web-01/disk.qcow2')]] },
      ],
      {
        'web-01': {
          toPaths: { vda: `${CSV1}/web-01/disk.qcow2` },
          blocked: true,
          reasons: ['error:TargetPathCollision'],
        },
        old: {
          toPaths: { vda: `${LOCAL}/old/disk.qcow2` },
          blocked: true,
          reasons: ['error:TargetPathCollision'],
        },
      },
    ],
  ])('%s', (_title, cases, expected) => {
    const plan = planOf(cases);
    for (const [name, want] of Object.entries(expected)) {
      const got = entryOf(plan, name);
      expect({ toPaths: got.toPaths, blocked: got.blocked, reasons: got.reasons }).toEqual(want);
      for (const message of got.messages) {
        // names the path and both disks
        const squatter = cases.find((c) => c.name !== name)!.name;
        expect(message).toContain(`${CSV1}/web-01/disk.qcow2`);
        expect(message).toContain('web-01 disk vda');
        expect(message).toContain(`${squatter} disk vda`);
      }
    }
    // distinct final paths within one scope (here every case shares at most one location)
    const moved = plan.migrations.filter((m) => !m.blocked).flatMap((m) => m.disks.map((d) => d.toPath));
    expect(new Set(moved).size).toBe(moved.length);
  });

  it('shows the final paths in every output format', () => {
    const plan = planOf([
      { name: 'web-01', to: ['hv-a', 'csv'], at: ['hv-a', [onLocal('vda', 'web-01/disk.qcow2')]] },
    ]);
    const doc = JSON.parse(renderPlanJson(plan)) as { migrations: { disks: { toPath?: string }[] }[] };
    expect(planSchema(doc)).toBe(true);
    expect(doc.migrations[0]!.disks[0]!.toPath).toBe(`${CSV1}/web-01/disk.qcow2`);
    expect(renderPlanTable(plan)).toMatch(
      /Target paths:\n {2}web-01 {2}vda {2}\/cluster\/c1\/csv\/web-01\/disk\.qcow2\n/,
    );
    expect(renderPlanMarkdown(plan)).toContain('vda: local → csv (/cluster/c1/csv/web-01/disk.qcow2)');
  });
});

describe('a VM defined on two hosts (issue 9 item 5)', () => {
  it.each<[string, Case, 'migration' | 'unchanged']>([
    [
      'a planned move of a VM defined on two hosts is blocked',
      {
        name: 'db-01',
        to: ['hv-b', 'local'],
        at: ['hv-a', [onLocal('vda', 'db.qcow2')]],
        definedOn: ['hv-a', 'hv-c'],
      },
      'migration',
    ],
    [
      'a same-host move of a VM defined on two hosts is blocked',
      {
        name: 'db-01',
        to: ['hv-a', 'csv'],
        at: ['hv-a', [onLocal('vda', 'db.qcow2')]],
        definedOn: ['hv-a', 'hv-b'],
      },
      'migration',
    ],
    [
      'an unchanged VM defined on two hosts is reported as a warning of the plan',
      {
        name: 'db-01',
        to: ['hv-a', 'local'],
        at: ['hv-a', [onLocal('vda', 'db.qcow2')]],
        definedOn: ['hv-a', 'hv-b'],
      },
      'unchanged',
    ],
  ])('%s', (_title, c, where) => {
    const plan = planOf([c]);
    const hosts = c.definedOn!.join(', ');
    if (where === 'migration') {
      const got = entryOf(plan, 'db-01');
      expect(got.blocked).toBe(true);
      expect(got.reasons).toEqual(['error:DefinedOnSeveralHosts']);
      expect(got.messages[0]).toContain(hosts);
      expect(plan.findings ?? []).toEqual([]);
    } else {
      expect(plan.unchanged).toEqual(['db-01']);
      expect(plan.findings).toEqual([
        expect.objectContaining({ vm: 'db-01', severity: 'warning', reason: 'DefinedOnSeveralHosts' }),
      ]);
      expect(plan.findings![0]!.message).toContain(hosts);
      expect(renderPlanTable(plan)).toContain('DefinedOnSeveralHosts');
      expect(planSchema(JSON.parse(renderPlanJson(plan)))).toBe(true);
    }
  });

  it('a VM defined on one host is not reported', () => {
    const plan = planOf([
      { name: 'db-01', to: ['hv-a', 'csv'], at: ['hv-a', [onLocal('vda', 'db.qcow2')]], definedOn: ['hv-a'] },
    ]);
    expect(entryOf(plan, 'db-01')).toMatchObject({ blocked: false, reasons: [] });
    expect(plan.findings ?? []).toEqual([]);
  });
});
