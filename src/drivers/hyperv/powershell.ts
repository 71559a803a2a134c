/**
 * Building PowerShell for a Hyper-V host: values as data ({@link psQuote}), one script wrapped so
 * that it always answers with one JSON envelope ({@link psScript}), and the one remote command
 * line that runs it ({@link powershellCommandLine}). Pure: nothing here touches a host.
 *
 * How a script reaches the host, and why:
 * - **`-EncodedCommand`, not stdin.** `powershell.exe -Command -` reads its script from stdin and
 *   runs it statement by statement as if typed at a prompt: a statement that fails does not stop
 *   the next one (`try`/`catch` spanning lines breaks, `$ErrorActionPreference` cannot make the
 *   whole script atomic), a multi-line construct needs an extra blank line to end, and anything
 *   that prompts (a confirmation, `Read-Host`) waits on the same stdin the script came from. An
 *   encoded command is parsed whole before anything runs: a syntax error runs nothing.
 * - **No POSIX quoting.** `SshExec.run` quotes every argument with POSIX single quotes for a
 *   POSIX login shell. Windows' OpenSSH hands the command line to its default shell, `cmd.exe`
 *   unless configured otherwise (or PowerShell), and neither treats `'...'` as quoting: `cmd.exe`
 *   would pass the quotes through and still interpret `&`, `|`, `<`, `>`, `^` and `%VAR%`. So the
 *   command line is built from tokens that every one of those shells passes through unchanged:
 *   letters, digits and `.+/=-` ({@link SAFE_TOKEN}). The script itself travels as base64 of its
 *   UTF-16LE text (what `-EncodedCommand` takes), which is within that set, and every value in
 *   the script is a PowerShell string literal made by {@link psQuote}.
 * - **Length.** `cmd.exe` accepts command lines of at most 8,191 characters; base64 of UTF-16LE
 *   is 8/3 characters per script character, so a script may hold roughly 3,000 characters.
 *   A longer one is refused (`CommandLineTooLong`), never cut.
 */
import { StalledError } from '../../errors';

/** `'` and the characters PowerShell's tokenizer also takes as single quotes (U+2018..U+201B). */
const SINGLE_QUOTES = /['\u2018\u2019\u201A\u201B]/g;

/**
 * Characters no value may carry into a script: NUL (PowerShell's tokenizer reads it as the end of
 * the input) and a UTF-16 surrogate without its pair (not a character: it would not survive the
 * UTF-8/JSON round trip back, so what the host did could not be matched to what was asked).
 */
const UNSAFE_IN_VALUE = /\0|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * A PowerShell single-quoted string literal holding exactly `value`: nothing in it is expanded
 * (no `$`, no backtick escapes, no subexpressions), and each single-quote character, the ASCII
 * one and the typographic ones PowerShell also accepts (U+2018, U+2019, U+201A, U+201B; see
 * `SpecialCharacters` in PowerShell's parser), is doubled: inside such a literal a pair of quote
 * characters stands for the second one. Newlines, dashes, `;`, `|`, `&` and quotes of the other
 * kind are plain characters there. Refuses NUL and unpaired surrogates with
 * `StalledError('UnsafeScriptValue')` (see {@link UNSAFE_IN_VALUE}).
 *
 * This is the only way a value from a manifest or an observation enters a script.
 */
export function psQuote(value: string): string {
  if (UNSAFE_IN_VALUE.test(value)) {
    throw new StalledError(
      'UnsafeScriptValue',
      `refusing a value with a NUL or an unpaired surrogate for PowerShell: ${JSON.stringify(value.slice(0, 80))}`,
    );
  }
  return `'${value.replace(SINGLE_QUOTES, (q) => q + q)}'`;
}

/** The script as `powershell.exe -EncodedCommand` takes it: base64 of its UTF-16LE text. */
export function encodeCommand(script: string): string {
  return Buffer.from(script, 'utf16le').toString('base64');
}

/** The script an {@link encodeCommand} result holds (for tests and diagnostics). */
export function decodeCommand(encoded: string): string {
  return Buffer.from(encoded, 'base64').toString('utf16le');
}

/**
 * The wrapper around every script body. The body runs in a child scope (`& { }`) inside one
 * `try`; whatever it writes to the pipeline becomes `result`, always an array (`@()`), so one
 * object and a list of one cannot be confused. Stops on the first error
 * (`$ErrorActionPreference = 'Stop'` turns every non-terminating cmdlet error into one the
 * `catch` sees). Progress, warning and information streams are silenced: Windows PowerShell
 * writes some of them to the redirected stdout or, as CLIXML, to stderr.
 *
 * It then writes ONE line to stdout, `ConvertTo-Json -Depth 8 -Compress` of
 * `{ ok: true, result }` or `{ ok: false, error: { type, message, category, id } }` (the
 * exception's .NET type, its message, the error record's category name and
 * `FullyQualifiedErrorId`), with every character beyond ASCII written as a `\uXXXX` escape, so
 * the line reads the same whatever code page the host's console uses. Exit code 0 with `ok`,
 * 1 without.
 *
 * `Remove-TypeData System.Array`: Windows PowerShell 5.1 has an extended `Count` property on
 * arrays that makes `ConvertTo-Json` write some arrays as `{"value":[...],"Count":n}` (a
 * known 5.1 quirk, from reports rather than observed here); removing the type data for this
 * process avoids it, and the parsers accept both shapes anyway.
 *
 * `Fail ID CATEGORY MESSAGE` is there for bodies: a terminating error with that id and category.
 */
export const PS_PRELUDE = [
  "$ErrorActionPreference='Stop'",
  "$ProgressPreference='SilentlyContinue'",
  "$WarningPreference='SilentlyContinue'",
  "$InformationPreference='SilentlyContinue'",
  'try{Remove-TypeData -TypeName System.Array}catch{}',
  'function Fail($i,$c,$m){Write-Error -Message $m -ErrorId $i -Category $c}',
].join('\n');

const PS_EPILOGUE = [
  '})}}catch{$o=[ordered]@{ok=$false;error=[ordered]@{type=$_.Exception.GetType().FullName;message=$_.Exception.Message;category=[string]$_.CategoryInfo.Category;id=[string]$_.FullyQualifiedErrorId}}}',
  '$j=ConvertTo-Json -InputObject $o -Depth 8 -Compress',
  "[Console]::Out.WriteLine([regex]::Replace($j,'[^\\x00-\\x7e]',{param($m)'\\u{0:x4}' -f [int][char]$m.Value}))",
  'exit [int](-not $o.ok)',
].join('\n');

/**
 * The complete script for `body` (see {@link PS_PRELUDE}): `helpers` (function definitions the
 * body uses) come after the prelude, outside the `try`. Neither may contain a value that did not
 * go through {@link psQuote}.
 */
export function psScript(body: string, helpers: readonly string[] = []): string {
  return [PS_PRELUDE, ...helpers, 'try{$o=[ordered]@{ok=$true;result=@(&{', body, PS_EPILOGUE].join('\n');
}

/** One token of the remote command line: what cmd.exe, PowerShell and POSIX shells all pass through as is. */
export const SAFE_TOKEN = /^[A-Za-z0-9.+/=-]+$/;

/** cmd.exe's limit on the length of a command line it runs. */
export const CMD_MAX_COMMAND_LINE = 8191;
/**
 * Room left for what the ssh server puts before our line (`cmd.exe /c ` and its path, or the
 * PowerShell equivalent): the longest line we send.
 */
export const MAX_COMMAND_LINE = CMD_MAX_COMMAND_LINE - 191;

/** The tokens before the encoded script. */
export const POWERSHELL_ARGV_PREFIX: readonly string[] = [
  'powershell.exe',
  '-NoProfile',
  '-NonInteractive',
  '-ExecutionPolicy',
  'Bypass',
  '-EncodedCommand',
];

/**
 * The remote command line that runs `script` with Windows PowerShell:
 * `powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand <base64>`.
 * No profile is loaded (nothing of the host's configuration runs first), nothing may prompt
 * (`-NonInteractive` turns a prompt into an error), and the execution policy of the host does not
 * apply to this one process. Every token matches {@link SAFE_TOKEN}, so the line means the same to
 * cmd.exe and to PowerShell as the ssh server's shell. Longer than {@link MAX_COMMAND_LINE}:
 * `StalledError('CommandLineTooLong')` (a script that big is a bug; values do not belong in bulk
 * in a command line).
 */
export function powershellCommandLine(script: string): string {
  const line = [...POWERSHELL_ARGV_PREFIX, encodeCommand(script)].join(' ');
  if (line.length > MAX_COMMAND_LINE) {
    throw new StalledError(
      'CommandLineTooLong',
      `PowerShell command line of ${line.length} characters is over the limit of ${MAX_COMMAND_LINE} (script of ${script.length} characters)`,
    );
  }
  return line;
}

/**
 * The scripts `build` makes of `items`, as few as fit Windows' command line each (greedy, in
 * order; `first` for the first script). An empty list is one script of none; an item too long
 * for a script of its own is refused (`CommandLineTooLong`), as any script would be.
 */
export function inBatches<T>(items: readonly T[], build: (batch: T[], first: boolean) => string): string[] {
  const out: string[] = [];
  let batch: T[] = [];
  const fits = (b: T[]): boolean => {
    try {
      powershellCommandLine(build(b, out.length === 0));
      return true;
    } catch (err) {
      if (err instanceof StalledError && err.reason === 'CommandLineTooLong') return false;
      throw err;
    }
  };
  for (const item of items) {
    if (batch.length && !fits([...batch, item])) {
      out.push(build(batch, out.length === 0));
      batch = [];
    }
    batch.push(item);
  }
  const last = build(batch, out.length === 0);
  powershellCommandLine(last); // an item too long alone: refused here
  out.push(last);
  return out;
}
