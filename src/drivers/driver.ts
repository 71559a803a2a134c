/**
 * The contract between the migration machine and a hypervisor, in the migration's words:
 * VMs, disks, layers (differencing disks), saved states, definitions. Nothing here is
 * libvirt's: a definition and a saved state are opaque values the driver produces and
 * consumes, the names of the files a migration creates are the driver's (`ownFile`), path
 * semantics are the driver's (`paths`), and the optional fast paths are declared as
 * `capabilities`. Copies are not a driver's business: they go through a transport chosen per
 * host pair (transfer/transport.ts). The safety invariants (point of no return, never on two
 * hosts, write-ahead intents, rollback only of our own layers, verified copies) live in the
 * machine, once, for every driver.
 *
 * Every method looks at or changes the real world; every method that changes it is
 * idempotent where the doc says so, because a restored migration re-runs the step that was in
 * flight. Paths are absolute paths on the host the driver talks to. Callers (the machine) only
 * pass paths that lie inside a declared storage location; drivers check it again before any
 * write or delete (`guardPath`). A path the caller gave comes back spelled as the caller gave it
 * (the machine compares the names it made as strings); paths it did not make (other VMs' files)
 * are compared by the host's rules (`paths.style`: Windows names case-insensitively).
 */

import { posix } from 'node:path';

export type { ProgressFn } from '../exec/types';
import type { CopyClaim } from '../transfer/copy-local';

export type DomainState = 'running' | 'paused' | 'shutoff' | 'crashed' | 'pmsuspended' | 'other';

export interface DomainDisk {
  /** target device: vda, sdb, ... */
  target: string;
  /** libvirt disk type: file | block | network | volume | dir | nvme ... */
  type: string;
  /** libvirt disk device: disk | cdrom | floppy | lun */
  device: string;
  /** source file path for type=file, undefined otherwise */
  path?: string;
  /** source device path for type=block (a passthrough LUN or a host block device) */
  sourceDev?: string;
  /** driver format: qcow2 | raw | ... */
  format?: string;
  readonly: boolean;
  /** true when the domain XML already shows a <backingStore> with a source */
  hasBackingStore: boolean;
  /** `<shareable/>`: several domains may use the disk at once */
  shareable?: boolean;
}

export interface DomainInfo {
  name: string;
  uuid: string;
  state: DomainState;
  persistent: boolean;
  memoryBytes: number;
  vcpus: number;
  /** `<domain type=>`: kvm | qemu | ... */
  domainType?: string;
  disks: DomainDisk[];
  /** the host starts the domain when it boots */
  autostart?: boolean;
  /** the firmware variables file (`<os><nvram>`): UEFI state kept on the host, not on a disk */
  nvram?: string;
  /** `<os firmware='efi'>` or a pflash loader: firmware that keeps variables in NVRAM */
  uefi?: boolean;
  /** TPM devices by backend (`emulator`: swtpm keeps the TPM's state on the host) */
  tpms?: { model?: string; backend: string }[];
  /** the live definition (or the inactive one, when shut off), opaque */
  definition: VmDefinition;
}

/**
 * A VM's definition as the driver keeps it (libvirt: domain XML; Hyper-V: a VM's exported
 * configuration), opaque to the machine and JSON-safe. `driver` is the family that made it:
 * a definition goes only to a driver of the same family.
 */
export interface VmDefinition {
  readonly driver: string;
  readonly data: string;
}

/** The fast paths a driver offers; the machine falls back to the seed's steps without them. */
export interface DriverCapabilities {
  /**
   * The family of hypervisors this driver speaks to (`libvirt`, `hyperv`, `fake`). A VM moves
   * only between hosts of one family: a mixed pair is Blocked in Preflight.
   */
  family: string;
  /** move a running VM's disk to another path of the same host with no pause (libvirt: blockcopy) */
  liveStorageMove: boolean;
  /** move a running VM with its storage to another host with no pause (libvirt: migrate --copy-storage-all) */
  liveMigration: boolean;
  /** a saved state written on storage two hosts share can be restored by the other host */
  stateOnSharedStorage: boolean;
  /**
   * move a paused VM's memory and device state to another host of the family onto disk images
   * that are already there, without a state file (libvirt: `virsh migrate --unsafe` without
   * storage: QEMU's migration stream, host to host); see `migratePaused`
   */
  pausedMigration: boolean;
  /**
   * live-migrate a running VM to another host of the family onto layer chains already there,
   * mirroring only each disk's top layer (libvirt: `migrate --live --copy-storage-inc`); see
   * `migrateOntoLayers`
   */
  liveOntoLayers: boolean;
  /**
   * Quick Storage Migration: restore a saved state onto the copied disks on another host
   * (libvirt: `virsh restore --xml` naming the new paths; Hyper-V: the saved VM's configuration
   * copied with its state and registered there, Import-VM). Within one host see
   * `quickWithinHost`. A driver is never asked for a `quick` it lacks: Preflight refuses it
   * (`StrategyUnsupported`) before anything changes, and `auto` runs live where it can.
   */
  quickStorageMigration: boolean;
  /**
   * Quick Storage Migration within one host (local disk to shared storage, volume to volume):
   * restore a saved VM onto copies on the host where it is registered (libvirt: the same
   * `virsh restore --xml`). Hyper-V restores a saved VM only on the disks it was saved on, and
   * registering the copied configuration beside the original needs a new VM id: not offered
   * there (`live`, Move-VMStorage, moves storage within a Hyper-V host). Meaningful only with
   * `quickStorageMigration`.
   */
  quickWithinHost: boolean;
  /**
   * Define a shut-off VM on another host from its definition (a cold move across hosts;
   * libvirt: `virsh define`). Without it a shut-off VM moves only within one host.
   */
  defineOnOtherHost: boolean;
}

/** Path semantics of the hosts a driver talks to (POSIX for libvirt, Windows for Hyper-V). */
export interface PathSemantics {
  style: 'posix' | 'windows';
  join(...parts: string[]): string;
  dirname(p: string): string;
  basename(p: string): string;
  /** does `p` lie inside the directory `root` (lexically; both absolute and normalised)? */
  isInside(p: string, root: string): boolean;
}

/** What a file a migration creates is for (see `ownFile`). */
export type OwnFileKind =
  { what: 'layer'; disk: string; round: number } | { what: 'state' } | { what: 'probe' };

export interface ImageInfo {
  path: string;
  format: string;
  virtualBytes: number;
  /** bytes actually allocated on the filesystem */
  allocatedBytes: number;
  /** file size in bytes (apparent size) */
  fileBytes: number;
  /** backing file path as recorded in the image, if any */
  backingFile?: string;
  /** backing format as recorded in the image, if any */
  backingFormat?: string;
  /** number of images in the chain including this one */
  chainLength: number;
}

export interface FsInfo {
  capacityBytes: number;
  freeBytes: number;
}

export interface CpuInfo {
  vendor?: string;
  model?: string;
}

export interface HypervisorDriver {
  readonly hostName: string;
  readonly capabilities: DriverCapabilities;
  readonly paths: PathSemantics;

  /**
   * The name of a file migration `migration` of `vm` creates in `dir`: a layer (differencing
   * disk) of a disk and round, the saved memory state, a probe. Deterministic (a rerun finds
   * the same file) and recognisable as vmplace's (a leftover names its migration).
   */
  ownFile(dir: string, vm: string, migration: string, kind: OwnFileKind): string;

  // ---- definitions (pure: no round trip)
  /** disk target → source path of a definition (file disks only) */
  diskPathsOf(def: VmDefinition): Record<string, string | undefined>;
  /**
   * The definition with these disks' sources replaced (by target), each opened as `format`
   * (undefined: a layer this driver creates); stale layer records dropped. The format always
   * goes with the path: a base named where a layer was is never opened as the layer's format.
   */
  withDiskPaths(def: VmDefinition, disks: Record<string, { path: string; format?: string }>): VmDefinition;

  // ---- observation
  listDomains(): Promise<string[]>;
  /** undefined when no VM of that name is defined */
  getDomain(name: string): Promise<DomainInfo | undefined>;
  /** Only the state (one cheap call, for polling); undefined when no such VM is defined. */
  domainState(name: string): Promise<DomainState | undefined>;
  /**
   * The image opened as `opts.format` (the format the VM declares), or, without a format, as a
   * layer this driver creates; never as a format guessed from its contents. Its parent is
   * named, not opened.
   */
  imageInfo(path: string, opts?: { format?: string; forceShare?: boolean }): Promise<ImageInfo>;
  /**
   * The format the first bytes of a file announce (a magic number), read as plain bytes;
   * undefined when none (a raw disk, usually). A raw disk's first bytes belong to its guest:
   * this is a hint for a pre-flight finding, never how an image is opened.
   */
  probeFormat(path: string): Promise<string | undefined>;
  fsInfo(path: string): Promise<FsInfo>;
  /**
   * The places on this host where the hypervisor keeps VM disks as files, as the hypervisor
   * names them (libvirt: the target paths of its storage pools that hold files; Hyper-V: its
   * virtual hard disk folders). For adopting a running host (`vmplace import`); a place may not
   * exist yet, and none is a declared storage location until a manifest says so.
   */
  storageLocations(): Promise<{ name: string; path: string }[]>;
  hostCpu(): Promise<CpuInfo>;
  fileExists(path: string): Promise<boolean>;
  /** apparent size in bytes; undefined when missing */
  fileSize(path: string): Promise<number | undefined>;
  /** can this host run the VM of this definition (its CPU model, its machine type)? */
  canRun(def: VmDefinition): Promise<{ compatible: boolean; message: string }>;

  // ---- layers (differencing disks)
  /**
   * Freeze the given disks of a running or shut-off VM at once: each disk's current image
   * becomes read-only and a new empty layer `layer` on top of it takes the writes. Returns the
   * layers it created, each with the image below it. Idempotent: disks already on their layer
   * are returned as they are.
   *
   * A driver may layer more disks than it was asked to (Hyper-V: a checkpoint covers every disk
   * of the VM); it returns every layer it made, the asked ones first, the others under names of
   * its own, and the caller merges those back (`mergeLayers` with `top`). Asked again with the
   * asked disks on their layers, it returns the same layers, those of other disks only while
   * their disk still runs on them.
   */
  freezeDisks(
    vm: string,
    layers: { target: string; layer: string }[],
  ): Promise<{ target: string; layer: string; below: string }[]>;
  /**
   * Merge a running VM's top layer(s) of `target` into the image at the bottom and run from it.
   * Pass `opts.top` (the layer this migration created): a re-run then does nothing once the
   * active layer is no longer that one, so a disk that legitimately sits on a base image is
   * never merged into it. Resolves only once the disk runs from the bottom image: a hypervisor
   * that merges in the background (Hyper-V) is waited for, and a re-run finds a merge an
   * interrupted run started still running (waited for) or done.
   */
  mergeLayers(vm: string, target: string, opts?: { top?: string }): Promise<void>;
  /**
   * Merge a layer of a VM that does not run into the image below it; resolves once merged (a
   * background merge waited for). A layer already merged away (Hyper-V deletes it) is fine.
   */
  mergeLayerOffline(layer: string): Promise<void>;
  /**
   * Point `layer` at `parent` without copying data (the layer's blocks are unchanged; its
   * parent moved). `parentFormat`: the parent's format when it is the VM's own disk image;
   * undefined when the parent is itself one of this driver's layers.
   */
  relinkLayer(layer: string, parent: string, parentFormat?: string): Promise<void>;
  /**
   * Create an empty layer `path` (one of the driver's own, named by `ownFile`) over `parent`
   * (without a format: one of the driver's layers). Replaces a file of that name (ours by it).
   */
  createLayer(path: string, parent: string, parentFormat?: string): Promise<void>;
  /** check an image's consistency, opened as `format`; resolves with the problems found (empty when clean) */
  checkImage(path: string, format: string): Promise<string[]>;

  // ---- lifecycle
  /**
   * Save a running VM's memory into `stateFile` and stop it (idempotent: a VM already saved
   * there is fine). `knownActive`: the caller has just seen the VM active, so the driver need
   * not ask again (one round trip less inside the VM's pause). A hypervisor that writes a saved
   * state as several files (Hyper-V: `.vmrs`, `.vmgs`) has the others named after `stateFile`
   * and beside it; they are the driver's and go with `stateFile`: `removeFile(stateFile)`
   * removes them, `holdsSavedState` wants them all, and a transport between such hosts copies
   * them with it.
   */
  save(vm: string, stateFile: string, opts?: { knownActive?: boolean }): Promise<void>;
  /**
   * Wait while the hypervisor still runs a save of `vm` that an interrupted run asked for
   * (libvirt finishes a save whose client died); true when there was one.
   */
  waitForSaveJob(vm: string): Promise<boolean>;
  /** true when `stateFile` holds a complete saved state of `vm` (an unfinished save is not one) */
  holdsSavedState(stateFile: string, vm: string): Promise<boolean>;
  /** the definition stored in a saved state */
  savedDefinition(stateFile: string): Promise<VmDefinition>;
  /**
   * Restore a saved VM, with `def` when given (idempotent: an active VM of that name is fine).
   * `knownInactive`: the caller has just seen that the VM is not active on this host.
   */
  restore(stateFile: string, def?: VmDefinition, opts?: { knownInactive?: boolean }): Promise<void>;
  /** the live definition, or the persistent one with `inactive` */
  definition(vm: string, opts?: { inactive?: boolean }): Promise<VmDefinition>;
  /** make `def` the VM's persistent definition on this host */
  define(def: VmDefinition): Promise<void>;
  /** remove the persistent definition (state kept beside it, such as NVRAM, stays) */
  undefine(vm: string): Promise<void>;
  start(vm: string): Promise<void>;
  /** resume a paused VM; a running one is left alone */
  resume(vm: string, opts?: { knownPaused?: boolean }): Promise<void>;
  /**
   * Pause a running VM: its CPUs stop and every disk write it made is flushed to its image
   * before this resolves (a paused VM is left alone).
   */
  pause(vm: string, opts?: { knownRunning?: boolean }): Promise<void>;
  /**
   * Wait while the hypervisor still runs an outgoing migration of `vm` that an interrupted run
   * asked for (libvirt keeps or cleans up a migration whose client died); true when there was one.
   */
  waitForMigrationJob(vm: string): Promise<boolean>;
  /**
   * How long the active VM's CPUs have run, as an opaque counter: two equal answers mean the
   * guest did not run in between (libvirt: the sum of `vcpu.N.time`). Undefined when the VM is
   * not active or the hypervisor does not say.
   */
  guestRunTime(vm: string): Promise<string | undefined>;
  destroy(vm: string): Promise<void>;
  /** enable or disable starting the VM when the host boots */
  setAutostart(vm: string, on: boolean): Promise<void>;
  /** abort every storage job and a migration job of the VM (after a cancel or a crash) */
  abortJobs(vm: string): Promise<void>;

  // ---- fast paths (only where `capabilities` says so)
  /**
   * (capabilities.liveStorageMove) Mirror `target` to `destPath` and switch to it, no pause.
   * With `claim`, `destPath` is created exclusively first (its identity recorded) and the copy
   * reuses it. Aborting `signal` aborts the job; the method then resolves only when the disk
   * had already switched, else rejects with reason `Cancelled`.
   */
  moveDiskLive(
    vm: string,
    target: string,
    destPath: string,
    format: string,
    opts?: MoveDiskLiveOptions,
  ): Promise<void>;
  /**
   * (capabilities.liveMigration) Move a running VM with its storage to `target` (a driver of
   * the same family): the target's disk images are created empty first, memory and disks
   * stream host to host. Resolves with the downtime the hypervisor reports. Idempotent: a VM
   * already running on the target is success.
   */
  migrateLive(
    vm: string,
    target: HypervisorDriver,
    opts: MigrateLiveOptions,
  ): Promise<{ downtimeMs?: number }>;

  /**
   * (capabilities.pausedMigration) Move a paused VM to `target` (a driver of the same family)
   * onto disk images already there: each moved disk of `opts.disks` is opened from its new
   * path and format (the layer chain below it as the images record it); the memory and device
   * state go host to host. The VM arrives paused or running (the caller resumes it); the source
   * keeps its persistent definition, inactive, and the target's is transient until defined.
   * Not idempotent by itself: the caller looks at both hosts first.
   */
  migratePaused(vm: string, target: HypervisorDriver, opts: MigratePausedOptions): Promise<void>;

  /**
   * (capabilities.liveOntoLayers) Live-migrate a running VM to `target` (a driver of the same
   * family) onto layer chains already there: each disk of `opts.disks` runs on the target from
   * its `path`, an empty layer over the copied layers below, into which the hypervisor mirrors
   * the source's top layer while the VM runs; memory follows, and the VM stops only for the
   * switch-over. Resolves with the downtime the hypervisor reports. The source keeps its
   * persistent definition, inactive; the target's is transient until defined. Not idempotent
   * by itself: the caller looks at both hosts first.
   */
  migrateOntoLayers(
    vm: string,
    target: HypervisorDriver,
    opts: MigrateOntoLayersOptions,
  ): Promise<{ downtimeMs?: number }>;

  // ---- files (inside declared storage only)
  /** throws StalledError PathOutsideStorage unless `path` lies inside this host's declared storage */
  guardPath(path: string): Promise<void>;
  /** sha256 of a file's contents, hex */
  checksum(path: string): Promise<string>;
  removeFile(path: string): Promise<void>;
  makeDir(path: string): Promise<void>;
  /** remove a directory when it is empty; a directory with anything in it stays */
  removeDirIfEmpty(path: string): Promise<void>;

  // ---- ownership and use (what may be deleted)
  /** `dev:ino` (or the platform's file id) of the path itself (a link is not followed); undefined when nothing is there */
  fileIdentity(path: string): Promise<string | undefined>;
  /** create an empty file under a name nothing had (never replaces); returns its identity */
  createExclusive(path: string): Promise<string>;
  /** remove `path` only if its identity is `identity` */
  removeIfIdentity(path: string, identity: string): Promise<'removed' | 'absent' | 'other'>;
  /**
   * Every file any VM defined on this host refers to, with the names of those VMs: disk
   * sources, the layer chains (read from the images of shut-off VMs too: the base of a linked
   * clone), storage-job mirror targets. What is listed here is never deleted.
   */
  filesInUse(): Promise<Map<string, Set<string>>>;

  close(): Promise<void>;
}

/** Options of `moveDiskLive`. */
export interface MoveDiskLiveOptions {
  signal?: AbortSignal;
  claim?: CopyClaim;
  virtualBytes?: number;
  bandwidthMiBps?: number;
}

/** Options of `migrateLive`. */
export interface MigrateLiveOptions {
  disks: { target: string; path: string; format: string; virtualBytes: number }[];
  /** the target's address for the migration stream (its transfer address) */
  address: string;
  bandwidthMiBps?: number;
  /** the longest stop the hypervisor may plan for the switch-over */
  maxDowntimeMs?: number;
  /** proof of ownership of each target image, created exclusively before the migration */
  claimFor?: (path: string) => CopyClaim;
  /** aborting aborts the migration job; resolves only if the VM already runs on the target */
  signal?: AbortSignal;
}

/** Options of `migratePaused`. */
export interface MigratePausedOptions {
  /** the moved disks: their path on the target (without a format: one of the driver's layers) */
  disks: { target: string; path: string; format?: string }[];
  /** the target's address for the migration stream (its transfer address) */
  address: string;
  /** aborting aborts the migration job; resolves only if the VM already arrived on the target */
  signal?: AbortSignal;
}

/** Options of `migrateOntoLayers`. */
export interface MigrateOntoLayersOptions extends MigratePausedOptions {
  /** the longest stop the hypervisor may plan for the switch-over */
  maxDowntimeMs?: number;
  bandwidthMiBps?: number;
  /**
   * A guest that dirties memory faster than it crosses never converges: after this long the
   * hypervisor pauses the VM and finishes the migration paused (the pause is then what is left
   * to send, not a guess). Unset: no bound.
   */
  suspendAfterMs?: number;
}

/** POSIX path semantics (libvirt hosts, the fake). */
export const POSIX_PATHS: PathSemantics = {
  style: 'posix',
  join: (...parts) => posix.join(...parts),
  dirname: (p) => posix.dirname(p),
  basename: (p) => posix.basename(p),
  isInside: (p, root) => p.startsWith(root.endsWith('/') ? root : `${root}/`),
};

/** vmplace's names for its own files: `<vm>.<what>.vmplace-<migration id>` (see ownFile). */
export function ownFileBaseName(vm: string, migration: string, kind: OwnFileKind): string {
  const what = kind.what === 'layer' ? `${kind.disk}.overlay${kind.round <= 1 ? '' : kind.round}` : kind.what;
  return `${vm}.${what}.vmplace-${migration}`;
}
