/**
 * The direct copy between hosts: rsync on the source host pushes the file to the target over
 * ssh (the options and why: see the file comment of `between-hosts.ts`), its progress parsed
 * as it streams.
 */
import { CommandError, StalledError, VmplaceError } from '../errors';
import type { HostExec, ProgressFn } from '../exec/types';
import { quoteShellArgs, sshOptions } from '../exec/exec';
import type { SshSpec } from '../types';
import { RsyncProgressParser, sentBytes } from './rsync-progress';
import { runStreaming } from './spawn-stream';

export const DEFAULT_IO_TIMEOUT_SEC = 60;

/**
 * ssh options the source host uses to reach the target (for rsync `-e`): the same as every
 * other ssh of vmplace ({@link sshOptions}: no configuration file, no agent, host keys checked),
 * without connection reuse.
 */
export function hopSshOptions(spec: SshSpec): string[] {
  return sshOptions(spec);
}

/**
 * Cipher preference of the copy's ssh, host to host: OpenSSH's own default set (9.x), AES-GCM
 * first. With AES instructions (every x86 server CPU since 2010, ARMv8 with its crypto
 * extension) AES-GCM costs less CPU per byte than the default first choice,
 * chacha20-poly1305: here a 1 GiB rsync took 4.6–4.8 s with it against 5.2–5.6 s. A server
 * that refuses AES-GCM still agrees on one of the others.
 */
export const COPY_CIPHERS =
  'aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr';

/**
 * ssh options that make a copy's ssh run over the connection whose control socket is `path`
 * (ssh-master.ts); without the socket it connects on its own, as ever.
 */
export function viaMaster(path: string): string[] {
  return ['-o', `ControlPath=${path}`, '-o', 'ControlMaster=no'];
}

/**
 * rsync and the options every copy of vmplace's between hosts gives it (see the file comment of
 * `between-hosts.ts`): in place, sparse, never skipped by the quick check, the remote path inside
 * rsync's protocol, permissions kept, statistics printed.
 */
export const RSYNC_COPY = [
  'env',
  'LC_ALL=C',
  'rsync',
  '--inplace',
  '--sparse',
  '--ignore-times',
  '-s',
  '--perms',
  '--stats',
] as const;

/**
 * The argv the source host runs for a direct copy (pure). rsync splits its `-e` value itself,
 * honouring single quotes but not the `'\''` idiom, so values containing `'` are refused.
 */
export function rsyncArgv(
  src: string,
  part: string,
  target: SshSpec,
  opts: { bwlimitKiBps?: number; ioTimeoutSec?: number; compress?: boolean; controlPath?: string } = {},
): string[] {
  if (!target.host || target.host.startsWith('-') || /[\s@/]/.test(target.host))
    throw new TypeError(`bad target host ${JSON.stringify(target.host)}`);
  // over an ssh connection already open from the source host (ssh-master.ts), when given
  const hop = [...hopSshOptions(target), ...(opts.controlPath ? viaMaster(opts.controlPath) : [])];
  if (hop.some((a) => a.includes("'")))
    throw new TypeError("target ssh options must not contain a single quote (rsync's -e splitting)");
  const host = target.host.includes(':') ? `[${target.host}]` : target.host;
  return [
    ...RSYNC_COPY,
    '--info=progress2',
    `--timeout=${Math.max(1, Math.floor(opts.ioTimeoutSec ?? DEFAULT_IO_TIMEOUT_SEC))}`,
    ...(opts.bwlimitKiBps !== undefined ? [`--bwlimit=${Math.max(1, Math.floor(opts.bwlimitKiBps))}`] : []),
    // rsync's sender reads and sends a hole as zeros: compressed, a run of zeros is almost nothing
    ...(opts.compress ? ['--compress', '--compress-choice=zstd', '--compress-level=1'] : []),
    '-e',
    quoteShellArgs(['ssh', ...hop, '-o', `Ciphers=${COPY_CIPHERS}`]),
    '--',
    src,
    `${host}:${part}`,
  ];
}

/** ssh's own words when the target's host key is unknown or changed: needs a human, no retry. */
function isHostKeyFailure(stderr: string): boolean {
  return /Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|No [A-Za-z0-9-]+ host key is known/.test(
    stderr,
  );
}

/**
 * rsync `src` on `srcHost` into `part` on the target (`opts.targetSsh`); resolves with the file
 * data sent (`literal`) and the bytes put on the link (`wire`).
 */
export async function copyDirect(
  srcHost: HostExec,
  src: string,
  part: string,
  total: number,
  opts: {
    targetSsh?: SshSpec;
    onProgress?: ProgressFn;
    signal?: AbortSignal;
    bwlimitKiBps?: number;
    ioTimeoutSec?: number;
    compress?: boolean;
    /** the control socket of an ssh connection to the target already open (ssh-master.ts) */
    controlPath?: string;
  },
): Promise<{ literal: number; wire: number }> {
  if (!opts.targetSsh) throw new TypeError('copyBetweenHosts: mode direct needs targetSsh');
  const argv = rsyncArgv(src, part, opts.targetSsh, opts);
  const parser = new RsyncProgressParser((p) => opts.onProgress?.(Math.min(p.bytes, total), total));
  try {
    await runStreaming(srcHost, argv, (c) => parser.push(c), opts.signal);
  } catch (err) {
    if (err instanceof CommandError && isHostKeyFailure(err.stderr)) {
      throw new StalledError(
        'TargetHostKeyMismatch',
        `${srcHost.label} does not know the host key of ${opts.targetSsh.host} (or it changed): ${err.stderr}`,
        { cause: err },
      );
    }
    throw new VmplaceError(
      'TransferFailed',
      `rsync ${src} from ${srcHost.label} to ${opts.targetSsh.host} failed`,
      {
        cause: err,
      },
    );
  }
  parser.end();
  return sentBytes(parser.rest, total);
}
