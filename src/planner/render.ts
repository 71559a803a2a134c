/**
 * Plan renderers: stable JSON (schemas/plan.schema.json), a terminal table, and a markdown PR
 * comment. Pure string building; callers decide where the text goes.
 */
import type { Finding, Plan, PlanFinding, PlannedMigration } from '../types';
import { neutraliseMentions, safeText } from '../text';
import { formatBytes } from './bytes';
import { MIGRATION_IN_FLIGHT } from './in-flight';

export { planHasChanges } from './plan';

/** The JSON document `renderPlanJson` writes; key order is part of the contract. */
export interface PlanDocument {
  /** git revision of the manifests, `null` when not known */
  revision: string | null;
  migrations: PlannedMigration[];
  unchanged: string[];
  unknown: string[];
  suspended: string[];
  /** VMs whose migration is in flight and already goes where they should be; only when any */
  inFlight?: string[];
  /** findings about the input, not one migration (`status/` edits, status that disagrees with the manifests); only when any */
  findings?: PlanFinding[];
}

/** The plan as a plain object with a fixed key order (see `schemas/plan.schema.json`). */
export function toPlanDocument(plan: Plan): PlanDocument {
  return {
    revision: plan.revision ?? null,
    migrations: plan.migrations.map((m) => ({
      vm: m.vm,
      kind: m.kind,
      strategy: m.strategy,
      from: { host: m.from.host },
      to: { host: m.to.host },
      disks: m.disks.map((d) => ({
        target: d.target,
        from: d.from,
        to: d.to,
        ...(d.toPath === undefined ? {} : { toPath: d.toPath }),
        bytes: d.bytes,
      })),
      stateOnly: m.stateOnly,
      blocked: m.blocked,
      findings: m.findings.map((f) => ({ severity: f.severity, reason: f.reason, message: f.message })),
      order: m.order,
    })),
    unchanged: [...plan.unchanged],
    unknown: [...plan.unknown],
    suspended: [...plan.suspended],
    ...(plan.inFlight?.length ? { inFlight: [...plan.inFlight] } : {}),
    ...(plan.findings?.length
      ? {
          findings: plan.findings.map((f) => ({
            subject: f.subject,
            ...(f.vm !== undefined ? { vm: f.vm } : {}),
            severity: f.severity,
            reason: f.reason,
            message: f.message,
          })),
        }
      : {}),
  };
}

/** Stable, pretty JSON (2-space indent, trailing newline) matching `schemas/plan.schema.json`. */
export function renderPlanJson(plan: Plan): string {
  return `${JSON.stringify(toPlanDocument(plan), null, 2)}\n`;
}

/** Bytes that unblocked migrations will copy. */
export function planCopyBytes(plan: Plan): number {
  let total = 0;
  for (const m of plan.migrations) if (!m.blocked) for (const d of m.disks) total += d.bytes;
  return total;
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** `3 migrations (1 blocked), 12 unchanged, 1 unknown, 0 suspended; 6.0 GiB to copy` */
export function summarizePlan(plan: Plan): string {
  const blocked = plan.migrations.filter((m) => m.blocked).length;
  return (
    `${plural(plan.migrations.length, 'migration')} (${blocked} blocked), ` +
    `${plan.unchanged.length} unchanged, ${plan.unknown.length} unknown, ${plan.suspended.length} suspended` +
    (plan.inFlight?.length ? `, ${plan.inFlight.length} in flight` : '') +
    '; ' +
    `${formatBytes(planCopyBytes(plan))} to copy`
  );
}

function moveBytes(m: PlannedMigration): number {
  return m.disks.reduce((sum, d) => sum + d.bytes, 0);
}

function warningCount(m: PlannedMigration): number {
  return m.findings.filter((f) => f.severity === 'warning').length;
}

export function statusText(m: PlannedMigration): string {
  if (m.blocked) return 'blocked';
  if (m.findings.some((f) => f.reason === MIGRATION_IN_FLIGHT)) return 'in flight';
  const w = warningCount(m);
  return w === 0 ? 'ready' : `ready (${plural(w, 'warning')})`;
}

function storages(m: PlannedMigration, side: 'from' | 'to'): string {
  return [...new Set(m.disks.map((d) => d[side]))].join(',');
}

function endpoint(m: PlannedMigration, side: 'from' | 'to'): string {
  const s = storages(m, side);
  return s === '' ? m[side].host : `${m[side].host}:${s}`;
}

function disksText(m: PlannedMigration): string {
  if (m.stateOnly) return 'state only';
  return m.disks.map((d) => d.target).join(',');
}

/**
 * Findings of the plan's input (labelled with their subject) and of all migrations, errors
 * first, then input findings before migrations, then by migration order.
 */
function allFindings(plan: Plan): { vm: string; finding: Finding }[] {
  const rank = { error: 0, warning: 1, info: 2 } as const;
  const out: { vm: string; finding: Finding; order: number }[] = [];
  for (const f of plan.findings ?? []) out.push({ vm: f.subject, finding: f, order: 0 });
  for (const m of plan.migrations)
    for (const f of m.findings) out.push({ vm: m.vm, finding: f, order: m.order });
  out.sort((a, b) => rank[a.finding.severity] - rank[b.finding.severity] || a.order - b.order);
  return out;
}

/**
 * Control characters would break column alignment or lines; bidi overrides and zero-width
 * characters would make a reviewer read something else than what is there.
 */
function oneLine(text: string): string {
  return safeText(text, ' ');
}

/**
 * A terminal table: one aligned row per migration (order, VM, kind, strategy, host:storage
 * endpoints, disks, bytes to copy, status), then the findings, then the summary line.
 */
export function renderPlanTable(plan: Plan): string {
  const lines: string[] = [];
  if (plan.migrations.length > 0) {
    const rows = [
      ['ORDER', 'VM', 'KIND', 'STRATEGY', 'FROM', 'TO', 'DISKS', 'COPY', 'STATUS'],
      ...plan.migrations.map((m) => [
        String(m.order),
        m.vm,
        m.kind,
        m.strategy,
        endpoint(m, 'from'),
        endpoint(m, 'to'),
        disksText(m),
        formatBytes(moveBytes(m)),
        statusText(m),
      ]),
    ].map((row) => row.map(oneLine));
    const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
    const rightAligned = new Set([0, 7]);
    for (const row of rows) {
      const cells = row.map((cell, c) =>
        rightAligned.has(c) ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!),
      );
      lines.push(cells.join('  ').trimEnd());
    }
    lines.push(...targetPathLines(plan));
  } else {
    lines.push('No migrations.');
  }
  const findings = allFindings(plan);
  if (findings.length > 0) {
    lines.push('', 'Findings:');
    const vmWidth = Math.max(...findings.map((f) => oneLine(f.vm).length));
    const reasonWidth = Math.max(...findings.map((f) => oneLine(f.finding.reason).length));
    for (const { vm, finding } of findings) {
      lines.push(
        `  ${oneLine(vm).padEnd(vmWidth)}  ${finding.severity.padEnd(7)}  ${oneLine(finding.reason).padEnd(reasonWidth)}  ${oneLine(finding.message)}`,
      );
    }
  }
  if (plan.unknown.length > 0)
    lines.push('', `Unknown (no observed placement): ${oneLine(plan.unknown.join(', '))}`);
  if (plan.suspended.length > 0) lines.push('', `Suspended: ${oneLine(plan.suspended.join(', '))}`);
  if (plan.inFlight?.length)
    lines.push(
      '',
      `In flight (a migration runs, to where the manifests say): ${oneLine(plan.inFlight.join(', '))}`,
    );
  lines.push('', `Plan: ${summarizePlan(plan)}.`);
  return `${lines.join('\n')}\n`;
}

/** `Target paths:` then one aligned `vm  disk  path` line per disk of a move that copies data. */
function targetPathLines(plan: Plan): string[] {
  const rows = plan.migrations.flatMap((m) =>
    (m.stateOnly ? [] : m.disks).flatMap((d) =>
      d.toPath === undefined ? [] : [[oneLine(m.vm), oneLine(d.target), oneLine(d.toPath)]],
    ),
  );
  if (rows.length === 0) return [];
  const w0 = Math.max(...rows.map((r) => r[0]!.length));
  const w1 = Math.max(...rows.map((r) => r[1]!.length));
  return ['', 'Target paths:', ...rows.map(([vm, t, p]) => `  ${vm!.padEnd(w0)}  ${t!.padEnd(w1)}  ${p!}`)];
}

/** GitHub's comment limit is 65,536; stay clearly below it. */
export const MARKDOWN_LIMIT = 65_000;

/**
 * Escape text for inline markdown (table cells, list items): characters that open emphasis,
 * code, links, tables or HTML, plus line breaks, bidi and zero-width characters; `@name` is
 * written so GitHub does not make it a mention (no notification from a status message).
 */
export function escapeMarkdown(text: string): string {
  return neutraliseMentions(
    oneLine(text)
      .replace(/&/g, '&amp;')
      .replace(/</g, '&lt;')
      .replace(/>/g, '&gt;')
      .replace(/[\\`*_[\]|~#]/g, '\\$&'),
  );
}

const NAME_LIST_CHARS = 2000;

/** Names joined with commas, at most about `NAME_LIST_CHARS` long, then `and N more`. */
function nameList(names: readonly string[]): string {
  const shown: string[] = [];
  let length = 0;
  for (const name of names) {
    const escaped = escapeMarkdown(name);
    if (length + escaped.length + 2 > NAME_LIST_CHARS) break;
    shown.push(escaped);
    length += escaped.length + 2;
  }
  const left = names.length - shown.length;
  return left > 0 ? `${shown.join(', ')} and ${left} more` : shown.join(', ');
}

/** Take lines in order while they fit in `budget` characters (each line counts its newline). */
function takeLines(lines: readonly string[], budget: number): { taken: string[]; used: number } {
  const taken: string[] = [];
  let used = 0;
  for (const line of lines) {
    if (used + line.length + 1 > budget) break;
    taken.push(line);
    used += line.length + 1;
  }
  return { taken, used };
}

/**
 * A pull-request comment: the summary line, a table of moves (order, VM, kind, strategy, hosts,
 * disks, bytes, status), the findings (errors first), and the unknown and suspended VMs. Always
 * shorter than `limit` (default `MARKDOWN_LIMIT`) characters: table rows and findings that do not fit are left
 * out with a note saying how many. Names and messages are escaped.
 */
export function renderPlanMarkdown(plan: Plan, limit = MARKDOWN_LIMIT): string {
  const head: string[] = [`**vmplace plan**: ${summarizePlan(plan)}`];
  if (plan.revision !== undefined) head.push('', `Revision: ${escapeMarkdown(plan.revision.slice(0, 200))}`);

  const tableHead = [
    '',
    '| # | VM | Kind | Strategy | From | To | Disks | Bytes | Status |',
    '|--:|----|------|----------|------|----|-------|------:|--------|',
  ];
  const rows = plan.migrations.map((m) => {
    const disks = m.stateOnly
      ? 'state only'
      : m.disks
          .map(
            (d) =>
              `${escapeMarkdown(d.target)}: ${escapeMarkdown(d.from)} → ${escapeMarkdown(d.to)}` +
              (d.toPath === undefined ? '' : ` (${escapeMarkdown(d.toPath)})`),
          )
          .join('<br>');
    const status = m.blocked ? '**blocked**' : escapeMarkdown(statusText(m));
    const cells = [
      String(m.order),
      escapeMarkdown(m.vm),
      m.kind,
      m.strategy,
      escapeMarkdown(m.from.host),
      escapeMarkdown(m.to.host),
      disks,
      formatBytes(moveBytes(m)),
      status,
    ];
    return `| ${cells.join(' | ')} |`;
  });

  const findingLines = allFindings(plan).map(
    ({ vm, finding }) =>
      `- **${finding.severity}** ${escapeMarkdown(vm)} ${escapeMarkdown(finding.reason)}: ${escapeMarkdown(finding.message)}`,
  );
  const findingsHead = ['', '#### Findings', ''];

  const tail: string[] = [];
  if (plan.unknown.length > 0)
    tail.push('', `Unknown (no observed placement yet): ${nameList(plan.unknown)}`);
  if (plan.suspended.length > 0) tail.push('', `Suspended: ${nameList(plan.suspended)}`);

  const size = (lines: readonly string[]) => lines.reduce((n, l) => n + l.length + 1, 0);
  const noteReserve = 2 * 200;
  let remaining =
    limit -
    1 -
    noteReserve -
    size(head) -
    size(tail) -
    (rows.length > 0 ? size(tableHead) : 0) -
    (findingLines.length > 0 ? size(findingsHead) : 0);
  const rowsSize = size(rows);
  const findingsSize = size(findingLines);
  // When both cannot fit, the table keeps at least half the room; findings take the rest.
  const tableBudget =
    rowsSize + findingsSize <= remaining
      ? rowsSize
      : Math.max(remaining - findingsSize, Math.floor(remaining / 2));
  const table = takeLines(rows, tableBudget);
  remaining -= table.used;
  const found = takeLines(findingLines, remaining);

  const out = [...head];
  if (rows.length > 0) {
    out.push(...tableHead, ...table.taken);
    const left = rows.length - table.taken.length;
    if (left > 0) out.push('', `_${plural(left, 'more migration')} not shown: the comment size is limited._`);
  }
  if (findingLines.length > 0) {
    out.push(...findingsHead, ...found.taken);
    const left = findingLines.length - found.taken.length;
    if (left > 0) out.push('', `_${plural(left, 'more finding')} not shown: the comment size is limited._`);
  }
  out.push(...tail);
  return `${out.join('\n')}\n`;
}
