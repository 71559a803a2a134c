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
 * Every copy goes to `DST.vmplace-part`, is flushed (`sync FILE`), verified against the source,
 * and only then renamed to `DST` (and the directory flushed): a file named `DST` is always
 * complete and verified. Flush, verification, rename and directory flush are one command (one
 * round trip); the verification runs while the flush writes the data back (both read the same
 * page cache; the flush's exit status still decides).
 *
 * Verification compares the two files byte for byte with `qemu-img compare -f raw -F raw`
 * (both taken as plain bytes whatever their format; sizes compared first, since it pads the
 * shorter with zeros): 0.19–0.27 s for that file against 0.7–1.6 s for the sha256 of both
 * (`openssl dgst`, SHA instructions, ~1.6 GB/s: holes are hashed as zeros), because it skips
 * ranges that are holes in both files. It therefore takes the filesystem's word for where the
 * holes are (SEEK_DATA/SEEK_HOLE), as `cp` itself does: a filesystem that reported data as a
 * hole (OpenZFS 2.2.0's dirty-data bug) would fool copy and comparison alike. `hash: true`
 * verifies with sha256 of both files instead, read through read() and independent of the hole
 * map (also the fallback on a host without qemu-img), and is the default: vmplace takes the
 * safe check until the hole map can be trusted per filesystem; `hash: false` opts into the fast one.
 */
import { posix } from 'node:path';

import { ParseError, StalledError, VmplaceError } from '../errors';
import type { HostExec, ProgressFn } from '../exec/types';
import { HAVE_PERL_SH, PERL_READ_FILE } from './hole-reader';

export const PART_SUFFIX = '.vmplace-part';

/**
 * Proof of ownership for a copy's destination. With a claim, the part file is created
 * exclusively (never a file or symlink that was there), its identity (`dev:ino`) is recorded by
 * the caller **before** any data is written into it, and the final name is given by a hard link
 * that fails when anything has the name (no-replace), so the final file keeps that identity. A
 * rollback may then delete the final file only when its identity is the recorded one: never
 * someone else's file that happens to have the name.
 */
export interface CopyClaim {
  /**
   * durable before it resolves: this copy is about to create the file (a crash between the
   * creation and `record` leaves a file the claim may then adopt, see `owns`)
   */
  intend?(): Promise<void>;
  /** durable before it resolves: this copy created the file of this identity */
  record(identity: string): Promise<void>;
  /**
   * was this identity recorded (by this migration, in any run)? May adopt (and record) a file
   * whose creation was intended but whose identity never got recorded.
   */
  owns(identity: string): boolean | Promise<boolean>;
}

/**
 * Create `$2` as a new empty file that nothing else can have been: a fresh `mktemp` file in
 * its directory `$1`, hard-linked to the name (link(2) never replaces anything, a dangling
 * symlink included), then the temp name removed. Prints `dev:ino`. Exit 4: the name exists.
 */
const CREATE_EXCLUSIVE_SCRIPT = [
  'dir=$1 dst=$2',
  't=$(mktemp -p "$dir" .vmplace-new.XXXXXXXX) || exit $?',
  'if ln -T -- "$t" "$dst" 2>/dev/null; then rm -f -- "$t"; exec stat -c %d:%i -- "$dst"; fi',
  'rm -f -- "$t"',
  'if [ -e "$dst" ] || [ -L "$dst" ]; then exit 4; fi',
  'exit 5',
].join('\n');

/**
 * Create `path` exclusively on the host (see {@link CREATE_EXCLUSIVE_SCRIPT}); returns its
 * identity. Throws `StalledError('FileExists')` when anything already has that name.
 */
export async function createExclusive(exec: HostExec, path: string): Promise<string> {
  const r = await exec.run(
    ['sh', '-c', CREATE_EXCLUSIVE_SCRIPT, 'vmplace-create', posix.dirname(path), path],
    {
      allowExitCodes: [4],
      timeoutMs: 60_000,
    },
  );
  if (r.exitCode === 4)
    throw new StalledError(
      'FileExists',
      `${path} exists on ${exec.label}; vmplace writes only files it created`,
    );
  return r.stdout.trim();
}

/** `dev:ino` of `path` itself (a symlink is not followed), or undefined when nothing is there. */
export async function fileIdentity(exec: HostExec, path: string): Promise<string | undefined> {
  const r = await exec.run(['stat', '-c', '%d:%i', '--', path], { allowExitCodes: [1], timeoutMs: 60_000 });
  return r.exitCode === 0 ? r.stdout.trim() : undefined;
}

/**
 * Give the verified part file its final name without ever replacing one: `ln -T` (fails when
 * anything has the name), then the part name is removed and the directory flushed. Exit 4:
 * the name exists. Used by every copy, local and between hosts.
 */
export const LINK_NO_REPLACE = [
  'if ! ln -T -- "$part" "$dst" 2>/dev/null; then',
  '  if [ -e "$dst" ] || [ -L "$dst" ]; then exit 4; fi',
  '  ln -T -- "$part" "$dst" || exit $?',
  'fi',
  'rm -f -- "$part" || exit $?',
].join('\n');

export interface CopyLocalOptions {
  onProgress?: ProgressFn;
  /** KiB/s; uses rsync --bwlimit instead of cp */
  bwlimitKiBps?: number;
  /** how often to poll the destination size; default 500 ms */
  pollMs?: number;
  /** verify the copy against the source before the rename; default true */
  verify?: boolean;
  /**
   * verify by sha256 of both files (read through read(), independent of the filesystem's hole
   * map) instead of `qemu-img compare`; default true: a filesystem that misreports dirty data as
   * a hole (OpenZFS 2.2.0) fools a copy and a comparison that both trust the hole map, not a
   * hash of what read() returns. `false` is ~4x faster on a half-sparse file (bench/NOTES.md).
   */
  hash?: boolean;
  /** ownership proof (see {@link CopyClaim}); without it the part file is created as before */
  claim?: CopyClaim;
  /** aborting kills the copy; the part file stays (the caller owns it) */
  signal?: AbortSignal;
}

export interface CopyLocalResult {
  bytes: number;
  /** sha256 of the copied content, when verified by hashing (see `hash`) */
  sha256?: string;
  /** how the copy was proven equal to the source: byte comparison or sha256 of both; absent when not verified */
  verifiedBy?: 'compare' | 'sha256';
  /** true when `dst` already held an identical copy and nothing was copied */
  alreadyDone: boolean;
  durationMs: number;
}

/** Does the file at `path` have an identity the claim recorded? */
export async function ownsPath(exec: HostExec, path: string, claim: CopyClaim): Promise<boolean> {
  const id = await fileIdentity(exec, path);
  return id !== undefined && (await claim.owns(id));
}

/** The hash in `sha256sum` or `openssl dgst -sha256 -r` output (`HEX  NAME`, `HEX *stdin`). */
export function parseSha256sum(text: string): string {
  const m = text.match(/^\\?([0-9a-f]{64})\s/);
  if (!m) throw new ParseError('sha256sum', JSON.stringify(text.slice(0, 200)));
  return m[1]!;
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
 * Shell function `hasher`: sha256 of standard input, with `openssl dgst` where the host has it
 * (SHA instructions: ~1.4 GB/s here against ~0.42 GB/s for coreutils 9.1's `sha256sum`), else
 * with `sha256sum`. Prints `HEX *stdin` or `HEX  -`.
 */
export const HASHER_SH =
  'hasher() { if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r; else sha256sum; fi; }';

/** sha256 of the file `$1`, read through read() (`hasher` above). */
export const SHA256_SCRIPT = `${HASHER_SH}\nhasher < "$1"`;

export async function sha256(exec: HostExec, path: string): Promise<string> {
  const r = await exec.run(['sh', '-c', SHA256_SCRIPT, 'vmplace-sha256', path]);
  return parseSha256sum(r.stdout);
}

/**
 * Shell function `same A B HASH [FRESH]`: are the files A and B equal, byte for byte? Prints one
 * line, `compare` or `sha256 HEX` when they are, `differs ...` when not (return 1); other returns
 * are errors. With qemu-img (and HASH not 1): sizes, then `qemu-img compare -U -q -f raw -F raw`
 * (-U: no image locks, the files are only read; -f/-F raw: bytes, never a probed format; the
 * paths are absolute, so never read as a protocol). Otherwise sha256 of both, in parallel: A
 * always through read(); B, when FRESH is 1 (a part this copy just wrote into a file it created)
 * and the host has perl, with its holes fed as zeros instead of read (`hole-reader.ts`); a read
 * of B that fails then shows as a difference (the part is removed, the copy fails).
 */
const SAME_FUNCTION = [
  HASHER_SH,
  'sha() { hasher < "$1"; }',
  HAVE_PERL_SH,
  `shafresh() { if haveperl; then perl -e '${PERL_READ_FILE}' -- "$1" | hasher; else sha "$1"; fi; }`,
  'same() {',
  '  if [ "$3" != 1 ] && command -v qemu-img >/dev/null 2>&1; then',
  '    sa=$(stat -L -c %s -- "$1") && sb=$(stat -L -c %s -- "$2") || return 2',
  '    if [ "$sa" != "$sb" ]; then echo "differs: size $sb, not $sa"; return 1; fi',
  '    qemu-img compare -U -q -f raw -F raw "$1" "$2"; r=$?',
  '    case $r in 0) echo compare ;; 1) echo "differs: qemu-img compare" ;; esac',
  '    return $r',
  '  fi',
  '  t=$(mktemp) || return 2',
  '  sha "$1" > "$t" & p=$!',
  '  if [ "$4" = 1 ]; then hb=$(shafresh "$2"); else hb=$(sha "$2"); fi; rb=$?',
  '  wait "$p"; ra=$?',
  '  ha=$(cat -- "$t"); rm -f -- "$t"',
  '  [ "$ra" = 0 ] && [ "$rb" = 0 ] || return 2',
  '  ha=${ha%% *} hb=${hb%% *}',
  '  if [ "$ha" != "$hb" ]; then echo "differs: sha256 $hb, not $ha"; return 1; fi',
  '  echo "sha256 $ha"',
  '}',
].join('\n');

/** What `same` printed for equal files. */
function parseSame(line: string): { verifiedBy: 'compare' | 'sha256'; sha256?: string } {
  const t = line.trim();
  if (t === 'compare') return { verifiedBy: 'compare' };
  const m = /^sha256 \\?([0-9a-f]{64})$/.exec(t);
  if (!m) throw new ParseError('same-content', JSON.stringify(t.slice(0, 200)));
  return { verifiedBy: 'sha256', sha256: m[1]! };
}

/**
 * Are `a` and `b` on the host equal, byte for byte (see {@link SAME_FUNCTION})? One command;
 * `hash` forces sha256 of both. Resolves with how it was proven, or `differs` and what was seen.
 */
export async function sameContent(
  exec: HostExec,
  a: string,
  b: string,
  opts: { hash?: boolean } = {},
): Promise<
  { equal: true; verifiedBy: 'compare' | 'sha256'; sha256?: string } | { equal: false; differs: string }
> {
  const r = await exec.run(
    ['sh', '-c', `${SAME_FUNCTION}\nsame "$1" "$2" "$3"`, 'vmplace-same', a, b, opts.hash ? '1' : '0'],
    { allowExitCodes: [1] },
  );
  if (r.exitCode === 1) return { equal: false, differs: r.stdout.trim() };
  return { equal: true, ...parseSame(r.stdout) };
}

/**
 * The end of a local copy, in one command: flush the part file while it is compared with the
 * source (when `$5` is not `-`: `$6` = 1 for sha256), then give it its final name without
 * replacing anything and flush the directory. A part that differs is removed. Exit codes: 0
 * done (prints how it was verified, or `-`), 3 differs (prints what differed), 4 the final name
 * exists, others: the failing command's.
 */
const LOCAL_FINISH_SCRIPT = [
  SAME_FUNCTION,
  'src=$1 part=$2 dst=$3 dir=$4 verify=$5 hash=$6',
  'sync -- "$part" & flush=$!',
  'how=-',
  'if [ "$verify" = 1 ]; then',
  '  how=$(same "$src" "$part" "$hash" 1); r=$?',
  '  if [ "$r" != 0 ]; then',
  '    wait "$flush"',
  '    if [ "$r" = 1 ]; then rm -f -- "$part"; echo "$how"; exit 3; fi',
  '    exit "$r"',
  '  fi',
  'fi',
  'wait "$flush" || exit $?',
  LINK_NO_REPLACE,
  'sync -- "$dir" || exit $?',
  'echo "$how"',
].join('\n');

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
  for (const p of [src, dst])
    if (!p.startsWith('/')) throw new TypeError(`copyLocal: path ${JSON.stringify(p)} is not absolute`);
  const verify = opts.verify ?? true;
  const part = `${dst}${PART_SUFFIX}`;
  const [total, existing] = await Promise.all([statSize(exec, src), statSize(exec, dst)]);
  if (total === undefined)
    throw new VmplaceError('SourceMissing', `copy source ${src} does not exist`, { kind: 'stalled' });

  if (existing !== undefined) {
    if (opts.claim && !(await ownsPath(exec, dst, opts.claim)))
      throw new StalledError(
        'DestinationExists',
        `${dst} exists on ${exec.label} and was not created by this migration`,
      );
    const same = await sameContent(exec, src, dst, { hash: opts.hash ?? true });
    if (same.equal) {
      await exec.run(['rm', '-f', '--', part]); // a link made, its part name not yet removed
      opts.onProgress?.(total, total);
      const done: CopyLocalResult = {
        bytes: total,
        alreadyDone: true,
        verifiedBy: same.verifiedBy,
        durationMs: Date.now() - t0,
      };
      if (same.sha256 !== undefined) done.sha256 = same.sha256;
      return done;
    }
    throw new VmplaceError('DestinationDiffers', `${dst} exists and differs from ${src}; not overwriting`, {
      kind: 'stalled',
    });
  }

  if (opts.claim) {
    // a part of an interrupted run of ours is ours to remove; anything else there is not
    if ((await fileIdentity(exec, part)) !== undefined) {
      if (!(await ownsPath(exec, part, opts.claim)))
        throw new StalledError(
          'PartFileNotOwned',
          `${part} exists on ${exec.label} and was not created by this migration`,
        );
      await exec.run(['rm', '-f', '--', part]);
    }
    await opts.claim.intend?.();
    await opts.claim.record(await createExclusive(exec, part));
  }
  opts.onProgress?.(0, total);
  const copyArgv =
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
  // without a claim a leftover part goes first, in the same command (the shell becomes the copy)
  const argv = opts.claim
    ? copyArgv
    : ['sh', '-c', 'p=$1; shift; rm -f -- "$p" && exec "$@"', 'vmplace-copy', part, ...copyArgv];

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
    await exec.run(argv, opts.signal ? { signal: opts.signal } : {});
  } finally {
    copying = false;
    wake();
  }
  await poller;
  // flush the data before the rename makes it look finished (verified meanwhile), then rename
  const fin = await exec.run(
    [
      'sh',
      '-c',
      LOCAL_FINISH_SCRIPT,
      'vmplace-finish-local',
      src,
      part,
      dst,
      posix.dirname(dst),
      verify ? '1' : '0',
      (opts.hash ?? true) ? '1' : '0',
    ],
    { allowExitCodes: [3, 4] },
  );
  if (fin.exitCode === 3)
    throw new VmplaceError('CopyVerifyFailed', `${part} differs from ${src} (${fin.stdout.trim()}); removed`);
  if (fin.exitCode === 4)
    throw new StalledError(
      'DestinationExists',
      `${dst} appeared on ${exec.label} during the copy; not replaced`,
    );
  const proof = verify ? parseSame(fin.stdout) : undefined;
  opts.onProgress?.(total, total);
  const result: CopyLocalResult = { bytes: total, alreadyDone: false, durationMs: Date.now() - t0 };
  if (proof) result.verifiedBy = proof.verifiedBy;
  if (proof?.sha256 !== undefined) result.sha256 = proof.sha256;
  return result;
}
