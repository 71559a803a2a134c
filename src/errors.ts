/**
 * Errors typed by what happens next (after Flux): a *stalled* error needs a human and is not
 * retried until the manifests or the world change; a *waiting* error is retried after a delay;
 * anything else is *transient* and retried with backoff. Route on class or `reason`, never on
 * message text.
 */
export type ErrorKind = 'stalled' | 'waiting' | 'transient';

export class VmplaceError extends Error {
  readonly reason: string;
  readonly kind: ErrorKind;
  constructor(reason: string, message: string, options: { cause?: unknown; kind?: ErrorKind } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.reason = reason;
    this.kind = options.kind ?? 'transient';
  }
}

/** Needs a human: bad input, no space, incompatible CPU. */
export class StalledError extends VmplaceError {
  constructor(reason: string, message: string, options: { cause?: unknown } = {}) {
    super(reason, message, { ...options, kind: 'stalled' });
  }
}

/** Retry later after `retryAfterMs`. */
export class WaitingError extends VmplaceError {
  readonly retryAfterMs: number;
  constructor(reason: string, message: string, retryAfterMs: number, options: { cause?: unknown } = {}) {
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
    reason: string,
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
export function describeError(err: unknown): { reason: string; message: string } {
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
