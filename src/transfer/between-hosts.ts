/**
 * Copying a disk image from one host to another. DESIGN ONLY — not implemented yet.
 *
 * Plan (TODO): the data flows host to host, never through the management box:
 *
 *   ssh SRC  rsync -a --sparse --partial --partial-dir=.vmplace-partial --info=progress2
 *            [--bwlimit=K] -e 'ssh -o BatchMode=yes -o StrictHostKeyChecking=yes
 *            -o UserKnownHostsFile=KH -i KEY -o IdentitiesOnly=yes -p PORT -l USER'
 *            -- SRCPATH DSTADDR:DST.vmplace-part
 *
 * - run through the source host's `SshExec` (argv quoted by `quoteShellArgs`; the `-e` value
 *   is itself built with `quoteShellArgs` because rsync splits it like a shell would);
 * - `DSTADDR` is the target's `transferAddress`; the source host needs its own key and
 *   known_hosts entry for the target (provisioned, never auto-accepted);
 * - progress: parse `--info=progress2` lines (`  1,073,741,824 100%  928.35MB/s  0:00:01`),
 *   which needs a streaming variant of `HostExec.run` (an `onStdout` callback);
 * - resume: `--partial` keeps the part file; a re-run sends only what is missing (rsync's
 *   delta algorithm reads both sides; add `--append-verify` for pure appends);
 * - finish exactly like `copyLocal`: sync, sha256 on both hosts (in parallel), `mv -T` on the
 *   target, sync the directory.
 */
import type { HostExec, ProgressFn } from '../drivers/driver';
import type { SshSpec } from '../types';

export interface CopyBetweenHostsOptions {
  onProgress?: ProgressFn;
  bwlimitKiBps?: number;
  /** how the source host reaches the target (address, user, key, known_hosts on the SOURCE host) */
  targetSsh: SshSpec;
}

export interface CopyBetweenHosts {
  (
    srcHost: HostExec,
    dstHost: HostExec,
    src: string,
    dst: string,
    opts: CopyBetweenHostsOptions,
  ): Promise<{
    bytes: number;
    sha256: string;
  }>;
}

/** Not implemented yet: see the design note at the top of this file. */
export const copyBetweenHosts: CopyBetweenHosts = async () => {
  throw new Error('copyBetweenHosts is not implemented yet (see src/transfer/between-hosts.ts)');
};
