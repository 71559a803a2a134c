/**
 * Compare one VM's desired placement with its actual placement, disk by disk.
 */
import type { Placement, VirtualMachine } from '../types';
import { diskLocation } from './status-checks';
import type { Location, Topology } from './topology';

/** One disk whose placement changes. */
export interface DiskDiff {
  target: string;
  /** where the disk is now; undefined when its path lies in no declared location */
  from: Location | undefined;
  /** the storage name (or, when unknown, the path) the disk is on now */
  fromName: string;
  /** where it must go; undefined when the desired storage name resolves nowhere */
  to: Location | undefined;
  toName: string;
  /** true when disk data is copied; false when it stays on the same (shared) location */
  dataMoves: boolean;
  /** bytes to copy: allocated bytes when data moves, else 0 */
  bytes: number;
  virtualBytes: number;
  allocatedBytes: number;
}

/** What differs between desired and actual placement for one VM. */
export interface PlacementDiff {
  vm: string;
  fromHost: string;
  toHost: string;
  hostChanged: boolean;
  /**
   * Disks that change: on a host change every disk (those staying on the same shared location
   * with `dataMoves: false`, `bytes: 0`); on the same host only disks changing location.
   * Sorted by target.
   */
  disks: DiskDiff[];
  /** host changes and no disk data is copied */
  stateOnly: boolean;
  /** anything at all differs */
  changed: boolean;
}

/**
 * Which disks of `vm` must move given its actual `placement`. A disk's current storage is
 * `disk.storage` when it names a location of the actual host that holds the disk's path, else
 * the location whose path is the longest segment-aware prefix of the disk path (none for a path
 * not in normal form, see `diskLocation`). Its desired storage is `spec.disks[target]`
 * or `spec.storage`. Disks are compared by location identity, so a disk on a cluster's shared
 * storage does not move when the VM changes host inside that cluster.
 */
export function diffPlacement(topology: Topology, vm: VirtualMachine, placement: Placement): PlacementDiff {
  const fromHost = placement.host;
  const toHost = vm.spec.host;
  const hostChanged = fromHost !== toHost;
  const disks: DiskDiff[] = [];
  const sorted = [...placement.disks].sort((a, b) =>
    a.target < b.target ? -1 : a.target > b.target ? 1 : 0,
  );
  for (const disk of sorted) {
    // the label counts only when the path lies inside it (see checkPlacement for the findings)
    const from = diskLocation(topology, fromHost, disk);
    const toName = vm.spec.disks?.[disk.target]?.storage ?? vm.spec.storage;
    const to = topology.resolve(toHost, toName);
    const dataMoves = !(from !== undefined && to !== undefined && from.key === to.key);
    if (!dataMoves && !hostChanged) continue;
    disks.push({
      target: disk.target,
      from,
      fromName: from?.name ?? disk.storage ?? disk.path,
      to,
      toName,
      dataMoves,
      bytes: dataMoves ? disk.allocatedBytes : 0,
      virtualBytes: disk.virtualBytes,
      allocatedBytes: disk.allocatedBytes,
    });
  }
  const stateOnly = hostChanged && disks.every((d) => !d.dataMoves);
  return {
    vm: vm.metadata.name,
    fromHost,
    toHost,
    hostChanged,
    disks,
    stateOnly,
    changed: hostChanged || disks.length > 0,
  };
}
