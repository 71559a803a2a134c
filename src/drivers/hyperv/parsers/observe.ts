/**
 * Readers of the scripts that look at VMs and the host (scripts/observe.ts); parseVmStates also
 * reads the answers of the lifecycle scripts.
 */
import { ParseError } from '../../../errors';
import type { CpuInfo } from '../../driver';
import {
  bool,
  enumName,
  hardDrive,
  hardDrives,
  type HvHardDrive,
  int,
  isRec,
  list,
  optStr,
  type Rec,
  records,
  single,
  size,
  str,
  strings,
} from './common';

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
