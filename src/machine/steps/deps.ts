import type { Logger } from 'pino';
import type { HypervisorDriver } from '../../drivers/driver';
import type { Transport } from '../../transfer/transport';
import type { HostSpec } from '../../types';
import { NO_FENCE, passFence, type Fence } from '../fence';
import type { MigrationRecords, OwnedFile } from '../store';
import type { MigrationContext, StepOutput } from '../types';

/** What the real steps need from the world. */
export interface StepDeps {
  /** the driver of a host by manifest name */
  driverFor: (host: string) => HypervisorDriver;
  /**
   * How files go from host `from` to host `to` (the same host or another): undefined when the
   * pair has no transport (hosts of different hypervisor families), which Preflight blocks.
   */
  transportFor(from: string, to: string): Transport | undefined;
  logger?: Logger;
  onProgress?(ctx: MigrationContext, bytesDone: number, bytesTotal: number): void;
  now?: () => number;
  /** base of the retry backoff after a failed step, ms (default 1000) */
  retryBaseMs?: number;
  /** true once a shutdown began: steps that can wait do not start (the runner checkpoints) */
  stopping?: () => boolean;
  /** bandwidth limit for copies, KiB/s */
  bwlimitKiBps?: number;
  /** the other hosts that see the file `path` of `host` (its cluster's shared storage) */
  sharedWith?(host: string, path: string): string[];
  /** a host's manifest spec: how other hosts reach it for copies (transferAddress, ssh) */
  hostSpecFor?(host: string): HostSpec | undefined;
  /** write-ahead intents (see MigrationStore.markIntent); without them rollback trusts only what it sees */
  intents?: {
    mark(ctx: MigrationContext, what: 'restore' | 'define' | 'save'): Promise<void>;
    has(ctx: MigrationContext, what: 'restore' | 'define' | 'save'): Promise<boolean>;
    /** when the intent was marked (ms since epoch), if it was: a save's is when the pause began */
    at(ctx: MigrationContext, what: 'save'): Promise<number | undefined>;
  };
  /** how copies between hosts go (default auto: host to host, relayed only when unreachable) */
  transferMode?: 'direct' | 'relay' | 'auto';
  /**
   * Write-ahead proofs of the files this migration created (see MigrationStore.recordOwned).
   * Without them nothing whose name was not made by this migration is ever deleted.
   */
  owned?: {
    record(ctx: MigrationContext, rec: OwnedFile): Promise<void>;
    list(ctx: MigrationContext): Promise<OwnedFile[]>;
  };
  /**
   * Aborted when the migration is cancelled while this step runs: long effects (copies, block
   * jobs, a live migration, delta rounds) stop, undo what is in flight, and reject with reason
   * `Cancelled`, or resolve when they had already passed the point of no return.
   */
  signal?: AbortSignal;
  /** see {@link StepMemo}; one per set of step actors unless a test passes its own */
  memo?: StepMemo;
  /**
   * Awaited before every step starts (after its retry delay): the runner's snapshot naming the
   * step is persisted, and the fence lets it act (several replicas). A rejection fails the step
   * before it did anything.
   */
  beforeStep?: (ctx: MigrationContext) => Promise<void>;
  /** told of every step's promise as it starts */
  track?: (step: Promise<unknown>) => void;
}

/**
 * What the steps of one migration keep in memory from one step to the next: hints that save
 * round trips inside the VM's pause, never trusted alone (a restart loses them and the steps
 * look at the world again). One object per set of step actors (one migration), not module
 * state, so a test sees and controls it.
 */
export interface StepMemo {
  /** overlays the early delta copy put on the target while the memory was saved, by migration id */
  earlyCopies: Map<
    string,
    {
      at: number;
      paths: Set<string>;
      digests?: Map<string, string>;
      /** those already relinked onto the target's layer below (their digests known) */
      relinked?: Set<string>;
      /** those whose source, hashed again after the save had ended, equals what was copied */
      confirmed?: Set<string>;
    }
  >;
  /** Restoring's lookups started during CopyingDelta, by migration id */
  prefetchedRestore: Map<string, { at: number; lookups: Promise<unknown> }>;
  /**
   * the state file copied to the target by Saving once the save had ended (the source's file no
   * longer changes then, and the copy is verified on both ends), by migration id
   */
  earlyState: Map<string, { at: number; from: string; to: string }>;
}

export function newStepMemo(): StepMemo {
  return { earlyCopies: new Map(), prefetchedRestore: new Map(), earlyState: new Map() };
}

/** What a step gets: the deps, with the memo always there. */
export type RunDeps = StepDeps & { memo: StepMemo };

export type Step = (ctx: MigrationContext, deps: RunDeps) => Promise<StepOutput>;

/** The write-ahead intents and ownership records of the steps, kept in a migration store. */
export function storeRecords(
  store: MigrationRecords,
  fence: Fence = NO_FENCE,
): Required<Pick<StepDeps, 'intents' | 'owned'>> {
  // a write-ahead record is written only by a run that still holds the VM's lock
  const fenced = async <T>(write: () => Promise<T>): Promise<T> => {
    await passFence(fence);
    return write();
  };
  return {
    intents: {
      mark: (c, what) => fenced(() => store.markIntent(c.vm, c.id, what)),
      has: (c, what) => store.hasIntent(c.vm, c.id, what),
      at: (c, what) => store.intentAt(c.vm, c.id, what),
    },
    owned: {
      record: (c, rec) => fenced(() => store.recordOwned(c.vm, c.id, rec)),
      list: (c) => store.listOwned(c.vm, c.id),
    },
  };
}
