/**
 * `HypervisorDriver` for Hyper-V, through PowerShell over Windows' OpenSSH server.
 *
 * > Not yet run against a real Hyper-V host (see docs/hyperv.md). Everything up to the
 * > PowerShell boundary is tested: every script it sends parses with a real PowerShell grammar
 * > and carries manifest values only as string literals; every answer is read by the parsers of
 * > parsers.ts from fixtures written from Microsoft's documentation.
 *
 * Where things run: one `powershell.exe -EncodedCommand` per operation on the host, through
 * `SshExec.runRaw` (host key checked, the ssh options of every vmplace ssh) or any
 * {@link RawCommandRunner}; scripts from scripts.ts, answers read by parsers.ts. Nothing runs on
 * the management box but ssh.
 *
 * Errors, routed here once ({@link HyperVDriver.routeError}): ssh that cannot reach the host
 * (exit 255) is `HostUnreachable` naming the host (retried); a script's own `VmNotFound` is
 * `undefined` where the contract says so (`getDomain`, `domainState`) and `DomainNotFound`
 * elsewhere; `VmNameAmbiguous` (Hyper-V lets two VMs share a name), access denied
 * (`PermissionDenied`, `UnauthorizedAccessException`: the account lacks a right) and `FileExists`
 * stall; anything else is the runner's `CommandError` / `PowerShellError`, retried with backoff.
 *
 * Paths: Windows paths (`WINDOWS_PATHS`), compared without regard to case. Every path written,
 * linked or deleted passes {@link HyperVDriver.guardPath}: lexically inside a declared storage
 * location (windows-paths.ts refuses `..`, streams, short names, device names), and on the host
 * no existing part of it below that location is a reparse point (a symbolic link, junction or
 * mount point would lead the name elsewhere; the storage location itself may be one, as every
 * Cluster Shared Volume is).
 *
 * What Hyper-V does otherwise than libvirt, and how the contract is met:
 * - **Layers are checkpoints.** `Checkpoint-VM` layers every disk of the VM at once, each with
 *   an `.avhdx` Hyper-V names itself (`<disk>_<GUID>.avhdx`, beside its parent). The machine
 *   asks for layers under the names `ownFile` gives and recognises them by path, so right after
 *   the checkpoint the driver gives each `.avhdx` the asked name as a second name: an NTFS/ReFS
 *   hard link (`fsutil hardlink create`; same directory, so same volume), checked to be the same
 *   file (file id). `getDomain` then reports the asked name for a disk whose `.avhdx` has such a
 *   link (same file id, a name `ownFile` gives for that VM and disk), so a rerun finds the disk
 *   on its layer and reads and copies go through the asked name. When the checkpoint is merged,
 *   Hyper-V deletes its own name; the driver deletes the asked one (by its file identity).
 * - **A checkpoint merges as a whole.** `Remove-VMCheckpoint` merges every disk of the
 *   checkpoint, in the background. So the driver freezes a VM only when every disk it has moves
 *   (`SnapshotPartial` otherwise, before anything is done), and `mergeLayers` of one disk merges
 *   them all and waits until the disk runs from its base.
 * - **A saved state lives in the VM's configuration** (`Virtual Machines\<id>.vmrs` and
 *   `.vmgs`), where `Save-VM` puts it. `save` gives those files the names `ownFile` asks for
 *   (hard links again: `x.vmrs`, `x.vmgs`), so `holdsSavedState`, `removeFile` and copies work
 *   on the asked names; `restore` on the host where the VM is registered is `Start-VM`.
 * - **No Quick Storage Migration yet** (capabilities `quickStorageMigration` and
 *   `defineOnOtherHost` false): Preflight refuses `quick`, and a cold move to another host, with
 *   `StrategyUnsupported` before anything changes; `auto` runs live. The refusals below are a
 *   second line behind it.
 * - **What the driver refuses** (StalledError `NotSupportedByDriver`, each saying why): a restore
 *   onto other disks or on another host (Hyper-V does not change a saved VM's disks; importing a
 *   saved VM elsewhere needs its configuration copied and `Compare-VM` fix-ups that are not
 *   proven without a host), merging a differencing disk that no checkpoint of vmplace holds
 *   while the VM runs (Hyper-V merges those only offline), registering a VM on a host that has
 *   no configuration of it, a live migration whose disks do not all go to one folder under their
 *   own names, and the fast paths the capabilities say it lacks.
 */
import type { Logger } from 'pino';

import { CommandError, StalledError, VmplaceError } from '../../errors';
import { SshExec } from '../../exec/exec';
import type { HostSpec } from '../../types';
import type {
  CpuInfo,
  DomainDisk,
  DomainInfo,
  DomainState,
  DriverCapabilities,
  FsInfo,
  HypervisorDriver,
  ImageInfo,
  MigrateLiveOptions,
  MigrateOntoLayersOptions,
  MigratePausedOptions,
  MoveDiskLiveOptions,
  OwnFileKind,
  PathSemantics,
  VmDefinition,
} from '../driver';
import { WINDOWS_RULES } from '../path-rules';
import { checkWindowsPath, isInsideWindows, WINDOWS_PATHS } from '../windows-paths';
import {
  definitionData,
  diskPathsOfDefinition,
  HYPERV_CAPABILITIES,
  hypervDefinition,
  type HvDefinitionDisk,
  withDefinitionDiskPaths,
} from './definition';
import {
  checkpointName,
  controllerOf,
  diskTarget,
  LAYER_EXTENSION,
  ownFilePath,
  parseCheckpointName,
  parseOwnLayer,
  stateSidecars,
} from './names';
import * as parse from './parsers';
import type { HvDiskDrive, HvFileInfo, HvHostInfo, HvVmDisks } from './parsers';
import { PowerShellError, PowerShellRunner, type RawCommandRunner } from './runner';
import * as scripts from './scripts';

export { HYPERV_CAPABILITIES, hypervDefinition } from './definition';

export interface HyperVDriverOptions {
  /** absolute Windows paths the driver may write, link or delete inside: the storage locations */
  allowedRoots: string[];
  /** used as given: pass a child logger that already names the host */
  logger?: Logger;
  /** runs the PowerShell command lines on the host; default `SshExec(spec.ssh).runRaw` */
  runner?: RawCommandRunner;
  /** timeout of observation scripts and quick changes; default 120 s */
  quickTimeoutMs?: number;
  /** how often to poll Hyper-V's background work (merges, saves, migrations); default 1 s */
  pollMs?: number;
  /** longest wait for Hyper-V's background work before giving up (retried later); default 24 h */
  maxWaitMs?: number;
  /** waits between polls (tests pass one that does not wait) */
  sleep?: (ms: number) => Promise<void>;
}

/** How long a path that passed the host-side guard stays trusted (the steps inside a pause touch the same few paths). */
const GUARD_TTL_MS = 10_000;
/** Paths per script that lists paths (each literal costs ~2.7 characters of command line per character). */
const PATHS_PER_SCRIPT = 8;

/** A hard disk drive as the driver sees it: the contract's disk plus the file Hyper-V opens. */
interface SeenDrive {
  disk: DomainDisk;
  drive: HvDiskDrive;
  /** the file Hyper-V opens (its `Path`); `disk.path` may be the asked name of the same file */
  real?: string;
}

interface SeenVm {
  vm: HvVmDisks;
  drives: SeenDrive[];
  info: DomainInfo;
}

const sleepFor = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const same = (a: string | undefined, b: string | undefined): boolean =>
  a !== undefined && b !== undefined && WINDOWS_RULES.key(a) === WINDOWS_RULES.key(b);

/**
 * The contract's state of a Hyper-V `VMState`. `Saved` is `shutoff`, as libvirt shows a VM with
 * a managed save: not active, and `Start-VM` resumes it from its saved memory (`define` refuses
 * to change the disks of a saved VM, so a cold move never drops that memory). The `*Critical`
 * states (Hyper-V lost the VM's storage) are `crashed`; states in passing (Starting, Saving,
 * Stopping...) are `other`, which Preflight refuses.
 */
export function domainStateOf(state: string): DomainState {
  switch (state) {
    case 'Running':
      return 'running';
    case 'Paused':
      return 'paused';
    case 'Off':
    case 'Saved':
    case 'FastSaved':
      return 'shutoff';
    default:
      return /Critical$/.test(state) ? 'crashed' : 'other';
  }
}

/** The contract's format of a virtual hard disk: `vhdx`, `vhd`, `vhdset`; a differencing one `avhdx` (`avhd`). */
export function formatOf(vhdFormat: string | undefined, vhdType: string | undefined): string | undefined {
  if (vhdFormat === undefined) return undefined;
  const f = vhdFormat.toLowerCase();
  return vhdType === 'Differencing' ? `a${f}` : f;
}

export class HyperVDriver implements HypervisorDriver {
  readonly hostName: string;
  readonly capabilities: DriverCapabilities = HYPERV_CAPABILITIES;
  readonly paths: PathSemantics = WINDOWS_PATHS;
  /** runs the command lines (an `SshExec` unless one was given) */
  readonly raw: RawCommandRunner;
  /** the declared storage locations, as given */
  readonly roots: readonly string[];
  private readonly ps: PowerShellRunner;
  private readonly ssh: SshExec | undefined;
  private readonly log: Logger | undefined;
  private readonly quickMs: number;
  private readonly pollMs: number;
  private readonly maxWaitMs: number;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly guarded = new Map<string, number>();
  private hostInfoCache: Promise<HvHostInfo> | undefined;

  constructor(hostName: string, spec: HostSpec, opts: HyperVDriverOptions) {
    if (spec.driver !== 'hyperv')
      throw new TypeError(`host ${hostName}: driver ${spec.driver} is not hyperv`);
    for (const r of opts.allowedRoots) {
      const why = checkWindowsPath(r);
      if (why !== undefined) throw new TypeError(`host ${hostName}: storage ${JSON.stringify(r)} ${why}`);
    }
    this.hostName = hostName;
    this.roots = [...opts.allowedRoots];
    this.log = opts.logger;
    this.quickMs = opts.quickTimeoutMs ?? 120_000;
    this.pollMs = opts.pollMs ?? 1000;
    this.maxWaitMs = opts.maxWaitMs ?? 24 * 3600_000;
    this.sleep = opts.sleep ?? sleepFor;
    if (opts.runner) {
      this.raw = opts.runner;
      this.ssh = undefined;
    } else {
      if (!spec.ssh)
        throw new StalledError(
          'UnsafeHostUri',
          `Hyper-V host ${hostName} has no ssh: block; vmplace reaches Hyper-V hosts only over ssh with a checked host key`,
        );
      this.ssh = new SshExec(spec.ssh);
      this.raw = this.ssh;
    }
    this.ps = new PowerShellRunner(this.raw);
  }

  // ---------------------------------------------------------------- running scripts

  /**
   * Run one script of scripts.ts (named `operation` in errors and logs) and read its answer with
   * `read`; errors go through {@link routeError}. `timeoutMs: null`: no timeout (moves, copies).
   */
  async run<T>(
    operation: string,
    script: string,
    read: (result: unknown[]) => T,
    opts: { timeoutMs?: number | null; signal?: AbortSignal } = {},
  ): Promise<T> {
    const t0 = Date.now();
    try {
      const result = await this.ps.run(operation, script, {
        ...(opts.timeoutMs === null ? {} : { timeoutMs: opts.timeoutMs ?? this.quickMs }),
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
      this.log?.debug({ op: operation, ms: Date.now() - t0 }, 'powershell finished');
      return read(result);
    } catch (err) {
      this.log?.debug({ op: operation, ms: Date.now() - t0, err }, 'powershell failed');
      throw this.routeError(err, operation);
    }
  }

  /**
   * The one place a failure of a script becomes what happens next (see the file comment). The
   * ssh client's own failures (exit 255: no connection, refused key, unknown host key) name the
   * host; a script's error ids and categories are the scripts' and Hyper-V's, never its message.
   */
  routeError(err: unknown, operation: string): unknown {
    if (err instanceof PowerShellError) {
      const where = `${operation} on ${this.hostName}`;
      switch (err.errorId) {
        case 'VmNotFound':
          return new VmplaceError('DomainNotFound', `${where}: no VM of that name`, { cause: err });
        case 'VmNameAmbiguous':
          return new StalledError(
            'VmNameAmbiguous',
            `${where}: several VMs have that name; vmplace acts on one VM only`,
            { cause: err },
          );
        case 'VmIsActive':
          return new StalledError('DomainRunning', `${where}: the VM is neither off nor saved`, {
            cause: err,
          });
        case 'FileExists':
          return new StalledError(
            'FileExists',
            `${where}: the name exists; vmplace writes only files it creates`,
            {
              cause: err,
            },
          );
        case 'LinkFailed':
          return new StalledError(
            'NotSupportedByDriver',
            `${where}: the asked name could not be made a hard link of Hyper-V's file (a hard link needs both names on one NTFS or ReFS volume): ${err.message}`,
            { cause: err },
          );
        case 'BadPath':
          return new StalledError('UnsafeScriptValue', `${where}: ${err.message}`, { cause: err });
        default:
          break;
      }
      if (
        err.category === 'PermissionDenied' ||
        /UnauthorizedAccessException$/.test(err.exceptionType) ||
        err.errorId === 'UnauthorizedAccess'
      )
        return new StalledError(
          'AccessDenied',
          `${where}: access denied; the account vmplace logs in as needs Hyper-V Administrators and Administrators (docs/hyperv.md): ${err.stderr}`,
          { cause: err },
        );
      return err;
    }
    if (err instanceof CommandError && err.exitCode === 255 && err.command[0]?.startsWith('ssh:'))
      return new VmplaceError(
        'HostUnreachable',
        `Hyper-V host ${this.hostName} (${this.raw.label}) does not answer over ssh: ${err.stderr || 'no reason given'}`,
        { cause: err },
      );
    return err;
  }

  /** Poll `check` every `pollMs` until it says done; gives up (retried later) after `maxWaitMs`. */
  private async waitUntil(what: string, check: () => Promise<boolean>): Promise<void> {
    const t0 = Date.now();
    for (;;) {
      if (await check()) return;
      if (Date.now() - t0 > this.maxWaitMs)
        throw new VmplaceError(
          'CommandTimedOut',
          `${what} on ${this.hostName} still runs after ${this.maxWaitMs} ms`,
        );
      await this.sleep(this.pollMs);
    }
  }

  // ---------------------------------------------------------------- the contract's own words

  /** See `ownFilePath` in names.ts: `.avhdx` for a layer, `.vmrs` for a saved state (`.vmgs` beside it), `.tmp` for a probe. */
  ownFile(dir: string, vm: string, migration: string, kind: OwnFileKind): string {
    return ownFilePath(dir, vm, migration, kind);
  }

  diskPathsOf(def: VmDefinition): Record<string, string | undefined> {
    return diskPathsOfDefinition(def);
  }

  /** Pure: the definition's JSON with the disks' files replaced; a disk without a format is an `avhdx` layer. */
  withDiskPaths(def: VmDefinition, disks: Record<string, { path: string; format?: string }>): VmDefinition {
    return withDefinitionDiskPaths(def, disks);
  }

  // ---------------------------------------------------------------- observation

  /** `Get-VM`: every VM's name (Hyper-V allows two of one name: listed once). */
  async listDomains(): Promise<string[]> {
    const vms = await this.run('listDomains', scripts.listVms(), parse.parseVms);
    return [...new Set(vms.map((v) => v.name))];
  }

  /**
   * `Get-VM`, `Get-VMHardDiskDrive` and `Get-VHD` of each drive's file (vmDisks), and for drives
   * on an `.avhdx` the layer-named files beside it with their file ids (layerLinks, a second
   * round trip only then). Each drive is a disk whose target comes from its controller place
   * (`diskTarget`: SCSI 0:0 `sda`, IDE 0:1 `hdb`), its format from Get-VHD (`vhdx`, `vhd`, a
   * differencing disk `avhdx`), `hasBackingStore` for a differencing disk, and as `path` the
   * asked name of a layer when the `.avhdx` has one (see the file comment), else Hyper-V's path.
   * A drive whose `Path` is not a Windows file path (a pass-through disk) is `type: 'block'`.
   * `autostart`: `AutomaticStartAction` is `Start`. A generation 2 VM's UEFI variables and
   * virtual TPM live in its guest state file (`.vmgs`), part of its configuration, which Hyper-V
   * moves with the VM (Move-VM) and which the driver's saved state carries (`x.vmgs`): none of
   * `nvram`, `uefi`, `tpms` (state left on the host, which would block a move to another host) is
   * reported. Undefined when no VM has that name; several: `VmNameAmbiguous`.
   */
  async getDomain(name: string): Promise<DomainInfo | undefined> {
    return (await this.seeVm(name))?.info;
  }

  private async seeVm(name: string): Promise<SeenVm | undefined> {
    const [vms, vendor] = await Promise.all([
      this.run(`getDomain ${name}`, scripts.vmDisks(name), parse.parseVmDisks),
      this.hostVendor(),
    ]);
    if (vms.length === 0) return undefined;
    if (vms.length > 1)
      throw new StalledError('VmNameAmbiguous', `${vms.length} VMs on ${this.hostName} are named ${name}`);
    const vm = vms[0]!;
    const onLayers = vm.hardDrives.flatMap((d) =>
      d.path !== undefined && d.path.toLowerCase().endsWith(LAYER_EXTENSION) ? [d.path] : [],
    );
    const links = onLayers.length ? await this.layerLinks(onLayers) : [];
    const drives = vm.hardDrives.map((d) => this.seeDrive(vm.name, d, links));
    const disks = drives.map((d) => d.disk);
    const defDisks: HvDefinitionDisk[] = drives.map(({ disk, drive }) => ({
      target: disk.target,
      controllerType: drive.controllerType,
      controllerNumber: drive.controllerNumber,
      controllerLocation: drive.controllerLocation,
      ...(disk.path !== undefined ? { path: disk.path } : {}),
      ...(disk.format !== undefined ? { format: disk.format } : {}),
    }));
    const info: DomainInfo = {
      name: vm.name,
      uuid: vm.id,
      state: domainStateOf(vm.state),
      persistent: true,
      memoryBytes: vm.memoryStartupBytes,
      vcpus: vm.processorCount,
      domainType: 'hyperv',
      disks,
      autostart: vm.automaticStartAction === 'Start',
      definition: hypervDefinition({
        kind: 'vmplace.hyperv.vm/v1',
        id: vm.id,
        name: vm.name,
        generation: vm.generation,
        version: vm.version,
        ...(vm.configurationLocation !== undefined
          ? { configurationLocation: vm.configurationLocation }
          : {}),
        ...(vendor !== undefined ? { processorVendor: vendor } : {}),
        disks: defDisks,
      }),
    };
    return { vm, drives, info };
  }

  /** The contract's disk of a drive (see getDomain). */
  private seeDrive(vm: string, drive: HvDiskDrive, links: parse.HvLayerLinks[]): SeenDrive {
    const target = diskTarget(drive.controllerType, drive.controllerNumber, drive.controllerLocation);
    if (target === undefined)
      throw new VmplaceError(
        'UnexpectedOutput',
        `${vm} has a drive at ${drive.controllerType} ${drive.controllerNumber}:${drive.controllerLocation}, which vmplace cannot name`,
      );
    const real = drive.path !== undefined && WINDOWS_RULES.isAbsolute(drive.path) ? drive.path : undefined;
    if (real === undefined)
      return {
        drive,
        disk: {
          target,
          type: 'block',
          device: 'disk',
          ...(drive.path !== undefined ? { sourceDev: drive.path } : {}),
          readonly: false,
          hasBackingStore: false,
        },
      };
    const format = formatOf(drive.vhdFormat, drive.vhdType);
    return {
      drive,
      real,
      disk: {
        target,
        type: 'file',
        device: 'disk',
        path: this.askedName(vm, target, real, links) ?? real,
        ...(format !== undefined ? { format } : {}),
        readonly: false,
        hasBackingStore: drive.vhdType === 'Differencing',
      },
    };
  }

  /** The name `ownFile` gave the layer that is the file `real` (a hard link beside it), if any. */
  private askedName(
    vm: string,
    target: string,
    real: string,
    links: parse.HvLayerLinks[],
  ): string | undefined {
    const seen = links.find((l) => same(l.path, real));
    if (!seen) return undefined;
    const mine = seen.links
      .filter((l) => l.fileId === seen.fileId && !same(l.path, real))
      .flatMap((l) => {
        const n = parseOwnLayer(l.path, vm, target);
        return n ? [{ n, path: l.path }] : [];
      })
      .sort((a, b) => b.n.round - a.n.round);
    const top = mine[0];
    if (!top) return undefined;
    // spelled as ownFile spells it, in the directory as Hyper-V spells the file it opens
    return WINDOWS_PATHS.join(
      WINDOWS_PATHS.dirname(real),
      WINDOWS_PATHS.basename(
        ownFilePath('C:\\x', vm, top.n.migration, { what: 'layer', disk: target, round: top.n.round }),
      ),
    );
  }

  private async layerLinks(paths: readonly string[]): Promise<parse.HvLayerLinks[]> {
    const out: parse.HvLayerLinks[] = [];
    for (let i = 0; i < paths.length; i += PATHS_PER_SCRIPT)
      out.push(
        ...(await this.run(
          'layerLinks',
          scripts.layerLinks(paths.slice(i, i + PATHS_PER_SCRIPT)),
          parse.parseLayerLinks,
        )),
      );
    return out;
  }

  /** One cheap `Get-VM` (vmState). Undefined when no VM has that name; several: `VmNameAmbiguous`. */
  async domainState(name: string): Promise<DomainState | undefined> {
    const states = await this.run(`domainState ${name}`, scripts.vmState(name), parse.parseVmStates);
    if (states.length === 0) return undefined;
    if (states.length > 1)
      throw new StalledError('VmNameAmbiguous', `${states.length} VMs on ${this.hostName} are named ${name}`);
    return domainStateOf(states[0]!.state);
  }

  /**
   * `Get-VHD` of the file and of each parent it records (getVhdChain). Hyper-V reads a virtual
   * hard disk by its own header, so "opened as `format`" means: the file must be of that format
   * (without one: a differencing VHDX, one of the driver's layers), else `DiskFormatMismatch`.
   * `allocatedBytes` is the file's size (a VHDX file is not sparse: its size is what it takes).
   */
  async imageInfo(path: string, opts: { format?: string; forceShare?: boolean } = {}): Promise<ImageInfo> {
    const chain = await this.run('imageInfo', scripts.getVhdChain(path), parse.parseVhdChain);
    const top = chain[0]!;
    if (!same(top.path, path))
      throw new VmplaceError(
        'UnexpectedOutput',
        `Get-VHD on ${this.hostName} answered ${top.path} for ${path}`,
      );
    const want = opts.format ?? 'avhdx';
    const format = formatOf(top.vhdFormat, top.vhdType)!;
    if (format !== want)
      throw new StalledError('DiskFormatMismatch', `${path} on ${this.hostName} is ${format}, not ${want}`);
    const below = chain[1];
    return {
      path,
      format,
      virtualBytes: top.virtualBytes,
      allocatedBytes: top.fileBytes,
      fileBytes: top.fileBytes,
      ...(top.parentPath !== undefined ? { backingFile: top.parentPath } : {}),
      ...(below ? { backingFormat: formatOf(below.vhdFormat, below.vhdType)! } : {}),
      chainLength: chain.length,
    };
  }

  /**
   * The first 8 bytes and the footer's (fileHeader): `vhdxfile` first is a VHDX (differencing
   * ones too), `conectix` first a dynamic or differencing VHD, `conectix` in the footer (the last
   * 512 bytes) a fixed VHD; anything else undefined. A file Hyper-V holds open without sharing it
   * is not readable: then what Get-VHD says.
   */
  async probeFormat(path: string): Promise<string | undefined> {
    const h = await this.run('probeFormat', scripts.fileHeader(path), parse.parseFileHeader);
    if (h.bytes) {
      const magic = h.bytes.toString('latin1');
      if (magic === 'vhdxfile') return 'vhdx';
      if (magic === 'conectix' || h.tail?.toString('latin1') === 'conectix') return 'vhd';
      return undefined;
    }
    return h.vhdFormat?.toLowerCase();
  }

  /** `Get-Volume` of the path or its nearest existing parent (volumeInfo). */
  async fsInfo(path: string): Promise<FsInfo> {
    const v = await this.run('fsInfo', scripts.volumeInfo(path), parse.parseVolume);
    return { capacityBytes: v.capacityBytes, freeBytes: v.freeBytes };
  }

  /** `Get-VMHost`: the default folders of new disks and of new VMs' configurations. */
  async storageLocations(): Promise<{ name: string; path: string }[]> {
    const s = await this.run('storageLocations', scripts.vmHostStorage(), parse.parseVmHostStorage);
    const out = [{ name: 'virtual-hard-disks', path: s.virtualHardDiskPath }];
    if (!same(s.virtualMachinePath, s.virtualHardDiskPath))
      out.push({ name: 'virtual-machines', path: s.virtualMachinePath });
    return out;
  }

  private hostInfo(): Promise<HvHostInfo> {
    this.hostInfoCache ??= this.run('hostInfo', scripts.hostInfo(), parse.parseHostInfo).catch(
      (err: unknown) => {
        this.hostInfoCache = undefined;
        throw err;
      },
    );
    return this.hostInfoCache;
  }

  /**
   * The host's processor vendor for the definitions `getDomain` reads; undefined when the host
   * does not say (then `canRun` cannot compare vendors, and Hyper-V itself refuses a saved state
   * or live migration across them).
   */
  private async hostVendor(): Promise<string | undefined> {
    try {
      return cpuInfoVendor(await this.hostInfo());
    } catch (err) {
      this.log?.debug({ err }, 'no processor vendor');
      return undefined;
    }
  }

  /** `Win32_Processor` of the host (asked once per driver). */
  async hostCpu(): Promise<CpuInfo> {
    return parse.cpuInfoOf(await this.hostInfo());
  }

  async fileExists(path: string): Promise<boolean> {
    return (await this.fileInfo(path)).exists;
  }

  /** Apparent size (`Get-Item` Length); undefined when missing or a directory. */
  async fileSize(path: string): Promise<number | undefined> {
    const i = await this.fileInfo(path);
    return i.exists && !i.isDirectory ? i.length : undefined;
  }

  /** What is at `path` (fileInfo: Get-Item, Get-Volume, fsutil): existence, size, identity. Reads only. */
  fileInfo(path: string): Promise<HvFileInfo> {
    return this.run('fileInfo', scripts.fileInfo(path), parse.parseFileInfo);
  }

  /**
   * The definition's configuration version is one this host runs (`Get-VMHostSupportedVersion`),
   * and its processors are of the vendor of the host the definition was read on (a saved state
   * or a live migration does not cross from Intel to AMD or back).
   */
  async canRun(def: VmDefinition): Promise<{ compatible: boolean; message: string }> {
    const data = definitionData(def);
    const host = await this.hostInfo();
    if (!host.supportedVersions.some((v) => v.version === data.version))
      return {
        compatible: false,
        message: `configuration version ${data.version} of ${data.name} is not one ${this.hostName} runs (${host.supportedVersions.map((v) => v.version).join(', ')})`,
      };
    const vendor = cpuInfoVendor(host);
    if (data.processorVendor !== undefined && vendor !== undefined && data.processorVendor !== vendor)
      return {
        compatible: false,
        message: `${data.name} runs on ${data.processorVendor} processors and ${this.hostName} has ${vendor}: Hyper-V moves a running or saved VM only between processors of one vendor`,
      };
    return { compatible: true, message: `${this.hostName} runs configuration version ${data.version}` };
  }

  // ---------------------------------------------------------------- layers (checkpoints)

  /**
   * `Checkpoint-VM -SnapshotName vmplace-<migration>[-r<round>]` (checkpointVm: taken only when no
   * checkpoint of that name exists), then for each asked disk a hard link under the asked name
   * to the `.avhdx` it now runs on (hardLink: made only when the name is free; the two names must
   * be one file id, else `OverlayExists`). The names must be those `ownFile` gives for this VM,
   * disk, one migration and one round (the checkpoint's name comes from them).
   *
   * Already done: every asked disk is reported on its asked name (getDomain): returned as is.
   * Half done (the checkpoint taken, a link missing): the checkpoint is found by its name, and
   * a disk is linked only when the `.avhdx` it runs on has as parent the file that checkpoint
   * holds at the disk's place (`UnexpectedDiskSource` otherwise: never a layer of someone else).
   *
   * Refused before anything is done: a VM with a file disk not asked for (`SnapshotPartial`: the
   * checkpoint would layer it, and `Remove-VMCheckpoint` merges a checkpoint's disks together,
   * so it could not be merged back without unfreezing the others), a layer whose directory is not
   * its disk's (Hyper-V puts the `.avhdx` beside its parent; a hard link stays on one volume).
   */
  async freezeDisks(
    vm: string,
    layers: { target: string; layer: string }[],
  ): Promise<{ target: string; layer: string; below: string }[]> {
    if (layers.length === 0) return [];
    const named = layers.map((l) => ({ ...l, name: parseOwnLayer(l.layer, vm, l.target) }));
    const first = named[0]!.name;
    if (!first || named.some((l) => l.name?.migration !== first.migration || l.name.round !== first.round))
      throw new StalledError(
        'NotSupportedByDriver',
        `the layers of ${vm} must be named by ownFile for one migration and round: ${layers.map((l) => l.layer).join(', ')}`,
      );
    await Promise.all(layers.map((l) => this.guardPath(l.layer)));
    let seen = await this.mustSeeVm(vm);
    const files = seen.drives.filter((d) => d.disk.type === 'file');
    const left = files.filter((d) => !layers.some((l) => l.target === d.disk.target));
    if (left.length)
      throw new StalledError(
        'SnapshotPartial',
        `a Hyper-V checkpoint layers every disk of ${vm} and Remove-VMCheckpoint merges them together; vmplace freezes ${vm} only when all its disks move (${left.map((d) => d.disk.target).join(', ')} would stay)`,
      );
    const driveOf = (s: SeenVm, t: string): SeenDrive => {
      const d = s.drives.find((x) => x.disk.target === t);
      if (!d?.real) throw new StalledError('DiskNotFound', `${vm} on ${this.hostName} has no file disk ${t}`);
      return d;
    };
    const done = (s: SeenVm): boolean => layers.every((l) => same(driveOf(s, l.target).disk.path, l.layer));
    if (!done(seen)) {
      for (const l of layers) {
        const d = driveOf(seen, l.target);
        if (!same(WINDOWS_PATHS.dirname(l.layer), WINDOWS_PATHS.dirname(d.real!)))
          throw new StalledError(
            'NotSupportedByDriver',
            `Hyper-V makes the differencing disk of ${vm} ${l.target} beside ${d.real}; the layer ${l.layer} must be in that directory`,
          );
      }
      const cp = checkpointName(first.migration, first.round);
      const taken = await this.run(
        `freezeDisks ${vm}`,
        scripts.checkpointVm(vm, cp),
        parse.parseCheckpointTaken,
      );
      this.log?.info({ vm, checkpoint: cp, created: taken.created }, 'checkpoint of every disk');
      const [after, checkpoints] = await Promise.all([
        this.mustSeeVm(vm),
        this.run('getCheckpoints', scripts.getCheckpoints(vm), parse.parseCheckpoints),
      ]);
      const ours = checkpoints.find((c) => c.name === cp);
      if (!ours)
        throw new VmplaceError(
          'UnexpectedOutput',
          `checkpoint ${cp} of ${vm} is not listed after it was taken`,
        );
      for (const l of layers) {
        const d = driveOf(after, l.target);
        if (same(d.disk.path, l.layer)) continue;
        const below = ours.hardDrives.find(
          (h) =>
            h.controllerType === d.drive.controllerType &&
            h.controllerNumber === d.drive.controllerNumber &&
            h.controllerLocation === d.drive.controllerLocation,
        );
        if (d.drive.vhdType !== 'Differencing' || !below?.path || !same(d.drive.parentPath, below.path))
          throw new StalledError(
            'UnexpectedDiskSource',
            `${vm} ${l.target} runs from ${d.real}, which is not the layer of checkpoint ${cp} (its parent is ${d.drive.parentPath ?? 'none'})`,
          );
        const link = await this.run('hardLink', scripts.hardLink(l.layer, d.real!), parse.parseHardLink);
        if (link.linkId !== link.targetId)
          throw new StalledError(
            'OverlayExists',
            `${l.layer} exists on ${this.hostName} and is not ${d.real}`,
          );
      }
      seen = await this.mustSeeVm(vm);
      if (!done(seen))
        throw new VmplaceError(
          'SnapshotPartial',
          `${vm}: after checkpoint ${cp}, not every disk shows its layer`,
        );
    }
    return layers.map((l) => ({
      target: l.target,
      layer: l.layer,
      below: driveOf(seen, l.target).drive.parentPath ?? '',
    }));
  }

  private async mustSeeVm(vm: string): Promise<SeenVm> {
    const s = await this.seeVm(vm);
    if (!s) throw new VmplaceError('DomainNotFound', `${vm} is not defined on ${this.hostName}`);
    return s;
  }

  /**
   * `Remove-VMCheckpoint` of every checkpoint of vmplace's (named `vmplace-<migration>...`, of the
   * migration `top` names) that the VM has, highest round first (removeCheckpoint: a name already
   * gone is fine); Hyper-V merges every disk of them in the background; then poll (mergeStatus)
   * until the disk `target` runs from a file that is not an `.avhdx` and no merge is reported;
   * then the asked names of the merged layers (the hard links `freezeDisks` made) are removed by
   * the file identity they had before the merge (never a file that took the name since).
   *
   * Already done: with `top`, a disk that no longer runs from it (a rerun) is left alone; a disk
   * that is not on a differencing disk has nothing to merge. A merge an interrupted run started
   * is found running (no checkpoint left, the disk still on its layer) and waited for.
   *
   * Refused (`NotSupportedByDriver`): a disk on a differencing disk that no checkpoint of vmplace
   * holds, with no merge running: a layer attached as the VM's disk (a restore elsewhere) or a
   * checkpoint someone else took. Hyper-V merges such a disk only while the VM is off.
   */
  async mergeLayers(vm: string, target: string, opts: { top?: string } = {}): Promise<void> {
    const seen = await this.mustSeeVm(vm);
    const d = seen.drives.find((x) => x.disk.target === target);
    if (!d?.real)
      throw new StalledError('DiskNotFound', `${vm} on ${this.hostName} has no file disk ${target}`);
    if (d.drive.vhdError !== undefined)
      throw new VmplaceError(
        'UnexpectedOutput',
        `Get-VHD cannot read ${d.real} of ${vm}: ${d.drive.vhdError}`,
      );
    if (d.drive.vhdType !== 'Differencing') return;
    if (opts.top !== undefined && !same(d.disk.path, opts.top) && !same(d.real, opts.top)) return;
    const migration =
      (opts.top !== undefined ? parseOwnLayer(opts.top, vm, target)?.migration : undefined) ??
      parseOwnLayer(d.disk.path ?? '', vm, target)?.migration;
    const checkpoints = await this.run(
      `mergeLayers ${vm}`,
      scripts.getCheckpoints(vm),
      parse.parseCheckpoints,
    );
    const ours = checkpoints
      .flatMap((c) => {
        const n = parseCheckpointName(c.name);
        return n && (migration === undefined || n.migration === migration) ? [{ c, n }] : [];
      })
      .sort((a, b) => b.n.round - a.n.round);
    const status = await this.run('mergeStatus', scripts.mergeStatus(vm), parse.parseMergeStatus);
    if (ours.length === 0 && !status.merging)
      throw new StalledError(
        'NotSupportedByDriver',
        `${vm} ${target} runs from the differencing disk ${d.real}, which no checkpoint of vmplace holds and no merge is folding: Hyper-V merges such a disk only while the VM is off (Merge-VHD); vmplace does not do it for a running VM`,
      );
    // the asked names of every disk's layers of these rounds, with their identity now (all merge together)
    const rounds = new Set(ours.map((o) => o.n.round));
    const topRound = opts.top !== undefined ? parseOwnLayer(opts.top, vm, target)?.round : undefined;
    if (topRound !== undefined) for (let r = 1; r <= topRound; r++) rounds.add(r);
    const links = await this.ownLinksOf(seen, migration, rounds);
    for (const o of ours)
      await this.run(`mergeLayers ${vm}`, scripts.removeCheckpoint(vm, o.c.name), parse.parseRemoved);
    this.log?.info({ vm, checkpoints: ours.map((o) => o.c.name) }, 'checkpoints removed; Hyper-V merges');
    await this.waitUntil(`the merge of ${vm} ${target}`, async () => {
      const s = await this.run('mergeStatus', scripts.mergeStatus(vm), parse.parseMergeStatus);
      const drive = s.vm.hardDrives.find(
        (h) =>
          h.controllerType === d.drive.controllerType &&
          h.controllerNumber === d.drive.controllerNumber &&
          h.controllerLocation === d.drive.controllerLocation,
      );
      return !s.merging && drive?.path !== undefined && !/\.avhdx?$/i.test(drive.path);
    });
    for (const l of links)
      await this.run('removeIfIdentity', scripts.removeIfIdentity(l.path, l.identity), parse.parseRemoveOwn);
  }

  /** The asked names (hard links) of the VM's layers of `migration` and `rounds` that exist, with their identity. */
  private async ownLinksOf(
    seen: SeenVm,
    migration: string | undefined,
    rounds: Set<number>,
  ): Promise<{ path: string; identity: string }[]> {
    if (migration === undefined) return [];
    const names = seen.drives.flatMap((d) =>
      d.real
        ? [...rounds].map((round) =>
            ownFilePath(WINDOWS_PATHS.dirname(d.real!), seen.vm.name, migration, {
              what: 'layer',
              disk: d.disk.target,
              round,
            }),
          )
        : [],
    );
    const infos = await Promise.all(names.map((n) => this.fileInfo(n).then((i) => ({ n, i }))));
    return infos.flatMap(({ n, i }) =>
      i.exists && !i.isDirectory ? [{ path: n, identity: i.identity }] : [],
    );
  }

  /**
   * A layer of a VM that does not run, merged into its parent.
   * - Nothing at `layer`: merged already (Hyper-V deletes what it merged): done.
   * - Used by a VM of this host that is off through a checkpoint of vmplace's: that checkpoint is
   *   removed (Hyper-V merges an off VM's checkpoint at once) and waited for, as `mergeLayers`.
   * - Used otherwise: `DestinationInUse` (Merge-VHD needs the chain detached).
   * - Not used: `Test-VHD` first (a layer whose parent changed since, such as the asked name of a
   *   layer merged online, must never be merged again: `ImageCheckFailed`), then `Merge-VHD -Path
   *   layer -DestinationPath parent` (mergeVhd), then the merged file is removed (it is no longer
   *   a valid disk).
   */
  async mergeLayerOffline(layer: string): Promise<void> {
    await this.guardPath(layer);
    const info = await this.fileInfo(layer);
    if (!info.exists) return;
    const users = [...(await this.filesInUse()).entries()].find(([p]) => same(p, layer))?.[1];
    if (users && users.size > 0) {
      const [vm] = [...users];
      const s = vm !== undefined ? await this.seeVm(vm) : undefined;
      const d = s?.drives.find((x) => same(x.disk.path, layer) || same(x.real, layer));
      if (s && users.size === 1 && s.info.state === 'shutoff' && d) {
        await this.mergeLayers(s.vm.name, d.disk.target, { top: layer });
        return;
      }
      throw new StalledError(
        'DestinationInUse',
        `${layer} on ${this.hostName} is in use by ${[...users].join(', ')}`,
      );
    }
    const vhd = await this.run('mergeLayerOffline', scripts.getVhd(layer), parse.parseVhd);
    if (vhd.parentPath === undefined) return;
    await this.guardPath(vhd.parentPath);
    const t = await this.run('checkImage', scripts.testVhd(layer), parse.parseVhdTest);
    if (!t.valid)
      throw new StalledError(
        'ImageCheckFailed',
        `${layer} on ${this.hostName} does not fit its parent ${vhd.parentPath} (${t.problems.join('; ') || 'Test-VHD failed'}); not merged`,
      );
    await this.run('mergeLayerOffline', scripts.mergeVhd(layer, vhd.parentPath), parse.parseVhd, {
      timeoutMs: null,
    });
    await this.run('removeFile', scripts.removeFile(layer), parse.parseRemoved);
  }

  /**
   * `Set-VHD -Path layer -ParentPath parent` (setVhdParent), without `-IgnoreIdMismatch`: Hyper-V
   * checks that the new parent is the one the layer was made on (a verified copy is). Already
   * done: the layer records `parent` (getVhd first).
   */
  async relinkLayer(layer: string, parent: string, _parentFormat?: string): Promise<void> {
    await Promise.all([this.guardPath(layer), this.guardPath(parent)]);
    const now = await this.run('relinkLayer', scripts.getVhd(layer), parse.parseVhd);
    if (same(now.parentPath, parent)) return;
    await this.run('relinkLayer', scripts.setVhdParent(layer, parent), parse.parseVhd);
  }

  /**
   * `New-VHD -Path path -ParentPath parent -Differencing` (newDifferencingVhd), after removing a
   * file of that name (ours by its name). Whether New-VHD accepts the `.avhdx` extension is
   * documented for checkpoints only, not for New-VHD: unverified.
   */
  async createLayer(path: string, parent: string, _parentFormat?: string): Promise<void> {
    await Promise.all([this.guardPath(path), this.guardPath(parent)]);
    await this.run('createLayer', scripts.removeFile(path), parse.parseRemoved);
    await this.run('createLayer', scripts.newDifferencingVhd(path, parent), parse.parseVhd);
  }

  /** `Test-VHD` of the file and its chain (testVhd): the errors it wrote; empty when valid. */
  async checkImage(path: string, _format: string): Promise<string[]> {
    const t = await this.run('checkImage', scripts.testVhd(path), parse.parseVhdTest, { timeoutMs: null });
    return t.valid ? [] : t.problems.length ? t.problems : ['Test-VHD reports the disk invalid'];
  }

  // ---------------------------------------------------------------- lifecycle

  /**
   * `Save-VM` (saveVm: a VM already `Saved` is not saved again), then the saved state's files
   * (stateFiles: `<id>.vmrs`, `<id>.vmgs` in the VM's `Virtual Machines` folder) get the asked
   * names: `stateFile` for the `.vmrs`, its sidecar (`x.vmgs`) for the `.vmgs` (hardLink; one
   * file id each, else `FileExists`). A hard link stays on its volume: `stateFile` must be on the
   * volume of the VM's configuration (else the link fails, with the VM saved: the rollback starts
   * it again). Already done: `holdsSavedState`.
   */
  async save(vm: string, stateFile: string, _opts: { knownActive?: boolean } = {}): Promise<void> {
    const sidecars = stateSidecars(stateFile);
    await Promise.all([stateFile, ...sidecars].map((p) => this.guardPath(p)));
    await this.run(`save ${vm}`, scripts.saveVm(vm), parse.parseVmStates, { timeoutMs: null });
    const files = await this.run('stateFiles', scripts.stateFiles(vm), parse.parseStateFiles);
    if (files.state !== 'Saved')
      throw new VmplaceError('SuspendFailed', `${vm} on ${this.hostName} is ${files.state} after Save-VM`);
    const vmrs = files.files.find((f) => f.kind === 'vmrs');
    if (!vmrs) throw new VmplaceError('UnexpectedOutput', `${vm} is saved but has no .vmrs`);
    const vmgs = files.files.find((f) => f.kind === 'vmgs');
    const pairs: [string, string][] = [[stateFile, vmrs.path]];
    if (vmgs && sidecars[0]) pairs.push([sidecars[0], vmgs.path]);
    for (const [name, file] of pairs) {
      const l = await this.run('hardLink', scripts.hardLink(name, file), parse.parseHardLink);
      if (l.linkId !== l.targetId)
        throw new StalledError(
          'FileExists',
          `${name} exists on ${this.hostName} and is not the saved state ${file}`,
        );
    }
  }

  /** Polls vmState while the VM is `Saving` (a save an interrupted run issued goes on in Hyper-V); true when it was. */
  async waitForSaveJob(vm: string): Promise<boolean> {
    let was = false;
    await this.waitUntil(`the save of ${vm}`, async () => {
      const s = await this.run('waitForSaveJob', scripts.vmState(vm), parse.parseVmStates);
      const saving = s.some((x) => x.state === 'Saving' || x.state === 'FastSaving');
      was ||= saving;
      return !saving;
    });
    return was;
  }

  /**
   * True when `vm` is `Saved` on this host and `stateFile` (and its `.vmgs` sidecar when the VM
   * has a guest state) is the same file as the VM's saved state (file identity): a save of its
   * own, complete (Hyper-V shows `Saved` only after the save).
   */
  async holdsSavedState(stateFile: string, vm: string): Promise<boolean> {
    let files: parse.HvStateFiles;
    try {
      files = await this.run('holdsSavedState', scripts.stateFiles(vm), parse.parseStateFiles);
    } catch (err) {
      if (err instanceof VmplaceError && err.reason === 'DomainNotFound') return false;
      throw err;
    }
    if (files.state !== 'Saved') return false;
    const sidecar = stateSidecars(stateFile)[0];
    const pairs: [string, string][] = [];
    for (const f of files.files) {
      if (f.kind === 'vmrs') pairs.push([stateFile, f.path]);
      if (f.kind === 'vmgs' && sidecar) pairs.push([sidecar, f.path]);
    }
    if (!pairs.some(([a]) => a === stateFile)) return false;
    const same2 = await Promise.all(
      pairs.map(async ([ours, theirs]) => {
        const [a, b] = await Promise.all([this.fileInfo(ours), this.fileInfo(theirs)]);
        return a.exists && b.exists && a.identity === b.identity;
      }),
    );
    return same2.every(Boolean);
  }

  /** The VM the state file names (`<vm>.state.vmplace-<id>.vmrs`), read where it holds that saved state. */
  async savedDefinition(stateFile: string): Promise<VmDefinition> {
    const vm = this.vmOfStateFile(stateFile);
    if (!(await this.holdsSavedState(stateFile, vm)))
      throw new StalledError(
        'NotSupportedByDriver',
        `${stateFile} is not the saved state of ${vm} registered on ${this.hostName}: Hyper-V keeps a saved state inside the VM's configuration, and vmplace reads its definition only there`,
      );
    return this.definition(vm);
  }

  private vmOfStateFile(stateFile: string): string {
    const m = /^(.+)\.state\.vmplace-[A-Za-z0-9][A-Za-z0-9_-]*\.vmrs$/i.exec(
      WINDOWS_PATHS.basename(stateFile),
    );
    if (!m)
      throw new StalledError(
        'NotSupportedByDriver',
        `${stateFile} is not a saved state named by vmplace on Hyper-V`,
      );
    return m[1]!;
  }

  /**
   * `Start-VM` of the VM registered on this host whose saved state `stateFile` is
   * (`holdsSavedState`): Hyper-V restores it from that state. A VM already running or paused is
   * fine (idempotent). With `def`, it must be this VM (its id) on the disks it has: Hyper-V does
   * not change the disks of a saved VM (`NotSupportedByDriver`). A VM not registered here: a
   * restore on another host would be Compare-VM and Import-VM of its copied configuration with
   * the disks fixed up, not done without a real host to prove it (`NotSupportedByDriver`).
   */
  async restore(
    stateFile: string,
    def?: VmDefinition,
    _opts: { knownInactive?: boolean } = {},
  ): Promise<void> {
    const data = def ? definitionData(def) : undefined;
    const vm = data?.name ?? this.vmOfStateFile(stateFile);
    const seen = await this.seeVm(vm);
    if (!seen)
      throw new StalledError(
        'NotSupportedByDriver',
        `${vm} is not registered on ${this.hostName}: restoring a saved state on another Hyper-V host needs its configuration imported (Compare-VM, Import-VM), which vmplace does not do without a real host to prove it`,
      );
    if (seen.vm.state === 'Running' || seen.vm.state === 'Paused') return;
    if (data) {
      if (data.id !== seen.vm.id)
        throw new StalledError(
          'DomainExistsOnTarget',
          `${vm} on ${this.hostName} is another VM (id ${seen.vm.id}, not ${data.id})`,
        );
      const moved = data.disks.filter((w) => {
        const d = seen.drives.find((x) => x.disk.target === w.target);
        return w.path !== undefined && !same(d?.disk.path, w.path) && !same(d?.real, w.path);
      });
      if (moved.length)
        throw new StalledError(
          'NotSupportedByDriver',
          `Hyper-V does not change the disks of a saved VM: ${vm} would need ${moved.map((m) => `${m.target} on ${m.path}`).join(', ')}`,
        );
    }
    if (!(await this.holdsSavedState(stateFile, vm)))
      throw new StalledError(
        'SavedStateMismatch',
        `${vm} on ${this.hostName} is ${seen.vm.state} and ${stateFile} is not its saved state; not started`,
      );
    const after = await this.run(`restore ${vm}`, scripts.startVm(vm), parse.parseVmStates, {
      timeoutMs: null,
    });
    const state = after[0]?.state;
    if (state !== 'Running' && state !== 'Starting')
      throw new VmplaceError(
        'ResumeFailed',
        `${vm} on ${this.hostName} is ${state ?? 'gone'} after Start-VM`,
      );
  }

  /** The VM's definition (Hyper-V has one configuration: `inactive` reads the same). */
  async definition(vm: string, _opts: { inactive?: boolean } = {}): Promise<VmDefinition> {
    return (await this.mustSeeVm(vm)).info.definition;
  }

  /**
   * Make the VM registered here under the definition's id use the definition's disk files:
   * `Set-VMHardDiskDrive -Path` (setDrivePath) for each drive whose file differs, only while the
   * VM is `Off` (a running VM's disks move with `moveDiskLive`; a saved VM's would lose its
   * memory: `DomainStateUnsupported`). Already done: every drive names its file. A VM not
   * registered here: `NotSupportedByDriver` (registering needs its configuration on this host:
   * Import-VM, which vmplace does not do); another VM of that name: `DomainExistsOnTarget`.
   */
  async define(def: VmDefinition): Promise<void> {
    const data = definitionData(def);
    const seen = await this.seeVm(data.name);
    if (!seen)
      throw new StalledError(
        'NotSupportedByDriver',
        `${data.name} is not registered on ${this.hostName}: defining it here needs its configuration on this host (Import-VM), which vmplace does not copy`,
      );
    if (seen.vm.id !== data.id)
      throw new StalledError(
        'DomainExistsOnTarget',
        `${data.name} on ${this.hostName} is another VM (id ${seen.vm.id}, not ${data.id})`,
      );
    const change = data.disks.filter((w) => {
      const d = seen.drives.find((x) => x.disk.target === w.target);
      return w.path !== undefined && !same(d?.disk.path, w.path) && !same(d?.real, w.path);
    });
    if (change.length === 0) return;
    if (seen.vm.state !== 'Off')
      throw new StalledError(
        'DomainStateUnsupported',
        `${data.name} on ${this.hostName} is ${seen.vm.state}: Hyper-V changes a VM's disks only while it is off`,
      );
    for (const w of change) {
      await this.guardPath(w.path!);
      const place = controllerOf(w.target) ?? {
        controllerType: w.controllerType,
        controllerNumber: w.controllerNumber,
        controllerLocation: w.controllerLocation,
      };
      await this.run(
        `define ${data.name}`,
        scripts.setDrivePath(
          data.name,
          place.controllerType,
          place.controllerNumber,
          place.controllerLocation,
          w.path!,
        ),
        parse.parseVmStates,
      );
    }
  }

  /** `Remove-VM -Force` of a VM that is off or saved (removeVm; its disks stay); no VM of that name is fine. */
  async undefine(vm: string): Promise<void> {
    await this.run(`undefine ${vm}`, scripts.removeVm(vm), parse.parseRemoved);
  }

  /** `Start-VM` of a VM that is off or saved (startVm; any other state is left alone). */
  async start(vm: string): Promise<void> {
    await this.run(`start ${vm}`, scripts.startVm(vm), parse.parseVmStates, { timeoutMs: null });
  }

  /** `Resume-VM` of a paused VM (resumeVm; a running one is left alone). */
  async resume(vm: string, _opts: { knownPaused?: boolean } = {}): Promise<void> {
    const s = await this.run(`resume ${vm}`, scripts.resumeVm(vm), parse.parseVmStates);
    if (s[0]?.state === 'Paused')
      throw new VmplaceError('ResumeFailed', `${vm} on ${this.hostName} is still paused`);
  }

  /**
   * `Suspend-VM` of a running VM (suspendVm; a paused one is left alone). That the VM's disk
   * writes are all on its files when Suspend-VM returns is Hyper-V's documented pause, not
   * observed here.
   */
  async pause(vm: string, _opts: { knownRunning?: boolean } = {}): Promise<void> {
    const s = await this.run(`pause ${vm}`, scripts.suspendVm(vm), parse.parseVmStates);
    if (s[0]?.state !== 'Paused')
      throw new VmplaceError('SuspendFailed', `${vm} on ${this.hostName} is ${s[0]?.state}`);
  }

  /**
   * Polls the VM while Hyper-V reports a migration of it (an operational status naming a
   * migration: `MigratingVirtualMachine`, `StorageMigrationPhaseOne`/`Two`, names of the
   * documented `VMOperationalStatus`, not observed); true when there was one.
   */
  async waitForMigrationJob(vm: string): Promise<boolean> {
    let was = false;
    await this.waitUntil(`the migration of ${vm}`, async () => {
      const running = await this.migrationRunning(vm);
      was ||= running;
      return !running;
    });
    return was;
  }

  private async migrationRunning(vm: string): Promise<boolean> {
    const vms = await this.run('migrationStatus', scripts.getVm(vm), parse.parseVms);
    return vms.some((v) => v.operationalStatus.some((s) => /Migrat/i.test(s)));
  }

  /**
   * `Uptime` of a running or paused VM, in ticks (vmUptime). An opaque counter as the contract
   * asks; whether Hyper-V stops it while the VM is paused is not documented: a counter that goes
   * on makes two answers differ (the caller then takes the guest for having run, the safe way).
   */
  async guestRunTime(vm: string): Promise<string | undefined> {
    try {
      const u = await this.run('guestRunTime', scripts.vmUptime(vm), parse.parseUptime);
      return u.state === 'Running' || u.state === 'Paused' ? u.uptimeTicks : undefined;
    } catch (err) {
      if (err instanceof VmplaceError && err.reason === 'DomainNotFound') return undefined;
      throw err;
    }
  }

  /** `Stop-VM -TurnOff` (stopVm: an off VM is left alone): power cut, nothing saved. */
  async destroy(vm: string): Promise<void> {
    await this.run(`destroy ${vm}`, scripts.stopVm(vm, true), parse.parseVmStates);
  }

  /** `Set-VM -AutomaticStartAction Start` (on) or `Nothing` (off). */
  async setAutostart(vm: string, on: boolean): Promise<void> {
    await this.run(
      `setAutostart ${vm}`,
      scripts.setStartAction(vm, on ? 'Start' : 'Nothing'),
      parse.parseVmStates,
    );
  }

  /**
   * Hyper-V runs a VM's moves as jobs of its own management service, which go on when vmplace's
   * client dies; there is no documented cmdlet to cancel one, and cancelling through WMI is not
   * done without a real host to prove it. So this waits until no migration of the VM runs
   * (afterwards nothing writes the migration's files, which is what the caller needs); a merge
   * is not aborted either: `mergeLayers` waits for it.
   */
  async abortJobs(vm: string): Promise<void> {
    try {
      if (await this.waitForMigrationJob(vm))
        this.log?.warn({ vm }, 'a Hyper-V migration of the VM ran; waited for it to end');
    } catch (err) {
      if (err instanceof VmplaceError && err.reason === 'DomainNotFound') return;
      throw err;
    }
  }

  // ---------------------------------------------------------------- fast paths

  /**
   * `Move-VMStorage -VHDs @(@{SourceFilePath; DestinationFilePath})` (moveVmVhd): Hyper-V mirrors
   * the disk while the VM runs, switches to the copy and deletes the source. Already done: the
   * disk runs from `destPath`. A move an interrupted run started goes on in Hyper-V: waited for
   * first (waitForMigrationJob). `claim`: Hyper-V creates the destination itself (a file there
   * makes it fail), so the claim's intent is recorded before the move and the new file's identity
   * after it (the claim adopts the file if vmplace dies in between); a file already at `destPath`
   * that the claim does not own stops with `DestinationExists`, one it owns (a leftover) is
   * removed. Aborting `signal` ends vmplace's wait, not Hyper-V's job (see `abortJobs`): it then
   * waits for the job and resolves when the disk switched, else rejects with `Cancelled`.
   * `bandwidthMiBps` is not offered by Move-VMStorage and is ignored.
   */
  async moveDiskLive(
    vm: string,
    target: string,
    destPath: string,
    _format: string,
    opts: MoveDiskLiveOptions = {},
  ): Promise<void> {
    await this.guardPath(destPath);
    const onDest = async (): Promise<SeenDrive> => {
      const d = (await this.mustSeeVm(vm)).drives.find((x) => x.disk.target === target);
      if (!d?.real)
        throw new StalledError('DiskNotFound', `${vm} on ${this.hostName} has no file disk ${target}`);
      return d;
    };
    if (await this.waitForMigrationJob(vm)) this.log?.info({ vm }, 'a storage move of an earlier run ended');
    const d = await onDest();
    if (same(d.real, destPath)) return this.recordClaim(destPath, opts);
    const there = await this.fileInfo(destPath);
    if (there.exists) {
      if (!opts.claim || !(await opts.claim.owns(there.identity)))
        throw new StalledError(
          'DestinationExists',
          `${destPath} exists on ${this.hostName} but was not created by this migration`,
        );
      await this.run(
        'removeIfIdentity',
        scripts.removeIfIdentity(destPath, there.identity),
        parse.parseRemoveOwn,
      );
    }
    await opts.claim?.intend?.();
    try {
      await this.run(`moveDiskLive ${vm}`, scripts.moveVmVhd(vm, d.real!, destPath), parse.parseVms, {
        timeoutMs: null,
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
    } catch (err) {
      if (!opts.signal?.aborted) throw err;
      await this.waitForMigrationJob(vm);
      if (!same((await onDest()).real, destPath))
        throw new VmplaceError('Cancelled', `the storage move of ${vm} ${target} was cancelled`, {
          cause: err,
        });
    }
    if (!same((await onDest()).real, destPath))
      throw new VmplaceError(
        'UnexpectedDiskSource',
        `${vm} ${target} does not run from ${destPath} after Move-VMStorage`,
      );
    await this.recordClaim(destPath, opts);
  }

  /** Record the identity of `path` in `opts.claim` (a file Hyper-V created for the migration). */
  async recordClaim(path: string, opts: { claim?: MoveDiskLiveOptions['claim'] }): Promise<void> {
    if (!opts.claim) return;
    const i = await this.fileInfo(path);
    if (i.exists) await opts.claim.record(i.identity);
  }

  /**
   * `Move-VM -DestinationHost ADDRESS -IncludeStorage -DestinationStoragePath FOLDER` (moveVm):
   * the VM, its configuration and every disk go to `target` while it runs. Hyper-V puts every
   * file in one folder under its own name, so every file disk of the VM must be in `opts.disks`
   * and all of them in one folder under their source names (`NotSupportedByDriver` otherwise,
   * before anything is done). Live migration must be set up between the hosts (Kerberos
   * constrained delegation or CredSSP, migration networks): an ssh session logged in with a key
   * has no network credentials of its own, so without delegation Hyper-V refuses, and the error
   * is reported as it is. Already done: the VM runs on `target` from those paths. `claimFor`:
   * intent before, identities after (as `moveDiskLive`). Aborting `signal`: as `moveDiskLive`.
   * Hyper-V reports no downtime.
   */
  async migrateLive(
    vm: string,
    target: HypervisorDriver,
    opts: MigrateLiveOptions,
  ): Promise<{ downtimeMs?: number }> {
    if (!(target instanceof HyperVDriver))
      throw new StalledError('DriverMismatch', 'a live migration needs Hyper-V on both hosts');
    const arrived = async (): Promise<boolean> => {
      const t = await target.getDomain(vm);
      return (
        t?.state === 'running' &&
        opts.disks.every((w) => same(t.disks.find((x) => x.target === w.target)?.path, w.path))
      );
    };
    if (await arrived()) return {};
    const seen = await this.mustSeeVm(vm);
    const files = seen.drives.filter((d) => d.real !== undefined);
    const folder = opts.disks[0] ? WINDOWS_PATHS.dirname(opts.disks[0].path) : undefined;
    const fits =
      folder !== undefined &&
      files.every((d) => {
        const w = opts.disks.find((x) => x.target === d.disk.target);
        return (
          w !== undefined &&
          same(WINDOWS_PATHS.dirname(w.path), folder) &&
          same(WINDOWS_PATHS.basename(w.path), WINDOWS_PATHS.basename(d.real!))
        );
      });
    if (!fits || folder === undefined)
      throw new StalledError(
        'NotSupportedByDriver',
        `Move-VM -IncludeStorage puts every file of ${vm} in one folder under its own name; the plan puts them at ${opts.disks.map((w) => w.path).join(', ')}`,
      );
    await Promise.all([
      target.guardPath(folder, { allowRoot: true }),
      ...opts.disks.map((w) => target.guardPath(w.path)),
    ]);
    for (const w of opts.disks) await opts.claimFor?.(w.path).intend?.();
    try {
      await this.run(`migrateLive ${vm}`, scripts.moveVm(vm, opts.address, folder), parse.parseVmMoved, {
        timeoutMs: null,
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
    } catch (err) {
      if (!opts.signal?.aborted) throw err;
      await this.waitForMigrationJob(vm).catch(() => false);
      if (!(await arrived()))
        throw new VmplaceError('Cancelled', `the live migration of ${vm} was cancelled`, { cause: err });
    }
    if (!(await arrived()))
      throw new VmplaceError(
        'TargetUnconfirmed',
        `${vm} does not run on ${target.hostName} from the planned files after Move-VM`,
      );
    for (const w of opts.disks) {
      const claim = opts.claimFor?.(w.path);
      if (claim) await target.recordClaim(w.path, { claim });
    }
    return {};
  }

  /** Hyper-V has no migration of a paused VM onto copied disks (`capabilities.pausedMigration` is false). */
  migratePaused(vm: string, _target: HypervisorDriver, _opts: MigratePausedOptions): Promise<void> {
    return Promise.reject(
      new StalledError(
        'NotSupportedByDriver',
        `Hyper-V cannot move paused ${vm} onto copied disks (no pausedMigration)`,
      ),
    );
  }

  /** Hyper-V has no live migration onto differencing disks already there (`capabilities.liveOntoLayers` is false). */
  migrateOntoLayers(
    vm: string,
    _target: HypervisorDriver,
    _opts: MigrateOntoLayersOptions,
  ): Promise<{ downtimeMs?: number }> {
    return Promise.reject(
      new StalledError(
        'NotSupportedByDriver',
        `Hyper-V cannot live-migrate ${vm} onto layers (no liveOntoLayers)`,
      ),
    );
  }

  // ---------------------------------------------------------------- files

  /**
   * Lexically (windows-paths.ts): a Windows path in normal form strictly inside a declared storage
   * location (`allowRoot`: or the location itself), compared without regard to case. On the host
   * (pathAttributes, one round trip, trusted for 10 s): no existing part of the path below that
   * location is a reparse point (symbolic link, junction, mount point); the location itself and
   * what is above it are the administrator's (a CSV is a mount point). Else `PathOutsideStorage`.
   */
  async guardPath(path: string, opts: { allowRoot?: boolean } = {}): Promise<void> {
    const root = this.rootOf(path, opts);
    const key = `${opts.allowRoot ? 'root:' : ''}${WINDOWS_RULES.key(path)}`;
    const at = this.guarded.get(key);
    if (at !== undefined && Date.now() - at < GUARD_TTL_MS) return;
    const parts = componentsBelow(path, root);
    if (parts.length) {
      const seen = await this.run('guardPath', scripts.pathAttributes(parts), parse.parsePathAttributes);
      const link = seen.find((s) => s.exists && s.reparsePoint);
      if (link)
        throw new StalledError(
          'PathOutsideStorage',
          `${path} on ${this.hostName} goes through ${link.path}, a reparse point (symbolic link, junction or mount point) inside storage ${root}`,
        );
    }
    if (this.guarded.size > 1000) this.guarded.clear();
    this.guarded.set(key, Date.now());
  }

  /** The declared storage location `path` lies inside, lexically; `PathOutsideStorage` when none. */
  private rootOf(path: string, opts: { allowRoot?: boolean }): string {
    const why = checkWindowsPath(path);
    const root =
      why === undefined
        ? this.roots.find((r) => isInsideWindows(path, r) || (opts.allowRoot === true && same(path, r)))
        : undefined;
    if (root === undefined)
      throw new StalledError(
        'PathOutsideStorage',
        `${JSON.stringify(path)} is not inside a declared storage location of ${this.hostName}${why ? ` (it ${why})` : ''}`,
      );
    return root;
  }

  /** `Get-FileHash -Algorithm SHA256` (fileHash), lower-case hex. */
  async checksum(path: string): Promise<string> {
    return this.run('checksum', scripts.fileHash(path), parse.parseFileHash, { timeoutMs: null });
  }

  /** `Remove-Item -LiteralPath -Force` of the file (a missing one is fine), and of a saved state's sidecars with it. */
  async removeFile(path: string): Promise<void> {
    const all = [path, ...stateSidecars(path)];
    await Promise.all(all.map((p) => this.guardPath(p)));
    for (const p of all) await this.run('removeFile', scripts.removeFile(p), parse.parseRemoved);
  }

  /** `[IO.Directory]::CreateDirectory` (newDirectory); a storage location itself is allowed. */
  async makeDir(path: string): Promise<void> {
    await this.guardPath(path, { allowRoot: true });
    await this.run('makeDir', scripts.newDirectory(path), parse.parseNewDirectory);
  }

  /** `[IO.Directory]::Delete(path, $false)` when empty (removeDirIfEmpty). */
  async removeDirIfEmpty(path: string): Promise<void> {
    await this.guardPath(path);
    await this.run('removeDirIfEmpty', scripts.removeDirIfEmpty(path), parse.parseRemoveDir);
  }

  // ---------------------------------------------------------------- ownership and use

  /** `<volume GUID>:<file id>` (fileInfo: Get-Volume and `fsutil file queryfileid`); undefined when nothing is there. */
  async fileIdentity(path: string): Promise<string | undefined> {
    await this.guardPath(path);
    const i = await this.fileInfo(path);
    return i.exists ? i.identity : undefined;
  }

  /** `[IO.File]::Open(CreateNew)` (createNewFile): never a name that exists (`FileExists`); its identity. */
  async createExclusive(path: string): Promise<string> {
    await this.guardPath(path);
    const i = await this.run('createExclusive', scripts.createNewFile(path), parse.parseFileInfo);
    if (!i.exists) throw new VmplaceError('UnexpectedOutput', `${path} is not there after it was created`);
    return i.identity;
  }

  /** Identity compared and file removed in one script (removeIfIdentity). */
  async removeIfIdentity(path: string, identity: string): Promise<'removed' | 'absent' | 'other'> {
    await this.guardPath(path);
    return this.run('removeIfIdentity', scripts.removeIfIdentity(path, identity), parse.parseRemoveOwn);
  }

  /**
   * Every VM's files (vmFiles): its drives' files and its checkpoints' drives' files, each with the
   * parents Get-VHD reads down the chain; and for every `.avhdx` among them, the asked names that
   * are the same file (layerLinks: vmplace's hard links), so a layer is in use under both names.
   */
  async filesInUse(): Promise<Map<string, Set<string>>> {
    const vms = await this.run('filesInUse', scripts.vmFiles(), parse.parseVmFiles);
    const used = new Map<string, Set<string>>();
    const add = (p: string, vm: string): void => {
      const s = used.get(p) ?? new Set<string>();
      s.add(vm);
      used.set(p, s);
    };
    for (const v of vms) for (const p of v.paths) add(p, v.name);
    const layers = [...used.keys()].filter((p) => p.toLowerCase().endsWith(LAYER_EXTENSION));
    if (layers.length) {
      for (const l of await this.layerLinks(layers)) {
        const users = used.get(l.path) ?? new Set<string>();
        for (const x of l.links)
          if (x.fileId === l.fileId && !same(x.path, l.path)) for (const u of users) add(x.path, u);
      }
    }
    return used;
  }

  async close(): Promise<void> {
    await this.ssh?.close();
  }
}

/** The vendor of the host's first processor (`GenuineIntel`, `AuthenticAMD`). */
function cpuInfoVendor(host: HvHostInfo): string | undefined {
  return host.processors[0]?.manufacturer;
}

/**
 * The paths from the first segment below `root` down to `path` (`D:\VMs`, `D:\VMs\web\x.vhdx`
 * -> `D:\VMs\web`, `D:\VMs\web\x.vhdx`); empty for the root itself. Both checked already.
 */
export function componentsBelow(path: string, root: string): string[] {
  if (same(path, root)) return [];
  const rest = path.slice(root.length + (root.endsWith('\\') ? 0 : 1)).split('\\');
  const base = path.slice(0, path.length - rest.join('\\').length);
  const out: string[] = [];
  let cur = base.endsWith('\\') ? base.slice(0, -1) : base;
  for (const seg of rest) {
    cur = `${cur}\\${seg}`;
    out.push(cur);
  }
  return out;
}
