/**
 * The concurrency limits of `vmplace.yaml` (`limits:`), as one pure check shared by the
 * reconciler (whether a migration starts now) and the plan comment's schedule (which migrations
 * run side by side), so the chart shows what the daemon will do.
 */
import type { PlannedMigration } from '../types';

/** The limits that bound how many migrations run at once (see `Limits` in settings.ts). */
export interface ConcurrencyLimits {
  concurrent: number;
  perHost: number;
  perStorage: number;
}

/** Migrations in flight, counted overall, per host and per storage location (`host/storage`). */
export interface Usage {
  total: number;
  hosts: Map<string, number>;
  storages: Map<string, number>;
}

export function emptyUsage(): Usage {
  return { total: 0, hosts: new Map(), storages: new Map() };
}

/** Count `m` (n = 1, or -1 when it ends) in `u`. */
export function addUsage(u: Usage, m: PlannedMigration, n: number): void {
  u.total += n;
  for (const h of hostsOf(m)) u.hosts.set(h, (u.hosts.get(h) ?? 0) + n);
  for (const s of storagesOf(m)) u.storages.set(s, (u.storages.get(s) ?? 0) + n);
}

/** Which limit keeps `m` from starting while `u` runs, or undefined when none does. */
export function limitReached(m: PlannedMigration, u: Usage, l: ConcurrencyLimits): string | undefined {
  if (u.total >= l.concurrent) return `limit: ${l.concurrent} migrations at once`;
  for (const h of hostsOf(m))
    if ((u.hosts.get(h) ?? 0) >= l.perHost) return `limit: ${l.perHost} per host (${h})`;
  for (const s of storagesOf(m))
    if ((u.storages.get(s) ?? 0) >= l.perStorage) return `limit: ${l.perStorage} per storage (${s})`;
  return undefined;
}

function hostsOf(m: PlannedMigration): string[] {
  return [...new Set([m.from.host, m.to.host])];
}

function storagesOf(m: PlannedMigration): string[] {
  return [...new Set(m.disks.flatMap((d) => [`${m.from.host}/${d.from}`, `${m.to.host}/${d.to}`]))];
}
