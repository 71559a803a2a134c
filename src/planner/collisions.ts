/**
 * Fleet-wide checks of target paths: where every planned disk move lands (the one function
 * `targetDiskPath` the migration's Preflight uses too) and whether any two disks would then
 * name one file. Pure: reads the topology and the actual placements, never the world.
 */
import type { ActualState, Finding } from '../types';
import type { PlacementDiff } from './diff';
import { findPathCollisions, targetDiskPath } from './target-path';
import type { Location, Topology } from './topology';

/** What this check needs of a drafted migration; findings are appended to it. */
export interface MoveDraft {
  diff: PlacementDiff;
  findings: Finding[];
}

/** Where a path names one file: its host for host-local storage, its cluster for shared storage. */
function scopeOf(loc: Location | undefined, host: string): string {
  return loc?.scope === 'cluster' ? `cluster ${loc.owner}` : `host ${loc?.owner ?? host}`;
}

/**
 * The final path of every disk of every planned migration, and a blocking
 * `TargetPathCollision` finding on each migration involved when two disks would share a file.
 *
 * A moved disk lands at `targetDiskPath(vm, target, path, location, all the VM's disk paths)`;
 * a disk that stays (shared storage, or a VM without a migration) keeps its current path. Over
 * the whole fleet (every VM with an observed placement, planned or not) a path is one file per
 * host for host-local storage and per cluster for a cluster's shared storage. A collision is a
 * target path that equals another disk's target path or another disk's *current* path (the
 * source files stay until the end of their own migration, so a planned move away does not free
 * the path in time). Disks that merely share a current path (shareable disks) are not a target
 * collision and are left to the migration's Preflight. Paths are built and compared by the
 * path rules of their host's driver (the hosts of a cluster share one driver): on Hyper-V,
 * `D:\VMs\vm1\A.vhdx` and `d:\vms\vm1\a.vhdx` are one file.
 *
 * @returns per VM, per disk target: the path shown as `toPath` in the plan
 */
export function checkTargetPaths(
  topology: Topology,
  actual: ActualState,
  drafts: readonly MoveDraft[],
): Map<string, Map<string, string>> {
  const toPaths = new Map<string, Map<string, string>>();
  const entries: { vm: string; target: string; scope: string; path: string; key: string }[] = [];
  /** `scope\0path key\0vm\0target` of every disk planned to move onto a path */
  const movedThere = new Set<string>();
  const key = (scope: string, k: string, vm: string, target: string) => `${scope}\0${k}\0${vm}\0${target}`;

  // 1. Where the planned moves land.
  for (const draft of drafts) {
    const name = draft.diff.vm;
    const placement = actual.vms.get(name)?.placement;
    if (placement === undefined) continue;
    const allPaths = placement.disks.map((d) => d.path);
    const mine = new Map<string, string>();
    toPaths.set(name, mine);
    for (const move of draft.diff.disks) {
      const disk = placement.disks.find((d) => d.target === move.target);
      if (disk === undefined || move.to === undefined) continue;
      if (!move.dataMoves) {
        mine.set(move.target, disk.path);
        continue;
      }
      const toRules = topology.rulesOf(draft.diff.toHost);
      const to = targetDiskPath(name, move.target, disk.path, move.to.path, allPaths, toRules);
      mine.set(move.target, to);
      const toScope = scopeOf(move.to, draft.diff.toHost);
      const toKey = toRules.key(to);
      const current = topology.rulesOf(placement.host).normalise(disk.path);
      // already there (a status that names the wrong storage): Preflight treats it as staying
      if (
        toKey === toRules.key(current) &&
        toScope === scopeOf(topology.locate(placement.host, current), placement.host)
      )
        continue;
      entries.push({ vm: name, target: move.target, scope: toScope, path: to, key: toKey });
      movedThere.add(key(toScope, toKey, name, move.target));
    }
  }
  if (entries.length === 0) return toPaths;
  const draftOf = new Map(drafts.map((d) => [d.diff.vm, d]));

  // 2. Every disk of the fleet whose current file has one of those paths (the scope decides).
  const targetKeys = new Set(entries.map((e) => e.key));
  for (const [name, status] of actual.vms) {
    const placement = status.placement;
    if (placement === undefined) continue;
    const rules = topology.rulesOf(placement.host);
    for (const disk of placement.disks) {
      const current = rules.normalise(disk.path);
      const currentKey = rules.key(current);
      if (!targetKeys.has(currentKey)) continue;
      const scope = scopeOf(topology.locate(placement.host, current), placement.host);
      entries.push({ vm: name, target: disk.target, scope, path: current, key: currentKey });
    }
  }

  for (const c of findPathCollisions(entries)) {
    const moves = (d: { vm: string; target: string }) => movedThere.has(key(c.scope, c.key, d.vm, d.target));
    if (!c.disks.some(moves)) continue;
    const parts = c.disks.map(
      (d) => `${d.vm} disk ${d.target} ${moves(d) ? 'would be moved there' : 'is there now'}`,
    );
    const message = `${c.path} on ${c.scope} would be used by two disks: ${parts.join(', ')}; vmplace never moves a disk onto a file another disk uses`;
    for (const vm of new Set(c.disks.map((d) => d.vm)))
      draftOf.get(vm)?.findings.push({ severity: 'error', reason: 'TargetPathCollision', message });
  }
  return toPaths;
}
