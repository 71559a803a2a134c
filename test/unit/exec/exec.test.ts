import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { CommandError, StalledError } from '../../../src/errors';
import {
  LocalExec,
  RAW_COMMAND_LINE,
  SshExec,
  checkRawCommandLine,
  childEnv,
  libvirtUriWithSsh,
  quoteShellArgs,
  runProcess,
  shellQuote,
  sshOptions,
  sshWrapperScript,
} from '../../../src/exec/exec';
import { hopSshOptions } from '../../../src/transfer/between-hosts';

const HOSTILE = [
  '$(rm -rf /)',
  '`id`',
  'a;b',
  'a && b || c',
  "it's",
  "''",
  "'",
  '"double"',
  'back\\slash',
  'line1\nline2',
  '-rf',
  '--',
  '',
  ' lead and trail ',
  '*',
  '~root',
  '$HOME ${PATH}',
  'tab\there',
  '!event',
  '#comment',
  'ünïcødé',
  '> /tmp/x',
];

describe('shellQuote', () => {
  it.each([
    ['plain', "'plain'"],
    ['', "''"],
    ["it's", "'it'\\''s'"],
    ['$(rm -rf /)', "'$(rm -rf /)'"],
    ['-rf', "'-rf'"],
  ])('quotes %j as %s', (input, expected) => {
    expect(shellQuote(input)).toBe(expected);
  });

  it('refuses NUL bytes', () => {
    expect(() => shellQuote('a\0b')).toThrow(TypeError);
  });

  it('quotes every argument, even safe ones', () => {
    expect(quoteShellArgs(['ls', '-l', '/tmp'])).toBe("'ls' '-l' '/tmp'");
  });

  it('round-trips hostile arguments through a real POSIX shell byte for byte', async () => {
    const cmd = quoteShellArgs(['printf', '%s\\0', ...HOSTILE]);
    for (const shell of ['/bin/sh', '/bin/bash']) {
      const r = await runProcess([shell, '-c', cmd]);
      expect(r.stdout.split('\0').slice(0, -1)).toEqual(HOSTILE);
    }
  });
});

describe('runProcess / LocalExec', () => {
  const exec = new LocalExec();

  it('passes argv without a shell', async () => {
    const r = await exec.run(['printf', '%s|', '$(echo no)', 'a;b']);
    expect(r.stdout).toBe('$(echo no)|a;b|');
    expect(r.exitCode).toBe(0);
  });

  it('feeds stdin', async () => {
    const r = await exec.run(['cat'], { input: 'hello\n' });
    expect(r.stdout).toBe('hello\n');
  });

  it('accepts allowed exit codes', async () => {
    const r = await exec.run(['sh', '-c', 'exit 3'], { allowExitCodes: [3] });
    expect(r.exitCode).toBe(3);
  });

  it('turns failure into CommandError with argv, exit code and redacted stderr', async () => {
    const err = await exec
      .run(['sh', '-c', 'echo "boom password=hunter2 token=abc" >&2; exit 4', 'x', 'secret=s3'])
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandError);
    const ce = err as CommandError;
    expect(ce.reason).toBe('CommandFailed');
    expect(ce.exitCode).toBe(4);
    expect(ce.stderr).toContain('boom');
    expect(ce.stderr).not.toContain('hunter2');
    expect(ce.stderr).not.toContain('abc');
    expect(ce.message).not.toContain('hunter2');
    expect(ce.command).toContain('secret=[REDACTED]');
    expect(ce.kind).toBe('transient');
  });

  it('reports a missing program as CommandNotFound', async () => {
    const err = (await exec.run(['/nonexistent/prog']).catch((e: unknown) => e)) as CommandError;
    expect(err).toBeInstanceOf(CommandError);
    expect(err.reason).toBe('CommandNotFound');
    expect(err.exitCode).toBeNull();
  });

  it('kills a command that runs past its timeout', async () => {
    const t0 = Date.now();
    const err = (await exec
      .run(['sleep', '10'], { timeoutMs: 200 })
      .catch((e: unknown) => e)) as CommandError;
    expect(err.reason).toBe('CommandTimedOut');
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it('does not fail when the child ignores stdin', async () => {
    const r = await exec.run(['true'], { input: Buffer.alloc(1024 * 1024) });
    expect(r.exitCode).toBe(0);
  });
});

describe('ssh options', () => {
  const spec = {
    host: 'hv1.example',
    user: 'root',
    port: 2222,
    identityFile: '/keys/id_ed25519',
    knownHostsFile: '/keys/known_hosts',
  };

  it('checks host keys, never prompts, reuses connections', () => {
    const o = sshOptions(spec, '/run/x/%C').join(' ');
    expect(o).toContain('-o BatchMode=yes');
    expect(o).toContain('-o StrictHostKeyChecking=yes');
    expect(o).toContain('-o UserKnownHostsFile=/keys/known_hosts');
    expect(o).toContain('-i /keys/id_ed25519 -o IdentitiesOnly=yes');
    expect(o).toContain('-o ControlMaster=auto -o ControlPath=/run/x/%C -o ControlPersist=60s');
    expect(o).toContain('-o ConnectTimeout=10');
    expect(o).toContain('-o ServerAliveInterval=15');
    expect(o).toContain('-p 2222');
    expect(o).toContain('-l root');
  });

  it('reads no ssh configuration and uses or forwards no agent (hops too)', () => {
    for (const o of [sshOptions(spec, '/run/x/%C'), hopSshOptions(spec)]) {
      expect(o.slice(0, 2)).toEqual(['-F', '/dev/null']);
      const t = o.join(' ');
      for (const want of [
        'ForwardAgent=no',
        'IdentityAgent=none',
        'ForwardX11=no',
        'ClearAllForwardings=yes',
      ])
        expect(t).toContain(`-o ${want}`);
    }
    expect(hopSshOptions(spec).join(' ')).not.toContain('ControlMaster');
  });

  it('starts children without the ssh agent in their environment', async () => {
    const env = childEnv({ PATH: '/bin', SSH_AUTH_SOCK: '/tmp/agent.1', SSH_AGENT_PID: '1' });
    expect(env).toEqual({ PATH: '/bin' });
    const saved = process.env.SSH_AUTH_SOCK;
    process.env.SSH_AUTH_SOCK = '/tmp/vmplace-test-agent';
    try {
      const r = await runProcess(['sh', '-c', 'echo "[${SSH_AUTH_SOCK-unset}]"']);
      expect(r.stdout).toBe('[unset]\n');
    } finally {
      if (saved === undefined) delete process.env.SSH_AUTH_SOCK;
      else process.env.SSH_AUTH_SOCK = saved;
    }
  });

  it('omits options that are not given', () => {
    const o = sshOptions({ host: 'h' }, '/c/%C');
    expect(o).not.toContain('-i');
    expect(o).not.toContain('-p');
    expect(o).not.toContain('-l');
    expect(o.join(' ')).not.toContain('UserKnownHostsFile');
  });

  it('builds argv: options, --, host, one quoted remote command', async () => {
    const ssh = new SshExec(spec);
    try {
      const argv = ssh.sshArgv(['rm', '-f', '--', "/srv/it's here"]);
      expect(argv[0]).toBe('ssh');
      const dd = argv.indexOf('--');
      expect(argv[dd + 1]).toBe('hv1.example');
      expect(argv[dd + 2]).toBe("'rm' '-f' '--' '/srv/it'\\''s here'");
      expect(argv).toHaveLength(dd + 3);
      expect(ssh.label).toBe('root@hv1.example:2222');
      expect(ssh.controlPath.endsWith('/%C')).toBe(true);
      expect(statSync(ssh.controlPath.slice(0, -3)).mode & 0o777).toBe(0o700);
    } finally {
      await ssh.close();
    }
  });

  it('refuses hosts and users that ssh would read as options', () => {
    expect(() => new SshExec({ host: '-oProxyCommand=evil' })).toThrow(TypeError);
    expect(() => new SshExec({ host: 'h', user: '-x' })).toThrow(TypeError);
  });

  it('writes a private ssh wrapper for libvirt', async () => {
    const ssh = new SshExec(spec);
    try {
      const path = ssh.libvirtSshCommand();
      expect(statSync(path).mode & 0o777).toBe(0o700);
      const text = readFileSync(path, 'utf8');
      expect(text).toContain("'StrictHostKeyChecking=yes'");
      expect(text.trimEnd().endsWith('"$@"')).toBe(true);
    } finally {
      await ssh.close();
    }
  });

  it('wrapper passes its arguments through verbatim', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmp-wrap-'));
    try {
      // 'printf' stands in for ssh: its first option is the format, the rest are libvirt's args
      const path = join(dir, 'w');
      writeFileSync(path, sshWrapperScript(['%s|'], 'printf'), { mode: 0o700 });
      const r = await runProcess([path, 'x', 'y z', '$(q)', "it's"]);
      expect(r.stdout).toBe("x|y z|$(q)|it's|");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('SshExec.runRaw (Windows hosts: no POSIX quoting)', () => {
  const b64 = `${'QQBCAEMA'.repeat(20)}==`;
  const line = `powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand ${b64}`;

  it('accepts tokens of letters, digits and .+/=- separated by single spaces', () => {
    expect(line).toMatch(RAW_COMMAND_LINE);
    expect(() => checkRawCommandLine(line)).not.toThrow();
  });

  it.each([
    ['a single quote', "powershell.exe -Command 'x'"],
    ['a double quote', 'powershell.exe -Command "x"'],
    ['&', 'powershell.exe & calc.exe'],
    ['&&', 'a && b'],
    ['|', 'powershell.exe | more'],
    ['a newline', 'powershell.exe\ncalc.exe'],
    ['a carriage return', 'powershell.exe\rcalc.exe'],
    ['^', 'a^b'],
    ['%VAR%', 'a %PATH%'],
    ['<', 'a < b'],
    ['>', 'a > b'],
    [';', 'a;b'],
    ['$', 'a $x'],
    ['a backtick', 'a `b'],
    ['a tab', 'a\tb'],
    ['two spaces', 'a  b'],
    ['a leading space', ' a'],
    ['a trailing space', 'a '],
    ['nothing', ''],
    ['a Unicode dash', 'a –b'],
  ])('refuses %s', (_what, bad) => {
    expect(() => checkRawCommandLine(bad)).toThrow(StalledError);
    expect(() => checkRawCommandLine(bad)).toThrow(expect.objectContaining({ reason: 'UnsafeCommandLine' }));
  });

  it('refuses before starting ssh', async () => {
    const ssh = new SshExec({ host: 'hv1' }, { sshBinary: '/nonexistent/ssh' });
    try {
      await expect(ssh.runRaw('a & b')).rejects.toThrow(
        expect.objectContaining({ reason: 'UnsafeCommandLine' }),
      );
    } finally {
      await ssh.close();
    }
  });

  it('passes the line unquoted as the one remote command, with the same ssh options as run', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmp-raw-'));
    const fakeSsh = join(dir, 'ssh');
    writeFileSync(fakeSsh, '#!/bin/sh\nprintf \'%s\\0\' "$@"\n', { mode: 0o700 });
    const ssh = new SshExec({ host: 'hv1.example', user: 'admin' }, { sshBinary: fakeSsh });
    try {
      const r = await ssh.runRaw(line);
      const argv = r.stdout.split('\0').slice(0, -1);
      expect(argv.slice(-4)).toEqual(['-T', '--', 'hv1.example', line]);
      expect(argv.slice(0, -4)).toEqual(ssh.options());
    } finally {
      await ssh.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('names a failed command by its tokens, an encoded script by its length only', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmp-raw-'));
    const fakeSsh = join(dir, 'ssh');
    writeFileSync(fakeSsh, '#!/bin/sh\necho "#< CLIXML" >&2\nexit 3\n', { mode: 0o700 });
    const ssh = new SshExec({ host: 'hv1' }, { sshBinary: fakeSsh });
    try {
      const e = (await ssh.runRaw(line).catch((err: unknown) => err)) as CommandError;
      expect(e).toBeInstanceOf(CommandError);
      expect(e.exitCode).toBe(3);
      expect(e.command).toEqual([
        'ssh:hv1',
        'powershell.exe',
        '-NoProfile',
        '-NonInteractive',
        '-ExecutionPolicy',
        'Bypass',
        '-EncodedCommand',
        `[${b64.length} chars]`,
      ]);
      expect(e.message).not.toContain(b64);
    } finally {
      await ssh.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('libvirtUriWithSsh', () => {
  const ssh = {
    host: 'hv1',
    user: 'root',
    port: 2222,
    identityFile: '/k/id',
    knownHostsFile: '/k/known hosts',
  };

  it('adds keyfile, known_hosts, no_verify=0, no_tty=1, user and port to qemu+ssh', () => {
    const u = new URL(libvirtUriWithSsh('qemu+ssh://hv1/system', ssh, { command: '/tmp/w/libvirt-ssh' }));
    expect(u.protocol).toBe('qemu+ssh:');
    expect(u.username).toBe('root');
    expect(u.port).toBe('2222');
    expect(u.pathname).toBe('/system');
    expect(u.searchParams.get('keyfile')).toBe('/k/id');
    expect(u.searchParams.get('known_hosts')).toBe('/k/known hosts');
    expect(u.searchParams.get('no_verify')).toBe('0');
    expect(u.searchParams.get('no_tty')).toBe('1');
    expect(u.searchParams.get('command')).toBe('/tmp/w/libvirt-ssh');
  });

  it('keeps user and port from the URI, and never a parameter of it', () => {
    const u = new URL(libvirtUriWithSsh('qemu+ssh://admin@hv1:2222/system', { ...ssh, user: 'admin' }));
    expect(u.username).toBe('admin');
    expect(u.port).toBe('2222');
    expect([...u.searchParams.keys()]).toEqual(['keyfile', 'known_hosts', 'no_verify', 'no_tty']);
  });

  it('percent-encodes its own values, so a path cannot add a parameter', () => {
    const u = libvirtUriWithSsh('qemu+ssh://hv1/system', { ...ssh, identityFile: '/k/a&command=/x+y' });
    expect(u).toContain('keyfile=%2Fk%2Fa%26command%3D%2Fx%2By&');
    expect(new URL(u).searchParams.getAll('command')).toEqual([]);
  });

  it('brackets an IPv6 ssh host', () => {
    const u = libvirtUriWithSsh('qemu:///system', { host: 'fe80::1', port: 22 });
    expect(u.startsWith('qemu+ssh://[fe80::1]:22/system?')).toBe(true);
    expect(new URL(u).hostname).toBe('[fe80::1]');
    const v = libvirtUriWithSsh('qemu+ssh://root@[2001:db8::1]/system', { host: '2001:db8:0::1' });
    expect(v.startsWith('qemu+ssh://root@[2001:db8:0::1]/system?')).toBe(true);
  });

  it('turns a local URI into qemu+ssh to the ssh host', () => {
    const u = new URL(libvirtUriWithSsh('qemu:///system', { host: '10.0.0.5' }));
    expect(`${u.protocol}//${u.host}${u.pathname}`).toBe('qemu+ssh://10.0.0.5/system');
  });

  it("gives this machine's URI without ssh", () => {
    expect(libvirtUriWithSsh('qemu:///system', undefined)).toBe('qemu:///system');
  });

  it.each([
    ['qemu+tls://hv1/system', ssh],
    ['qemu+tcp://hv1/system', ssh],
    ['qemu+ssh://hv1/system?command=/tmp/evil', ssh],
    ['qemu+ssh://hv1/system?%63ommand=/tmp/evil', ssh],
    ['qemu+ssh://hv1/system', undefined],
    ['qemu+ssh://hv2/system', ssh],
  ] as const)('refuses %s (ssh given: %p) with UnsafeHostUri', (uri, s) => {
    expect(() => libvirtUriWithSsh(uri, s)).toThrow(expect.objectContaining({ reason: 'UnsafeHostUri' }));
  });

  it('never echoes a password', () => {
    let message = '';
    try {
      libvirtUriWithSsh('qemu+ssh://u:s3cr3t@hv1/system', ssh);
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toContain('u:[REDACTED]@hv1');
    expect(message).not.toContain('s3cr3t');
  });

  it('rejects garbage', () => {
    expect(() => libvirtUriWithSsh('not a uri', ssh)).toThrow(
      expect.objectContaining({ reason: 'UnsafeHostUri' }),
    );
  });
});
