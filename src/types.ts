/**
 * The typed model shared by every layer: desired state (from manifests), actual state (from
 * status files or drivers), and the plan. Pure data; no behaviour.
 */

export const API_VERSION = 'vmplace.dev/v1alpha1';

export type Kind = 'Host' | 'Cluster' | 'VirtualMachine';
export type Strategy = 'quick' | 'live' | 'cold' | 'auto';
export type DriverName = 'libvirt' | 'hyperv';

/** Where a manifest object came from, for FILE:LINE:COL messages. */
export interface SourceRef {
  /** path relative to the repository root, with forward slashes */
  file: string;
  line: number;
  col: number;
}

export interface ObjectMeta {
  name: string;
  labels?: Record<string, string>;
}

export interface StorageLocation {
  name: string;
  /**
   * absolute path, normalised, no `..`: POSIX on libvirt hosts (`/var/lib/vmplace/local`),
   * Windows on Hyper-V hosts (`D:\VMs`, `C:\ClusterStorage\Volume1`)
   */
  path: string;
}

export interface SshSpec {
  host: string;
  user?: string;
  port?: number;
  identityFile?: string;
  knownHostsFile?: string;
}

export interface HostSpec {
  driver: DriverName;
  uri: string;
  ssh?: SshSpec;
  cluster?: string;
  transferAddress?: string;
  storage?: StorageLocation[];
}

export interface ClusterSpec {
  /**
   * the driver of the cluster's hosts (default `libvirt`): every member host has this driver,
   * and the shared storage paths follow its path rules (Windows for `hyperv`)
   */
  driver?: DriverName;
  storage?: StorageLocation[];
}

export interface VirtualMachineSpec {
  host: string;
  storage: string;
  disks?: Record<string, { storage: string }>;
  strategy?: Strategy;
  suspend?: boolean;
  /** maximum pause, e.g. "1s"; used by later strategies */
  maxPause?: string;
}

interface ObjectBase<K extends Kind, S> {
  apiVersion: typeof API_VERSION;
  kind: K;
  metadata: ObjectMeta;
  spec: S;
  /** where this object was declared */
  source: SourceRef;
}

export type Host = ObjectBase<'Host', HostSpec>;
export type Cluster = ObjectBase<'Cluster', ClusterSpec>;
export type VirtualMachine = ObjectBase<'VirtualMachine', VirtualMachineSpec> & {
  /** where each key of `spec.disks` is declared, for findings about one override */
  diskSources?: Record<string, SourceRef>;
};
export type ManifestObject = Host | Cluster | VirtualMachine;

/** One problem found in the repository, printed as `file:line:col: Kind/name: message`. */
export interface Problem {
  file: string;
  line: number;
  col: number;
  /** `Kind/name` when known */
  object?: string;
  message: string;
}

/** The desired state: valid objects only, plus every problem found. */
export interface DesiredState {
  hosts: Map<string, Host>;
  clusters: Map<string, Cluster>;
  vms: Map<string, VirtualMachine>;
  problems: Problem[];
  /** files that had at least one problem (relative paths) */
  invalidFiles: Set<string>;
  /** what was read but not an error: files skipped that look meant to be read (hidden, `.YAML`) */
  warnings?: Problem[];
}

// ---------------------------------------------------------------- status (actual state)

export type Phase = 'Placed' | 'Pending' | 'Migrating' | 'Blocked' | 'Failed' | 'Unknown';

export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  lastTransitionTime: string;
}

export interface DiskPlacement {
  /** target device: vda, vdb, sda, ... */
  target: string;
  path: string;
  /** name of the storage location holding `path`, if any matches */
  storage?: string;
  format: string;
  virtualBytes: number;
  allocatedBytes: number;
}

export interface Placement {
  host: string;
  memoryBytes: number;
  /** the domain runs (observed); a shut-off VM moves cold, without a memory state */
  running?: boolean;
  disks: DiskPlacement[];
}

export type MigrationStep =
  | 'Pending'
  | 'Preflight'
  | 'Snapshotting'
  | 'CopyingBase'
  | 'DeltaRound'
  | 'LiveMigrating'
  | 'Saving'
  | 'CopyingDelta'
  | 'Restoring'
  | 'Merging'
  | 'Verifying'
  | 'Finalizing'
  | 'CleaningUp'
  | 'Completed'
  | 'Cancelling'
  | 'RollingBack'
  | 'RolledBack'
  | 'Blocked'
  | 'Failed';

export interface MigrationStatus {
  id: string;
  strategy: Strategy;
  from: { host: string; storage?: string };
  to: { host: string; storage?: string };
  step: MigrationStep;
  /** quick with delta rounds: the overlay round active now, or the one the pause copied */
  round?: number;
  bytesDone: number;
  bytesTotal: number;
  startedAt?: string;
  finishedAt?: string;
  pauseMs?: number;
  attempts: number;
  lastError?: { reason: string; message: string };
}

export interface VirtualMachineStatus {
  apiVersion: typeof API_VERSION;
  kind: 'VirtualMachineStatus';
  metadata: { name: string };
  observedRevision?: string;
  placement?: Placement;
  /**
   * Hosts on which a domain of this name is defined, sorted; written only when there is more
   * than one (a stale copy that could start a second instance). The planner blocks its moves.
   */
  definedOn?: string[];
  phase: Phase;
  conditions: Condition[];
  migration?: MigrationStatus;
}

export interface StorageStatus {
  name: string;
  path: string;
  capacityBytes: number;
  freeBytes: number;
}

export interface HostStatus {
  apiVersion: typeof API_VERSION;
  kind: 'HostStatus';
  metadata: { name: string };
  observedAt: string;
  cpu?: { vendor?: string; model?: string };
  storage: StorageStatus[];
}

/** The actual state as the planner sees it. */
export interface ActualState {
  vms: Map<string, VirtualMachineStatus>;
  hosts: Map<string, HostStatus>;
}

// ---------------------------------------------------------------- plan

export type MigrationKind = 'same-host' | 'cross-host' | 'cross-cluster';

export interface Finding {
  severity: 'error' | 'warning' | 'info';
  reason: string;
  message: string;
}

export interface PlannedDiskMove {
  target: string;
  from: string;
  to: string;
  /** allocated bytes that will be copied (0 when the disk stays on shared storage) */
  bytes: number;
  /**
   * The file the disk will be at after the move (see `targetDiskPath`): `<location>/<vm>/<file>`
   * when its data moves, its current path when it stays on shared storage; absent when the
   * desired storage resolves nowhere.
   */
  toPath?: string;
}

export interface PlannedMigration {
  vm: string;
  kind: MigrationKind;
  strategy: Strategy;
  from: { host: string };
  to: { host: string };
  disks: PlannedDiskMove[];
  /** true for moves between hosts of one cluster whose disks stay on shared storage */
  stateOnly: boolean;
  blocked: boolean;
  findings: Finding[];
  /** 1-based execution order; moves that free space come before moves that need it */
  order: number;
}

/**
 * A finding not attached to one migration: about the planner's input (status, the base ref)
 * or about a VM that has no migration in the plan (an unchanged VM defined on two hosts).
 */
export interface PlanFinding extends Finding {
  /** what it is about: `VirtualMachine/web-01`, `Host/hv-a`, `status/` */
  subject: string;
  /** the VM, when it is about one */
  vm?: string;
}

/** A plan finding about one VM. */
export type VmFinding = PlanFinding & { vm: string };

export interface Plan {
  revision?: string;
  migrations: PlannedMigration[];
  unchanged: string[];
  unknown: string[];
  suspended: string[];
  /** VMs whose migration is in flight (status phase `Migrating`) and already goes where they should be; only when any */
  inFlight?: string[];
  /** findings not attached to a migration (status, the base ref, VMs without a migration) */
  findings?: PlanFinding[];
}

export interface PlanPolicy {
  /** bytes kept free on a target after all moves (default 1 GiB) */
  targetMarginBytes: number;
  /** fraction of a disk's virtual size reserved on the source for the differencing disk (default 0.1) */
  sourceHeadroomRatio: number;
  /** most delta rounds of a quick migration before the pause (1: the seed's single round; default 8) */
  maxDeltaRounds?: number;
  /**
   * quick across hosts: how the memory and the last delta cross (where both drivers can and the
   * hosts reach each other). `stateFile` (default): the seed's saved state file, copied over in
   * the pause. Experimental: `live`, the hypervisor's live migration carries the
   * memory and mirrors only the top layer onto the bases vmplace copied, so the VM stops only
   * for its switch-over; `paused`: the VM is paused, vmplace copies and verifies the last delta,
   * the migration stream moves the paused memory.
   */
  quickMemory?: 'live' | 'paused' | 'stateFile';
  /**
   * How files cross between hosts inside a quick pause (the last deltas above 64 MiB and the
   * memory state file, when the hosts share no storage): `ssh` (default), or `tcp`: unencrypted
   * through a one-shot rsync daemon per file on the target (authenticated by a one-time secret,
   * that one file writable, hashed on both ends as ever; ssh when it cannot be set up). By hand
   * on the lab, 83 MB took 0.23-0.29 s that way against 2.0-2.2 s through rsync over ssh.
   */
  pauseTransfer?: 'ssh' | 'tcp';
  /**
   * Live-migrate the memory of an emulated guest (libvirt `<domain type='qemu'>`: TCG, no
   * hardware acceleration) across hosts. Off by default: on the lab (QEMU 7.2, TCG) the live
   * migration damaged the guest's memory in some moves (see the README); `auto` then moves such
   * a guest quick, and `strategy: live` is refused (StrategyUnsupported).
   */
  liveEmulated?: boolean;
}

export const DEFAULT_POLICY: PlanPolicy = {
  targetMarginBytes: 1024 * 1024 * 1024,
  sourceHeadroomRatio: 0.1,
};
