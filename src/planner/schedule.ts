/**
 * How long the plan will take, for the pull-request comment: copy time and pause per migration
 * from throughput measured by earlier migrations between the same hosts (the `migration` of each
 * VM's status) or from a default, said so; and when each migration starts, running side by
 * side as `vmplace.yaml`'s limits allow, in plan order (see {@link limitReached}, the check the
 * reconciler makes). Pure.
 */
import type { PlannedMigration, Plan, VirtualMachineStatus } from '../types';
import { addUsage, emptyUsage, limitReached, type ConcurrencyLimits } from './limits';
import { executedStrategy } from './space';

/** Copy throughput assumed between hosts no finished migration has measured: 100 MiB/s. */
export const DEFAULT_BYTES_PER_SECOND = 100 * 1024 * 1024;

/**
 * Pause assumed when none was measured, by the strategy executed: quick saves and restores the
 * memory state (about 1 s in the lab, bench/RESULTS.md), live switches over in well under one.
 */
export const DEFAULT_PAUSE_MS = { quick: 1000, live: 100, cold: 0 } as const;

/** What finished migrations between one pair of hosts showed. */
export interface Measured {
  bytesPerSecond: number;
  /** mean pause, when any reported one */
  pauseMs?: number;
  /** migrations measured */
  samples: number;
}

/** `from→to`, the key of a host pair. */
export const pairKey = (from: string, to: string): string => `${from}→${to}`;

/**
 * Throughput per host pair from the last migration of each VM, where it completed with a
 * start, an end and bytes copied: bytes over (duration minus pause), summed per pair.
 */
export function measuredThroughput(statuses: Iterable<VirtualMachineStatus>): Map<string, Measured> {
  const acc = new Map<string, { bytes: number; ms: number; pauses: number[]; samples: number }>();
  for (const s of statuses) {
    const m = s.migration;
    if (!m || m.step !== 'Completed' || !m.startedAt || !m.finishedAt || m.bytesTotal <= 0) continue;
    const ms = Date.parse(m.finishedAt) - Date.parse(m.startedAt) - (m.pauseMs ?? 0);
    if (!Number.isFinite(ms) || ms <= 0) continue;
    const k = pairKey(m.from.host, m.to.host);
    const a = acc.get(k) ?? { bytes: 0, ms: 0, pauses: [], samples: 0 };
    a.bytes += m.bytesTotal;
    a.ms += ms;
    a.samples++;
    if (m.pauseMs !== undefined) a.pauses.push(m.pauseMs);
    acc.set(k, a);
  }
  const out = new Map<string, Measured>();
  for (const [k, a] of [...acc].sort(([x], [y]) => (x < y ? -1 : 1))) {
    out.set(k, {
      bytesPerSecond: Math.round((a.bytes * 1000) / a.ms),
      ...(a.pauses.length
        ? { pauseMs: Math.round(a.pauses.reduce((x, y) => x + y, 0) / a.pauses.length) }
        : {}),
      samples: a.samples,
    });
  }
  return out;
}

/** What the schedule is computed from. */
export interface ScheduleInput {
  limits: ConcurrencyLimits & { bandwidthBytesPerSecond?: number };
  measured: ReadonlyMap<string, Measured>;
  /** whether each VM runs (from its status); a shut-off VM moves cold */
  running?: ReadonlyMap<string, boolean | undefined>;
}

/** One migration placed in time (milliseconds from the start of the plan). */
export interface Slot {
  migration: PlannedMigration;
  startMs: number;
  copyMs: number;
  pauseMs: number;
  endMs: number;
  /** bytes per second assumed, and whether they were measured between these hosts */
  bytesPerSecond: number;
  measured: boolean;
  pauseMeasured: boolean;
}

/** The estimate for one migration, not yet placed in time. */
function estimate(m: PlannedMigration, input: ScheduleInput): Omit<Slot, 'startMs' | 'endMs'> {
  const got = input.measured.get(pairKey(m.from.host, m.to.host));
  let bps = got?.bytesPerSecond ?? DEFAULT_BYTES_PER_SECOND;
  const cap = input.limits.bandwidthBytesPerSecond;
  if (cap !== undefined && cap > 0) bps = Math.min(bps, cap);
  const bytes = m.disks.reduce((n, d) => n + d.bytes, 0);
  const copyMs = bytes > 0 ? Math.ceil((bytes * 1000) / bps) : 0;
  const executed = executedStrategy(m.strategy, input.running?.get(m.vm));
  const pauseMs = executed === 'cold' ? 0 : (got?.pauseMs ?? DEFAULT_PAUSE_MS[executed]);
  return {
    migration: m,
    copyMs,
    pauseMs,
    bytesPerSecond: bps,
    measured: got !== undefined,
    pauseMeasured: got?.pauseMs !== undefined && executed !== 'cold',
  };
}

/**
 * When each unblocked migration runs: at every moment, the waiting migrations are taken in plan
 * order and each starts that the limits allow beside those running (as the reconciler does); a
 * migration lasts its copy plus its pause. Blocked migrations are left out.
 */
export function scheduleMigrations(plan: Plan, input: ScheduleInput): Slot[] {
  const waiting = plan.migrations.filter((m) => !m.blocked).map((m) => estimate(m, input));
  const running: Slot[] = [];
  const done: Slot[] = [];
  const usage = emptyUsage();
  let now = 0;
  while (waiting.length) {
    for (let i = 0; i < waiting.length;) {
      const e = waiting[i]!;
      if (limitReached(e.migration, usage, input.limits) !== undefined) {
        i++;
        continue;
      }
      waiting.splice(i, 1);
      const slot: Slot = { ...e, startMs: now, endMs: now + e.copyMs + e.pauseMs };
      running.push(slot);
      addUsage(usage, e.migration, 1);
    }
    if (!waiting.length) break;
    if (!running.length) break; // cannot happen with limits of at least 1; never loop forever
    running.sort((a, b) => a.endMs - b.endMs);
    const first = running.shift()!;
    now = first.endMs;
    addUsage(usage, first.migration, -1);
    done.push(first);
    // everything ending at the same moment frees its room together
    while (running.length && running[0]!.endMs === now) {
      const s = running.shift()!;
      addUsage(usage, s.migration, -1);
      done.push(s);
    }
  }
  return [...done, ...running].sort((a, b) => a.startMs - b.startMs || a.migration.order - b.migration.order);
}
