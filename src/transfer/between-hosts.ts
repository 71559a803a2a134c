/**
 * Copying a disk image from one hypervisor host to another, agentless: the hosts need only
 * OpenSSH, rsync and coreutils.
 *
 * **direct** (default): the data flows host to host, never through the management box. Through
 * the source host's `HostExec` (an `SshExec`) this runs, as one argv quoted by `quoteShellArgs`:
 *
 *     env LC_ALL=C rsync --inplace --sparse --ignore-times -s --perms --stats
 *         --info=progress2 --timeout=IO [--bwlimit=K]
 *         -e 'ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=KH
 *             -i KEY -o IdentitiesOnly=yes -p PORT -l USER ...'
 *         -- SRC DSTADDR:DST.vmplace-part
 *
 * - `targetSsh` names how the *source host* reaches the target: address, user, port, and the
 *   paths of its key and known_hosts **on the source host** (provisioned, never auto-accepted:
 *   a wrong host key fails the copy with `StalledError('TargetHostKeyMismatch')`).
 * - `--inplace --sparse` (rsync >= 3.1.3 allows both; Debian 12 ships 3.2.7/3.5.0): holes are
 *   kept on the target, and an interrupted copy leaves its data in `DST.vmplace-part`. A re-run
 *   uses that part file as the basis of rsync's delta transfer, so only what is missing or
 *   different crosses the wire (`bytesSent` in the result); both files are read once more.
 *   Chosen over `--partial` (rebuilds into a second temp file: twice the space) and over
 *   `--append-verify` (sends every byte after the part's length, zeros included, and trusts
 *   an equal-length part). `--ignore-times`: a part file is never skipped by rsync's
 *   size+mtime quick check. `-s` (--protect-args, spelled --secluded-args since 3.2.4): the
 *   remote path is sent inside rsync's protocol, never through the target's shell.
 * - `--timeout` (default 60 s) ends a copy whose link went quiet; rsync exits 30 and the part
 *   file stays for the next run.
 * - `--info=progress2` is parsed as it streams (`rsync-progress.ts`); its byte count is the
 *   position in the file, so a resumed copy's progress jumps over the part it already had.
 *
 * **relay**: for hosts that cannot reach each other. The management box streams the file:
 * `dd` on the source (from the part file's length on) -> this process -> `dd conv=sparse` on
 * the target (all-zero 64 KiB blocks become holes). Resume works the same way (from the part
 * file's length; the final sha256 catches a part that was not a prefix), `bwlimitKiBps` is
 * applied in this process, and the result says `mode: 'relay'`. Every byte, zeros included,
 * crosses the management box's links twice. Needs both execs to be `SshExec` or `LocalExec`.
 *
 * **auto**: probe from the source host whether the target's ssh port accepts a TCP connection
 * (bash's `/dev/tcp`, 5 s): direct when it does, relay when it does not.
 *
 * Finish like `copyLocal`, in one command on the target: `sync` the part, sha256 of it compared
 * with the source's (hashed while the data travelled), `mv -T`, `sync` the directory. A file
 * named DST is always complete and verified.
 * Idempotent: a DST that already matches returns `alreadyDone`; a DST that differs is not
 * overwritten (`DestinationDiffers`, stalled).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { posix } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { CommandError, StalledError, VmplaceError } from '../errors';
import type { HostExec, ProgressFn } from '../exec/types';
import { LocalExec, SshExec, childEnv, quoteShellArgs, sshOptions } from '../exec/exec';
import type { SshSpec } from '../types';
import {
  type CopyClaim,
  LINK_NO_REPLACE,
  PART_SUFFIX,
  createExclusive,
  ownsPath,
  sha256,
} from './copy-local';
import { RsyncProgressParser, parseRsyncStats } from './rsync-progress';

export type TransferMode = 'direct' | 'relay';

export interface CopyBetweenHostsOptions {
  onProgress?: ProgressFn;
  /** KiB/s; rsync `--bwlimit` (direct) or a throttle in this process (relay) */
  bwlimitKiBps?: number;
  /**
   * How the source host reaches the target for `direct` (and the probe of `auto`): address,
   * user, port, and key and known_hosts paths ON THE SOURCE HOST. Not used by `relay`.
   */
  targetSsh?: SshSpec;
  /** default `direct` */
  mode?: TransferMode | 'auto';
  /** seconds without data before rsync gives up (rsync `--timeout`); default 60 */
  ioTimeoutSec?: number;
  /** verify with sha256 on both hosts before the rename; default true */
  verify?: boolean;
  /** aborting kills the transfer; the part file stays for a later resume */
  signal?: AbortSignal;
  /**
   * Files of at most this many bytes go through this process (relay) even in `direct` mode,
   * over the ssh connections it already holds to both hosts: for a file of a few MB a new ssh
   * connection from the source host to the target (rsync's) costs more than the bytes. Used
   * inside a VM's pause. Default 0 (off).
   */
  relayBelowBytes?: number;
  /** ownership proof (see `CopyClaim` in copy-local.ts); without it the part file is created as before */
  claim?: CopyClaim;
  /**
   * The caller's check that `dst` may be written (e.g. a driver's path guard), run beside the
   * first look at both hosts; nothing is written before it resolves.
   */
  guard?: () => Promise<unknown>;
}

export interface CopyBetweenHostsResult {
  /** size of the file */
  bytes: number;
  /** sha256 of the copied content, when verified (or already done) */
  sha256?: string;
  /** true when DST already held an identical copy and nothing was copied */
  alreadyDone: boolean;
  /** how the data went: host to host, or through the management box */
  mode: TransferMode;
  /** length of the part file found on the target at the start; 0 for a fresh copy */
  resumedFromBytes: number;
  /**
   * file data that crossed the wire in this run: rsync's literal data (direct), bytes streamed
   * through this process (relay); 0 when already done
   */
  bytesSent: number;
  /**
   * bytes rsync put on the link (`Total bytes sent`: compressed data, checksums, protocol);
   * equal to `bytesSent` for a relay. A sparse file is sent compressed: holes shrink to little.
   */
  wireBytes: number;
  durationMs: number;
}

export interface CopyBetweenHosts {
  (
    srcHost: HostExec,
    dstHost: HostExec,
    src: string,
    dst: string,
    opts: CopyBetweenHostsOptions,
  ): Promise<CopyBetweenHostsResult>;
}

const DEFAULT_IO_TIMEOUT_SEC = 60;

/**
 * ssh options the source host uses to reach the target (for rsync `-e`): the same as every
 * other ssh of vmplace ({@link sshOptions}: no configuration file, no agent, host keys checked),
 * without connection reuse.
 */
export function hopSshOptions(spec: SshSpec): string[] {
  return sshOptions(spec);
}

/**
 * The argv the source host runs for a direct copy (pure). rsync splits its `-e` value itself,
 * honouring single quotes but not the `'\''` idiom, so values containing `'` are refused.
 */
export function rsyncArgv(
  src: string,
  part: string,
  target: SshSpec,
  opts: { bwlimitKiBps?: number; ioTimeoutSec?: number; compress?: boolean } = {},
): string[] {
  if (!target.host || target.host.startsWith('-') || /[\s@/]/.test(target.host))
    throw new TypeError(`bad target host ${JSON.stringify(target.host)}`);
  const hop = hopSshOptions(target);
  if (hop.some((a) => a.includes("'")))
    throw new TypeError("target ssh options must not contain a single quote (rsync's -e splitting)");
  const host = target.host.includes(':') ? `[${target.host}]` : target.host;
  return [
    'env',
    'LC_ALL=C',
    'rsync',
    '--inplace',
    '--sparse',
    '--ignore-times',
    '-s',
    '--perms',
    '--stats',
    '--info=progress2',
    `--timeout=${Math.max(1, Math.floor(opts.ioTimeoutSec ?? DEFAULT_IO_TIMEOUT_SEC))}`,
    ...(opts.bwlimitKiBps !== undefined ? [`--bwlimit=${Math.max(1, Math.floor(opts.bwlimitKiBps))}`] : []),
    // rsync's sender reads and sends a hole as zeros: compressed, a run of zeros is almost nothing
    ...(opts.compress ? ['--compress', '--compress-choice=zstd', '--compress-level=1'] : []),
    '-e',
    quoteShellArgs(['ssh', ...hop]),
    '--',
    src,
    `${host}:${part}`,
  ];
}

/** The argv to spawn locally for running `argv` through `exec`, when it can be streamed. */
function localArgv(exec: HostExec, argv: readonly string[]): string[] | undefined {
  if (exec instanceof SshExec) return exec.sshArgv(argv);
  if (exec instanceof LocalExec) return [...argv];
  return undefined;
}

function displayArgv(exec: HostExec, argv: readonly string[]): string[] {
  return exec instanceof SshExec ? [`ssh:${exec.label}`, ...argv] : [...argv];
}

interface Spawned {
  child: ChildProcess;
  done: Promise<{ exitCode: number | null; signal: NodeJS.Signals | null; stderr: string }>;
}

function spawnArgv(argv: readonly string[], stdio: ('pipe' | 'ignore')[]): Spawned {
  const [file, ...args] = argv;
  if (file === undefined) throw new TypeError('empty argv');
  const child = spawn(file, args, { stdio: stdio as ['pipe', 'pipe', 'pipe'], env: childEnv() });
  const err: Buffer[] = [];
  let errLen = 0;
  child.stderr?.on('data', (b: Buffer) => {
    errLen += b.length;
    if (errLen <= 256 * 1024) err.push(b);
  });
  const done = new Promise<{ exitCode: number | null; signal: NodeJS.Signals | null; stderr: string }>(
    (resolve, reject) => {
      child.on('error', reject);
      child.on('close', (exitCode, signal) =>
        resolve({ exitCode, signal, stderr: Buffer.concat(err).toString('utf8') }),
      );
    },
  );
  return { child, done };
}

/**
 * Run `argv` on `exec`, passing stdout to `onStdout` as it arrives. Streams for `SshExec` and
 * `LocalExec`; any other `HostExec` runs it with `run()` and hands over stdout at the end.
 */
async function runStreaming(
  exec: HostExec,
  argv: readonly string[],
  onStdout: (chunk: string) => void,
  signal?: AbortSignal,
): Promise<{ exitCode: number; stderr: string }> {
  const local = localArgv(exec, argv);
  if (!local) {
    const r = await exec.run(argv);
    onStdout(r.stdout);
    return { exitCode: r.exitCode, stderr: r.stderr };
  }
  const p = spawnArgv(local, ['ignore', 'pipe', 'pipe']);
  p.child.stdout?.setEncoding('utf8');
  p.child.stdout?.on('data', onStdout);
  const abort = (): void => void p.child.kill('SIGTERM');
  signal?.addEventListener('abort', abort, { once: true });
  try {
    const r = await p.done.catch((e: NodeJS.ErrnoException) => {
      throw new CommandError('CommandSpawnFailed', displayArgv(exec, argv), null, e.message, { cause: e });
    });
    if (r.exitCode === null)
      throw new CommandError(
        'CommandKilled',
        displayArgv(exec, argv),
        null,
        `killed by ${r.signal}; ${r.stderr}`,
      );
    if (r.exitCode !== 0)
      throw new CommandError('CommandFailed', displayArgv(exec, argv), r.exitCode, r.stderr);
    return { exitCode: r.exitCode, stderr: r.stderr };
  } finally {
    signal?.removeEventListener('abort', abort);
  }
}

/** ssh's own words when the target's host key is unknown or changed: needs a human, no retry. */
function isHostKeyFailure(stderr: string): boolean {
  return /Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|No [A-Za-z0-9-]+ host key is known/.test(
    stderr,
  );
}

async function copyDirect(
  srcHost: HostExec,
  src: string,
  part: string,
  total: number,
  opts: CopyBetweenHostsOptions & { compress?: boolean },
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
  const stats = parseRsyncStats(parser.rest);
  const literal = stats.literalBytes ?? stats.bytesSent ?? total;
  return { literal, wire: stats.bytesSent ?? literal };
}

/** Stream `src` from `offset` on through this process into `part` on the target. */
async function copyRelay(
  srcHost: HostExec,
  dstHost: HostExec,
  src: string,
  part: string,
  offset: number,
  total: number,
  opts: CopyBetweenHostsOptions,
): Promise<number> {
  const readArgv = ['dd', `if=${src}`, 'bs=1M', 'iflag=skip_bytes', `skip=${offset}`, 'status=none'];
  const writeArgv = [
    'dd',
    `of=${part}`,
    'bs=64K',
    'iflag=fullblock',
    'oflag=seek_bytes',
    `seek=${offset}`,
    'conv=sparse,notrunc',
    'status=none',
  ];
  const readLocal = localArgv(srcHost, readArgv);
  const writeLocal = localArgv(dstHost, writeArgv);
  if (!readLocal || !writeLocal)
    throw new TypeError('copyBetweenHosts: mode relay needs SshExec or LocalExec on both hosts');
  const reader = spawnArgv(readLocal, ['ignore', 'pipe', 'pipe']);
  const writer = spawnArgv(writeLocal, ['pipe', 'ignore', 'pipe']);
  const kill = (): void => {
    reader.child.kill('SIGTERM');
    writer.child.kill('SIGTERM');
  };
  opts.signal?.addEventListener('abort', kill, { once: true });
  const rate = opts.bwlimitKiBps !== undefined ? Math.max(1, opts.bwlimitKiBps) * 1024 : undefined;
  const t0 = Date.now();
  let sent = 0;
  let lastReport = 0;
  const meter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      sent += chunk.length;
      const now = Date.now();
      if (now - lastReport >= 200) {
        lastReport = now;
        opts.onProgress?.(Math.min(offset + sent, total), total);
      }
      const wait = rate !== undefined ? t0 + (sent / rate) * 1000 - now : 0;
      if (wait > 0) setTimeout(() => cb(null, chunk), wait);
      else cb(null, chunk);
    },
  });
  try {
    const [, r, w] = await Promise.all([
      pipeline(reader.child.stdout!, meter, writer.child.stdin!).catch((e: unknown) => {
        kill();
        throw e;
      }),
      reader.done,
      writer.done,
    ]);
    for (const [res, argv, exec] of [
      [r, readArgv, srcHost],
      [w, writeArgv, dstHost],
    ] as const) {
      if (res.exitCode !== 0)
        throw new CommandError('CommandFailed', displayArgv(exec, argv), res.exitCode, res.stderr);
    }
  } catch (err) {
    kill();
    throw new VmplaceError(
      'TransferFailed',
      `relay of ${src} from ${srcHost.label} to ${dstHost.label} failed`,
      {
        cause: err,
      },
    );
  } finally {
    opts.signal?.removeEventListener('abort', kill);
  }
  return sent;
}

/** From the source host: does the target's ssh port accept a TCP connection within 5 s? */
export async function targetReachable(srcHost: HostExec, target: SshSpec): Promise<boolean> {
  const r = await srcHost.run(
    [
      'timeout',
      '5',
      'bash',
      '-c',
      'exec 3<>"/dev/tcp/$1/$2"',
      'vmplace-probe',
      target.host,
      String(target.port ?? 22),
    ],
    { allowExitCodes: [1, 124], timeoutMs: 30_000 },
  );
  return r.exitCode === 0;
}

const SPARSE_HOLES_MIN = 64 * 1024 * 1024;

/** Apparent size and allocated bytes of a file, or undefined when it does not exist. */
export async function statAllocation(
  exec: HostExec,
  path: string,
): Promise<{ size: number; allocated: number } | undefined> {
  const r = await exec.run(['stat', '-L', '-c', '%s %b %B', '--', path], {
    allowExitCodes: [1],
    timeoutMs: 60_000,
  });
  if (r.exitCode !== 0) return undefined;
  const [size, blocks, unit] = r.stdout.trim().split(/\s+/).map(Number);
  if (![size, blocks, unit].every((n) => Number.isFinite(n)))
    throw new VmplaceError('UnexpectedOutput', `stat printed ${JSON.stringify(r.stdout.slice(0, 200))}`);
  return { size: size!, allocated: blocks! * unit! };
}

/**
 * Sizes of `paths` on `exec` in one round trip (undefined for a missing path). The paths are
 * positional parameters of a fixed script: they are never parsed by a shell.
 */
export async function statSizes(exec: HostExec, paths: readonly string[]): Promise<(number | undefined)[]> {
  const r = await exec.run(
    [
      'sh',
      '-c',
      'for p do if [ -e "$p" ]; then stat -L -c %s -- "$p" || echo -; else echo -; fi; done',
      'vmplace-stat',
      ...paths,
    ],
    { timeoutMs: 60_000 },
  );
  const lines = r.stdout.split('\n').slice(0, paths.length);
  if (lines.length !== paths.length)
    throw new VmplaceError('UnexpectedOutput', `stat printed ${JSON.stringify(r.stdout.slice(0, 200))}`);
  return lines.map((l) => {
    const n = Number(l.trim());
    return l.trim() !== '-' && l.trim() !== '' && Number.isFinite(n) ? n : undefined;
  });
}

/**
 * On the target, after the data arrived, in one round trip: flush the part file, hash it
 * (`openssl dgst -sha256`, else `sha256sum`, when `want` is given) and compare with the source's hash, then rename it
 * to its final name without replacing anything (a hard link, see `LINK_NO_REPLACE`) and flush
 * the directory. A part that does not match is removed. Prints the part's hash (or `-`). Exit
 * codes: 0 done, 3 mismatch, 4 the final name exists, others: the failing command's.
 */
const FINISH_SCRIPT = [
  'part=$1 want=$2 dst=$3 dir=$4',
  'sync -- "$part" || exit $?',
  'got=-',
  'if [ -n "$want" ]; then',
  '  if command -v openssl >/dev/null 2>&1; then got=$(openssl dgst -sha256 -r < "$part") || exit $?',
  '  else got=$(sha256sum < "$part") || exit $?; fi',
  '  got=${got%% *}',
  '  if [ "$got" != "$want" ]; then rm -f -- "$part"; echo "$got"; exit 3; fi',
  'fi',
  LINK_NO_REPLACE,
  'sync -- "$dir" || exit $?',
  'echo "$got"',
].join('\n');

async function finishOnTarget(
  dstHost: HostExec,
  part: string,
  dst: string,
  want: string | undefined,
): Promise<{ mismatch?: string }> {
  const r = await dstHost.run(
    ['sh', '-c', FINISH_SCRIPT, 'vmplace-finish', part, want ?? '', dst, posix.dirname(dst)],
    { allowExitCodes: [3, 4] },
  );
  if (r.exitCode === 4)
    throw new StalledError(
      'DestinationExists',
      `${dst} appeared on ${dstHost.label} during the copy; not replaced`,
    );
  return r.exitCode === 3 ? { mismatch: r.stdout.trim() } : {};
}

/**
 * Copy `src` on `srcHost` to `dst` on `dstHost`: sparse, resumable, with progress, verified on
 * both hosts and atomic by rename (see the file comment for how). The caller checks that `dst`
 * lies inside a declared storage location of the target and that its directory exists, or
 * passes that check as `guard`, run beside the first look at both hosts and awaited before
 * anything is written.
 *
 * Round trips (each host command over ssh costs one): sizes on both hosts and the guard at
 * once; the copy, with the source's sha256 computed alongside it; then one command on the
 * target that flushes, hashes, compares, renames and flushes the directory.
 */
export const copyBetweenHosts: CopyBetweenHosts = async (srcHost, dstHost, src, dst, opts) => {
  const t0 = Date.now();
  for (const p of [src, dst])
    if (!p.startsWith('/'))
      throw new TypeError(`copyBetweenHosts: path ${JSON.stringify(p)} is not absolute`);
  const verify = opts.verify ?? true;
  const part = `${dst}${PART_SUFFIX}`;

  const [srcStat, [dstSize, partSize], reachable] = await Promise.all([
    statAllocation(srcHost, src),
    statSizes(dstHost, [dst, part]),
    opts.mode === 'auto'
      ? opts.targetSsh
        ? targetReachable(srcHost, opts.targetSsh)
        : Promise.reject(new TypeError('copyBetweenHosts: mode auto needs targetSsh'))
      : Promise.resolve(opts.mode !== 'relay'),
    opts.guard?.(),
  ]);
  if (srcStat === undefined)
    throw new StalledError('SourceMissing', `copy source ${src} does not exist on ${srcHost.label}`);
  const total = srcStat.size;
  // at least half holes, and at least 64 MiB of them: worth compressing the zeros away
  const sparse = srcStat.allocated * 2 <= total && total - srcStat.allocated >= SPARSE_HOLES_MIN;
  const small =
    total !== undefined &&
    total <= (opts.relayBelowBytes ?? 0) &&
    localArgv(srcHost, ['true']) !== undefined &&
    localArgv(dstHost, ['true']) !== undefined;
  const mode: TransferMode = reachable && !small ? 'direct' : 'relay';

  if (dstSize !== undefined) {
    if (opts.claim && !(await ownsPath(dstHost, dst, opts.claim)))
      throw new StalledError(
        'DestinationExists',
        `${dst} exists on ${dstHost.label} and was not created by this migration`,
      );
    const [a, b] = await Promise.all([sha256(srcHost, src), sha256(dstHost, dst)]);
    if (a === b) {
      opts.onProgress?.(total, total);
      return {
        bytes: total,
        sha256: a,
        alreadyDone: true,
        mode,
        resumedFromBytes: 0,
        bytesSent: 0,
        wireBytes: 0,
        durationMs: Date.now() - t0,
      };
    }
    throw new StalledError(
      'DestinationDiffers',
      `${dst} on ${dstHost.label} exists and differs from ${src}; not overwriting`,
    );
  }

  let resumedFrom = partSize ?? 0;
  if (opts.claim) {
    if (partSize !== undefined && !(await ownsPath(dstHost, part, opts.claim)))
      throw new StalledError(
        'PartFileNotOwned',
        `${part} exists on ${dstHost.label} and was not created by this migration`,
      );
    if (partSize === undefined) {
      await opts.claim.intend?.();
      await opts.claim.record(await createExclusive(dstHost, part));
    }
  }
  if (resumedFrom > total) {
    // longer than the source: not a prefix of it; start over (in the same file: its identity is recorded)
    await dstHost.run(['truncate', '-s', '0', '--', part]);
    resumedFrom = 0;
  }
  opts.onProgress?.(resumedFrom, total);
  // the source does not change while it is copied (a read-only base, a saved state, a frozen
  // overlay): hash it while the data travels instead of after
  const srcDigest = verify ? sha256(srcHost, src) : undefined;
  srcDigest?.catch(() => undefined); // awaited below; never an unhandled rejection meanwhile
  const sent =
    mode === 'direct'
      ? await copyDirect(srcHost, src, part, total, { ...opts, compress: sparse })
      : await copyRelay(srcHost, dstHost, src, part, resumedFrom, total, opts).then((n) => ({
          literal: n,
          wire: n,
        }));

  const digest = srcDigest ? await srcDigest : undefined;
  const finished = await finishOnTarget(dstHost, part, dst, digest);
  if (finished.mismatch !== undefined) {
    throw new VmplaceError(
      'CopyVerifyFailed',
      `sha256 of ${part} on ${dstHost.label} (${finished.mismatch}) differs from ${src} on ${srcHost.label} (${digest})`,
    );
  }
  opts.onProgress?.(total, total);
  const result: CopyBetweenHostsResult = {
    bytes: total,
    alreadyDone: false,
    mode,
    resumedFromBytes: resumedFrom,
    bytesSent: sent.literal,
    wireBytes: sent.wire,
    durationMs: Date.now() - t0,
  };
  if (digest !== undefined) result.sha256 = digest;
  return result;
};
