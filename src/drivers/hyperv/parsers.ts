/**
 * Readers of what the scripts of scripts.ts answer: the envelope's `result` array (see
 * `PowerShellRunner.run`) into typed values. Pure; anything not shaped as the script writes it is
 * a `ParseError` (reason `UnexpectedOutput`), never a guess. Tested against the recorded outputs in
 * test/fixtures/hyperv/, which follow the documented cmdlet objects (see the README there).
 *
 * Conventions of the scripts that the parsers hold them to: enums arrive as their names (a
 * number means a script forgot `[string]`), 64-bit sizes as decimal strings (a JavaScript number
 * holds integers exactly only up to 2^53; {@link sizeOf} refuses more, {@link bigSizeOf} reads
 * any), an absent optional value as `null` or `""`.
 */
import { ParseError } from '../../errors';
import type { CpuInfo, FsInfo } from '../driver';
import { unwrapArray } from './runner';

// ---------------------------------------------------------------- primitives

type Rec = Record<string, unknown>;

function isRec(v: unknown): v is Rec {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Every element of `result` as a record. */
function records(result: unknown, what: string): Rec[] {
  const list = unwrapArray(result);
  if (list === undefined) throw new ParseError(what, 'result is not an array');
  return list.map((r, i) => {
    if (!isRec(r)) throw new ParseError(what, `element ${i} is not an object`);
    return r;
  });
}

/** The one record of `result`. */
function single(result: unknown, what: string): Rec {
  const list = records(result, what);
  if (list.length !== 1) throw new ParseError(what, `expected one object, got ${list.length}`);
  return list[0]!;
}

function str(o: Rec, key: string, what: string): string {
  const v = o[key];
  if (typeof v !== 'string' || v === '') throw new ParseError(what, `${key} is not a non-empty string`);
  return v;
}

/** A string that may be absent (`null`, missing or `""`). */
function optStr(o: Rec, key: string, what: string): string | undefined {
  const v = o[key];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw new ParseError(what, `${key} is not a string`);
  return v;
}

function bool(o: Rec, key: string, what: string): boolean {
  const v = o[key];
  if (typeof v !== 'boolean') throw new ParseError(what, `${key} is not a boolean`);
  return v;
}

/** A small integer (counts, controller numbers): a JSON number. */
function int(o: Rec, key: string, what: string): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
    throw new ParseError(what, `${key} is not a non-negative integer`);
  return v;
}

/** An enum value written as its name: letters and digits, starting with a letter. */
function enumName(o: Rec, key: string, what: string): string {
  const v = o[key];
  if (typeof v !== 'string' || !/^[A-Za-z][A-Za-z0-9]*$/.test(v))
    throw new ParseError(what, `${key} is not an enum name: ${JSON.stringify(v)}`);
  return v;
}

function list(o: Rec, key: string, what: string): unknown[] {
  const v = unwrapArray(o[key]);
  if (v === undefined) throw new ParseError(what, `${key} is not an array`);
  return v;
}

function strings(o: Rec, key: string, what: string): string[] {
  return list(o, key, what).map((s, i) => {
    if (typeof s !== 'string') throw new ParseError(what, `${key}[${i}] is not a string`);
    return s;
  });
}

const DECIMAL = /^(0|[1-9][0-9]*)$/;

/**
 * A size written as a decimal string, as a number; a value above `Number.MAX_SAFE_INTEGER`
 * (8 PiB, beyond any VHDX: 64 TB at most) cannot be held exactly and is refused (use
 * {@link bigSizeOf}).
 */
export function sizeOf(text: unknown, what = 'size'): number {
  if (typeof text !== 'string' || !DECIMAL.test(text))
    throw new ParseError(what, `not a decimal string: ${JSON.stringify(text)}`);
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new ParseError(what, `${text} is beyond 2^53`);
  return n;
}

/** A size written as a decimal string, as a bigint (any 64-bit value). */
export function bigSizeOf(text: unknown, what = 'size'): bigint {
  if (typeof text !== 'string' || !DECIMAL.test(text))
    throw new ParseError(what, `not a decimal string: ${JSON.stringify(text)}`);
  return BigInt(text);
}

function size(o: Rec, key: string, what: string): number {
  return sizeOf(o[key], `${what} ${key}`);
}

function optSize(o: Rec, key: string, what: string): number | undefined {
  const v = o[key];
  return v === undefined || v === null || v === '' ? undefined : sizeOf(v, `${what} ${key}`);
}

// ---------------------------------------------------------------- VMs

/**
 * The states of a VM as Hyper-V's `VMState` enum names them (Microsoft.HyperV.PowerShell.VMState;
 * the list as Microsoft's SdnDiagnostics module copies it, not observed). The parsers accept any
 * enum name, so a state added by a later Windows does not break reading; this list is for code
 * that decides on states.
 */
export const VM_STATES = [
  'Other',
  'Running',
  'Off',
  'Stopping',
  'Saved',
  'Paused',
  'Starting',
  'Reset',
  'Saving',
  'Pausing',
  'Resuming',
  'FastSaved',
  'FastSaving',
  'RunningCritical',
  'OffCritical',
  'StoppingCritical',
  'SavedCritical',
  'PausedCritical',
  'StartingCritical',
  'ResetCritical',
  'SavingCritical',
  'PausingCritical',
  'ResumingCritical',
  'FastSavedCritical',
  'FastSavingCritical',
] as const;

/** A hard disk drive of a VM or checkpoint (`Get-VMHardDiskDrive`). */
export interface HvHardDrive {
  /** the virtual hard disk file; undefined for a pass-through disk */
  path?: string;
  /** `IDE`, `SCSI` (or `PMEM` on newer hosts) */
  controllerType: string;
  controllerNumber: number;
  controllerLocation: number;
}

/** A VM as `VmOut` writes it (getVm, listVms, importVm, moveVmStorage, mergeStatus). */
export interface HvVm {
  name: string;
  /** the VM's GUID */
  id: string;
  /** a `VMState` name (see {@link VM_STATES}) */
  state: string;
  /** Hyper-V's status text, e.g. `Operating normally` (localized) */
  status?: string;
  /** `VMOperationalStatus` names */
  operationalStatus: string[];
  memoryStartupBytes: number;
  processorCount: number;
  /** configuration version, e.g. `9.0` */
  version: string;
  generation: number;
  path?: string;
  configurationLocation?: string;
  snapshotFileLocation?: string;
  automaticStartAction?: string;
  hardDrives: HvHardDrive[];
}

function hardDrive(v: unknown, what: string): HvHardDrive {
  if (!isRec(v)) throw new ParseError(what, 'a hard drive is not an object');
  const d: HvHardDrive = {
    controllerType: enumName(v, 'ControllerType', what),
    controllerNumber: int(v, 'ControllerNumber', what),
    controllerLocation: int(v, 'ControllerLocation', what),
  };
  const path = optStr(v, 'Path', what);
  if (path !== undefined) d.path = path;
  return d;
}

function hardDrives(o: Rec, what: string): HvHardDrive[] {
  return list(o, 'HardDrives', what).map((d) => hardDrive(d, what));
}

function vm(o: Rec): HvVm {
  const what = 'Hyper-V VM';
  const out: HvVm = {
    name: str(o, 'Name', what),
    id: str(o, 'Id', what),
    state: enumName(o, 'State', what),
    operationalStatus: strings(o, 'OperationalStatus', what),
    memoryStartupBytes: size(o, 'MemoryStartup', what),
    processorCount: int(o, 'ProcessorCount', what),
    version: str(o, 'Version', what),
    generation: int(o, 'Generation', what),
    hardDrives: hardDrives(o, what),
  };
  for (const [key, field] of [
    ['Status', 'status'],
    ['Path', 'path'],
    ['ConfigurationLocation', 'configurationLocation'],
    ['SnapshotFileLocation', 'snapshotFileLocation'],
    ['AutomaticStartAction', 'automaticStartAction'],
  ] as const) {
    const v = optStr(o, key, what);
    if (v !== undefined) out[field] = v;
  }
  return out;
}

/** The VMs of getVm, listVms, importVm, moveVmStorage, mergeStatus. */
export function parseVms(result: unknown): HvVm[] {
  return records(result, 'Hyper-V VMs').map(vm);
}

/** Name, id and state of a VM (vmState; saveVm, startVm, stopVm, suspendVm, resumeVm answer one). */
export interface HvVmState {
  name: string;
  id: string;
  state: string;
  status?: string;
}

/** The states vmState (and the lifecycle scripts) answer. */
export function parseVmStates(result: unknown): HvVmState[] {
  const what = 'Hyper-V VM state';
  return records(result, what).map((o) => {
    const s: HvVmState = {
      name: str(o, 'Name', what),
      id: str(o, 'Id', what),
      state: enumName(o, 'State', what),
    };
    const status = optStr(o, 'Status', what);
    if (status !== undefined) s.status = status;
    return s;
  });
}

/** `{ Removed }` of removeVm, removeCheckpoint and removeFile. */
export function parseRemoved(result: unknown): boolean {
  return bool(single(result, 'removal'), 'Removed', 'removal');
}

/** What moveVm answers. */
export function parseVmMoved(result: unknown): { name: string; id: string; destinationHost: string } {
  const what = 'Move-VM';
  const o = single(result, what);
  return {
    name: str(o, 'Name', what),
    id: str(o, 'Id', what),
    destinationHost: str(o, 'DestinationHost', what),
  };
}

/** One incompatibility of a `VMCompatibilityReport` (compareVm). */
export interface HvIncompatibility {
  message: string;
  /** e.g. 33012 (the documented example: "Could not find Ethernet switch 'Production'.") */
  messageId?: number;
  /** the object at fault, e.g. `Microsoft.HyperV.PowerShell.VMNetworkAdapter` */
  source?: string;
}

/** The incompatibilities compareVm answers (empty: compatible). */
export function parseIncompatibilities(result: unknown): HvIncompatibility[] {
  const what = 'Compare-VM';
  return records(result, what).map((o) => {
    const i: HvIncompatibility = { message: str(o, 'Message', what) };
    const id = optStr(o, 'MessageId', what);
    if (id !== undefined) i.messageId = sizeOf(id, `${what} MessageId`);
    const source = optStr(o, 'Source', what);
    if (source !== undefined) i.source = source;
    return i;
  });
}

// ---------------------------------------------------------------- checkpoints

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

// ---------------------------------------------------------------- virtual hard disks

/** Formats and types of a virtual hard disk as `VhdFormat` and `VhdType` name them. */
export const VHD_FORMATS = ['VHD', 'VHDX', 'VHDSet'] as const;
export const VHD_TYPES = ['Fixed', 'Dynamic', 'Differencing'] as const;

/** A `VirtualHardDisk` (Get-VHD) as `VhdOut` writes it. */
export interface HvVhd {
  path: string;
  vhdFormat: (typeof VHD_FORMATS)[number];
  vhdType: (typeof VHD_TYPES)[number];
  /** bytes the file takes */
  fileBytes: number;
  /** the virtual disk's size */
  virtualBytes: number;
  minimumBytes?: number;
  /** the parent of a differencing disk, as recorded in it */
  parentPath?: string;
  diskIdentifier?: string;
  attached: boolean;
  blockSize?: number;
  logicalSectorSize?: number;
  physicalSectorSize?: number;
}

function vhd(o: Rec): HvVhd {
  const what = 'Get-VHD';
  const format = enumName(o, 'VhdFormat', what);
  const type = enumName(o, 'VhdType', what);
  const f = VHD_FORMATS.find((x) => x === format);
  const t = VHD_TYPES.find((x) => x === type);
  if (f === undefined) throw new ParseError(what, `unknown VhdFormat ${format}`);
  if (t === undefined) throw new ParseError(what, `unknown VhdType ${type}`);
  const out: HvVhd = {
    path: str(o, 'Path', what),
    vhdFormat: f,
    vhdType: t,
    fileBytes: size(o, 'FileSize', what),
    virtualBytes: size(o, 'Size', what),
    attached: bool(o, 'Attached', what),
  };
  const parentPath = optStr(o, 'ParentPath', what);
  if (parentPath !== undefined) out.parentPath = parentPath;
  if (t === 'Differencing' && parentPath === undefined)
    throw new ParseError(what, 'a differencing disk without ParentPath');
  const diskIdentifier = optStr(o, 'DiskIdentifier', what);
  if (diskIdentifier !== undefined) out.diskIdentifier = diskIdentifier;
  for (const [key, field] of [
    ['MinimumSize', 'minimumBytes'],
    ['BlockSize', 'blockSize'],
    ['LogicalSectorSize', 'logicalSectorSize'],
    ['PhysicalSectorSize', 'physicalSectorSize'],
  ] as const) {
    const v = optSize(o, key, what);
    if (v !== undefined) out[field] = v;
  }
  return out;
}

/** The disk getVhd, mergeVhd, setVhdParent and newDifferencingVhd answer. */
export function parseVhd(result: unknown): HvVhd {
  return vhd(single(result, 'Get-VHD'));
}

/**
 * The chain getVhdChain answers, top first: each disk's ParentPath is the next one's Path
 * (compared without regard to case, as Windows does), the last has none.
 */
export function parseVhdChain(result: unknown): HvVhd[] {
  const chain = records(result, 'VHD chain').map(vhd);
  if (chain.length === 0) throw new ParseError('VHD chain', 'empty');
  chain.forEach((d, i) => {
    const next = chain[i + 1];
    if (next === undefined) {
      if (d.parentPath !== undefined)
        throw new ParseError('VHD chain', `ends at ${d.path}, which has a parent`);
    } else if (d.parentPath?.toLowerCase() !== next.path.toLowerCase()) {
      throw new ParseError('VHD chain', `${d.path} has parent ${d.parentPath ?? 'none'}, not ${next.path}`);
    }
  });
  return chain;
}

/** testVhd's answer. */
export function parseVhdTest(result: unknown): { path: string; valid: boolean; problems: string[] } {
  const what = 'Test-VHD';
  const o = single(result, what);
  return {
    path: str(o, 'Path', what),
    valid: bool(o, 'Valid', what),
    problems: strings(o, 'Problems', what),
  };
}

// ---------------------------------------------------------------- files

/** fileHash's answer: the SHA-256, lower-case hex. */
export function parseFileHash(result: unknown): string {
  const what = 'Get-FileHash';
  const o = single(result, what);
  if (o.Algorithm !== 'SHA256') throw new ParseError(what, `algorithm ${JSON.stringify(o.Algorithm)}`);
  const hash = str(o, 'Hash', what);
  if (!/^[0-9A-Fa-f]{64}$/.test(hash)) throw new ParseError(what, `not a SHA-256: ${JSON.stringify(hash)}`);
  return hash.toLowerCase();
}

/** What fileInfo answers. */
export type HvFileInfo =
  | { exists: false }
  | {
      exists: true;
      isDirectory: boolean;
      /** apparent size in bytes; undefined for a directory */
      length?: number;
      attributes: string[];
      /** a reparse point (symbolic link, junction...): not a plain file */
      reparsePoint: boolean;
      /** the volume's GUID, lower case */
      volumeId: string;
      /** the file id fsutil printed, lower-case hex without leading zeros */
      fileId: string;
      /** `volumeId:fileId`: the same file on the same volume, whatever its name */
      identity: string;
    };

/**
 * Reads fileInfo. The file id is the one `0x` hex number in fsutil's line (its words are
 * localized: "File ID is 0x…" in English, "ファイル ID は 0x… です" in Japanese). The volume id is
 * the GUID of `Get-Volume`'s `UniqueId` (`\\?\Volume{GUID}\`).
 */
export function parseFileInfo(result: unknown): HvFileInfo {
  const what = 'file info';
  const o = single(result, what);
  if (!bool(o, 'Exists', what)) return { exists: false };
  const isDirectory = bool(o, 'IsDirectory', what);
  const attributes = (optStr(o, 'Attributes', what) ?? '')
    .split(',')
    .map((a) => a.trim())
    .filter((a) => a !== '');
  const fileId = fileIdOfText(str(o, 'FileIdText', what), what);
  const unique = str(o, 'VolumeId', what);
  const guid = /\{([0-9A-Fa-f-]{36})\}/.exec(unique)?.[1];
  if (guid === undefined) throw new ParseError(what, `no volume GUID in ${JSON.stringify(unique)}`);
  const volumeId = guid.toLowerCase();
  const info: HvFileInfo = {
    exists: true,
    isDirectory,
    attributes,
    reparsePoint: attributes.includes('ReparsePoint'),
    volumeId,
    fileId,
    identity: `${volumeId}:${fileId}`,
  };
  if (!isDirectory) info.length = size(o, 'Length', what);
  return info;
}

/**
 * The file id in what `fsutil file queryfileid` printed: its one `0x` hex number, lower case,
 * without leading zeros (the words around it are localized).
 */
export function fileIdOfText(text: string, what = 'file id'): string {
  const ids = [...text.matchAll(/0x([0-9A-Fa-f]+)/g)];
  if (ids.length !== 1) throw new ParseError(what, `expected one 0x file id in fsutil's line`);
  return ids[0]![1]!.toLowerCase().replace(/^0+(?=.)/, '');
}

/** newDirectory's answer. */
export function parseNewDirectory(result: unknown): { path: string; created: boolean } {
  const what = 'new directory';
  const o = single(result, what);
  return { path: str(o, 'Path', what), created: bool(o, 'Created', what) };
}

/** removeDirIfEmpty's answer. */
export function parseRemoveDir(result: unknown): { existed: boolean; removed: boolean } {
  const what = 'remove directory';
  const o = single(result, what);
  return { existed: bool(o, 'Existed', what), removed: bool(o, 'Removed', what) };
}

/** volumeInfo's answer. */
export interface HvVolume extends FsInfo {
  /** the existing path the volume was looked up for */
  path: string;
  uniqueId: string;
  driveLetter?: string;
  fileSystem?: string;
}

export function parseVolume(result: unknown): HvVolume {
  const what = 'Get-Volume';
  const o = single(result, what);
  const v: HvVolume = {
    path: str(o, 'Path', what),
    uniqueId: str(o, 'UniqueId', what),
    capacityBytes: size(o, 'Size', what),
    freeBytes: size(o, 'SizeRemaining', what),
  };
  const letter = optStr(o, 'DriveLetter', what);
  if (letter !== undefined) v.driveLetter = letter;
  const fs = optStr(o, 'FileSystem', what);
  if (fs !== undefined) v.fileSystem = fs;
  return v;
}

// ---------------------------------------------------------------- the host

/** hostInfo's answer. */
export interface HvHostInfo {
  computerName: string;
  osVersion: string;
  processors: { manufacturer?: string; name?: string }[];
  /** VM configuration versions the host runs (`Get-VMHostSupportedVersion`) */
  supportedVersions: { name: string; version: string; isDefault: boolean }[];
}

export function parseHostInfo(result: unknown): HvHostInfo {
  const what = 'host info';
  const o = single(result, what);
  return {
    computerName: str(o, 'ComputerName', what),
    osVersion: str(o, 'OsVersion', what),
    processors: list(o, 'Processors', what).map((p) => {
      if (!isRec(p)) throw new ParseError(what, 'a processor is not an object');
      const out: { manufacturer?: string; name?: string } = {};
      const m = optStr(p, 'Manufacturer', what);
      if (m !== undefined) out.manufacturer = m;
      const n = optStr(p, 'Name', what);
      if (n !== undefined) out.name = n.trim();
      return out;
    }),
    supportedVersions: list(o, 'SupportedVersions', what).map((s) => {
      if (!isRec(s)) throw new ParseError(what, 'a supported version is not an object');
      return {
        name: str(s, 'Name', what),
        version: str(s, 'Version', what),
        isDefault: bool(s, 'IsDefault', what),
      };
    }),
  };
}

/** The host's CPU in the driver contract's terms: the first processor's manufacturer and name. */
export function cpuInfoOf(host: HvHostInfo): CpuInfo {
  const p = host.processors[0];
  const cpu: CpuInfo = {};
  if (p?.manufacturer !== undefined) cpu.vendor = p.manufacturer;
  if (p?.name !== undefined) cpu.model = p.name;
  return cpu;
}

/** vmHostStorage's answer: Hyper-V's default folders for disks and VM configurations. */
export function parseVmHostStorage(result: unknown): {
  computerName: string;
  virtualHardDiskPath: string;
  virtualMachinePath: string;
} {
  const what = 'Get-VMHost';
  const o = single(result, what);
  return {
    computerName: str(o, 'ComputerName', what),
    virtualHardDiskPath: str(o, 'VirtualHardDiskPath', what),
    virtualMachinePath: str(o, 'VirtualMachinePath', what),
  };
}

// ---------------------------------------------------------------- the driver's own scripts

/** A hard disk drive as vmDisks writes it: the drive, and what Get-VHD says of its file. */
export interface HvDiskDrive extends HvHardDrive {
  /** `VHD`, `VHDX`, `VHDSet`; undefined without a file or when Get-VHD could not read it */
  vhdFormat?: string;
  /** `Fixed`, `Dynamic`, `Differencing` */
  vhdType?: string;
  /** the parent a differencing disk records */
  parentPath?: string;
  /** why Get-VHD could not read the file */
  vhdError?: string;
}

/** A VM of vmDisks: as `parseVms` reads it, each drive with its file's format and parent. */
export interface HvVmDisks extends Omit<HvVm, 'hardDrives'> {
  hardDrives: HvDiskDrive[];
}

/** vmDisks' answer. */
export function parseVmDisks(result: unknown): HvVmDisks[] {
  const what = 'Hyper-V VM disks';
  return records(result, what).map((o) => {
    const drives = list(o, 'HardDrives', what).map((d) => {
      if (!isRec(d)) throw new ParseError(what, 'a hard drive is not an object');
      const out: HvDiskDrive = hardDrive(d, what);
      for (const [key, field] of [
        ['VhdFormat', 'vhdFormat'],
        ['VhdType', 'vhdType'],
        ['ParentPath', 'parentPath'],
        ['VhdError', 'vhdError'],
      ] as const) {
        const v = optStr(d, key, what);
        if (v !== undefined) out[field] = v;
      }
      if (out.vhdType === 'Differencing' && out.parentPath === undefined)
        throw new ParseError(what, `${out.path ?? 'a drive'} is differencing without ParentPath`);
      return out;
    });
    return { ...vm({ ...o, HardDrives: [] }), hardDrives: drives };
  });
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

/** vmFiles' answer: every VM with the files it refers to (drives, checkpoints, parents). */
export function parseVmFiles(
  result: unknown,
): { name: string; id: string; state: string; paths: string[] }[] {
  const what = 'VM files';
  return records(result, what).map((o) => ({
    name: str(o, 'Name', what),
    id: str(o, 'Id', what),
    state: enumName(o, 'State', what),
    paths: strings(o, 'Paths', what),
  }));
}

/** pathAttributes' answer. */
export interface HvPathAttributes {
  path: string;
  exists: boolean;
  attributes: string[];
  /** a symbolic link, junction or mount point: the name leads elsewhere */
  reparsePoint: boolean;
}

export function parsePathAttributes(result: unknown): HvPathAttributes[] {
  const what = 'path attributes';
  return records(result, what).map((o) => {
    const attributes = (optStr(o, 'Attributes', what) ?? '')
      .split(',')
      .map((a) => a.trim())
      .filter((a) => a !== '');
    const exists = bool(o, 'Exists', what);
    if (exists && attributes.length === 0) throw new ParseError(what, 'an existing path without attributes');
    return {
      path: str(o, 'Path', what),
      exists,
      attributes,
      reparsePoint: attributes.includes('ReparsePoint'),
    };
  });
}

/** removeIfIdentity's answer. */
export function parseRemoveOwn(result: unknown): 'removed' | 'absent' | 'other' {
  const what = 'remove own file';
  const v = enumName(single(result, what), 'Outcome', what);
  if (v === 'Removed') return 'removed';
  if (v === 'Absent') return 'absent';
  if (v === 'Other') return 'other';
  throw new ParseError(what, `Outcome ${v}`);
}

/** hardLink's answer: whether the link was made now, and the file ids of both names. */
export function parseHardLink(result: unknown): { created: boolean; linkId: string; targetId: string } {
  const what = 'hard link';
  const o = single(result, what);
  return {
    created: bool(o, 'Created', what),
    linkId: fileIdOfText(str(o, 'LinkIdText', what), what),
    targetId: fileIdOfText(str(o, 'TargetIdText', what), what),
  };
}

/** stateFiles' answer. */
export interface HvStateFiles {
  name: string;
  id: string;
  state: string;
  /** the configuration files that exist, by kind (`vmrs`, `vmgs`, `vmcx`) */
  files: { kind: string; path: string; fileId: string }[];
}

export function parseStateFiles(result: unknown): HvStateFiles {
  const what = 'VM state files';
  const o = single(result, what);
  return {
    name: str(o, 'Name', what),
    id: str(o, 'Id', what),
    state: enumName(o, 'State', what),
    files: list(o, 'Files', what).map((f) => {
      if (!isRec(f)) throw new ParseError(what, 'a file is not an object');
      const kind = str(f, 'Kind', what);
      if (!['vmrs', 'vmgs', 'vmcx'].includes(kind)) throw new ParseError(what, `kind ${kind}`);
      return { kind, path: str(f, 'Path', what), fileId: fileIdOfText(str(f, 'FileIdText', what), what) };
    }),
  };
}

/** vmUptime's answer. */
export function parseUptime(result: unknown): { name: string; state: string; uptimeTicks: string } {
  const what = 'VM uptime';
  const o = single(result, what);
  const ticks = str(o, 'UptimeTicks', what);
  bigSizeOf(ticks, `${what} UptimeTicks`);
  return { name: str(o, 'Name', what), state: enumName(o, 'State', what), uptimeTicks: ticks };
}

/** fileHeader's answer: the first bytes and those of the footer's place, or what Get-VHD said when reading was denied. */
export function parseFileHeader(result: unknown): {
  bytes?: Buffer;
  tail?: Buffer;
  denied: boolean;
  vhdFormat?: string;
} {
  const what = 'file header';
  const o = single(result, what);
  const denied = bool(o, 'Denied', what);
  const bytesOf = (key: string): Buffer | undefined => {
    const hex = optStr(o, key, what);
    if (hex === undefined) return undefined;
    if (!/^[0-9A-Fa-f]{2}(-[0-9A-Fa-f]{2})*$/.test(hex))
      throw new ParseError(what, `${key} ${JSON.stringify(hex)}`);
    return Buffer.from(hex.replace(/-/g, ''), 'hex');
  };
  const out: { bytes?: Buffer; tail?: Buffer; denied: boolean; vhdFormat?: string } = { denied };
  const bytes = bytesOf('Hex');
  const tail = bytesOf('Tail');
  if (bytes !== undefined) out.bytes = bytes;
  else if (!denied) throw new ParseError(what, 'neither bytes nor denied');
  if (tail !== undefined) out.tail = tail;
  const f = optStr(o, 'VhdFormat', what);
  if (f !== undefined) out.vhdFormat = f;
  return out;
}

/** tcpReachable's answer. */
export function parseReachable(result: unknown): boolean {
  return bool(single(result, 'TCP probe'), 'Reachable', 'TCP probe');
}

/** scpToHost's answer. */
export function parseCopied(result: unknown): true {
  if (!bool(single(result, 'scp'), 'Copied', 'scp')) throw new ParseError('scp', 'Copied is false');
  return true;
}

/** finishCopy's answer: the part's SHA-256 and whether it now has its final name. */
export function parseFinishCopy(result: unknown): { hash: string; moved: boolean } {
  const what = 'finish copy';
  const o = single(result, what);
  const hash = str(o, 'Hash', what);
  if (!/^[0-9a-f]{64}$/.test(hash)) throw new ParseError(what, `not a SHA-256: ${JSON.stringify(hash)}`);
  return { hash, moved: bool(o, 'Moved', what) };
}

/** copyIntoPart's answer: bytes copied. */
export function parseCopiedLength(result: unknown): number {
  return size(single(result, 'local copy'), 'Length', 'local copy');
}
