import { createHash } from 'node:crypto';
import type { Observation } from '../inventory/observe';
import type { MigrationContext } from '../machine/types';
import { limitReached, type Usage } from '../planner/limits';
import type { Settings } from '../settings';
import type { DesiredState, Placement, Plan, PlannedMigration } from '../types';

/**
 * The reconciler's decisions, pure: whether a planned migration starts now (suspend, maintenance
 * windows, the per-VM hold after a failure, the limits), whether a running one is cancelled,
 * and what a stalled VM waits for. `vmplace apply` and the daemon both go through these.
 */

export { addUsage, type Usage } from '../planner/limits';

/** A VM held back after its last migration failed: until a time, or until its world changes. */
export interface Hold {
  failures: number;
  notBefore: number;
  /** stalled (or failed): held until its manifests or its world change */
  stalled?: boolean;
  /** what a stalled VM waits for (see {@link stalledKeyOf}), from the first observation after the failure */
  stalledKey?: string;
}

/** What {@link whyHeldBack} looks at besides the migration. */
export interface Gate {
  settings: Settings;
  /** `now` lies inside a maintenance window (or none is configured) */
  inWindow: boolean;
  usage: Usage;
  now: Date;
  /** a shutdown began */
  stopping?: boolean;
  /** the VM's hold, already released when its stalled key changed */
  hold?: Hold;
}

/**
 * Why `m` does not start now, or undefined when it may. In order: shutdown, `suspend` in
 * vmplace.yaml, outside every maintenance window, the VM's hold, then the limits overall, per
 * host and per storage location. (A VM's own `spec.suspend` keeps it out of the plan.)
 */
export function whyHeldBack(m: PlannedMigration, g: Gate): string | undefined {
  if (g.stopping) return 'shutting down';
  if (g.settings.suspend) return 'suspended by vmplace.yaml';
  if (!g.inWindow) return 'outside every maintenance window';
  const b = g.hold;
  if (b?.stalled) return 'blocked until its manifests or the world change';
  if (b && b.notBefore > g.now.getTime())
    return `backing off after ${b.failures} failure(s) until ${new Date(b.notBefore).toISOString()}`;
  return limitReached(m, g.usage, g.settings.limits);
}

/** A migration as the limits count it: its hosts and its disks' storage locations. */
export interface UsageOf {
  fromHost: string;
  toHost: string;
  moves: readonly { fromStorage: string; toStorage: string }[];
}

/** What the migrations with these contexts use. */
export function usageOf(contexts: Iterable<UsageOf>): Usage {
  const u: Usage = { total: 0, hosts: new Map(), storages: new Map() };
  for (const c of contexts) {
    u.total++;
    for (const h of new Set([c.fromHost, c.toHost])) u.hosts.set(h, (u.hosts.get(h) ?? 0) + 1);
    for (const mv of c.moves) {
      for (const s of [`${c.fromHost}/${mv.fromStorage}`, `${c.toHost}/${mv.toStorage}`])
        u.storages.set(s, (u.storages.get(s) ?? 0) + 1);
    }
  }
  return u;
}

/** Where a planned migration goes: host and storage per disk. */
export function targetKey(m: PlannedMigration): string {
  return JSON.stringify([m.to.host, m.disks.map((d) => [d.target, d.to]).sort()]);
}

/** The {@link targetKey} of a running migration, from its context. */
export function contextTargetKey(c: MigrationContext): string {
  return JSON.stringify([c.toHost, c.moves.map((d) => [d.target, d.toStorage]).sort()]);
}

/**
 * True when the migration of `vm` going to `target` (a {@link targetKey}) must be cancelled:
 * only on evidence, i.e. the plan now takes the VM elsewhere, or wants it where it already is
 * (and it is not already observed where the migration takes it, mid-restore). A VM the
 * observation missed (a host that did not answer) is no reason.
 */
export function shouldCancel(
  vm: string,
  target: string,
  plan: Plan,
  placement: Placement | undefined,
  desired: DesiredState,
): boolean {
  if (!desired.vms.has(vm)) return false;
  const m = plan.migrations.find((x) => x.vm === vm);
  const elsewhere = m !== undefined && targetKey(m) !== target;
  const backWhereItIs = m === undefined && plan.unchanged.includes(vm) && !arrived(placement, target);
  return elsewhere || backWhereItIs;
}

/** True when `p` already is where the migration of target key `key` goes. */
function arrived(p: Placement | undefined, key: string): boolean {
  if (!p) return false;
  const [host, moves] = JSON.parse(key) as [string, [string, string][]];
  return p.host === host && moves.every(([t, s]) => p.disks.some((d) => d.target === t && d.storage === s));
}

/** What a stalled VM waits for: its manifests, its host's and cluster's, where it is, and its host's free GiB. */
export function stalledKeyOf(
  vm: string,
  desired: DesiredState | undefined,
  obs: Observation | undefined,
): string {
  const v = desired?.vms.get(vm);
  const host = v ? desired?.hosts.get(v.spec.host) : undefined;
  const cluster = host?.spec.cluster ? desired?.clusters.get(host.spec.cluster) : undefined;
  const placed = obs?.vms.get(vm)?.placement;
  const room = host
    ? obs?.hosts.get(host.metadata.name)?.storage.map((s) => [s.name, Math.floor(s.freeBytes / 2 ** 30)])
    : undefined;
  return createHash('sha256')
    .update(JSON.stringify([v?.spec, host?.spec, cluster?.spec, placed, room]))
    .digest('hex');
}
