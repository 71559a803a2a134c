import { StalledError } from '../../../../src/errors';
import { RAW_COMMAND_LINE } from '../../../../src/exec/exec';
import {
  MAX_COMMAND_LINE,
  POWERSHELL_ARGV_PREFIX,
  PS_PRELUDE,
  SAFE_TOKEN,
  decodeCommand,
  encodeCommand,
  powershellCommandLine,
  psQuote,
  psScript,
} from '../../../../src/drivers/hyperv/powershell';
import { parseProblems, scanVerbatim, verbatimLiterals, withTree } from './ps-grammar';

describe('psQuote', () => {
  it.each([
    ['plain', "'plain'"],
    ['', "''"],
    ["it's", "'it''s'"],
    ['’', "'’’'"],
    ['‘x‚y‛', "'‘‘x‚‚y‛‛'"],
    ["'’", "'''’’'"],
    ['$(Remove-Item C:\\ -Recurse)', "'$(Remove-Item C:\\ -Recurse)'"],
    ['a`b"c', "'a`b\"c'"],
    ['line1\nline2', "'line1\nline2'"],
    ['–Force', "'–Force'"],
    ['😀', "'😀'"],
  ])('quotes %j as %s', (value, literal) => {
    expect(psQuote(value)).toBe(literal);
    // and PowerShell's rules read the value back, ending exactly at the closing quote
    expect(scanVerbatim(literal)).toEqual({ value, end: literal.length });
  });

  it.each([
    ['NUL', 'a\0b'],
    ['a high surrogate alone', 'a\uD83Db'],
    ['a low surrogate alone', 'a\uDE00b'],
    ['surrogates in the wrong order', '\uDE00\uD83D'],
    ['a high surrogate at the end', 'ab\uD83D'],
  ])('refuses %s with StalledError UnsafeScriptValue', (_what, value) => {
    expect(() => psQuote(value)).toThrow(StalledError);
    expect(() => psQuote(value)).toThrow(expect.objectContaining({ reason: 'UnsafeScriptValue' }));
  });
});

describe('encodeCommand', () => {
  it('is base64 of UTF-16LE, as -EncodedCommand takes it', () => {
    // [Convert]::ToBase64String([Text.Encoding]::Unicode.GetBytes('Get-Date'))
    expect(encodeCommand('Get-Date')).toBe('RwBlAHQALQBEAGEAdABlAA==');
  });

  it.each(['', 'Get-Date', "$x='it''s'\r\n’‘", 'ünïcødé 😀 – —', 'a\nb\rc\td', '\u2028\u2029\uFEFF'])(
    'round-trips %j',
    (script) => {
      expect(decodeCommand(encodeCommand(script))).toBe(script);
    },
  );
});

describe('powershellCommandLine', () => {
  const script = psScript("$n='web01'\nGet-VM");

  it('runs powershell.exe without profile, prompts or execution policy, the script encoded last', () => {
    const tokens = powershellCommandLine(script).split(' ');
    expect(tokens.slice(0, -1)).toEqual([...POWERSHELL_ARGV_PREFIX]);
    expect(POWERSHELL_ARGV_PREFIX).toEqual([
      'powershell.exe',
      '-NoProfile',
      '-NonInteractive',
      '-ExecutionPolicy',
      'Bypass',
      '-EncodedCommand',
    ]);
    expect(decodeCommand(tokens[tokens.length - 1]!)).toBe(script);
  });

  it.each([
    ['a plain script', 'Get-Date'],
    ['quotes and shell metacharacters', `$x='a''b"c & d | e ^ f % g < h > i ; j \`k $(l) ’m'`],
    ['newlines and Unicode', "'line1\nline2 ünïcødé 😀 — –'"],
  ])('every token of the line is in the safe charset for %s', (_what, body) => {
    const line = powershellCommandLine(psScript(body));
    for (const token of line.split(' ')) expect(token).toMatch(SAFE_TOKEN);
    expect(line).toMatch(RAW_COMMAND_LINE);
  });

  it('refuses a line over the limit with StalledError CommandLineTooLong, never cutting it', () => {
    // 8 characters of line per 3 of script
    const fits = 'x'.repeat(Math.floor(((MAX_COMMAND_LINE - 90) * 3) / 8) - 10);
    expect(powershellCommandLine(fits).length).toBeLessThanOrEqual(MAX_COMMAND_LINE);
    const big = 'x'.repeat(3100);
    expect(() => powershellCommandLine(big)).toThrow(
      expect.objectContaining({ reason: 'CommandLineTooLong' }),
    );
    expect(MAX_COMMAND_LINE).toBeLessThan(8191);
  });
});

describe('psScript', () => {
  it('sets the preferences first, runs the body in try/catch and writes one JSON envelope', () => {
    const s = psScript('Get-Date');
    expect(s.startsWith(PS_PRELUDE)).toBe(true);
    expect(s.indexOf("$ErrorActionPreference='Stop'")).toBe(0);
    expect(s).toContain("$ProgressPreference='SilentlyContinue'");
    expect(s).toContain(
      'try{$o=[ordered]@{ok=$true;result=@(&{\nGet-Date\n})}}catch{$o=[ordered]@{ok=$false;error=',
    );
    expect(s).toContain('type=$_.Exception.GetType().FullName;message=$_.Exception.Message');
    expect(s).toContain('category=[string]$_.CategoryInfo.Category;id=[string]$_.FullyQualifiedErrorId');
    expect(s).toContain('ConvertTo-Json -InputObject $o -Depth 8 -Compress');
    expect(s.match(/\[Console\]::Out\.WriteLine/g)).toHaveLength(1);
    expect(s.trimEnd().endsWith('exit [int](-not $o.ok)')).toBe(true);
  });

  it('parses with the PowerShell grammar, helpers included, and every literal ends where PowerShell ends it', async () => {
    const s = psScript("$p='C:\\x'\nGet-Item -LiteralPath $p", ['function F($a){$a}']);
    const r = await withTree(s, (t) => ({
      problems: parseProblems(t.rootNode),
      literals: verbatimLiterals(t.rootNode).map((n) => ({ text: n.text, end: scanVerbatim(n.text).end })),
    }));
    expect(r.problems).toEqual([]);
    for (const l of r.literals) expect(l.end).toBe(l.text.length);
  });
});
