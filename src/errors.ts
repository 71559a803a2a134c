import { backoffDelay } from './backoff';

/**
 * Errors typed by what happens next (after Flux): a *stalled* error needs a human and is not
 * retried until the manifests or the world change; a *waiting* error is retried after a delay;
 * anything else is *transient* and retried with backoff. Route on class or `reason`, never on
 * message text; what an error leads to is decided in one place, {@link outcomeOf}.
 */
export type ErrorKind = 'stalled' | 'waiting' | 'transient';

/**
 * Every reason an error of vmplace can carry: PascalCase constants that status files, logs and
 * tests show as they are. Grouped by who raises them; a new reason is added here first.
 */
export const REASONS = [
  // anything not raised by vmplace itself; a migration cancelled because the manifests changed
  'InternalError',
  'Cancelled',
  // commands (exec/, drivers/)
  'CommandAborted',
  'CommandFailed',
  'CommandKilled',
  'CommandNotFound',
  'CommandOutputTooLarge',
  'CommandSpawnFailed',
  'CommandTimedOut',
  'UnexpectedOutput',
  'UnsafeHostUri',
  'PathOutsideStorage',
  // a value or command line vmplace refuses to hand to a remote shell (drivers/hyperv/powershell.ts)
  'UnsafeScriptValue',
  'UnsafeCommandLine',
  'CommandLineTooLong',
  // a Hyper-V host (drivers/hyperv/): its ssh does not answer, it refuses the account, a name
  // it holds twice, a step the driver does not take without a real host to prove it
  'HostUnreachable',
  'AccessDenied',
  'VmNameAmbiguous',
  'NotSupportedByDriver',
  'SavedStateMismatch',
  // pre-flight findings: nothing changed yet
  'AlreadyRunning',
  'CpuCompareFailed',
  'CpuIncompatible',
  'DiskFormatMismatch',
  'DiskHasBackingChain',
  'DiskNotFile',
  'DiskNotFound',
  'DiskNotPlanned',
  'DiskShareable',
  'DiskUsedByOtherDomain',
  'DomainExistsOnTarget',
  'DomainNotFound',
  'DomainRunning',
  'DomainStateUnsupported',
  'DriverMismatch',
  // the hypervisor driver cannot run the strategy asked for (or any, for this move)
  'StrategyUnsupported',
  // the target host cannot register the VM's copied configuration (Hyper-V: Compare-VM's report)
  'ImportIncompatible',
  'MixedHypervisors',
  'NoTransport',
  'NoTransferAddress',
  'NothingToMove',
  'NvramNotMovable',
  'SharedPathMismatch',
  'SourceHeadroomInsufficient',
  'TargetFileExists',
  'TargetHostKeyMismatch',
  'TargetNotWritable',
  'TargetSpaceInsufficient',
  'TargetStorageMissing',
  'TargetUnreachable',
  'TpmStateNotMovable',
  // the migration's steps and the driver's effects
  'BackingFormatUnknown',
  'BlockJobBusy',
  'ChecksumMismatch',
  'CopyVerifyFailed',
  'DefineFailed',
  'DestinationDiffers',
  'DestinationExists',
  'DestinationInUse',
  'AlreadyOnTarget',
  'DomainNotRunning',
  'DomainNotPaused',
  'GuestRanWhilePaused',
  'SuspendFailed',
  'ResumeFailed',
  'DomainRunningOnSource',
  'DomainStarted',
  'FileExists',
  'ImageCheckFailed',
  'InconsistentSnapshot',
  'OverlayExists',
  'PartFileNotOwned',
  'RollbackImpossible',
  'SavedStateLost',
  'SnapshotPartial',
  'SourceChangedAfterCopy',
  'SourceMissing',
  'SourceStillInUse',
  'TargetUnconfirmed',
  'TpmStateAtRisk',
  'TransferFailed',
  'UnexpectedDiskSource',
  'VerifyFailed',
  // git, status and the repository
  'BaseRefNotFound',
  'BaseRefUnrelated',
  'GitBusy',
  'GitCommandFailed',
  'GitCredentialsInvalid',
  'InvalidBranch',
  'InvalidRepository',
  'InvalidRevision',
  'InvalidStatus',
  'ManifestsDirNotFound',
  'NotSynced',
  'RepositoryNotFound',
  'StatusAtBaseTooLarge',
  'StatusPathNotADirectory',
  'StatusPushFailed',
  'SymlinkInStatusPath',
  'WorkdirNotARepository',
  'WorkdirRemoteMismatch',
  'WriteOutsideStatus',
  // configuration and the daemon
  'DaemonUnreachable',
  'InvalidDuration',
  'InvalidListenAddress',
  'TrustFileInvalid',
  'TrustFileUnreadable',
  'TrustFileUnsafe',
  'WebhookSecretEmpty',
  'UiTokenTooShort',
  // notifications (notify/)
  'NotificationFileRefused',
  'NotificationUrlInvalid',
  // several daemons sharing a fleet (coord/)
  'Fenced',
  'CoordinationUnavailable',
  'InvalidCoordinationOptions',
] as const;

export type Reason = (typeof REASONS)[number];

const KNOWN_REASONS: ReadonlySet<string> = new Set(REASONS);

/** True when `text` is one of {@link REASONS} (e.g. a reason read back from a persisted snapshot). */
export function isReason(text: unknown): text is Reason {
  return typeof text === 'string' && KNOWN_REASONS.has(text);
}

export class VmplaceError extends Error {
  readonly reason: Reason;
  readonly kind: ErrorKind;
  constructor(reason: Reason, message: string, options: { cause?: unknown; kind?: ErrorKind } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.reason = reason;
    this.kind = options.kind ?? 'transient';
  }
}

/** Needs a human: bad input, no space, incompatible CPU. */
export class StalledError extends VmplaceError {
  constructor(reason: Reason, message: string, options: { cause?: unknown } = {}) {
    super(reason, message, { ...options, kind: 'stalled' });
  }
}

/** Retry later after `retryAfterMs`. */
export class WaitingError extends VmplaceError {
  readonly retryAfterMs: number;
  constructor(reason: Reason, message: string, retryAfterMs: number, options: { cause?: unknown } = {}) {
    super(reason, message, { ...options, kind: 'waiting' });
    this.retryAfterMs = retryAfterMs;
  }
}

/** A program run by a driver failed. Carries the command, exit code and stderr (secrets removed). */
export class CommandError extends VmplaceError {
  readonly command: readonly string[];
  readonly exitCode: number | null;
  readonly stderr: string;
  constructor(
    reason: Reason,
    command: readonly string[],
    exitCode: number | null,
    stderr: string,
    options: { cause?: unknown; kind?: ErrorKind } = {},
  ) {
    const safeCmd = command.map(redact);
    const safeErr = redact(stderr).trim().slice(0, 2000);
    super(reason, `${safeCmd.join(' ')} exited ${exitCode ?? 'by signal'}: ${safeErr}`, options);
    this.command = safeCmd;
    this.exitCode = exitCode;
    this.stderr = safeErr;
  }
}

const SECRET_PATTERNS: RegExp[] = [
  /(password|passwd|secret|token|key)=([^\s&]+)/gi,
  /(:\/\/[^:/@\s]+:)([^@\s]+)(@)/g,
];

/** Remove things that look like secrets from a string meant for logs, status or errors. */
export function redact(text: string): string {
  let out = text;
  out = out.replace(SECRET_PATTERNS[0]!, '$1=[REDACTED]');
  out = out.replace(SECRET_PATTERNS[1]!, '$1[REDACTED]$3');
  return out;
}

/** A short, stable description of any thrown value. */
export function describeError(err: unknown): { reason: Reason; message: string } {
  if (err instanceof VmplaceError) return { reason: err.reason, message: redact(err.message) };
  if (err instanceof Error) return { reason: 'InternalError', message: redact(err.message) };
  return { reason: 'InternalError', message: redact(String(err)) };
}

/** Output of a program that vmplace could not read (a parser's error): reason `UnexpectedOutput`. */
export class ParseError extends VmplaceError {
  constructor(what: string, detail: string) {
    super('UnexpectedOutput', `could not parse ${what}: ${detail}`);
  }
}

/**
 * This daemon replica does not hold the VM's lock, or cannot prove it still does (its lease is
 * older than half its TTL): it must start no side effect and write no state for that VM.
 */
export class FencedError extends VmplaceError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('Fenced', message, options);
  }
}

/** True for a {@link FencedError}, or anything carrying its reason. */
export function isFenced(error: unknown): boolean {
  return errorFacts(error).reason === 'Fenced';
}

/**
 * Errors after which neither forward nor back is safe without a human: the VM is left as it is.
 * `SavedStateLost`: the VM was saved and its saved state is gone (booting it afresh would lose
 * its memory silently).
 */
export const NEEDS_HUMAN: ReadonlySet<Reason> = new Set<Reason>(['SavedStateLost']);

/**
 * What happens after an error, wherever it surfaces (a step in the migration machine, a finished
 * migration in the reconciler, a failed pass of the daemon):
 * - `requeue`: try again after `afterMs` (the step, a new migration, the next pass);
 * - `stalled`: needs a human; not tried again until the manifests or the world change;
 * - `failed`: the migration ends as Failed with its reason (nothing forward or back is safe);
 *   the VM is then held like a stalled one.
 */
export type Outcome = { next: 'requeue'; afterMs: number } | { next: 'stalled' } | { next: 'failed' };

/** Where an error happened, for {@link outcomeOf}. */
export interface OutcomeContext {
  /** the migration had passed its point of no return (the VM runs from the target) */
  committed?: boolean;
  /** how many times in a row this has failed, the error included (1-based; default 1) */
  failures?: number;
  /** backoff of transient errors: base and ceiling (default 30 s doubling up to 1 h) */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  random?: () => number;
}

/** The fields of an error that decide its outcome, from a thrown error or a persisted `lastError`. */
export interface ErrorFacts {
  reason: string;
  kind: ErrorKind;
  retryAfterMs?: number;
}

/** Reason, kind and retry delay of a thrown value or of a persisted `lastError` ({reason, kind?, retryAfterMs?}). */
export function errorFacts(error: unknown): ErrorFacts {
  if (error instanceof VmplaceError)
    return {
      reason: error.reason,
      kind: error.kind,
      ...(error instanceof WaitingError ? { retryAfterMs: error.retryAfterMs } : {}),
    };
  const e = (typeof error === 'object' && error !== null ? error : {}) as Record<string, unknown>;
  const reason = typeof e.reason === 'string' ? e.reason : 'InternalError';
  const kind: ErrorKind = e.kind === 'stalled' || e.kind === 'waiting' ? e.kind : 'transient';
  const after = e.retryAfterMs;
  return {
    reason,
    kind,
    ...(kind === 'waiting' && typeof after === 'number' && after >= 0 ? { retryAfterMs: after } : {}),
  };
}

/**
 * The one mapping from an error to what happens next (see {@link Outcome}). In order: a
 * cancelled migration is replanned at once; a reason in {@link NEEDS_HUMAN} fails; a stalled error
 * stalls, or fails once past the point of no return (going back is impossible and retrying
 * forward cannot fix what needs a human); a waiting error is retried after its `retryAfterMs`;
 * anything else after the backoff for its number of `failures`.
 */
export function outcomeOf(error: unknown, at: OutcomeContext = {}): Outcome {
  const f = errorFacts(error);
  if (f.reason === 'Cancelled') return { next: 'requeue', afterMs: 0 };
  if (isReason(f.reason) && NEEDS_HUMAN.has(f.reason)) return { next: 'failed' };
  if (f.kind === 'stalled') return at.committed ? { next: 'failed' } : { next: 'stalled' };
  if (f.kind === 'waiting' && f.retryAfterMs !== undefined)
    return { next: 'requeue', afterMs: f.retryAfterMs };
  const delay = backoffDelay(
    Math.max(1, at.failures ?? 1),
    at.backoffBaseMs ?? 30_000,
    at.backoffMaxMs ?? 3_600_000,
    at.random,
  );
  return { next: 'requeue', afterMs: delay };
}
