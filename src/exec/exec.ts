/**
 * Running programs on a host: locally (`LocalExec`) or through OpenSSH (`SshExec`).
 *
 * Both take an argument vector and never hand a command line to a local shell. Over ssh the
 * remote side always runs a shell (that is how OpenSSH works), so `SshExec` quotes every
 * argument with POSIX single quotes in {@link quoteShellArgs}; the remote login shell must be
 * POSIX-compatible (sh, bash, dash, zsh, ksh — not csh/tcsh or fish). For hosts whose ssh server
 * runs commands through cmd.exe or PowerShell (Windows), `SshExec.runRaw` sends a line that needs
 * no quoting at all (see {@link RAW_COMMAND_LINE}).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { CommandError, StalledError } from '../errors';
import { checkUriAgainstSsh, parseConnectionUri, redactUri } from '../connection-uri';
import type { SshSpec } from '../types';
import type { HostExec } from './types';

/** Options accepted by `HostExec.run`, plus the additive `onStdout` used for progress parsing. */
export interface RunOptions {
  input?: string | Buffer;
  timeoutMs?: number;
  allowExitCodes?: number[];
  /**
   * Aborting kills the process (SIGTERM, then SIGKILL after a grace) and rejects with
   * `CommandError('CommandAborted')`. Over ssh this ends the local client; the caller undoes
   * what the remote side may have left (a block job, a part file), because it knows what it is.
   */
  signal?: AbortSignal;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

/** Largest stdout or stderr kept per command; more is an error (64 MiB covers any virsh XML). */
export const MAX_OUTPUT_BYTES = 64 * 1024 * 1024;
/** Grace between SIGTERM and SIGKILL when a command times out. */
const KILL_GRACE_MS = 2000;

/**
 * Spawn `argv[0]` with `argv.slice(1)` (no shell), feed `input`, collect output, and turn any
 * failure into a `CommandError` whose `command` is `displayArgv` (defaults to `argv`) with
 * secrets removed.
 */
export function runProcess(
  argv: readonly string[],
  opts: RunOptions = {},
  displayArgv: readonly string[] = argv,
): Promise<RunResult> {
  const [file, ...args] = argv;
  if (file === undefined) return Promise.reject(new TypeError('runProcess: empty argv'));
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'], env: childEnv() });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outLen = 0;
    let errLen = 0;
    let overflow = false;
    let timedOut = false;
    let settled = false;
    let killTimer: NodeJS.Timeout | undefined;
    let aborted = false;
    const onAbort = (): void => {
      if (settled || aborted) return;
      aborted = true;
      child.kill('SIGTERM');
      killTimer = setTimeout(() => child.kill('SIGKILL'), KILL_GRACE_MS);
    };
    if (opts.signal?.aborted) queueMicrotask(onAbort);
    else opts.signal?.addEventListener('abort', onAbort, { once: true });
    const timer =
      opts.timeoutMs !== undefined && opts.timeoutMs > 0
        ? setTimeout(() => {
            timedOut = true;
            child.kill('SIGTERM');
            killTimer = setTimeout(() => child.kill('SIGKILL'), KILL_GRACE_MS);
          }, opts.timeoutMs)
        : undefined;
    const finish = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      opts.signal?.removeEventListener('abort', onAbort);
      if (timer) clearTimeout(timer);
      if (killTimer) clearTimeout(killTimer);
      fn();
    };
    child.stdout.on('data', (b: Buffer) => {
      outLen += b.length;
      if (outLen > MAX_OUTPUT_BYTES) {
        overflow = true;
        child.kill('SIGKILL');
        return;
      }
      out.push(b);
    });
    child.stderr.on('data', (b: Buffer) => {
      errLen += b.length;
      // keep the head of stderr only; it is for error messages
      if (errLen <= 1024 * 1024) err.push(b);
    });
    child.on('error', (e: NodeJS.ErrnoException) => {
      finish(() =>
        reject(
          new CommandError(
            e.code === 'ENOENT' ? 'CommandNotFound' : 'CommandSpawnFailed',
            displayArgv,
            null,
            e.message,
            { cause: e },
          ),
        ),
      );
    });
    child.on('close', (code, signal) => {
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8');
      finish(() => {
        if (aborted) {
          reject(new CommandError('CommandAborted', displayArgv, code, `aborted; ${stderr}`));
        } else if (timedOut) {
          reject(
            new CommandError(
              'CommandTimedOut',
              displayArgv,
              code,
              `timed out after ${opts.timeoutMs} ms; ${stderr}`,
            ),
          );
        } else if (overflow) {
          reject(
            new CommandError(
              'CommandOutputTooLarge',
              displayArgv,
              code,
              `stdout over ${MAX_OUTPUT_BYTES} bytes`,
            ),
          );
        } else if (code === null) {
          reject(new CommandError('CommandKilled', displayArgv, null, `killed by ${signal}; ${stderr}`));
        } else if (code !== 0 && !(opts.allowExitCodes ?? []).includes(code)) {
          reject(new CommandError('CommandFailed', displayArgv, code, stderr));
        } else {
          resolve({ stdout, stderr, exitCode: code });
        }
      });
    });
    // a child that exits without reading stdin makes write() fail with EPIPE; that is not our error
    child.stdin.on('error', () => undefined);
    if (opts.input !== undefined) child.stdin.end(opts.input);
    else child.stdin.end();
  });
}

/** Runs programs on the machine vmplace itself runs on. */
export class LocalExec implements HostExec {
  readonly label = 'local';
  run(argv: readonly string[], opts?: RunOptions): Promise<RunResult> {
    return runProcess(argv, opts);
  }
  async close(): Promise<void> {}
}

// ---------------------------------------------------------------- quoting

/**
 * Quote one argument for a POSIX shell: wrap in single quotes, and write each `'` as `'\''`.
 * Inside single quotes nothing is special (no `$`, backtick, `\`, newline or glob handling),
 * so the remote shell passes the exact bytes through. The empty string becomes `''`.
 */
export function shellQuote(arg: string): string {
  if (arg.includes('\0')) throw new TypeError('shellQuote: argument contains a NUL byte');
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** The one remote command line built from an argv: every argument quoted, even "safe" ones. */
export function quoteShellArgs(argv: readonly string[]): string {
  if (argv.length === 0) throw new TypeError('quoteShellArgs: empty argv');
  return argv.map(shellQuote).join(' ');
}

/**
 * A remote command line that needs no quoting in any shell an ssh server may hand it to (a POSIX
 * shell, cmd.exe, PowerShell): tokens of ASCII letters, digits and `.+/=-`, separated by single
 * spaces. None of these characters is special to any of them (no quote, `$`, `%`, `^`, `&`, `|`,
 * `;`, `<`, `>`, backtick, glob or newline), so the line arrives as it was sent.
 */
export const RAW_COMMAND_LINE = /^[A-Za-z0-9.+/=-]+(?: [A-Za-z0-9.+/=-]+)*$/;

/** Throws `StalledError('UnsafeCommandLine')` unless `line` matches {@link RAW_COMMAND_LINE}. */
export function checkRawCommandLine(line: string): void {
  if (!RAW_COMMAND_LINE.test(line)) {
    throw new StalledError(
      'UnsafeCommandLine',
      'refusing a raw remote command line with a character other than letters, digits, ".+/=-" and single spaces',
    );
  }
}

/** The tokens of a raw command line for error messages, those over 40 characters (an encoded script) shown as their length. */
function rawDisplayTokens(line: string): string[] {
  return line.split(' ').map((t) => (t.length > 40 ? `[${t.length} chars]` : t));
}

// ---------------------------------------------------------------- ssh

export interface SshExecOptions {
  /** seconds; default 10 */
  connectTimeoutSec?: number;
  /** seconds; default 15 (with ServerAliveCountMax 3: a dead peer is noticed in ~45 s) */
  serverAliveIntervalSec?: number;
  /** how long an idle master connection stays; default `60s` */
  controlPersist?: string;
  /** the ssh client binary; default `ssh` */
  sshBinary?: string;
  /** directory for the ControlPath socket; default a fresh private (0700) temp dir */
  controlDir?: string;
}

/**
 * The options of every ssh vmplace runs (to hosts, host to host for copies, and libvirt's
 * transport through its wrapper), in a stable order; `controlPath` adds connection reuse.
 * - No configuration is read (`-F /dev/null`): neither the user's `~/.ssh/config` nor
 *   `ssh_config` can add `ForwardAgent`, a `ProxyCommand`, `LocalCommand` or another identity;
 * - no agent is used or forwarded (`IdentityAgent=none`, `ForwardAgent=no`), no X11, no port
 *   forwardings: a compromised host gets nothing of the management box's keys;
 * - host keys are always checked (`StrictHostKeyChecking=yes`) and no prompt can hang us
 *   (`BatchMode=yes`).
 * Without `identityFile`, ssh's default key files (`~/.ssh/id_*`) are still tried.
 */
export function sshOptions(spec: SshSpec, controlPath?: string, opts: SshExecOptions = {}): string[] {
  const o: string[] = [
    '-F',
    '/dev/null',
    '-o',
    'BatchMode=yes',
    '-o',
    'StrictHostKeyChecking=yes',
    '-o',
    `ConnectTimeout=${opts.connectTimeoutSec ?? 10}`,
    '-o',
    `ServerAliveInterval=${opts.serverAliveIntervalSec ?? 15}`,
    '-o',
    'ServerAliveCountMax=3',
    '-o',
    'ForwardAgent=no',
    '-o',
    'IdentityAgent=none',
    '-o',
    'ForwardX11=no',
    '-o',
    'ClearAllForwardings=yes',
    '-o',
    'PermitLocalCommand=no',
  ];
  if (controlPath !== undefined) {
    o.push(
      '-o',
      'ControlMaster=auto',
      '-o',
      `ControlPath=${controlPath}`,
      '-o',
      `ControlPersist=${opts.controlPersist ?? '60s'}`,
    );
  }
  if (spec.knownHostsFile) o.push('-o', `UserKnownHostsFile=${spec.knownHostsFile}`);
  if (spec.identityFile) o.push('-i', spec.identityFile, '-o', 'IdentitiesOnly=yes');
  if (spec.port !== undefined) o.push('-p', String(spec.port));
  if (spec.user) o.push('-l', spec.user);
  return o;
}

/**
 * The environment of every program vmplace starts: its own, without the ssh agent
 * (`SSH_AUTH_SOCK`, `SSH_AGENT_PID`), so neither ssh nor rsync nor libvirt's transport can use
 * or forward the operator's agent.
 */
export function childEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const out = { ...env };
  delete out.SSH_AUTH_SOCK;
  delete out.SSH_AGENT_PID;
  return out;
}

/**
 * Runs programs on a remote host through OpenSSH with connection reuse (ControlMaster). The
 * first command opens the master connection; later ones reuse it (a few ms instead of a
 * handshake). `close()` ends the master.
 */
export class SshExec implements HostExec {
  readonly label: string;
  readonly spec: SshSpec;
  /** `%C` expands to a hash of local host, remote host, port and user: one socket per target */
  readonly controlPath: string;
  private readonly controlDir: string;
  private readonly ownsControlDir: boolean;
  private readonly opts: SshExecOptions;

  constructor(spec: SshSpec, opts: SshExecOptions = {}) {
    if (!spec.host || spec.host.startsWith('-'))
      throw new TypeError(`SshExec: bad host ${JSON.stringify(spec.host)}`);
    if (spec.user?.startsWith('-')) throw new TypeError(`SshExec: bad user ${JSON.stringify(spec.user)}`);
    this.spec = spec;
    this.opts = opts;
    this.label = `${spec.user ? `${spec.user}@` : ''}${spec.host}${spec.port !== undefined ? `:${spec.port}` : ''}`;
    this.ownsControlDir = opts.controlDir === undefined;
    // short base path: unix socket paths are limited to ~108 bytes and %C is 40 hex chars
    this.controlDir = opts.controlDir ?? mkdtempSync(join(tmpdir(), 'vmplace-ssh-'));
    this.controlPath = join(this.controlDir, '%C');
  }

  /** The full local argv that runs `argv` on the remote host. */
  sshArgv(argv: readonly string[]): string[] {
    return [
      this.opts.sshBinary ?? 'ssh',
      ...sshOptions(this.spec, this.controlPath, this.opts),
      '-T',
      '--',
      this.spec.host,
      quoteShellArgs(argv),
    ];
  }

  /** ssh options without the binary, host or command: for rsync `-e` and libvirt's transport */
  options(): string[] {
    return sshOptions(this.spec, this.controlPath, this.opts);
  }

  /**
   * Path of an executable ssh wrapper (in the private control dir) that adds this host's
   * options; give it to libvirt as `command=` so its qemu+ssh transport shares the master
   * connection and the host-key policy. Written on first use.
   */
  libvirtSshCommand(): string {
    const path = join(this.controlDir, 'libvirt-ssh');
    if (!existsSync(path)) {
      writeFileSync(path, sshWrapperScript(this.options(), this.opts.sshBinary), { mode: 0o700 });
    }
    return path;
  }

  run(argv: readonly string[], opts?: RunOptions): Promise<RunResult> {
    // errors name the remote command (what failed), prefixed by where it ran
    return runProcess(this.sshArgv(argv), opts, [`ssh:${this.label}`, ...argv]);
  }

  /**
   * Run `commandLine` on the remote host as it is, without {@link quoteShellArgs}: for ssh servers
   * whose shell is not POSIX (Windows' OpenSSH hands the line to cmd.exe, or PowerShell), where
   * POSIX single quotes mean nothing. Only a line of {@link RAW_COMMAND_LINE} is accepted, which
   * every shell passes through unchanged; anything else is refused before ssh starts
   * (`StalledError('UnsafeCommandLine')`). Same ssh options as {@link run}: host key checked, no
   * configuration file, no agent. Errors show the line's tokens with long ones (an encoded
   * script) replaced by their length.
   */
  async runRaw(commandLine: string, opts?: RunOptions): Promise<RunResult> {
    checkRawCommandLine(commandLine);
    return runProcess(
      [
        this.opts.sshBinary ?? 'ssh',
        ...sshOptions(this.spec, this.controlPath, this.opts),
        '-T',
        '--',
        this.spec.host,
        commandLine,
      ],
      opts,
      [`ssh:${this.label}`, ...rawDisplayTokens(commandLine)],
    );
  }

  async close(): Promise<void> {
    try {
      await runProcess(
        [
          this.opts.sshBinary ?? 'ssh',
          '-F',
          '/dev/null',
          '-o',
          `ControlPath=${this.controlPath}`,
          ...(this.spec.port !== undefined ? ['-p', String(this.spec.port)] : []),
          ...(this.spec.user ? ['-l', this.spec.user] : []),
          '-O',
          'exit',
          '--',
          this.spec.host,
        ],
        { timeoutMs: 10_000, allowExitCodes: [255] },
      );
    } catch {
      // no master running: nothing to close
    }
    if (this.ownsControlDir) rmSync(this.controlDir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- libvirt URIs

/**
 * The URI handed to `virsh -c`, built by vmplace from the parsed parts of the manifest's URI and
 * the host's `ssh:`; nothing of the manifest string is passed through. The manifest URI must be
 * one {@link parseConnectionUri} accepts (no query, no password, `qemu` or `qemu+ssh` only) and
 * fit `ssh` ({@link checkUriAgainstSsh}); else `StalledError('UnsafeHostUri')` without the
 * password. Results:
 * - no `ssh`: `qemu:///system` (or `/session`), this machine's libvirt;
 * - with `ssh`: `qemu+ssh://[user@]SSH_HOST[:port]/system?...` (a local URI given with `ssh`
 *   means the host's libvirt reached through ssh). User and port come from the URI, else from
 *   `ssh`; an IPv6 host is bracketed. The query is vmplace's own: `keyfile=` (→ `ssh -i`),
 *   `known_hosts=` (libssh transports), `no_verify=0` (never auto-accept host keys), `no_tty=1`
 *   (never prompt), and `command=` naming an ssh wrapper (see `sshWrapperScript`) that adds the
 *   remaining options of {@link sshOptions} (UserKnownHostsFile, StrictHostKeyChecking, `-F
 *   /dev/null`, no agent, ControlMaster...), for which libvirt's ssh transport has no
 *   parameters. Values are percent-encoded, so a path cannot add a parameter.
 */
export function libvirtUriWithSsh(
  uri: string,
  ssh: SshSpec | undefined,
  opts: { command?: string } = {},
): string {
  const r = parseConnectionUri(uri);
  const refuse = (why: string): never => {
    throw new StalledError('UnsafeHostUri', `libvirt URI ${JSON.stringify(redactUri(uri))} ${why}`);
  };
  if ('why' in r) return refuse(r.why);
  const u = r.parts;
  if (u.scheme !== 'qemu' && u.scheme !== 'qemu+ssh') return refuse(`is not a libvirt URI`);
  if (!ssh) {
    if (u.host) return refuse('names a remote host but the host has no ssh:');
    return `qemu://${u.path}`;
  }
  const why = checkUriAgainstSsh(uri, ssh);
  if (why) return refuse(why);
  if (!ssh.host || ssh.host.startsWith('-')) return refuse(`has a bad ssh host ${JSON.stringify(ssh.host)}`);
  const user = u.user ?? ssh.user;
  const port = u.port ?? ssh.port;
  const host = ssh.host.includes(':') ? `[${ssh.host}]` : ssh.host;
  const params: [string, string][] = [];
  if (ssh.identityFile) params.push(['keyfile', ssh.identityFile]);
  if (ssh.knownHostsFile) params.push(['known_hosts', ssh.knownHostsFile]);
  params.push(['no_verify', '0'], ['no_tty', '1']);
  if (opts.command) params.push(['command', opts.command]);
  const query = params.map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&');
  return `qemu+ssh://${user ? `${user}@` : ''}${host}${port !== undefined ? `:${port}` : ''}${u.path}?${query}`;
}

/**
 * The content of an executable wrapper that runs `ssh` with `options` before libvirt's own
 * arguments; pass its path as `command=` in the URI. Options are quoted like remote args.
 */
export function sshWrapperScript(options: readonly string[], sshBinary = 'ssh'): string {
  return `#!/bin/sh\n# written by vmplace: ssh with the host's options, for libvirt's qemu+ssh transport\nexec ${quoteShellArgs([sshBinary, ...options])} "$@"\n`;
}
