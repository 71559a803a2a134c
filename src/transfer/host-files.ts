/**
 * One-round-trip commands about files on a host, used by the copy between hosts: sizes and
 * allocation, whether the target's ssh port is reachable from the source host, and the finish
 * on the target (flush, verify, rename without replacing, flush the directory). Paths are
 * positional parameters of fixed scripts: never parsed by a shell.
 */
import { posix } from 'node:path';

import { StalledError, VmplaceError } from '../errors';
import type { HostExec } from '../exec/types';
import type { SshSpec } from '../types';
import { LINK_NO_REPLACE } from './copy-local';

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
 * On the target, after the data arrived, in one round trip: flush the part file and meanwhile
 * hash it (`openssl dgst -sha256`, else `sha256sum`, when `want` is given) and compare with the
 * source's hash, then (the flush done) rename it to its final name without replacing anything
 * (a hard link, see `LINK_NO_REPLACE`) and flush the directory. A part that does not match is removed. Prints the part's hash (or `-`). Exit
 * codes: 0 done, 3 mismatch, 4 the final name exists, others: the failing command's.
 */
const FINISH_SCRIPT = [
  'part=$1 want=$2 dst=$3 dir=$4',
  // the hash reads the page cache the flush writes back: both at once
  'sync -- "$part" & flush=$!',
  'got=-',
  'if [ -n "$want" ]; then',
  '  if command -v openssl >/dev/null 2>&1; then got=$(openssl dgst -sha256 -r < "$part") || { r=$?; wait "$flush"; exit "$r"; }',
  '  else got=$(sha256sum < "$part") || { r=$?; wait "$flush"; exit "$r"; }; fi',
  '  got=${got%% *}',
  '  if [ "$got" != "$want" ]; then wait "$flush"; rm -f -- "$part"; echo "$got"; exit 3; fi',
  'fi',
  'wait "$flush" || exit $?',
  LINK_NO_REPLACE,
  'sync -- "$dir" || exit $?',
  'echo "$got"',
].join('\n');

export async function finishOnTarget(
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
