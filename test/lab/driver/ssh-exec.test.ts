/**
 * SshExec (and LibvirtDriver over qemu+ssh) against a real sshd started by the test on
 * 127.0.0.1 with its own host key, client key and known_hosts.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';

import { CommandError } from '../../../src/errors';
import { SshExec, runProcess } from '../../../src/exec/exec';
import { LibvirtDriver } from '../../../src/drivers/libvirt/driver';
import { ensureLab } from '../../../src/lab';
import { labDescribe } from './skip';

jest.setTimeout(60_000);

const HOSTILE = [
  '$(rm -rf /)',
  '`id`',
  'a;b',
  "it's",
  "'",
  '"q"',
  'line1\nline2',
  '-rf',
  '--',
  '',
  ' sp ',
  '*',
  '$HOME',
  '\\',
  '!x',
  '#c',
];

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

async function waitForPort(port: number, ms: number): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`sshd did not listen on ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

labDescribe()('SshExec against a real sshd', () => {
  let dir: string;
  let port: number;
  let sshd: ChildProcess | undefined;
  let knownHosts: string;
  let wrongKnownHosts: string;
  let identityFile: string;

  beforeAll(async () => {
    dir = mkdtempSync('/tmp/vmp-sshd-');
    port = await freePort();
    const kg = (file: string): void => {
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'vmplace-test', '-f', file]);
    };
    kg(join(dir, 'host_key'));
    kg(join(dir, 'other_host_key'));
    kg(join(dir, 'client_key'));
    identityFile = join(dir, 'client_key');
    writeFileSync(join(dir, 'authorized_keys'), readFileSync(`${identityFile}.pub`));
    const hostPub = readFileSync(join(dir, 'host_key.pub'), 'utf8').split(' ').slice(0, 2).join(' ');
    const otherPub = readFileSync(join(dir, 'other_host_key.pub'), 'utf8').split(' ').slice(0, 2).join(' ');
    knownHosts = join(dir, 'known_hosts');
    wrongKnownHosts = join(dir, 'wrong_known_hosts');
    writeFileSync(knownHosts, `[127.0.0.1]:${port} ${hostPub}\n`);
    writeFileSync(wrongKnownHosts, `[127.0.0.1]:${port} ${otherPub}\n`);
    writeFileSync(
      join(dir, 'sshd_config'),
      [
        `Port ${port}`,
        'ListenAddress 127.0.0.1',
        `HostKey ${join(dir, 'host_key')}`,
        `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
        'PidFile none',
        'UsePAM no',
        'StrictModes no',
        'PermitRootLogin prohibit-password',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'LogLevel ERROR',
        '',
      ].join('\n'),
    );
    if (!existsSync('/run/sshd')) mkdirSync('/run/sshd', { mode: 0o755 });
    sshd = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', join(dir, 'sshd_config')], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    await waitForPort(port, 10_000);
  });

  afterAll(() => {
    if (sshd?.pid !== undefined) sshd.kill('SIGTERM');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const spec = (): {
    host: string;
    port: number;
    identityFile: string;
    knownHostsFile: string;
    user: string;
  } => ({
    host: '127.0.0.1',
    port,
    identityFile,
    knownHostsFile: knownHosts,
    user: 'root',
  });

  it('delivers hostile arguments and stdin verbatim, and reuses one master connection', async () => {
    const ssh = new SshExec(spec());
    try {
      const r = await ssh.run(['printf', '%s\\0', ...HOSTILE]);
      expect(r.stdout.split('\0').slice(0, -1)).toEqual(HOSTILE);
      const c = await ssh.run(['cat'], { input: "stdin $(x) 'y'\n" });
      expect(c.stdout).toBe("stdin $(x) 'y'\n");
      // the master is up: `ssh -O check` answers through the control socket
      const check = await runProcess(['ssh', ...ssh.options(), '-O', 'check', '--', '127.0.0.1'], {
        allowExitCodes: [255],
      });
      expect(check.exitCode).toBe(0);
      const t0 = Date.now();
      for (let i = 0; i < 5; i++) await ssh.run(['true']);
      console.log(`ssh command over a reused connection: ${((Date.now() - t0) / 5).toFixed(1)} ms`);
      // a failing remote command keeps its exit code, and the error names the remote argv
      const err = (await ssh
        .run(['sh', '-c', 'echo token=abc >&2; exit 7'])
        .catch((e: unknown) => e)) as CommandError;
      expect(err).toBeInstanceOf(CommandError);
      expect(err.exitCode).toBe(7);
      expect(err.stderr).toContain('token=[REDACTED]');
      expect(err.command[0]).toBe(`ssh:root@127.0.0.1:${port}`);
    } finally {
      await ssh.close();
    }
    const check = await runProcess(
      ['ssh', '-o', `ControlPath=${ssh.controlPath}`, '-O', 'check', '127.0.0.1'],
      {
        allowExitCodes: [255],
      },
    );
    expect(check.exitCode).toBe(255);
  });

  it('ignores a hostile ssh_config and never forwards the agent (issue 9 item 10)', async () => {
    // an agent with a socket, and an ssh_config that forwards it and runs a local command
    const agentSock = join(dir, 'agent.sock');
    const agent = spawn('ssh-agent', ['-D', '-a', agentSock], { stdio: 'ignore' });
    const ran = join(dir, 'localcommand-ran');
    const hostile = join(dir, 'hostile_ssh_config');
    writeFileSync(
      hostile,
      `Host *\n  ForwardAgent yes\n  PermitLocalCommand yes\n  LocalCommand touch ${ran}\n`,
    );
    // in a private mount namespace, the hostile file is /etc/ssh/ssh_config (nothing else changes)
    const inNamespace = (argv: string[]) =>
      runProcess(
        [
          'unshare',
          '--mount',
          '--propagation',
          'private',
          'sh',
          '-c',
          'mount --bind "$1" /etc/ssh/ssh_config && shift && exec "$@"',
          'sh',
          hostile,
          ...argv,
        ],
        { timeoutMs: 20_000 },
      );
    // runProcess drops SSH_AUTH_SOCK (see childEnv); put it back in the argv's own environment
    const withAgent = (argv: string[]) => ['env', `SSH_AUTH_SOCK=${agentSock}`, ...argv];
    const probe = 'echo "[${SSH_AUTH_SOCK-}]"';
    const ssh = new SshExec(spec());
    try {
      for (let i = 0; i < 50 && !existsSync(agentSock); i++) await new Promise((r) => setTimeout(r, 50));
      // control: plain ssh in that namespace does follow the hostile config
      const plain = await inNamespace(
        withAgent([
          'ssh',
          '-i',
          identityFile,
          '-o',
          `UserKnownHostsFile=${knownHosts}`,
          '-o',
          'BatchMode=yes',
          '-p',
          String(port),
          'root@127.0.0.1',
          probe,
        ]),
      );
      expect(plain.stdout).toMatch(/^\[\/tmp\/ssh-.+\]\n$/);
      expect(existsSync(ran)).toBe(true);
      rmSync(ran);
      // vmplace's ssh: the connection works, no agent on the far side, no local command
      const argv = ssh.sshArgv(['sh', '-c', probe]);
      expect(argv.slice(1, 3)).toEqual(['-F', '/dev/null']);
      const ours = await inNamespace(withAgent(argv));
      expect(ours.stdout).toBe('[]\n');
      expect(existsSync(ran)).toBe(false);
    } finally {
      await ssh.close();
      agent.kill('SIGTERM');
    }
  });

  it('fails when the host key does not match known_hosts', async () => {
    const ssh = new SshExec({ ...spec(), knownHostsFile: wrongKnownHosts });
    try {
      const err = (await ssh.run(['true']).catch((e: unknown) => e)) as CommandError;
      expect(err).toBeInstanceOf(CommandError);
      expect(err.exitCode).toBe(255);
      expect(err.stderr).toMatch(/host key/i);
    } finally {
      await ssh.close();
    }
  });

  it('fails when the host is not in known_hosts at all (never auto-accepts)', async () => {
    const empty = join(dir, 'empty_known_hosts');
    writeFileSync(empty, '');
    const ssh = new SshExec({ ...spec(), knownHostsFile: empty });
    try {
      await expect(ssh.run(['true'])).rejects.toMatchObject({ exitCode: 255 });
      expect(readFileSync(empty, 'utf8')).toBe('');
    } finally {
      await ssh.close();
    }
  });

  it('LibvirtDriver reaches libvirt through qemu+ssh with the same options and connection', async () => {
    await ensureLab();
    const root = mkdtempSync('/var/tmp/vmp-ssh-drv-');
    const drv = new LibvirtDriver(
      'ssh-host',
      { driver: 'libvirt', uri: 'qemu:///system', ssh: spec() },
      { allowedRoots: [root] },
    );
    try {
      expect(drv.uri).toMatch(/^qemu\+ssh:\/\/root@127\.0\.0\.1:\d+\/system\?/);
      expect(drv.uri).toContain('no_verify=0');
      expect(Array.isArray(await drv.listDomains())).toBe(true);
      expect((await drv.hostCpu()).model).toBeTruthy();
      const f = join(root, 'x y');
      writeFileSync(f, 'hello');
      expect(await drv.checksum(f)).toBe('2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824');
      await drv.removeFile(f);
      expect(await drv.fileExists(f)).toBe(false);
      const t0 = Date.now();
      for (let i = 0; i < 3; i++) await drv.listDomains();
      console.log(`virsh list over qemu+ssh with a shared master: ${((Date.now() - t0) / 3).toFixed(0)} ms`);
    } finally {
      await drv.close();
      rmSync(root, { recursive: true, force: true });
    }
  });
});
