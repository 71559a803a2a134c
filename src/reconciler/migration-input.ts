import { randomBytes } from 'node:crypto';
import { parseDuration } from '../duration';
import type { MigrationInput } from '../machine/types';
import type { Topology } from '../planner/topology';
import { DEFAULT_POLICY, type DesiredState, type PlannedMigration, type PlanPolicy } from '../types';

/** A migration id: sortable by time, unique enough for file names. */
export function newMigrationId(now: Date): string {
  const t = now.toISOString().replace(/[-:]/g, '').replace(/\..*$/, '');
  return `${t}-${randomBytes(3).toString('hex')}`;
}

/**
 * The machine's input for a planned migration: storage names resolved to paths on the target,
 * in the normal form of the target host's driver (POSIX for libvirt, Windows for Hyper-V).
 */
export function migrationInput(
  m: PlannedMigration,
  id: string,
  topo: Topology,
  policy: PlanPolicy = DEFAULT_POLICY,
  /** spec.maxPause of the VM, in ms */
  maxPauseMs?: number,
): MigrationInput {
  return {
    id,
    vm: m.vm,
    strategy: m.strategy,
    fromHost: m.from.host,
    toHost: m.to.host,
    moves: m.disks.map((d) => {
      const loc = topo.resolve(m.to.host, d.to);
      if (!loc) throw new Error(`storage ${d.to} is not known on host ${m.to.host}`);
      const from = topo.resolve(m.from.host, d.from);
      return {
        target: d.target,
        fromStorage: d.from,
        toStorage: d.to,
        toPath: topo.rulesOf(m.to.host).normalise(loc.path),
        // the same location (a cluster's shared storage): nothing to copy
        ...(from?.key === loc.key ? { stays: true } : {}),
      };
    }),
    targetMarginBytes: policy.targetMarginBytes,
    sourceHeadroomRatio: policy.sourceHeadroomRatio,
    ...sharedStatePathOf(m, topo),
    maxPauseMs: maxPauseMs ?? 1000,
    maxRounds: policy.maxDeltaRounds ?? 8,
    ...(policy.quickMemory ? { quickMemory: policy.quickMemory } : {}),
    ...(policy.pauseTransfer === 'tcp' ? { pauseTransfer: 'tcp' as const } : {}),
    ...(policy.liveEmulated ? { liveEmulated: true } : {}),
    maxForwardAttempts: 5,
  };
}

/** A VM's `spec.maxPause` in ms (undefined when absent or not a duration). */
export function maxPauseOf(desired: DesiredState, vm: string): number | undefined {
  const text = desired.vms.get(vm)?.spec.maxPause;
  if (!text) return undefined;
  try {
    return parseDuration(text);
  } catch {
    return undefined;
  }
}

/** For hosts of one cluster: the path of a shared location both mount (the state file goes there). */
function sharedStatePathOf(m: PlannedMigration, topo: Topology): { sharedStatePath?: string } {
  if (m.from.host === m.to.host) return {};
  const there = new Set(topo.locationsOf(m.to.host).map((l) => l.key));
  const shared = topo.locationsOf(m.from.host).find((l) => l.scope === 'cluster' && there.has(l.key));
  return shared ? { sharedStatePath: topo.rulesOf(m.to.host).normalise(shared.path) } : {};
}
