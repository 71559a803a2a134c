import { CommandError, StalledError } from '../../../../src/errors';
import { decodeCommand, powershellCommandLine } from '../../../../src/drivers/hyperv/powershell';
import {
  PowerShellError,
  PowerShellRunner,
  readClixml,
  unwrapArray,
} from '../../../../src/drivers/hyperv/runner';
import { getVhd, getVm } from '../../../../src/drivers/hyperv/scripts';
import { FakeRaw, envelopeLine, fakeFor, fixture } from './fake-raw';

/** What a rejection was, for assertions. */
async function rejection(p: Promise<unknown>): Promise<CommandError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(CommandError);
    return e as CommandError;
  }
  throw new Error('expected a rejection');
}

describe('PowerShellRunner', () => {
  const script = getVm('web01');

  it('sends the encoded script as one raw command line and resolves with the result array', async () => {
    const raw = fakeFor({ ok: true, result: [{ a: 1 }, { b: 'ü' }] });
    const result = await new PowerShellRunner(raw).run('getVm', script, { timeoutMs: 5000 });
    expect(result).toEqual([{ a: 1 }, { b: 'ü' }]);
    expect(raw.calls).toHaveLength(1);
    const { line, opts } = raw.calls[0]!;
    expect(line).toBe(powershellCommandLine(script));
    expect(decodeCommand(line.split(' ').pop()!)).toBe(script);
    expect(opts).toEqual({ allowExitCodes: [1], timeoutMs: 5000 });
  });

  it('passes the default timeout and an abort signal through', async () => {
    const raw = fakeFor({ ok: true, result: [] });
    const ac = new AbortController();
    await new PowerShellRunner(raw, { timeoutMs: 60_000 }).run('x', script, { signal: ac.signal });
    expect(raw.calls[0]!.opts).toEqual({ allowExitCodes: [1], timeoutMs: 60_000, signal: ac.signal });
  });

  it('ignores lines before the envelope (warnings a cmdlet printed) and CLIXML progress on stderr', async () => {
    const raw = new FakeRaw({
      stdout: `WARNING: something\r\n{"not":"it"}\r\n${envelopeLine({ ok: true, result: ['x'] })}\r\n\r\n`,
      stderr: fixture('clixml-stderr.json').progress as string,
    });
    await expect(new PowerShellRunner(raw).run('x', script)).resolves.toEqual(['x']);
  });

  it("reads Windows PowerShell 5.1's {value, Count} arrays", async () => {
    const raw = fakeFor({ ok: true, result: { value: [1, 2], Count: 2 } });
    await expect(new PowerShellRunner(raw).run('x', script)).resolves.toEqual([1, 2]);
  });

  it('maps { ok: false } to a PowerShellError with the error id, category and message', async () => {
    const raw = fakeFor(fixture('error-import-vm.json'));
    const e = await rejection(new PowerShellRunner(raw).run('importVm', script));
    expect(e).toBeInstanceOf(PowerShellError);
    const p = e as PowerShellError;
    expect(p.reason).toBe('CommandFailed');
    expect(p.kind).toBe('transient');
    expect(p.errorId).toBe('Microsoft.HyperV.PowerShell.Commands.ImportVMCommand');
    expect(p.category).toBe('NotSpecified');
    expect(p.exceptionType).toBe('Microsoft.HyperV.PowerShell.VirtualizationOperationFailedException');
    expect(p.exitCode).toBe(1);
    expect(p.command).toEqual(['ssh:admin@hv1', 'powershell', 'importVm']);
    expect(p.message).toContain('Unable to import virtual machine due to configuration errors.');
  });

  it("splits the error id from the cmdlet's type name, and takes the scripts' own ids as they are", async () => {
    const own = await rejection(
      new PowerShellRunner(fakeFor(fixture('error-vm-not-found.json'))).run('x', script),
    );
    expect((own as PowerShellError).errorId).toBe('VmNotFound');
    expect((own as PowerShellError).category).toBe('ObjectNotFound');
    const cmdlet = await rejection(
      new PowerShellRunner(
        fakeFor({
          ok: false,
          error: {
            type: 'System.Management.Automation.ItemNotFoundException',
            message: "Cannot find path 'D:\\x.vhdx' because it does not exist.",
            category: 'ObjectNotFound',
            id: 'PathNotFound,Microsoft.Vhd.PowerShell.Cmdlets.GetVHD',
          },
        }),
      ).run('getVhd', getVhd('D:\\x.vhdx')),
    );
    expect((cmdlet as PowerShellError).errorId).toBe('PathNotFound');
    expect((cmdlet as PowerShellError).fullyQualifiedErrorId).toBe(
      'PathNotFound,Microsoft.Vhd.PowerShell.Cmdlets.GetVHD',
    );
  });

  it('never puts the encoded command or a secret in an error', async () => {
    const raw = fakeFor({
      ok: false,
      error: { type: 'X', message: 'connect failed: password=hunter2', category: 'ConnectionError', id: 'E' },
    });
    const e = await rejection(new PowerShellRunner(raw).run('moveVm', script));
    const encoded = raw.calls[0]!.line.split(' ').pop()!;
    for (const text of [e.message, e.stderr, ...e.command]) {
      expect(text).not.toContain(encoded.slice(0, 40));
      expect(text).not.toContain('hunter2');
      expect(text).not.toContain('Get-VM');
    }
  });

  it('reads the CLIXML stderr of a PowerShell that exited without an envelope', async () => {
    const raw = new FakeRaw({
      stdout: '',
      stderr: fixture('clixml-stderr.json').errorLines as string,
      exitCode: 1,
    });
    const e = await rejection(new PowerShellRunner(raw).run('getVm', script));
    expect(e.reason).toBe('CommandFailed');
    expect(e.stderr).toContain("Missing closing '}' in statement block or type definition.");
    expect(e.stderr).toContain('WARNING: the <disk> is busy');
    expect(e.stderr).not.toContain('CLIXML');
    expect(e.stderr).not.toContain('_x000D_');
  });

  it.each([
    ['no JSON at all', 'hello\r\n'],
    ['truncated JSON', '{"ok":true,"result":[{"a"'],
    ['a JSON line without ok', '{"result":[]}'],
  ])('calls a successful exit with %s UnexpectedOutput', async (_what, stdout) => {
    const e = await rejection(new PowerShellRunner(new FakeRaw({ stdout, exitCode: 0 })).run('x', script));
    expect(e.reason).toBe('UnexpectedOutput');
    expect(e.command).toEqual(['ssh:admin@hv1', 'powershell', 'x']);
  });

  it.each([
    ['result not an array', { ok: true, result: 5 }],
    ['result an object', { ok: true, result: { a: 1 } }],
    ['ok neither true nor false', { ok: 'yes', result: [] }],
    ['no error object', { ok: false }],
  ])('refuses a malformed envelope (%s) as UnexpectedOutput', async (_what, envelope) => {
    const raw = new FakeRaw({ stdout: envelopeLine(envelope), exitCode: 0 });
    const e = await rejection(new PowerShellRunner(raw).run('x', script));
    expect(e.reason).toBe('UnexpectedOutput');
    expect(e).not.toBeInstanceOf(PowerShellError);
  });

  it("renames the transport's error after the operation, keeping its reason and reading its stderr", async () => {
    const long = powershellCommandLine(script);
    const cause = new CommandError(
      'CommandTimedOut',
      ['ssh:admin@hv1', 'powershell.exe', '[5000 chars]'],
      null,
      `timed out after 10 ms; ${fixture('clixml-stderr.json').error as string}`,
    );
    const e = await rejection(new PowerShellRunner(new FakeRaw(cause)).run('saveVm', script));
    expect(e.reason).toBe('CommandTimedOut');
    expect(e.command).toEqual(['ssh:admin@hv1', 'powershell', 'saveVm']);
    expect(e.stderr).toContain('Write-Error: boomed');
    expect(e.message).not.toContain(long.slice(-40));
  });

  it('refuses a script too long for one command line before anything runs', async () => {
    const raw = fakeFor({ ok: true, result: [] });
    await expect(new PowerShellRunner(raw).run('x', 'x'.repeat(4000))).rejects.toThrow(StalledError);
    expect(raw.calls).toHaveLength(0);
  });
});

describe('readClixml', () => {
  const samples = fixture('clixml-stderr.json');

  it('drops progress records', () => {
    expect(readClixml(samples.progress as string)).toBe('');
  });

  it('decodes error strings, _xHHHH_ escapes and colour codes', () => {
    expect(readClixml(samples.error as string)).toBe('Write-Error: boomed');
  });

  it('keeps plain text around the XML and returns text without CLIXML as it is', () => {
    expect(readClixml(`ssh: warning\r\n${samples.progress as string}`)).toBe('ssh: warning');
    expect(readClixml('  plain error \n')).toBe('plain error');
  });
});

describe('unwrapArray', () => {
  it.each([
    [[1], [1]],
    [null, []],
    [{ value: [1], Count: 1 }, [1]],
    [{ value: [1], Count: 1, extra: true }, undefined],
    [{ a: 1 }, undefined],
    ['x', undefined],
  ])('%j -> %j', (input, out) => {
    expect(unwrapArray(input)).toEqual(out);
  });
});
