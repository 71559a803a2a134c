/** Readers of scripts/checkpoints.ts's answers. */
import { ParseError } from '../../../errors';
import {
  bool,
  enumName,
  hardDrives,
  type HvHardDrive,
  isRec,
  list,
  optStr,
  records,
  single,
  str,
} from './common';
import { fileIdOfText } from './files';
import { type HvVm, parseVms } from './observe';

/** What checkpointVm answers. */
export interface HvCheckpointTaken {
  vmName: string;
  name: string;
  id: string;
  /** false when a checkpoint of that name already existed (nothing was taken) */
  created: boolean;
  /** the VM's drives after: each on its checkpoint's differencing disk (`.avhdx`) */
  hardDrives: HvHardDrive[];
}

export function parseCheckpointTaken(result: unknown): HvCheckpointTaken {
  const what = 'Checkpoint-VM';
  const o = single(result, what);
  return {
    vmName: str(o, 'VMName', what),
    name: str(o, 'Name', what),
    id: str(o, 'Id', what),
    created: bool(o, 'Created', what),
    hardDrives: hardDrives(o, what),
  };
}

/** A checkpoint (`VMSnapshot`) of getCheckpoints. */
export interface HvCheckpoint {
  name: string;
  id: string;
  /** `SnapshotType` name: Standard, Recovery, Planned, Missing, Replica, AppConsistentReplica, SyncedReplica */
  snapshotType: string;
  parentSnapshotName?: string;
  /** ISO 8601, UTC */
  creationTime: string;
  hardDrives: HvHardDrive[];
}

export function parseCheckpoints(result: unknown): HvCheckpoint[] {
  const what = 'Get-VMSnapshot';
  return records(result, what).map((o) => {
    const creationTime = str(o, 'CreationTime', what);
    if (Number.isNaN(Date.parse(creationTime))) throw new ParseError(what, `CreationTime ${creationTime}`);
    const c: HvCheckpoint = {
      name: str(o, 'Name', what),
      id: str(o, 'Id', what),
      snapshotType: enumName(o, 'SnapshotType', what),
      creationTime,
      hardDrives: hardDrives(o, what),
    };
    const parent = optStr(o, 'ParentSnapshotName', what);
    if (parent !== undefined) c.parentSnapshotName = parent;
    return c;
  });
}

/** Whether a checkpoint's merge still runs (mergeStatus). */
export interface HvMergeStatus {
  vm: HvVm;
  /** Hyper-V says it merges (an operational status or the status text naming a merge) */
  merging: boolean;
  /** the drives still on a differencing disk of a checkpoint (`.avhd`/`.avhdx`) */
  onCheckpointDisks: string[];
}

/**
 * Reads mergeStatus. `merging` comes from `OperationalStatus` (a name containing "Merg", as in
 * `MergingDisks`) or from the status text; the name is from the documentation, not observed,
 * and the status text is localized, so callers also wait for `onCheckpointDisks` to empty.
 */
export function parseMergeStatus(result: unknown): HvMergeStatus {
  const vms = parseVms(result);
  if (vms.length !== 1) throw new ParseError('merge status', `expected one VM, got ${vms.length}`);
  const v = vms[0]!;
  const merging = v.operationalStatus.some((s) => /merg/i.test(s)) || /merg/i.test(v.status ?? '');
  const onCheckpointDisks = v.hardDrives.flatMap((d) =>
    d.path !== undefined && /\.avhdx?$/i.test(d.path) ? [d.path] : [],
  );
  return { vm: v, merging, onCheckpointDisks };
}

/** One answer of layerLinks: the file a VM runs on, and the layer-named files beside it. */
export interface HvLayerLinks {
  path: string;
  fileId: string;
  links: { path: string; fileId: string }[];
}

export function parseLayerLinks(result: unknown): HvLayerLinks[] {
  const what = 'layer links';
  return records(result, what).map((o) => ({
    path: str(o, 'Path', what),
    fileId: fileIdOfText(str(o, 'FileIdText', what), what),
    links: list(o, 'Links', what).map((l) => {
      if (!isRec(l)) throw new ParseError(what, 'a link is not an object');
      return { path: str(l, 'Path', what), fileId: fileIdOfText(str(l, 'FileIdText', what), what) };
    }),
  }));
}
