/**
 * Copying a disk image within one host, through that host's `HostExec`.
 *
 * Measured on the lab machine (ext4, 1 GiB file with 512 MiB allocated in 64 MiB runs, page
 * cache warm; three runs): `cp --sparse=auto` 134–458 ms, `cp --sparse=always` 238–1078 ms,
 * `rsync --sparse --whole-file` 1.1–1.5 s, `qemu-img convert -O raw -S 4k` 1.7 s (and it is not
 * byte-identical for qcow2). `cp --sparse=always` is chosen: it keeps holes *and* turns
 * allocated zero runs (preallocated images) into holes, it needs no parsing, and copies at
 * this speed do not need resuming — a restart costs seconds. Progress comes from polling the
 * destination's size with `stat`. With a bandwidth limit `rsync --bwlimit` is used instead
 * (cp has none), with `--inplace` so polling works the same way.
 *
 * Every copy goes to `DST.vmplace-part`, is flushed (`sync FILE`), verified by sha256 against
 * the source, and only then renamed to `DST` (and the directory flushed): a file named `DST`
 * is always complete and verified. Verification reads both files once more, with `openssl dgst
 * -sha256` where installed (0.8–1.4 s per GiB here; coreutils' `sha256sum` 3.0–3.8 s, the
 * fallback); the two sums run in parallel.
 */
import { posix } from 'node:path';

import { VmplaceError } from '../errors';
import type { HostExec, ProgressFn } from '../drivers/driver';
import { parseSha256sum } from '../drivers/libvirt/parsers';

export const PART_SUFFIX = '.vmplace-part';

export interface CopyLocalOptions {
  onProgress?: ProgressFn;
  /** KiB/s; uses rsync --bwlimit instead of cp */
  bwlimitKiBps?: number;
  /** how often to poll the destination size; default 500 ms */
  pollMs?: number;
  /** verify with sha256 of both files before the rename; default true */
  verify?: boolean;
}

export interface CopyLocalResult {
  bytes: number;
  /** sha256 of the copied content, when verified */
  sha256?: string;
  /** true when `dst` already held an identical copy and nothing was copied */
  alreadyDone: boolean;
  durationMs: number;
}

/** Apparent size of a file, or undefined when it does not exist. */
export async function statSize(exec: HostExec, path: string): Promise<number | undefined> {
  const r = await exec.run(['stat', '-L', '-c', '%s', '--', path], {
    allowExitCodes: [1],
    timeoutMs: 60_000,
  });
  if (r.exitCode !== 0) return undefined;
  const n = Number(r.stdout.trim());
  return Number.isFinite(n) ? n : undefined;
}

/**
 * sha256 of a file read from standard input: with `openssl dgst` where the host has it (SHA
 * instructions: ~1.4 GB/s here against ~0.42 GB/s for coreutils 9.1's `sha256sum`), else with
 * `sha256sum`. Prints `HEX *stdin` or `HEX  -`. The path is a positional parameter.
 */
export const SHA256_SCRIPT =
  'if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r < "$1"; else sha256sum < "$1"; fi';

export async function sha256(exec: HostExec, path: string): Promise<string> {
  const r = await exec.run(['sh', '-c', SHA256_SCRIPT, 'vmplace-sha256', path]);
  return parseSha256sum(r.stdout);
}

/**
 * Copy `src` to `dst` on the host `exec` runs on: sparse, with progress, verified, and atomic
 * by rename. Idempotent: when `dst` already exists with the same content it returns at once
 * (`alreadyDone`); when it exists with different content it throws
 * `VmplaceError('DestinationDiffers')` (kind stalled) instead of overwriting. A leftover
 * `DST.vmplace-part` from an interrupted copy is removed and the copy starts over.
 *
 * The caller checks that `dst` lies inside a declared storage location (see `assertInside`).
 */
export async function copyLocal(
  exec: HostExec,
  src: string,
  dst: string,
  opts: CopyLocalOptions = {},
): Promise<CopyLocalResult> {
  const t0 = Date.now();
  const verify = opts.verify ?? true;
  const part = `${dst}${PART_SUFFIX}`;
  const total = await statSize(exec, src);
  if (total === undefined)
    throw new VmplaceError('SourceMissing', `copy source ${src} does not exist`, { kind: 'stalled' });

  const existing = await statSize(exec, dst);
  if (existing !== undefined) {
    const [a, b] = await Promise.all([sha256(exec, src), sha256(exec, dst)]);
    if (a === b) {
      opts.onProgress?.(total, total);
      return { bytes: total, sha256: a, alreadyDone: true, durationMs: Date.now() - t0 };
    }
    throw new VmplaceError('DestinationDiffers', `${dst} exists and differs from ${src}; not overwriting`, {
      kind: 'stalled',
    });
  }

  await exec.run(['rm', '-f', '--', part]);
  opts.onProgress?.(0, total);
  const argv =
    opts.bwlimitKiBps !== undefined
      ? [
          'rsync',
          '--sparse',
          '--inplace',
          '--whole-file',
          `--bwlimit=${Math.max(1, Math.floor(opts.bwlimitKiBps))}`,
          '--',
          src,
          part,
        ]
      : ['cp', '--sparse=always', '--preserve=mode', '--', src, part];

  let copying = true;
  let wake: () => void = () => undefined;
  const poll = async (): Promise<void> => {
    const every = opts.pollMs ?? 500;
    while (copying) {
      // the sleep ends early when the copy ends, so polling never adds to the copy's time
      await new Promise<void>((r) => {
        const t = setTimeout(r, every);
        wake = () => {
          clearTimeout(t);
          r();
        };
      });
      if (!copying || !opts.onProgress) continue;
      try {
        const n = await statSize(exec, part);
        if (copying && n !== undefined) opts.onProgress(Math.min(n, total), total);
      } catch {
        // progress is best effort; the copy itself reports failures
      }
    }
  };
  const poller = poll();
  try {
    await exec.run(argv);
  } finally {
    copying = false;
    wake();
  }
  await poller;
  // flush the data before the rename makes it look finished
  await exec.run(['sync', '--', part]);

  let digest: string | undefined;
  if (verify) {
    const [a, b] = await Promise.all([sha256(exec, src), sha256(exec, part)]);
    if (a !== b) {
      await exec.run(['rm', '-f', '--', part]);
      throw new VmplaceError('CopyVerifyFailed', `sha256 of ${part} (${b}) differs from ${src} (${a})`);
    }
    digest = a;
  }
  await exec.run(['mv', '-f', '-T', '--', part, dst]);
  await exec.run(['sync', '--', posix.dirname(dst)]);
  opts.onProgress?.(total, total);
  const result: CopyLocalResult = { bytes: total, alreadyDone: false, durationMs: Date.now() - t0 };
  if (digest !== undefined) result.sha256 = digest;
  return result;
}
