/**
 * The pull-request comment of `vmplace plan --format markdown`: the plan's summary, table and
 * findings (see {@link renderPlanMarkdown}), then when the migrations run (a Mermaid gantt chart
 * and a table: side by side as `vmplace.yaml`'s limits allow, each with its estimated copy time
 * and pause), how full every affected storage location is before and after, and what the
 * estimates rest on (throughput measured between the same hosts, or a default, said so). Pure;
 * names and messages are escaped (no mentions, no control characters), and everything stays
 * under GitHub's comment limit.
 */
import type { Plan } from '../types';
import { formatBytes } from './bytes';
import { escapeMarkdown, MARKDOWN_LIMIT, renderPlanMarkdown } from './render';
import {
  DEFAULT_BYTES_PER_SECOND,
  DEFAULT_PAUSE_MS,
  scheduleMigrations,
  type Measured,
  type ScheduleInput,
  type Slot,
} from './schedule';
import type { LocationFill } from './storage-fill';

/** What the comment needs besides the plan (built by the caller from status/ and vmplace.yaml). */
export interface CommentContext extends ScheduleInput {
  fill: LocationFill[];
}

/** At most this many migrations in the chart and the order table, and locations in the fill table. */
export const MAX_CHARTED = 100;

/** `850 ms`, `12 s`, `3 min 20 s`, `1 h 5 min`: for people, rounded. */
export function humanDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = Math.round(ms / 1000);
  if (s < 60) return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min${s % 60 ? ` ${s % 60} s` : ''}`;
  const m = Math.round(s / 60);
  return `${Math.floor(m / 60)} h${m % 60 ? ` ${m % 60} min` : ''}`;
}

/**
 * Text for a Mermaid gantt label or section: letters, digits, `.`, `_`, `-` and spaces only
 * (`:` `#` `;` and line breaks end or break a task line), at most 60 characters.
 */
export function mermaidLabel(text: string): string {
  return text.replace(/[^A-Za-z0-9._ -]/g, '_').slice(0, 60) || '_';
}

/** The gantt chart: one section per migration, a copy task and a pause task (critical), times in ms. */
export function renderGantt(slots: readonly Slot[]): string[] {
  const lines = [
    '```mermaid',
    'gantt',
    '  title Migration order (estimated)',
    '  dateFormat x',
    '  axisFormat %H:%M:%S',
  ];
  for (const s of slots) {
    const m = s.migration;
    const bytes = m.disks.reduce((n, d) => n + d.bytes, 0);
    lines.push(`  section ${mermaidLabel(`${m.order} ${m.vm}`)}`);
    const copyEnd = s.startMs + s.copyMs;
    // a task needs a length to be drawn; a move that copies nothing gets 1 ms
    lines.push(
      `  ${mermaidLabel(bytes > 0 ? `copy ${formatBytes(bytes)}` : 'no copy')} :m${m.order}c, ${s.startMs}, ${Math.max(copyEnd, s.startMs + 1)}`,
    );
    if (s.pauseMs > 0)
      lines.push(
        `  ${mermaidLabel(`pause ${humanDuration(s.pauseMs)}`)} :crit, m${m.order}p, ${copyEnd}, ${s.endMs}`,
      );
  }
  lines.push('```');
  return lines;
}

function orderTable(slots: readonly Slot[]): string[] {
  return [
    '| # | VM | Starts | Copy | Pause | Done | Estimate |',
    '|--:|----|-------:|-----:|------:|-----:|----------|',
    ...slots.map((s) => {
      const m = s.migration;
      const rate = `${formatBytes(s.bytesPerSecond)}/s ${s.measured ? 'measured' : 'default'}`;
      return `| ${m.order} | ${escapeMarkdown(m.vm)} | +${humanDuration(s.startMs)} | ${humanDuration(s.copyMs)} | ${s.pauseMs > 0 ? humanDuration(s.pauseMs) : '–'} | +${humanDuration(s.endMs)} | ${rate} |`;
    }),
  ];
}

function pct(free: number, capacity: number | undefined): string {
  if (capacity === undefined || capacity <= 0) return '';
  return ` (${Math.round((100 * (capacity - free)) / capacity)}% full)`;
}

function fillTable(fill: readonly LocationFill[]): string[] {
  return [
    '| Storage | Capacity | Free before | Free after | In | Out |',
    '|---------|---------:|------------:|-----------:|---:|----:|',
    ...fill.map((f) => {
      const cap = f.capacityBytes === undefined ? '?' : formatBytes(f.capacityBytes);
      const before =
        f.freeBeforeBytes === undefined
          ? 'not reported'
          : formatBytes(f.freeBeforeBytes) + pct(f.freeBeforeBytes, f.capacityBytes);
      const after =
        f.freeAfterBytes === undefined
          ? 'not reported'
          : (f.freeAfterBytes < 0 ? '−' + formatBytes(-f.freeAfterBytes) : formatBytes(f.freeAfterBytes)) +
            pct(f.freeAfterBytes, f.capacityBytes);
      return `| ${escapeMarkdown(f.location)} | ${cap} | ${before} | ${after} | ${formatBytes(f.inBytes)} | ${formatBytes(f.outBytes)} |`;
    }),
  ];
}

function estimateLines(ctx: CommentContext, slots: readonly Slot[]): string[] {
  const pairs = new Map<string, Measured>();
  for (const s of slots) {
    const k = `${s.migration.from.host}→${s.migration.to.host}`;
    const got = ctx.measured.get(k);
    if (got) pairs.set(k, got);
  }
  const out = ['**Estimates.**'];
  for (const [k, m] of [...pairs].sort(([a], [b]) => (a < b ? -1 : 1)))
    out.push(
      `- ${escapeMarkdown(k)}: ${formatBytes(m.bytesPerSecond)}/s measured over ${m.samples} finished migration(s)${m.pauseMs !== undefined ? `, pause ${humanDuration(m.pauseMs)}` : ''} (status/)`,
    );
  if (slots.some((s) => !s.measured || !s.pauseMeasured))
    out.push(
      `- ${pairs.size ? 'other host pairs' : 'every host pair'}: a default of ${formatBytes(DEFAULT_BYTES_PER_SECOND)}/s and a pause of ${humanDuration(DEFAULT_PAUSE_MS.quick)} (quick) or ${humanDuration(DEFAULT_PAUSE_MS.live)} (live): no finished migration in status/ measured those hosts`,
    );
  const bw = ctx.limits.bandwidthBytesPerSecond;
  if (bw !== undefined) out.push(`- copies capped at ${formatBytes(bw)}/s (vmplace.yaml limits.bandwidth)`);
  out.push(
    `- at most ${ctx.limits.concurrent} at once, ${ctx.limits.perHost} per host, ${ctx.limits.perStorage} per storage location (vmplace.yaml limits); chart times are from the start`,
  );
  return out;
}

/** The whole comment; shorter than `MARKDOWN_LIMIT` characters. */
export function renderPlanComment(plan: Plan, ctx: CommentContext): string {
  const blocked = plan.migrations.filter((m) => m.blocked);
  const slots = scheduleMigrations(plan, ctx);
  const charted = slots.slice(0, MAX_CHARTED);
  const extra: string[] = [];
  if (blocked.length) {
    const reasons = blocked.flatMap((m) =>
      m.findings
        .filter((f) => f.severity === 'error')
        .map((f) => `- ${escapeMarkdown(m.vm)}: ${escapeMarkdown(f.reason)}: ${escapeMarkdown(f.message)}`),
    );
    extra.push(
      '',
      `**Blocked: ${blocked.length} of ${plan.migrations.length} migration(s)**, one line per reason:`,
      '',
      ...reasons.slice(0, MAX_CHARTED),
      ...(reasons.length > MAX_CHARTED
        ? ['', `_${reasons.length - MAX_CHARTED} more reason(s) in the findings below._`]
        : []),
    );
  }
  if (charted.length) {
    const total = Math.max(...slots.map((s) => s.endMs));
    extra.push(
      '',
      `#### Order (about ${humanDuration(total)} in all)`,
      '',
      ...renderGantt(charted),
      '',
      ...orderTable(charted),
    );
    if (slots.length > charted.length)
      extra.push('', `_${slots.length - charted.length} more migration(s) not charted._`);
  }
  if (ctx.fill.length) {
    extra.push('', '#### Storage', '', ...fillTable(ctx.fill.slice(0, MAX_CHARTED)));
    if (ctx.fill.length > MAX_CHARTED)
      extra.push('', `_${ctx.fill.length - MAX_CHARTED} more location(s) not shown._`);
  }
  if (charted.length) extra.push('', ...estimateLines(ctx, slots));
  // the blocked lines may be long (messages): keep the whole comment under the limit
  const tail = cut(extra.join('\n'), Math.floor(MARKDOWN_LIMIT / 2));
  const head = renderPlanMarkdown(plan, MARKDOWN_LIMIT - tail.length - 2);
  return tail ? `${head}${tail}\n` : head;
}

/** `text` cut at a line end before `room` characters, never inside a code block, with a note. */
function cut(text: string, room: number): string {
  if (text.length <= room) return text;
  let kept = text.slice(0, text.lastIndexOf('\n', room - 80));
  if ((kept.match(/^```/gm) ?? []).length % 2 === 1) kept = kept.slice(0, kept.lastIndexOf('\n```mermaid'));
  return `${kept}\n\n_The rest is not shown: the comment size is limited._`;
}
