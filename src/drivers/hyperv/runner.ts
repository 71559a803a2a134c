/**
 * Running one PowerShell script on a Hyper-V host and reading its one JSON envelope (see
 * `psScript`): the result on success, a {@link PowerShellError} carrying the cmdlet's error id,
 * category and message on failure. The transport is anything that runs a raw command line
 * ({@link RawCommandRunner}: `SshExec.runRaw`, or a fake in tests).
 */
import { CommandError } from '../../errors';
import type { RunOptions, RunResult } from '../../exec/exec';
import { powershellCommandLine } from './powershell';

/** Runs a command line on a host as it is (`SshExec` is one). */
export interface RawCommandRunner {
  /** where the command runs, for error messages (`SshExec.label`) */
  readonly label: string;
  runRaw(commandLine: string, opts?: RunOptions): Promise<RunResult>;
}

/** The `error` member of a failed envelope, as the script writes it. */
export interface PowerShellErrorInfo {
  /** .NET type of the exception, e.g. `Microsoft.HyperV.PowerShell.VirtualizationException` */
  type: string;
  message: string;
  /** the error record's category name, e.g. `ObjectNotFound` */
  category: string;
  /** the error record's `FullyQualifiedErrorId`, e.g. `InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM` */
  id: string;
}

/**
 * A script ran and reported an error (`{ ok: false }`). Reason `CommandFailed` (retried with
 * backoff, like any failed command); the driver routes on `errorId` and `category` where it knows
 * better (`VmNotFound`, `VmNameAmbiguous`, `VmIsActive`... from the scripts themselves). The
 * command it names is the operation, never the encoded script.
 */
export class PowerShellError extends CommandError {
  /** `FullyQualifiedErrorId` up to its first comma: the error id without the command's type name */
  readonly errorId: string;
  readonly fullyQualifiedErrorId: string;
  readonly category: string;
  readonly exceptionType: string;
  constructor(command: readonly string[], exitCode: number | null, info: PowerShellErrorInfo) {
    const errorId = info.id.split(',')[0] ?? '';
    super('CommandFailed', command, exitCode, `[${errorId || info.category}] ${info.message}`);
    this.errorId = errorId;
    this.fullyQualifiedErrorId = info.id;
    this.category = info.category;
    this.exceptionType = info.type;
  }
}

/** Options of {@link PowerShellRunner.run}. */
export interface PowerShellRunOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}

/**
 * Runs scripts made by scripts.ts through a {@link RawCommandRunner}, one `powershell.exe` per
 * script (see `powershellCommandLine`). Stateless: safe to share between migrations.
 */
export class PowerShellRunner {
  constructor(
    private readonly raw: RawCommandRunner,
    private readonly defaults: PowerShellRunOptions = {},
  ) {}

  /**
   * Run `script` (named `operation` in errors and logs) and resolve with the envelope's `result`:
   * what the script's body wrote, always an array. Rejects with:
   * - {@link PowerShellError} when the script reported an error;
   * - `CommandError` with the transport's reason (`CommandTimedOut`, `CommandAborted`, ssh's exit
   *   255 as `CommandFailed`...) or `CommandFailed` when PowerShell exited without an envelope (it
   *   could not start the script); stderr is read out of its CLIXML ({@link readClixml});
   * - `CommandError('UnexpectedOutput')` when stdout holds no envelope or a malformed one;
   * - `StalledError('CommandLineTooLong')` before anything runs, for a script too big.
   */
  async run(operation: string, script: string, opts: PowerShellRunOptions = {}): Promise<unknown[]> {
    const line = powershellCommandLine(script);
    const command = [`ssh:${this.raw.label}`, 'powershell', operation];
    const runOpts: RunOptions = { allowExitCodes: [1] };
    const timeoutMs = opts.timeoutMs ?? this.defaults.timeoutMs;
    if (timeoutMs !== undefined) runOpts.timeoutMs = timeoutMs;
    const signal = opts.signal ?? this.defaults.signal;
    if (signal !== undefined) runOpts.signal = signal;
    let r: RunResult;
    try {
      r = await this.raw.runRaw(line, runOpts);
    } catch (e) {
      // the transport's error names the raw line (shortened); ours names the operation
      if (e instanceof CommandError)
        throw new CommandError(e.reason, command, e.exitCode, readClixml(e.stderr));
      throw e;
    }
    const envelope = lastEnvelope(r.stdout);
    if (envelope === undefined) {
      throw new CommandError(
        r.exitCode === 0 ? 'UnexpectedOutput' : 'CommandFailed',
        command,
        r.exitCode,
        readClixml(r.stderr) || `no JSON envelope on stdout: ${JSON.stringify(r.stdout.slice(0, 200))}`,
      );
    }
    return resultOf(envelope, command, r.exitCode);
  }
}

/** The last line of stdout that parses as a JSON object (lines before it are noise: warnings a cmdlet printed). */
function lastEnvelope(stdout: string): Record<string, unknown> | undefined {
  const lines = stdout.split(/\r?\n/);
  for (let i = lines.length - 1; i >= 0; i--) {
    const line = lines[i]!.trim();
    if (!line.startsWith('{')) continue;
    try {
      const v: unknown = JSON.parse(line);
      if (typeof v === 'object' && v !== null && !Array.isArray(v) && 'ok' in v) return v;
    } catch {
      // not our line
    }
  }
  return undefined;
}

function resultOf(
  envelope: Record<string, unknown>,
  command: readonly string[],
  exitCode: number,
): unknown[] {
  const bad = (why: string): never => {
    throw new CommandError('UnexpectedOutput', command, exitCode, `malformed envelope: ${why}`);
  };
  if (envelope.ok === true) {
    const result = unwrapArray(envelope.result);
    return result ?? bad('result is not an array');
  }
  if (envelope.ok !== false) return bad('ok is neither true nor false');
  const err = envelope.error;
  if (typeof err !== 'object' || err === null) return bad('no error object');
  const e = err as Record<string, unknown>;
  const text = (v: unknown): string =>
    typeof v === 'string'
      ? v
      : typeof v === 'number' || typeof v === 'boolean'
        ? String(v)
        : v === undefined || v === null
          ? ''
          : JSON.stringify(v);
  throw new PowerShellError(command, exitCode, {
    type: text(e.type),
    message: text(e.message),
    category: text(e.category),
    id: text(e.id),
  });
}

/**
 * An array as `ConvertTo-Json` writes it: a JSON array, or Windows PowerShell 5.1's
 * `{"value":[...],"Count":n}` for an array wrapped in a PSObject (undefined for anything else).
 * `null` is an empty result: 5.1 writes an empty array property as null in some cases.
 */
export function unwrapArray(v: unknown): unknown[] | undefined {
  if (Array.isArray(v)) return v as unknown[];
  if (v === null) return [];
  if (typeof v === 'object' && v !== null) {
    const o = v as Record<string, unknown>;
    if (Array.isArray(o.value) && typeof o.Count === 'number' && Object.keys(o).length === 2)
      return o.value as unknown[];
  }
  return undefined;
}

const XML_ENTITIES: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };

/**
 * Readable text of a stderr that Windows PowerShell may have written as CLIXML: with
 * `-EncodedCommand` and stderr not a console it writes `#< CLIXML` and then `<Objs>` holding the
 * error stream as `<S S="Error">` strings (characters it cannot put in XML written as `_xHHHH_`)
 * and progress records as `<Obj S="progress">` (PowerShell/PowerShell#16678 shows the form).
 * Returns the error and warning strings, decoded, without terminal colour codes, after any
 * plain text around the XML; progress is dropped. A stderr without CLIXML is returned as it is.
 */
export function readClixml(stderr: string): string {
  const marker = stderr.indexOf('#< CLIXML');
  if (marker < 0) return stderr.trim();
  const before = stderr.slice(0, marker).trim();
  const rest = stderr.slice(marker + '#< CLIXML'.length);
  const texts: string[] = [];
  let plain = rest;
  for (const objs of rest.match(/<Objs\b[\s\S]*?<\/Objs>/g) ?? []) {
    plain = plain.replace(objs, '');
    for (const m of objs.matchAll(/<S S="(Error|Warning)">([\s\S]*?)<\/S>/gi)) {
      const decoded = m[2]!
        .replace(/&(lt|gt|amp|quot|apos);/g, (_all, name: string) => XML_ENTITIES[name] ?? '')
        .replace(/&#x([0-9a-fA-F]+);/g, (_all, hex: string) => String.fromCodePoint(parseInt(hex, 16)))
        .replace(/&#([0-9]+);/g, (_all, dec: string) => String.fromCodePoint(parseInt(dec, 10)))
        .replace(/_x([0-9A-Fa-f]{4})_/g, (_all, hex: string) => String.fromCharCode(parseInt(hex, 16)))
        // eslint-disable-next-line no-control-regex
        .replace(/\u001B\[[0-9;]*m/g, '');
      texts.push(m[1]!.toLowerCase() === 'warning' ? `WARNING: ${decoded}` : decoded);
    }
  }
  const joined = texts.join('').trim();
  return [before, plain.trim(), joined].filter((t) => t !== '').join('\n');
}
