/**
 * The pull-request comment (`vmplace plan --format markdown`): golden files for the example
 * fleet and for a blocked plan, and its Mermaid gantt chart checked by the real `mermaid`
 * parser (test/support/mermaid-parse.js), not by a pattern.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { commentContext, readRepo } from '../../../src/app/commands';
import { markInFlight } from '../../../src/planner/in-flight';
import { planMigrations } from '../../../src/planner/plan';
import { mermaidLabel, renderGantt, renderPlanComment } from '../../../src/planner/render-markdown';
import { measuredThroughput, scheduleMigrations } from '../../../src/planner/schedule';
import type { Plan, PlannedMigration, VirtualMachineStatus } from '../../../src/types';
import { GiB, vmStatus } from '../../support/builders';
import { FIXTURES, REPO_ROOT } from '../../support/manifests';

const GOLDEN = path.join(FIXTURES, 'plan-comment');

/** Compare with the golden file; `UPDATE_GOLDEN=1` rewrites it. */
function golden(name: string, text: string): void {
  const file = path.join(GOLDEN, name);
  if (process.env.UPDATE_GOLDEN === '1') fs.writeFileSync(file, text);
  expect(text).toBe(fs.readFileSync(file, 'utf8'));
}

interface Parsed {
  ok: boolean;
  error?: string;
  type?: string;
  tasks: { id: string; task: string; section: string; start: number; end: number; crit: boolean }[];
}

function parseMermaid(text: string): Parsed {
  const out = execFileSync(process.execPath, [path.join(REPO_ROOT, 'test/support/mermaid-parse.js')], {
    input: text,
    cwd: REPO_ROOT,
    timeout: 60_000,
  });
  return JSON.parse(out.toString('utf8')) as Parsed;
}

function mermaidBlocks(markdown: string): string[] {
  return [...markdown.matchAll(/^```mermaid\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);
}

async function fleetComment(): Promise<{ plan: Plan; text: string }> {
  const root = path.join(REPO_ROOT, 'examples/fleet');
  const input = await readRepo({ root });
  expect(input.problems).toEqual([]);
  const plan = markInFlight(
    planMigrations(input.desired, input.actual, input.settings!.policy),
    input.actual,
  );
  return { plan, text: renderPlanComment(plan, commentContext(plan, input)) };
}

function migration(vm: string, order: number, over: Partial<PlannedMigration> = {}): PlannedMigration {
  return {
    vm,
    kind: 'cross-host',
    strategy: 'quick',
    from: { host: 'hv-a' },
    to: { host: 'hv-b' },
    disks: [{ target: 'vda', from: 'local', to: 'local', bytes: 10 * GiB }],
    stateOnly: false,
    blocked: false,
    findings: [],
    order,
    ...over,
  };
}

const LIMITS = { concurrent: 4, perHost: 2, perStorage: 8 };

describe('the plan comment', () => {
  it('examples/fleet: matches the golden file, and its gantt chart is accepted by mermaid', async () => {
    const { plan, text } = await fleetComment();
    golden('fleet.md', text);
    const [chart, ...more] = mermaidBlocks(text);
    expect(more).toEqual([]);
    const parsed = parseMermaid(chart!);
    expect(parsed).toMatchObject({ ok: true, type: 'gantt' });
    // one copy task per unblocked migration, a critical pause task for every VM that pauses
    const copies = parsed.tasks.filter((t) => t.id.endsWith('c'));
    expect(copies).toHaveLength(plan.migrations.filter((m) => !m.blocked).length);
    expect(parsed.tasks.filter((t) => t.crit).every((t) => t.id.endsWith('p'))).toBe(true);
  });

  it('a blocked plan says why, one line per error finding, and charts only what can run', () => {
    const plan: Plan = {
      migrations: [
        migration('web-01', 1),
        migration('db-01', 2, {
          blocked: true,
          findings: [
            {
              severity: 'error',
              reason: 'TargetSpaceInsufficient',
              message: 'needs 12.0 GiB free on local (host hv-b)',
            },
            { severity: 'error', reason: 'CpuIncompatible', message: 'hv-b lacks avx512f' },
            { severity: 'warning', reason: 'HostStatusUnknown', message: 'host hv-c has no status yet' },
          ],
        }),
      ],
      unchanged: [],
      unknown: [],
      suspended: [],
    };
    const text = renderPlanComment(plan, { limits: LIMITS, measured: new Map(), fill: [] });
    golden('blocked.md', text);
    expect(text).toContain('- db-01: TargetSpaceInsufficient: needs 12.0 GiB free on local (host hv-b)\n');
    expect(text).toContain('- db-01: CpuIncompatible: hv-b lacks avx512f\n');
    const parsed = parseMermaid(mermaidBlocks(text)[0]!);
    expect(parsed.ok).toBe(true);
    expect(parsed.tasks.map((t) => t.section)).not.toContain('2 db-01');
  });

  it('names that would break a chart or mention someone are neutralised', () => {
    const vm = '@octo:cat; #1\n';
    const plan: Plan = { migrations: [migration(vm, 1)], unchanged: [], unknown: [], suspended: [] };
    const text = renderPlanComment(plan, { limits: LIMITS, measured: new Map(), fill: [] });
    expect(text).not.toMatch(/@octo/);
    expect(text).not.toContain('\n1\n');
    expect(mermaidLabel(vm)).toBe('_octo_cat_ _1_');
    expect(parseMermaid(mermaidBlocks(text)[0]!).ok).toBe(true);
  });

  it('the parser in these tests does reject a broken chart (the check is real)', () => {
    const slots = scheduleMigrations(
      { migrations: [migration('a', 1)], unchanged: [], unknown: [], suspended: [] },
      { limits: LIMITS, measured: new Map() },
    );
    const good = renderGantt(slots).slice(1, -1).join('\n');
    expect(parseMermaid(good).ok).toBe(true);
    expect(parseMermaid(good.replace(':m1c, 0,', ':m1c, soon,')).ok).toBe(false);
  });
});

describe('the schedule', () => {
  it('runs migrations side by side within the per-host limit, in plan order', () => {
    const ms = [1, 2, 3].map((i) => migration(`vm-${i}`, i));
    const slots = scheduleMigrations(
      { migrations: ms, unchanged: [], unknown: [], suspended: [] },
      { limits: { concurrent: 4, perHost: 2, perStorage: 8 }, measured: new Map() },
    );
    // 10 GiB at the default 100 MiB/s: 102.4 s, then a 1 s pause; the third waits for a host slot
    expect(slots.map((s) => [s.migration.vm, s.startMs, s.endMs])).toEqual([
      ['vm-1', 0, 103_400],
      ['vm-2', 0, 103_400],
      ['vm-3', 103_400, 206_800],
    ]);
  });

  it('uses the throughput and pause measured between the same hosts, and the bandwidth cap', () => {
    const done: VirtualMachineStatus = {
      ...vmStatus('old'),
      migration: {
        id: 'm-1',
        strategy: 'quick',
        from: { host: 'hv-a' },
        to: { host: 'hv-b' },
        step: 'Completed',
        bytesDone: 20 * GiB,
        bytesTotal: 20 * GiB,
        startedAt: '2025-01-01T00:00:00.000Z',
        finishedAt: '2025-01-01T00:01:41.000Z',
        pauseMs: 1000,
        attempts: 1,
      },
    };
    const measured = measuredThroughput([done]);
    expect(measured.get('hv-a→hv-b')).toEqual({
      bytesPerSecond: Math.round((20 * GiB) / 100),
      pauseMs: 1000,
      samples: 1,
    });
    const plan: Plan = { migrations: [migration('x', 1)], unchanged: [], unknown: [], suspended: [] };
    const [slot] = scheduleMigrations(plan, { limits: LIMITS, measured });
    expect(slot).toMatchObject({ copyMs: 50_000, pauseMs: 1000, measured: true });
    const [capped] = scheduleMigrations(plan, {
      limits: { ...LIMITS, bandwidthBytesPerSecond: 50 * 1024 * 1024 },
      measured,
    });
    expect(capped!.copyMs).toBe(204_800);
  });
});
