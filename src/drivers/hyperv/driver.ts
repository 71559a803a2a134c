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
 * - **Quick Storage Migration across hosts carries the configuration.** `save` also copies the
 *   VM's `.vmcx` (`x.vmcx`) and its checkpoints' files (`x.checkpoint-<id>.*`) beside the state;
 *   the transports copy them with it. `restore` on a host where the VM is not registered lays
 *   them out under `x.import` as Hyper-V keeps a configuration (hard links), runs Compare-VM,
 *   points the drives at the copies and registers the VM in place (Import-VM, id kept); then
 *   Start-VM. Within one host it is not offered (`quickWithinHost: false`): Preflight refuses
 *   `quick` there, and a cold move to another host (`defineOnOtherHost: false`), with
 *   `StrategyUnsupported` before anything changes; `auto` runs live. The refusals below are a
 *   second line behind it.
 * - **What the driver refuses** (StalledError `NotSupportedByDriver`, each saying why): a restore
 *   onto other disks of a VM registered here (Hyper-V does not change a saved VM's disks), a
 *   restore on another host without the definition or the configuration copy beside the state
 *   (`SavedStateMismatch`), an import Compare-VM finds incompatible (`ImportIncompatible`),
 *   merging a differencing disk that no checkpoint of vmplace holds
 *   while the VM runs (Hyper-V merges those only offline), registering a VM on a host that has
 *   no configuration of it, a live migration whose disks do not all go to one folder under their
 *   own names, and the fast paths the capabilities say it lacks.
 *
 * This class only wires: the work is in `context.ts` (scripts run, errors routed, the path guard),
 * `seen.ts` (what the driver sees of a VM), `observe.ts`, `layers.ts` (checkpoints), `lifecycle.ts`,
 * `carry.ts` (a saved VM's configuration carried to and registered on another host),
 * `migrate.ts` (storage moves, live migration) and `files.ts`; each method's documentation is on
 * the function it calls.
 */
import type { Logger } from 'pino';

import { StalledError } from '../../errors';
import { SshExec } from '../../exec/exec';
import type { HostSpec } from '../../types';
import type {
  CpuInfo,
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
import { checkWindowsPath, WINDOWS_PATHS } from '../windows-paths';
import { HyperVContext } from './context';
import { diskPathsOfDefinition, HYPERV_CAPABILITIES, withDefinitionDiskPaths } from './definition';
import * as carry from './carry';
import * as files from './files';
import * as checkpoints from './layers';
import * as lifecycle from './lifecycle';
import * as migrate from './migrate';
import { ownFilePath, type StateSidecar } from './names';
import * as observe from './observe';
import type { HvFileInfo } from './parsers';
import type { RawCommandRunner } from './runner';

export { HYPERV_CAPABILITIES, hypervDefinition } from './definition';
export { componentsBelow } from './context';
export { domainStateOf, formatOf } from './seen';

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

export class HyperVDriver implements HypervisorDriver {
  readonly hostName: string;
  readonly capabilities: DriverCapabilities = HYPERV_CAPABILITIES;
  readonly paths: PathSemantics = WINDOWS_PATHS;
  /** runs the command lines (an `SshExec` unless one was given) */
  readonly raw: RawCommandRunner;
  /** the declared storage locations, as given */
  readonly roots: readonly string[];
  private readonly ssh: SshExec | undefined;
  private readonly ctx: HyperVContext;

  constructor(hostName: string, spec: HostSpec, opts: HyperVDriverOptions) {
    if (spec.driver !== 'hyperv')
      throw new TypeError(`host ${hostName}: driver ${spec.driver} is not hyperv`);
    for (const r of opts.allowedRoots) {
      const why = checkWindowsPath(r);
      if (why !== undefined) throw new TypeError(`host ${hostName}: storage ${JSON.stringify(r)} ${why}`);
    }
    this.hostName = hostName;
    this.roots = [...opts.allowedRoots];
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
    this.ctx = new HyperVContext(hostName, this.raw, this.roots, opts);
  }

  // ---------------------------------------------------------------- running scripts (context.ts)

  /** One script of scripts.ts, its answer read with `read`; see `HyperVContext.run`. */
  run<T>(
    operation: string,
    script: string,
    read: (result: unknown[]) => T,
    opts: { timeoutMs?: number | null; signal?: AbortSignal } = {},
  ): Promise<T> {
    return this.ctx.run(operation, script, read, opts);
  }

  routeError(err: unknown, operation: string): unknown {
    return this.ctx.routeError(err, operation);
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

  // ---------------------------------------------------------------- observation (observe.ts)

  listDomains(): Promise<string[]> {
    return observe.listDomains(this.ctx);
  }

  getDomain(name: string): Promise<DomainInfo | undefined> {
    return observe.getDomain(this.ctx, name);
  }

  domainState(name: string): Promise<DomainState | undefined> {
    return observe.domainState(this.ctx, name);
  }

  imageInfo(path: string, opts: { format?: string; forceShare?: boolean } = {}): Promise<ImageInfo> {
    return observe.imageInfo(this.ctx, path, opts);
  }

  probeFormat(path: string): Promise<string | undefined> {
    return observe.probeFormat(this.ctx, path);
  }

  fsInfo(path: string): Promise<FsInfo> {
    return observe.fsInfo(this.ctx, path);
  }

  storageLocations(): Promise<{ name: string; path: string }[]> {
    return observe.storageLocations(this.ctx);
  }

  hostCpu(): Promise<CpuInfo> {
    return observe.hostCpu(this.ctx);
  }

  fileExists(path: string): Promise<boolean> {
    return observe.fileExists(this.ctx, path);
  }

  fileSize(path: string): Promise<number | undefined> {
    return observe.fileSize(this.ctx, path);
  }

  /** What is at `path` (fileInfo): existence, size, identity. Reads only. */
  fileInfo(path: string): Promise<HvFileInfo> {
    return this.ctx.fileInfo(path);
  }

  /** The files that go with the saved state `stateFile` here now (one listing; see `stateSidecarsIn`). */
  stateSidecarFiles(stateFile: string): Promise<StateSidecar[]> {
    return carry.stateSidecarFiles(this.ctx, stateFile);
  }

  canRun(def: VmDefinition): Promise<{ compatible: boolean; message: string }> {
    return observe.canRun(this.ctx, def);
  }

  filesInUse(): Promise<Map<string, Set<string>>> {
    return observe.filesInUse(this.ctx);
  }

  // ---------------------------------------------------------------- layers: checkpoints (layers.ts)

  freezeDisks(
    vm: string,
    layers: { target: string; layer: string }[],
  ): Promise<{ target: string; layer: string; below: string }[]> {
    return checkpoints.freezeDisks(this.ctx, vm, layers);
  }

  mergeLayers(vm: string, target: string, opts: { top?: string } = {}): Promise<void> {
    return checkpoints.mergeLayers(this.ctx, vm, target, opts);
  }

  mergeLayerOffline(layer: string): Promise<void> {
    return checkpoints.mergeLayerOffline(this.ctx, layer);
  }

  relinkLayer(layer: string, parent: string, _parentFormat?: string): Promise<void> {
    return checkpoints.relinkLayer(this.ctx, layer, parent);
  }

  createLayer(path: string, parent: string, _parentFormat?: string): Promise<void> {
    return checkpoints.createLayer(this.ctx, path, parent);
  }

  checkImage(path: string, _format: string): Promise<string[]> {
    return checkpoints.checkImage(this.ctx, path);
  }

  // ---------------------------------------------------------------- lifecycle (lifecycle.ts)

  save(vm: string, stateFile: string, _opts: { knownActive?: boolean } = {}): Promise<void> {
    return lifecycle.save(this.ctx, vm, stateFile);
  }

  waitForSaveJob(vm: string): Promise<boolean> {
    return lifecycle.waitForSaveJob(this.ctx, vm);
  }

  holdsSavedState(stateFile: string, vm: string): Promise<boolean> {
    return lifecycle.holdsSavedState(this.ctx, stateFile, vm);
  }

  savedDefinition(stateFile: string): Promise<VmDefinition> {
    return lifecycle.savedDefinition(this.ctx, stateFile);
  }

  restore(stateFile: string, def?: VmDefinition, _opts: { knownInactive?: boolean } = {}): Promise<void> {
    return lifecycle.restore(this.ctx, stateFile, def);
  }

  definition(vm: string, _opts: { inactive?: boolean } = {}): Promise<VmDefinition> {
    return lifecycle.definition(this.ctx, vm);
  }

  define(def: VmDefinition): Promise<void> {
    return lifecycle.define(this.ctx, def);
  }

  undefine(vm: string): Promise<void> {
    return lifecycle.undefine(this.ctx, vm);
  }

  start(vm: string): Promise<void> {
    return lifecycle.start(this.ctx, vm);
  }

  resume(vm: string, _opts: { knownPaused?: boolean } = {}): Promise<void> {
    return lifecycle.resume(this.ctx, vm);
  }

  pause(vm: string, _opts: { knownRunning?: boolean } = {}): Promise<void> {
    return lifecycle.pause(this.ctx, vm);
  }

  waitForMigrationJob(vm: string): Promise<boolean> {
    return lifecycle.waitForMigrationJob(this.ctx, vm);
  }

  guestRunTime(vm: string): Promise<string | undefined> {
    return lifecycle.guestRunTime(this.ctx, vm);
  }

  destroy(vm: string): Promise<void> {
    return lifecycle.destroy(this.ctx, vm);
  }

  setAutostart(vm: string, on: boolean): Promise<void> {
    return lifecycle.setAutostart(this.ctx, vm, on);
  }

  abortJobs(vm: string): Promise<void> {
    return lifecycle.abortJobs(this.ctx, vm);
  }

  // ---------------------------------------------------------------- fast paths (migrate.ts)

  moveDiskLive(
    vm: string,
    target: string,
    destPath: string,
    _format: string,
    opts: MoveDiskLiveOptions = {},
  ): Promise<void> {
    return migrate.moveDiskLive(this.ctx, vm, target, destPath, opts);
  }

  recordClaim(path: string, opts: { claim?: MoveDiskLiveOptions['claim'] }): Promise<void> {
    return migrate.recordClaim(this.ctx, path, opts);
  }

  /** Needs Hyper-V on both hosts (`DriverMismatch` otherwise); see `migrate.migrateLive`. */
  async migrateLive(
    vm: string,
    target: HypervisorDriver,
    opts: MigrateLiveOptions,
  ): Promise<{ downtimeMs?: number }> {
    if (!(target instanceof HyperVDriver))
      throw new StalledError('DriverMismatch', 'a live migration needs Hyper-V on both hosts');
    return migrate.migrateLive(this.ctx, vm, target.ctx, opts);
  }

  migratePaused(vm: string, _target: HypervisorDriver, _opts: MigratePausedOptions): Promise<void> {
    return migrate.migratePaused(vm);
  }

  migrateOntoLayers(
    vm: string,
    _target: HypervisorDriver,
    _opts: MigrateOntoLayersOptions,
  ): Promise<{ downtimeMs?: number }> {
    return migrate.migrateOntoLayers(vm);
  }

  // ---------------------------------------------------------------- files and ownership (files.ts)

  guardPath(path: string, opts: { allowRoot?: boolean } = {}): Promise<void> {
    return this.ctx.guardPath(path, opts);
  }

  checksum(path: string): Promise<string> {
    return files.checksum(this.ctx, path);
  }

  removeFile(path: string): Promise<void> {
    return files.removeFile(this.ctx, path);
  }

  makeDir(path: string): Promise<void> {
    return files.makeDir(this.ctx, path);
  }

  removeDirIfEmpty(path: string): Promise<void> {
    return files.removeDirIfEmpty(this.ctx, path);
  }

  fileIdentity(path: string): Promise<string | undefined> {
    return files.fileIdentity(this.ctx, path);
  }

  createExclusive(path: string): Promise<string> {
    return files.createExclusive(this.ctx, path);
  }

  removeIfIdentity(path: string, identity: string): Promise<'removed' | 'absent' | 'other'> {
    return files.removeIfIdentity(this.ctx, path, identity);
  }

  async close(): Promise<void> {
    await this.ssh?.close();
  }
}
