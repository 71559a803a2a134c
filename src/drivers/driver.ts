/**
 * The contract between the migration machine and a hypervisor. Every method looks at or
 * changes the real world; every method that changes it is idempotent where the doc says so,
 * because a restored migration re-runs the step that was in flight.
 *
 * Paths are absolute paths on the host the driver talks to. Callers (the machine) only pass
 * paths that lie inside a declared storage location; drivers check it again with
 * `assertInside` before any write or delete.
 */

import type { SshSpec } from '../types';
import type { HostExec, ProgressFn } from '../exec/types';

export type { HostExec, ProgressFn } from '../exec/types';
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
  /** raw XML of the live definition (or inactive, when shut off) */
  xml: string;
}

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
  readonly exec: HostExec;

  // ---- observation
  listDomains(): Promise<string[]>;
  /** undefined when no domain of that name is defined */
  getDomain(name: string): Promise<DomainInfo | undefined>;
  /** Only the state (one cheap call, for polling); undefined when no such domain is defined. */
  domainState(name: string): Promise<DomainState | undefined>;
  /**
   * The image opened as `opts.format` (the format the domain declares, or qcow2 for vmplace's
   * own overlays), never as a format guessed from its contents; its backing file is named, not
   * opened.
   */
  imageInfo(path: string, opts: { format: string; forceShare?: boolean }): Promise<ImageInfo>;
  /**
   * The format the first bytes of a file announce (a magic number), read as plain bytes;
   * undefined when none (a raw disk, usually). A raw disk's first bytes belong to its guest:
   * this is a hint for a pre-flight finding, never how an image is opened.
   */
  probeFormat(path: string): Promise<string | undefined>;
  fsInfo(path: string): Promise<FsInfo>;
  hostCpu(): Promise<CpuInfo>;
  fileExists(path: string): Promise<boolean>;
  /** apparent size in bytes; undefined when missing */
  fileSize(path: string): Promise<number | undefined>;

  // ---- disk chain operations
  /** atomic external disk-only snapshot of the given disks, without libvirt metadata */
  snapshotDisks(domain: string, overlays: { target: string; path: string }[]): Promise<void>;
  /**
   * merge the active overlay of `target` into its backing image and pivot (blockcommit --active --pivot --wait).
   * Pass `opts.overlay` (the overlay the snapshot created): a re-run then does nothing once the active
   * layer is no longer that overlay, so a disk that legitimately sits on a base image is never merged into it.
   */
  blockCommit(domain: string, target: string, opts?: { overlay?: string }): Promise<void>;
  /**
   * mirror `target` to `destPath` and pivot to it, no pause (blockcopy --pivot --wait
   * --transient-job). With `claim`, `destPath` is created exclusively first (its identity
   * recorded) and the copy reuses it. Aborting `signal` aborts the block job; the method then
   * resolves only when the disk had already pivoted, else rejects with reason `Cancelled`.
   */
  blockCopy(
    domain: string,
    target: string,
    destPath: string,
    format: string,
    opts?: { signal?: AbortSignal; claim?: CopyClaim; virtualBytes?: number; bandwidthMiBps?: number },
  ): Promise<void>;
  /** qemu-img rebase -u: point `overlay` at `newBacking` without copying data */
  rebaseUnsafe(overlay: string, newBacking: string, backingFormat: string): Promise<void>;
  /** qemu-img commit: merge an offline overlay into its backing file */
  commitOffline(overlay: string): Promise<void>;
  /** qemu-img check of the image opened as `format`; resolves with problems found (empty when clean) */
  checkImage(path: string, format: string): Promise<string[]>;

  // ---- lifecycle
  /**
   * Save a running domain's memory into `stateFile` and stop it (idempotent: a domain already
   * saved there is fine). `knownActive`: the caller has just seen the domain active, so the
   * driver need not ask again (one round trip less inside the VM's pause).
   */
  save(domain: string, stateFile: string, opts?: { knownActive?: boolean }): Promise<void>;
  /**
   * Wait while the hypervisor still runs a save of `domain` that an interrupted run asked for
   * (libvirt finishes a save whose client died); true when there was one.
   */
  waitForSaveJob(domain: string): Promise<boolean>;
  /** true when `stateFile` holds a complete saved state of `domain` (an unfinished save is not one) */
  holdsSavedState(stateFile: string, domain: string): Promise<boolean>;
  /** XML stored in a saved state file */
  savedStateXml(stateFile: string): Promise<string>;
  /**
   * Restore a saved domain, with `xml` when given (idempotent: an active domain of that name is
   * fine). `knownInactive`: the caller has just seen that the domain is not active on this host.
   */
  restore(stateFile: string, xml?: string, opts?: { knownInactive?: boolean }): Promise<void>;
  dumpXml(domain: string, opts?: { inactive?: boolean }): Promise<string>;
  define(xml: string): Promise<void>;
  undefine(domain: string): Promise<void>;
  start(domain: string): Promise<void>;
  /** resume a paused domain; a running one is left alone */
  resume(domain: string): Promise<void>;
  destroy(domain: string): Promise<void>;

  // ---- files (inside declared storage or the state dir only)
  copyFile(
    src: string,
    dst: string,
    onProgress?: ProgressFn,
    opts?: { bwlimitKiBps?: number; claim?: CopyClaim; signal?: AbortSignal },
  ): Promise<void>;
  /**
   * Copy `src` on this host to `dst` on `target` (another host), verified, resumable. `direct`
   * runs rsync on this host to the target's transfer address; `relay` streams through the
   * management box; `auto` relays only when this host cannot reach the target.
   */
  copyToHost(
    target: HypervisorDriver,
    src: string,
    dst: string,
    opts: {
      onProgress?: ProgressFn;
      bwlimitKiBps?: number;
      /** how this host reaches the target: address, user, port, key paths on this host */
      targetSsh: SshSpec;
      mode?: 'direct' | 'relay' | 'auto';
      /** files up to this size go through the management box's open connections (see copyBetweenHosts) */
      relayBelowBytes?: number;
      claim?: CopyClaim;
      signal?: AbortSignal;
    },
  ): Promise<{ mode: 'direct' | 'relay'; bytesSent: number }>;
  /**
   * Live migration with storage to another host (`virsh migrate --live --persistent
   * --undefinesource --copy-storage-all`): the target's disk images are created empty first,
   * the domain XML names them, memory and disks stream from QEMU to QEMU. Resolves with the
   * downtime QEMU reports. Idempotent: a domain already running on the target is success.
   */
  migrateLive(
    domain: string,
    target: HypervisorDriver,
    opts: {
      disks: { target: string; path: string; format: string; virtualBytes: number }[];
      /** the target's address for the migration stream (its transfer address) */
      address: string;
      bandwidthMiBps?: number;
      /** the longest stop QEMU may plan for the switch-over (its default: 300 ms) */
      maxDowntimeMs?: number;
      /** proof of ownership of each target image, created exclusively before the migration */
      claimFor?: (path: string) => CopyClaim;
      /** aborting aborts the migration job; resolves only if the VM already runs on the target */
      signal?: AbortSignal;
    },
  ): Promise<{ downtimeMs?: number }>;
  /** throws StalledError PathOutsideStorage unless `path` lies inside this host's declared storage or state dir */
  guardPath(path: string): Promise<void>;
  /** can this host run the domain's CPU? (`virsh hypervisor-cpu-compare`) */
  compareCpu(domainXml: string, virtType: string): Promise<{ compatible: boolean; message: string }>;
  /** sha256 of a file's contents, hex */
  checksum(path: string): Promise<string>;
  removeFile(path: string): Promise<void>;
  makeDir(path: string): Promise<void>;
  /** remove a directory when it is empty; a directory with anything in it stays */
  removeDirIfEmpty(path: string): Promise<void>;

  // ---- ownership and use (what may be deleted)
  /** `dev:ino` of the path itself (a symlink is not followed); undefined when nothing is there */
  fileIdentity(path: string): Promise<string | undefined>;
  /** create an empty file under a name nothing had (never replaces); returns its identity */
  createExclusive(path: string): Promise<string>;
  /** remove `path` only if its identity is `identity` */
  removeIfIdentity(path: string, identity: string): Promise<'removed' | 'absent' | 'other'>;
  /**
   * Every file any domain defined on this host refers to, with the names of those domains:
   * disk sources, the backing chains (read from the images of shut-off domains too: the base
   * of a linked clone), block-job mirror targets. What is listed here is never deleted.
   */
  filesInUse(): Promise<Map<string, Set<string>>>;
  /** enable or disable starting the domain when the host boots */
  setAutostart(domain: string, on: boolean): Promise<void>;
  /** abort every block job and a migration job of the domain (after a cancel or a crash) */
  abortJobs(domain: string): Promise<void>;

  close(): Promise<void>;
}
