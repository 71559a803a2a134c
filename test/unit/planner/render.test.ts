import Ajv2020 from 'ajv/dist/2020';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { formatBytes } from '../../../src/planner/bytes';
import { planMigrations } from '../../../src/planner/plan';
import {
  escapeMarkdown,
  MARKDOWN_LIMIT,
  planHasChanges,
  renderPlanJson,
  renderPlanMarkdown,
  renderPlanTable,
} from '../../../src/planner/render';
import type { Plan, PlannedMigration } from '../../../src/types';
import {
  actualState,
  CSV1,
  desiredState,
  disk,
  fleet,
  GiB,
  LOCAL,
  MiB,
  vm,
  vmStatus,
} from '../../support/builders';

const schema = JSON.parse(
  readFileSync(join(__dirname, '../../../schemas/plan.schema.json'), 'utf8'),
) as object;
const validate = new Ajv2020({ allErrors: true, strict: true }).compile(schema);

function migration(overrides: Partial<PlannedMigration> = {}): PlannedMigration {
  return {
    vm: 'db-01',
    kind: 'same-host',
    strategy: 'quick',
    from: { host: 'hv-a' },
    to: { host: 'hv-a' },
    disks: [{ target: 'vda', from: 'local', to: 'csv2', bytes: 3 * GiB }],
    stateOnly: false,
    blocked: false,
    findings: [],
    order: 1,
    ...overrides,
  };
}

function samplePlan(): Plan {
  return {
    revision: 'abc123',
    migrations: [
      migration(),
      migration({
        vm: 'web-01',
        kind: 'cross-host',
        from: { host: 'hv-a' },
        to: { host: 'hv-b' },
        disks: [{ target: 'vda', from: 'csv', to: 'csv', bytes: 0 }],
        stateOnly: true,
        findings: [{ severity: 'warning', reason: 'CpuModelMismatch', message: 'CPU model differs' }],
        order: 2,
      }),
      migration({
        vm: 'mail-01',
        kind: 'cross-cluster',
        to: { host: 'hv-c' },
        disks: [
          { target: 'vda', from: 'csv', to: 'csv', bytes: 2 * GiB },
          { target: 'vdb', from: 'local', to: 'csv', bytes: 1 * GiB },
        ],
        blocked: true,
        findings: [{ severity: 'error', reason: 'TargetSpaceInsufficient', message: 'needs 4.0 GiB' }],
        order: 3,
      }),
    ],
    unchanged: ['app-01', 'app-02'],
    unknown: ['new-01'],
    suspended: [],
  };
}

/** A plan from the real planner exercising most features. */
function plannedFleet(): Plan {
  const { objects, hostStatuses } = fleet({ free: { 'hv-a:csv': 4 * GiB }, noStatus: ['hv-s'] });
  return planMigrations(
    desiredState([
      ...objects,
      vm('a', 'hv-a', 'csv'),
      vm('b', 'hv-b', 'csv'),
      vm('c', 'hv-s', 'local'),
      vm('d', 'hv-a', 'local'),
      vm('e', 'hv-a', 'local'),
      vm('f', 'hv-b', 'local', { suspend: true }),
    ]),
    actualState([
      ...hostStatuses,
      vmStatus('a', { host: 'hv-a', disks: [disk('vda', `${LOCAL}/a.qcow2`, { allocated: 2 * GiB })] }),
      vmStatus('b', { host: 'hv-a', memoryBytes: 1 * GiB, disks: [disk('vda', `${CSV1}/b.qcow2`)] }),
      vmStatus('c', { host: 'hv-a', disks: [disk('vda', `${LOCAL}/c.qcow2`)] }),
      vmStatus('d', { host: 'hv-a', disks: [disk('vda', `${CSV1}/d.qcow2`, { allocated: 10 * GiB })] }),
      vmStatus('e', { host: 'hv-a', disks: [disk('vda', `${LOCAL}/e.qcow2`)] }),
    ]),
    undefined,
    { revision: 'deadbeef' },
  );
}

describe('renderPlanJson', () => {
  it('writes the documented shape with a fixed key order', () => {
    const plan: Plan = {
      revision: 'abc',
      migrations: [migration()],
      unchanged: ['web-01'],
      unknown: [],
      suspended: [],
    };
    expect(JSON.parse(renderPlanJson(plan))).toEqual({
      revision: 'abc',
      migrations: [
        {
          vm: 'db-01',
          kind: 'same-host',
          strategy: 'quick',
          from: { host: 'hv-a' },
          to: { host: 'hv-a' },
          disks: [{ target: 'vda', from: 'local', to: 'csv2', bytes: 3221225472 }],
          stateOnly: false,
          blocked: false,
          findings: [],
          order: 1,
        },
      ],
      unchanged: ['web-01'],
      unknown: [],
      suspended: [],
    });
    const text = renderPlanJson(plan);
    const keys = [...text.matchAll(/^\s*"(\w+)":/gm)].map((m) => m[1]);
    expect(keys.slice(0, 15)).toEqual([
      'revision',
      'migrations',
      'vm',
      'kind',
      'strategy',
      'from',
      'host',
      'to',
      'host',
      'disks',
      'target',
      'from',
      'to',
      'bytes',
      'stateOnly',
    ]);
    expect(text.endsWith('}\n')).toBe(true);
  });

  it('is stable: key order does not follow the input object', () => {
    const shuffled = { ...migration(), order: 1 };
    const reordered = Object.fromEntries(Object.entries(shuffled).reverse()) as unknown as PlannedMigration;
    const a = renderPlanJson({ migrations: [shuffled], unchanged: [], unknown: [], suspended: [] });
    const b = renderPlanJson({ suspended: [], unknown: [], unchanged: [], migrations: [reordered] });
    expect(b).toBe(a);
    expect(JSON.parse(a).revision).toBeNull();
  });

  it.each<[string, () => Plan]>([
    ['a hand-made plan', samplePlan],
    ['a planned fleet', plannedFleet],
    ['an empty plan', () => ({ migrations: [], unchanged: [], unknown: [], suspended: [] })],
  ])('validates against schemas/plan.schema.json: %s', (_title, make) => {
    const doc: unknown = JSON.parse(renderPlanJson(make()));
    const ok = validate(doc);
    expect(validate.errors ?? []).toEqual([]);
    expect(ok).toBe(true);
  });

  it.each<[string, (doc: Record<string, unknown>) => void]>([
    ['a missing list', (doc) => delete doc.unknown],
    ['an unknown top-level key', (doc) => (doc.extra = 1)],
    ['a bad kind', (doc) => ((doc.migrations as Record<string, unknown>[])[0]!.kind = 'teleport')],
    ['order 0', (doc) => ((doc.migrations as Record<string, unknown>[])[0]!.order = 0)],
    [
      'fractional bytes',
      (doc) => ((doc.migrations as { disks: { bytes: number }[] }[])[0]!.disks[0]!.bytes = 1.5),
    ],
  ])('the schema rejects %s', (_title, mutate) => {
    const doc = JSON.parse(renderPlanJson(samplePlan())) as Record<string, unknown>;
    mutate(doc);
    expect(validate(doc)).toBe(false);
  });

  it('covers the planned fleet as expected', () => {
    const plan = plannedFleet();
    expect(plan.migrations.map((m) => [m.vm, m.kind, m.stateOnly, m.blocked])).toEqual([
      ['a', 'same-host', false, false],
      ['b', 'cross-host', true, false],
      ['c', 'cross-host', false, false],
      ['d', 'same-host', false, false],
    ]);
    expect(plan.suspended).toEqual(['f']);
    expect(plan.unchanged).toEqual(['e']);
  });
});

describe('formatBytes', () => {
  it.each<[number, string]>([
    [0, '0 B'],
    [512, '512 B'],
    [1023, '1023 B'],
    [1024, '1.0 KiB'],
    [1536, '1.5 KiB'],
    [3 * GiB, '3.0 GiB'],
    [100 * MiB, '100.0 MiB'],
    [1024 * GiB - 1, '1.0 TiB'],
    [5 * 1024 * GiB, '5.0 TiB'],
    [-2 * GiB, '-2.0 GiB'],
  ])('%d -> %s', (bytes, text) => {
    expect(formatBytes(bytes)).toBe(text);
  });
});

describe('renderPlanTable', () => {
  it('aligns columns and shows sizes, findings and the summary', () => {
    const text = renderPlanTable(samplePlan());
    const lines = text.split('\n');
    const header = lines[0]!;
    expect(header).toMatch(/^ORDER\s+VM\s+KIND\s+STRATEGY\s+FROM\s+TO\s+DISKS\s+COPY\s+STATUS$/);
    const rows = lines.slice(1, 4);
    // every column starts at the same offset in every row
    for (const col of ['VM', 'KIND', 'STRATEGY', 'FROM', 'DISKS']) {
      const at = header.indexOf(col);
      for (const row of rows) {
        expect(row[at - 1]).toBe(' ');
        expect(row[at]).not.toBe(' ');
      }
    }
    expect(rows[0]).toContain('hv-a:local');
    expect(rows[0]).toContain('hv-a:csv2');
    expect(rows[0]).toContain('3.0 GiB');
    expect(rows[1]).toContain('state only');
    expect(rows[1]).toContain('ready (1 warning)');
    expect(rows[2]).toContain('blocked');
    expect(rows[2]).toContain('hv-c:csv');
    expect(text).toContain('Findings:');
    // errors first
    expect(text.indexOf('TargetSpaceInsufficient')).toBeLessThan(text.indexOf('CpuModelMismatch'));
    expect(text).toContain('Unknown (no observed placement): new-01');
    expect(lines.at(-2)).toBe(
      'Plan: 3 migrations (1 blocked), 2 unchanged, 1 unknown, 0 suspended; 3.0 GiB to copy.',
    );
  });

  it('says so when there is nothing to do', () => {
    const text = renderPlanTable({ migrations: [], unchanged: ['a'], unknown: [], suspended: ['b'] });
    expect(text).toBe(
      'No migrations.\n\nSuspended: b\n\nPlan: 0 migrations (0 blocked), 1 unchanged, 0 unknown, 1 suspended; 0 B to copy.\n',
    );
  });

  it('keeps a message with a newline on one line', () => {
    const plan = samplePlan();
    plan.migrations[0]!.findings = [{ severity: 'info', reason: 'Note', message: 'one\ntwo' }];
    expect(renderPlanTable(plan)).toContain('one two');
  });
});

describe('renderPlanMarkdown', () => {
  it('starts with the summary line and has a table of moves', () => {
    const text = renderPlanMarkdown(samplePlan());
    const lines = text.split('\n');
    expect(lines[0]).toBe(
      '**vmplace plan**: 3 migrations (1 blocked), 2 unchanged, 1 unknown, 0 suspended; 3.0 GiB to copy',
    );
    expect(text).toContain('| # | VM | Kind | Strategy | From | To | Disks | Bytes | Status |');
    expect(text).toContain(
      '| 1 | db-01 | same-host | quick | hv-a | hv-a | vda: local → csv2 | 3.0 GiB | ready |',
    );
    expect(text).toContain(
      '| 2 | web-01 | cross-host | quick | hv-a | hv-b | state only | 0 B | ready (1 warning) |',
    );
    expect(text).toContain('vda: csv → csv<br>vdb: local → csv | 3.0 GiB | **blocked** |');
    expect(text).toContain('- **error** mail-01 TargetSpaceInsufficient: needs 4.0 GiB');
    expect(text).toContain('Unknown (no observed placement yet): new-01');
    expect(text).not.toContain('Suspended:');
  });

  it.each<[string, string]>([
    ['a|b', 'a\\|b'],
    ['*bold* _it_', '\\*bold\\* \\_it\\_'],
    ['[link](http://x)', '\\[link\\](http://x)'],
    ['<script>&', '&lt;script&gt;&amp;'],
    ['`code` ~s~ \\', '\\`code\\` \\~s\\~ \\\\'],
    ['line\nbreak', 'line break'],
  ])('escapes %j', (raw, escaped) => {
    expect(escapeMarkdown(raw)).toBe(escaped);
  });

  it('escapes names and messages so the table keeps its columns', () => {
    const plan = samplePlan();
    plan.migrations[0] = migration({
      vm: 'we|b_01',
      findings: [{ severity: 'warning', reason: 'Odd', message: 'pipe | in *message*' }],
    });
    const text = renderPlanMarkdown(plan);
    const row = text.split('\n').find((l) => l.startsWith('| 1 |'))!;
    expect(row).toContain('we\\|b\\_01');
    // 9 columns -> 10 unescaped pipes
    expect(row.replace(/\\\|/g, '').split('|')).toHaveLength(11);
    expect(text).toContain('pipe \\| in \\*message\\*');
  });

  it.each<[number, number]>([
    [10, 0],
    [5000, 1],
  ])('stays under 65,000 characters with %d migrations', (count, findingsPer) => {
    const migrations = Array.from({ length: count }, (_, i) =>
      migration({
        vm: `vm-${String(i).padStart(5, '0')}`,
        order: i + 1,
        findings: Array.from({ length: findingsPer }, () => ({
          severity: 'warning' as const,
          reason: 'CpuModelMismatch',
          message: 'CPU model differs: hv-a has Cascadelake-Server, hv-b has Skylake-Server',
        })),
      }),
    );
    const names = Array.from({ length: count }, (_, i) => `new-${i}`);
    const plan: Plan = { migrations, unchanged: [], unknown: names, suspended: names };
    const text = renderPlanMarkdown(plan);
    expect(text.length).toBeLessThan(MARKDOWN_LIMIT);
    const rows = text.split('\n').filter((l) => /^\| \d+ \|/.test(l)).length;
    const findings = text.split('\n').filter((l) => l.startsWith('- **warning**')).length;
    if (count === 10) {
      expect(rows).toBe(10);
      expect(text).not.toContain('not shown');
    } else {
      expect(rows).toBeGreaterThan(100);
      expect(rows).toBeLessThan(count);
      expect(text).toContain(`_${count - rows} more migrations not shown: the comment size is limited._`);
      expect(findings).toBeGreaterThan(100);
      expect(text).toContain(`_${count - findings} more findings not shown: the comment size is limited._`);
      expect(text).toMatch(/Unknown \(no observed placement yet\): new-0, new-1, .* and \d+ more\n/);
      expect(text.length).toBeGreaterThan(MARKDOWN_LIMIT - 2000);
    }
  });
});

describe('planHasChanges', () => {
  it.each<[string, Plan, boolean]>([
    ['no migrations', { migrations: [], unchanged: ['a'], unknown: ['b'], suspended: ['c'] }, false],
    ['one migration', { migrations: [migration()], unchanged: [], unknown: [], suspended: [] }, true],
    [
      'only a blocked migration',
      { migrations: [migration({ blocked: true })], unchanged: [], unknown: [], suspended: [] },
      true,
    ],
  ])('%s -> %s', (_title, plan, expected) => {
    expect(planHasChanges(plan)).toBe(expected);
  });
});
