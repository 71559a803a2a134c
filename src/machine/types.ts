import type { MigrationStep, Strategy } from '../types';

/** One disk that moves, with every path the migration will touch, fixed at Preflight. */
export interface DiskMove {
  /** target device: vda, vdb, ... */
  target: string;
  format: string;
  fromStorage: string;
  toStorage: string;
  /** the disk image at the start (becomes the read-only base after Snapshotting) */
  srcPath: string;
  /** the base's copy on the target; the disk's final path */
  dstPath: string;
  /** overlay created beside the source by Snapshotting (quick only) */
  srcOverlay: string;
  /** the overlay's copy on the target, rebased onto dstPath (quick only) */
  dstOverlay: string;
  /**
   * Every layer this migration may create for the disk, by round (index 0 = round 1 =
   * srcOverlay), named by the source's driver at Preflight; and their copies on the target,
   * named by the target's driver. Absent in migrations persisted before they were recorded.
   */
  srcLayers?: string[];
  dstLayers?: string[];
  virtualBytes: number;
  allocatedBytes: number;
  /** sha256 of the base, recorded once the copy is verified */
  baseChecksum?: string;
}

/** What the caller hands a new migration. Pure data: it is persisted with the snapshot. */
export interface MigrationInput {
  id: string;
  vm: string;
  strategy: Strategy;
  fromHost: string;
  toHost: string;
  /** desired storage per target device, for the disks that move */
  moves: {
    target: string;
    toStorage: string;
    toPath: string;
    fromStorage: string;
    /** the disk stays where it is: shared storage that both hosts mount at the same path */
    stays?: boolean;
  }[];
  /** bytes kept free on the target beyond the disks and the memory state */
  targetMarginBytes: number;
  /** fraction of virtual size needed on the source for the differencing disk */
  sourceHeadroomRatio: number;
  /** retries of a forward step after the point of no return */
  maxForwardAttempts: number;
  /** pause budget (spec.maxPause, default 1 s): delta rounds run until the last delta fits it */
  maxPauseMs?: number;
  /** most overlays before the pause (1 = the seed's single round; default 1) */
  maxRounds?: number;
  /** quick across hosts: how memory and last delta cross (policy.quickMemory; default stateFile) */
  quickMemory?: 'live' | 'paused' | 'stateFile';
  /** live-migrate an emulated (TCG) guest's memory across hosts (policy.liveEmulated; default no) */
  liveEmulated?: boolean;
  /** how files cross between hosts inside the pause (policy.pauseTransfer; default ssh) */
  pauseTransfer?: 'ssh' | 'tcp';
  /** a storage location both hosts mount at this path (a cluster's shared storage), for the state file */
  sharedStatePath?: string;
}

/** The migration's whole memory. JSON-safe: it is persisted after every transition. */
export interface MigrationContext extends MigrationInput {
  /** strategy actually executed: `quick` degrades to `cold` for a shut-off VM */
  effectiveStrategy?: 'quick' | 'cold' | 'live';
  disks: DiskMove[];
  memoryBytes: number;
  /** saved memory state file on the target storage */
  stateFile?: string;
  /** where the source saves the memory state (same as stateFile on one host or on shared storage) */
  srcStateFile?: string;
  /** the state file is copied from the source host to the target host (paths may be equal) */
  copyState?: boolean;
  /**
   * quick across hosts without a state file (see placeState): `live`, the hypervisor's live
   * migration carries the memory and mirrors each disk's top layer onto the copied layers
   * below it; `paused`, the VM is paused, its last delta copied by vmplace, and the migration
   * stream moves the paused VM onto the copies
   */
  migrateMemory?: 'live' | 'paused';
  /** how data goes between hosts: host to host, or relayed by the management box */
  transferMode?: 'direct' | 'relay';
  /** the VM was running when the migration started */
  wasRunning?: boolean;
  /**
   * across hosts: the source definition had autostart on. It is switched off on the source
   * before the VM can run on the target (a source host reboot must not start a second copy),
   * switched on again by a rollback, and set on the target's definition by Finalizing.
   */
  sourceAutostart?: boolean;
  bytesDone: number;
  bytesTotal: number;
  startedAt: string;
  finishedAt?: string;
  /** ms since epoch when the VM went offline (save started) */
  pausedAt?: number;
  /**
   * migrateMemory: the guest's run time counter read once it was paused (driver's
   * guestRunTime); Restoring migrates only if it has not grown (nobody ran the guest while its
   * last delta was copied)
   */
  pausedRunTime?: string;
  /** ms since epoch when the VM ran again on the target */
  resumedAt?: number;
  pauseMs?: number;
  /** the overlay round active now (DeltaRound), and when the VM was saved (1 = single round) */
  rounds?: number;
  /** the delta rounds' own measurements, persisted from round to round (quick with maxRounds > 1) */
  deltaRounds?: DeltaRoundsState;
  /** true once the VM runs from the target: from here only forward */
  committed: boolean;
  attempts: number;
  /** step in which the last error happened */
  failedStep?: MigrationStep;
  /** the last error; `kind` and `retryAfterMs` (when not transient) decide its outcome (see outcomeOf) */
  lastError?: { reason: string; message: string; kind?: 'stalled' | 'waiting'; retryAfterMs?: number };
  /** reason for a stop that needs a human (e.g. Blocked by a pre-flight finding) */
  blockedReason?: string;
}

/** What the delta rounds carry from one round to the next. */
export interface DeltaRoundsState {
  /** the base copy's rate: what a first tiny delta is predicted with */
  baseBytesPerMs: number;
  /** measured on the last round's copy (the way the pause copies) */
  msPerByte?: number;
  /** the last round's delta, to see whether the rounds still shrink it */
  previousDelta?: number;
  /** rounds whose frozen overlays are copied to the target and rebased */
  copiedThrough: number;
  /** the last delta fits the pause (or stopped shrinking, or the round limit): go and save */
  done?: boolean;
}

/** What a step returns: the context fields it changed. */
export type StepOutput = Partial<MigrationContext>;
