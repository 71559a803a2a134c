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
 * Verification: sha256 on both hosts (`openssl dgst`, else `sha256sum`). The source is hashed
 * through read() while the data travels (it does not change while it is copied); a fresh part
 * file is read back and hashed on the target while it is written (`follow-hash.ts`: its data
 * only, its holes as zeros, where the host has perl), a resumed one through read() after the
 * copy. Then one command on the target: `sync` the part, sha256 of it (only when the
 * read-back digest is missing or differs) compared with the source's, a link to DST that
 * never replaces anything, `sync` the directory. A file named DST is always complete and
 * verified.
 * Idempotent: a DST that already matches returns `alreadyDone`; a DST that differs is not
 * overwritten (`DestinationDiffers`, stalled).
 *
 * **A growing source** (`sourceGrows`, the memory state being saved inside a VM's pause): the
 * file is streamed to the part while it is written (stream-growing.ts), both digests computed once
 * it is complete, then the same finish. Anything but equal digests hands the part to rsync above,
 * which sends only what differs.
 */
import { StalledError, VmplaceError } from '../errors';
import type { HostExec, ProgressFn } from '../exec/types';
import type { SshSpec } from '../types';
import { type CopyClaim, PART_SUFFIX, createExclusive, ownsPath, sha256 } from './copy-local';
import { finishOnTarget, statAllocation, statSizes, targetReachable } from './host-files';
import { followHash } from './follow-hash';
import { copyRelay } from './relay';
import { type DaemonChannel, daemonLifeSec, openDaemon } from './rsync-daemon';
import { DEFAULT_IO_TIMEOUT_SEC, copyDirect } from './rsync-direct';
import { openHopMaster } from './ssh-master';
import { copyByStream } from './stream-growing';
import { localArgv } from './spawn-stream';

export { hopSshOptions, rsyncArgv } from './rsync-direct';
export { statAllocation, statSizes, targetReachable } from './host-files';

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
  /**
   * `tcp`: in `direct` mode, send the data unencrypted through a one-shot rsync daemon on the
   * target (rsync-daemon.ts; verified as ever), falling back to ssh when that fails. Default `ssh`.
   */
  channel?: 'ssh' | 'tcp';
  /**
   * The source is still being written (a memory state being saved): the copy does what it can
   * at once (the guard, the look at the target, the tcp channel's daemon, or through ssh the
   * connection from the source host to the target: ssh-master.ts) and reads the source only
   * once this resolves; it fails with its reason when it rejects.
   */
  sourceReady?: Promise<unknown>;
  /**
   * With `sourceReady`: the source is written from its start on while `sourceReady` is pending
   * and may be read meanwhile (a memory state being saved). Through ssh, `direct`, verified and
   * without a `claim`, it is then streamed to the target as it grows (stream-growing.ts); the
   * digests of both files decide, and anything else falls back to the usual copy.
   */
  sourceGrows?: boolean;
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
  /** `tcp` when the data went through the rsync daemon (`channel: 'tcp'`), else `ssh` */
  channel?: 'ssh' | 'tcp';
  /** why `channel: 'tcp'` was asked for but the data went through ssh (no secret in it) */
  channelFallback?: string;
  /** true when the data crossed while the source was being written (`sourceGrows`) */
  streamed?: boolean;
  /** why `sourceGrows` was given but the usual copy ran (or finished the stream's part) */
  streamFallback?: string;
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

const SPARSE_HOLES_MIN = 64 * 1024 * 1024;

/**
 * Lifetime of a daemon, or of an ssh master's idle wait, opened before the source's size is
 * known (`sourceReady`): enough for a memory state of a few GiB; a bigger file gets a daemon of
 * its own (`daemonLifeSec`), and rsync's ssh connects on its own once a master has gone.
 */
const EARLY_LIFE_SEC = 600;

/**
 * Smallest file whose target hash runs while it is copied: below it a second command on the
 * target costs more than hashing after the copy (1 MiB: 1124 against 648 ms, median of 5 with
 * and without it). Everything copied inside a pause is smaller.
 */
const FOLLOW_MIN_BYTES = 256 * 1024 * 1024;

/**
 * Copy `src` on `srcHost` to `dst` on `dstHost`: sparse, resumable, with progress, verified on
 * both hosts and atomic by rename (see the file comment for how). The caller checks that `dst`
 * lies inside a declared storage location of the target and that its directory exists, or
 * passes that check as `guard`, run beside the first look at both hosts and awaited before
 * anything is written.
 *
 * Round trips (each host command over ssh costs one): sizes on both hosts and the guard at
 * once; the copy, with the source's sha256 and the target's read-back computed alongside it;
 * then one command on the target that flushes, compares, renames and flushes the directory.
 * Through the tcp channel, the daemon's start before the copy and its stop beside the finish;
 * with `sourceReady`, the target's look and the daemon's start (through ssh: the ssh connection
 * from the source host to the target) run while the source is still being written, so only the
 * source's size, the push and the finish remain after it.
 */
export const copyBetweenHosts: CopyBetweenHosts = async (srcHost, dstHost, src, dst, opts) => {
  const t0 = Date.now();
  for (const p of [src, dst])
    if (!p.startsWith('/'))
      throw new TypeError(`copyBetweenHosts: path ${JSON.stringify(p)} is not absolute`);
  const verify = opts.verify ?? true;
  const part = `${dst}${PART_SUFFIX}`;

  const guarded = Promise.resolve(opts.guard?.());
  guarded.catch(() => undefined); // awaited below
  // Daemons of the tcp channel opened by this copy: each stopped once the data is in, and by
  // the `finally` below on every other way out
  const daemons: Promise<DaemonChannel | undefined>[] = [];
  const stopDaemons = (): Promise<unknown> =>
    Promise.all(
      daemons.map((d) =>
        d.then(
          (ch) => ch?.stop(),
          () => undefined,
        ),
      ),
    );
  const wantTcp = opts.channel === 'tcp' && opts.mode !== 'relay' && opts.targetSsh !== undefined;
  let earlyFailed: string | undefined;
  // the source is still being written: its daemon starts now (once the guard has passed: nothing
  // is written on the target before), out of the time the copy itself takes
  const early =
    wantTcp && opts.sourceReady
      ? guarded
          .then(() => openDaemon(dstHost, part, { address: opts.targetSsh!.host, lifeSec: EARLY_LIFE_SEC }))
          .catch((err: unknown) => {
            earlyFailed = err instanceof Error ? err.message : String(err);
            return undefined;
          })
      : undefined;
  if (early) daemons.push(early);
  // the source is still being written and goes through ssh, host to host
  const earlySsh =
    opts.sourceReady !== undefined &&
    opts.targetSsh !== undefined &&
    opts.mode !== 'relay' &&
    opts.channel !== 'tcp';
  // a growing source is streamed while it is written (its own connection opens now)
  const streaming = earlySsh && opts.sourceGrows === true && verify && opts.claim === undefined;
  // otherwise the connection from the source host to the target opens now (ssh-master.ts)
  const master =
    earlySsh && !streaming
      ? guarded
          .then(() => openHopMaster(srcHost, src, opts.targetSsh!, EARLY_LIFE_SEC))
          .catch(() => undefined)
      : undefined;
  const stopMaster = (): Promise<unknown> => Promise.resolve(master?.then((m) => m?.stop()));
  let streamFallback: string | undefined;
  if (streaming) {
    const r = await copyByStream(srcHost, dstHost, src, dst, opts, guarded, t0);
    if ('bytes' in r) return r;
    streamFallback = r.fallback;
  }
  try {
    const [srcStat, [dstSize, partSize], reachable] = await Promise.all([
      Promise.resolve(opts.sourceReady).then(() => statAllocation(srcHost, src)),
      statSizes(dstHost, [dst, part]),
      opts.mode === 'auto'
        ? opts.targetSsh
          ? targetReachable(srcHost, opts.targetSsh)
          : Promise.reject(new TypeError('copyBetweenHosts: mode auto needs targetSsh'))
        : Promise.resolve(opts.mode !== 'relay'),
      guarded,
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
    // overlay): hash it while the data travels instead of after; a fresh part is read back and
    // hashed on the target as it is written (see follow-hash.ts)
    const srcDigest = verify ? sha256(srcHost, src) : undefined;
    srcDigest?.catch(() => undefined); // awaited below; never an unhandled rejection meanwhile
    const follower =
      verify && resumedFrom === 0 && total >= FOLLOW_MIN_BYTES
        ? followHash(dstHost, part, total, (opts.ioTimeoutSec ?? DEFAULT_IO_TIMEOUT_SEC) + 10)
        : undefined;
    let sent: { literal: number; wire: number };
    let channelFallback: string | undefined;
    let channel: 'ssh' | 'tcp' = 'ssh';
    try {
      const fast =
        mode === 'direct' && wantTcp
          ? await (async () => {
              let ch = await early;
              // opened for a file of unknown size: too short-lived for this one, a fresh one
              if (ch && ch.endsAt - Date.now() < daemonLifeSec(total) * 1000) {
                await ch.stop();
                ch = undefined;
              }
              if (!ch) {
                const opening = openDaemon(dstHost, part, {
                  address: opts.targetSsh!.host,
                  lifeSec: daemonLifeSec(total),
                });
                daemons.push(opening.catch(() => undefined));
                ch = await opening;
              }
              try {
                return await ch.push(srcHost, src, total, {
                  ...(opts.ioTimeoutSec ? { ioTimeoutSec: opts.ioTimeoutSec } : {}),
                  ...(opts.bwlimitKiBps ? { bwlimitKiBps: opts.bwlimitKiBps } : {}),
                  ...(opts.signal ? { signal: opts.signal } : {}),
                });
              } catch (err) {
                await ch.stop(); // before anything else writes the part
                throw err;
              }
            })().catch((err: unknown) => {
              if (opts.signal?.aborted) throw err;
              // through ssh then; the part keeps what arrived, rsync sends only what differs
              channelFallback = err instanceof Error ? err.message : String(err);
              if (earlyFailed !== undefined && earlyFailed !== channelFallback)
                channelFallback = `${earlyFailed}; then ${channelFallback}`;
              return undefined;
            })
          : undefined;
      if (fast) channel = 'tcp';
      sent =
        fast ??
        (mode === 'direct'
          ? await copyDirect(srcHost, src, part, total, {
              ...opts,
              compress: sparse,
              ...(await Promise.resolve(master).then((m) => (m ? { controlPath: m.path } : {}))),
            })
          : await copyRelay(srcHost, dstHost, src, part, resumedFrom, total, opts).then((n) => ({
              literal: n,
              wire: n,
            })));
    } catch (err) {
      follower?.stop();
      throw err;
    }

    const [digest, readBack] = await Promise.all([srcDigest, follower?.digest()]);
    // read back equal already: the finish only flushes and renames; otherwise it hashes the part
    // the data is in: the daemon stops while the target finishes (one round trip for both)
    const [finished] = await Promise.all([
      finishOnTarget(dstHost, part, dst, readBack === digest ? undefined : digest),
      stopDaemons(),
      stopMaster(),
    ]);
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
      ...(mode === 'direct' ? { channel } : {}),
      ...(channelFallback !== undefined ? { channelFallback } : {}),
      ...(streamFallback !== undefined ? { streamFallback } : {}),
    };
    if (digest !== undefined) result.sha256 = digest;
    return result;
  } finally {
    await Promise.all([stopDaemons(), stopMaster()]);
  }
};
