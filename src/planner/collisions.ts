/**
 * Fleet-wide checks of target paths: where every planned disk move lands (the one function
 * `targetDiskPath` the migration's Preflight uses too) and whether any two disks would then
 * name one file. Pure: reads the topology and the actual placements, never the world.
 */
import * as path from 'node:path';
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
 * collision and are left to the migration's Preflight.
 *
 * @returns per VM, per disk target: the path shown as `toPath` in the plan
 */
export function checkTargetPaths(
  topology: Topology,
  actual: ActualState,
  drafts: readonly MoveDraft[],
): Map<string, Map<string, string>> {
  const draftOf = new Map(drafts.map((d) => [d.diff.vm, d]));
  const toPaths = new Map<string, Map<string, string>>();
  const entries: { vm: string; target: string; scope: string; path: string }[] = [];
  /** `scope\0path\0vm\0target` of every disk planned to move onto `path` */
  const movedThere = new Set<string>();
  const key = (scope: string, p: string) => `${scope}\0${p}`;

  for (const name of [...actual.vms.keys()].sort()) {
    const placement = actual.vms.get(name)!.placement;
    if (placement === undefined) continue;
    const draft = draftOf.get(name);
    const allPaths = placement.disks.map((d) => d.path);
    const mine = new Map<string, string>();
    for (const disk of placement.disks) {
      const current = path.posix.normalize(disk.path);
      const currentScope = scopeOf(topology.locate(placement.host, current), placement.host);
      entries.push({ vm: name, target: disk.target, scope: currentScope, path: current });
      const move = draft?.diff.disks.find((d) => d.target === disk.target);
      if (move === undefined || move.to === undefined) continue;
      if (!move.dataMoves) {
        mine.set(disk.target, disk.path);
        continue;
      }
      const to = targetDiskPath(name, disk.target, disk.path, move.to.path, allPaths);
      mine.set(disk.target, to);
      const toScope = scopeOf(move.to, draft!.diff.toHost);
      // already there (a status that names the wrong storage): Preflight treats it as staying
      if (toScope === currentScope && to === current) continue;
      entries.push({ vm: name, target: disk.target, scope: toScope, path: to });
      movedThere.add(`${key(toScope, to)}\0${name}\0${disk.target}`);
    }
    if (draft !== undefined) toPaths.set(name, mine);
  }

  for (const c of findPathCollisions(entries)) {
    const arriving = c.disks.filter((d) => movedThere.has(`${key(c.scope, c.path)}\0${d.vm}\0${d.target}`));
    if (arriving.length === 0) continue;
    const parts = c.disks.map((d) => {
      const moves = movedThere.has(`${key(c.scope, c.path)}\0${d.vm}\0${d.target}`);
      return `${d.vm} disk ${d.target} ${moves ? 'would be moved there' : 'is there now'}`;
    });
    const message = `${c.path} on ${c.scope} would be used by two disks: ${parts.join(', ')}; vmplace never moves a disk onto a file another disk uses`;
    for (const vm of new Set(c.disks.map((d) => d.vm))) {
      draftOf.get(vm)?.findings.push({ severity: 'error', reason: 'TargetPathCollision', message });
    }
  }
  return toPaths;
}
