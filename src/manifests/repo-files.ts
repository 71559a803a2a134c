/**
 * Reading files out of a repository without trusting them: bounded walking (symlinks that leave
 * the repository, loops, FIFOs and devices are reported and skipped) and bounded reading (size
 * caps, binary and invalid UTF-8 detection). Every failure becomes a {@link Problem}; nothing
 * here throws on bad input. Parsing what was read is `yaml-source.ts`'s job.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Problem } from '../types';

/** Limits that keep hostile repositories from exhausting memory or time. */
export interface ReadLimits {
  /** bytes per file (default 1 MiB) */
  maxFileBytes: number;
  /** YAML files in one load (default 2,000) */
  maxFiles: number;
  /** bytes over all files in one load (default 64 MiB) */
  maxTotalBytes: number;
  /** YAML documents over all files in one load (default 100,000) */
  maxDocuments: number;
  /** alias expansions per document, passed to yaml's `maxAliasCount` (default 100) */
  maxAliasCount: number;
}

export const DEFAULT_LIMITS: ReadLimits = {
  maxFileBytes: 1024 * 1024,
  maxFiles: 2000,
  maxTotalBytes: 64 * 1024 * 1024,
  maxDocuments: 100_000,
  maxAliasCount: 100,
};

/** Directory entries looked at in one walk, and directory depth. */
const MAX_ENTRIES = 200_000;
const MAX_DEPTH = 32;

/** A file read successfully as UTF-8 text. */
export interface SourceFile {
  /** relative to the repository root, forward slashes */
  rel: string;
  text: string;
}

/** Running totals over one load, shared by every file. */
export interface Budget {
  files: number;
  bytes: number;
  documents: number;
  /** problems about the budget itself are reported once */
  exhausted: boolean;
}

export function newBudget(): Budget {
  return { files: 0, bytes: 0, documents: 0, exhausted: false };
}

/** A problem at `file` (line and column 1-based; the file's start unless given). */
export function problem(file: string, message: string, line = 1, col = 1): Problem {
  return { file, line, col, message };
}

function toRel(repoDir: string, abs: string): string {
  return path.relative(repoDir, abs).split(path.sep).join('/');
}

function isInside(root: string, p: string): boolean {
  return p === root || p.startsWith(root.endsWith(path.sep) ? root : root + path.sep);
}

interface WalkOptions {
  recursive: boolean;
  extensions: readonly string[];
}

/**
 * Find and read the YAML files under `repoDir/subdir`, in a stable order (sorted by path).
 * Symbolic links are followed only while they stay inside the repository; each directory and
 * each file is visited once (by real path), so link loops end. Hidden entries (`.name`) are
 * skipped; those a person may have meant to be read (hidden directories, hidden files named like
 * YAML) and files named like YAML in another case or extension (`.YAML`, `.yml` where only
 * `.yaml` is read) are listed in `skipped`, so the caller can say so. Entry types come from the directory listing (no lstat per entry; a symlink still
 * gets its realpath check). Reads use synchronous I/O into one reused buffer: measured on
 * 10,000 status files, a pool of promise-based reads took 3-5 times as long and a callback pool
 * no less than sync reads, and the parse that follows is synchronous anyway.
 *
 * @returns the files read, whether `subdir` exists at all, and what was skipped that looked meant.
 */
export function readYamlFiles(
  repoDir: string,
  subdir: string,
  opts: WalkOptions,
  limits: ReadLimits,
  budget: Budget,
  problems: Problem[],
): { files: SourceFile[]; found: boolean; skipped: SkippedEntry[] } {
  const repoReal = fs.realpathSync(repoDir);
  const files: SourceFile[] = [];
  const skipped: SkippedEntry[] = [];
  const seenDirs = new Set<string>();
  const seenFiles = new Set<string>();
  let entries = 0;

  const start = path.join(repoReal, subdir);
  const startRel = toRel(repoReal, start);
  const startReal = resolveInside(repoReal, start, startRel, problems);
  if (startReal === undefined) return { files, found: false, skipped };
  let startStat: fs.Stats;
  try {
    startStat = fs.statSync(startReal);
  } catch {
    return { files, found: false, skipped };
  }
  if (!startStat.isDirectory()) {
    problems.push(problem(startRel, `${startRel} is not a directory`));
    return { files, found: false, skipped };
  }

  const walk = (absReal: string, rel: string, depth: number): void => {
    if (seenDirs.has(absReal)) return;
    seenDirs.add(absReal);
    if (depth > MAX_DEPTH) {
      problems.push(problem(rel, `directory nesting deeper than ${MAX_DEPTH} levels; skipped`));
      return;
    }
    let dirents: fs.Dirent[];
    try {
      // with file types: one getdents instead of an lstat per entry
      dirents = fs.readdirSync(absReal, { withFileTypes: true });
    } catch (err) {
      problems.push(problem(rel, `cannot read directory: ${(err as NodeJS.ErrnoException).code ?? 'error'}`));
      return;
    }
    dirents.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const dirent of dirents) {
      const name = dirent.name;
      if (name.startsWith('.')) {
        if (dirent.isDirectory() || YAML_LIKE.test(name))
          skipped.push({ rel: `${rel}/${name}`, why: 'hidden' });
        continue;
      }
      if (++entries > MAX_ENTRIES) {
        if (!budget.exhausted)
          problems.push(problem(rel, `more than ${MAX_ENTRIES} directory entries; rest skipped`));
        budget.exhausted = true;
        return;
      }
      const childRel = `${rel}/${name}`;
      // absReal is a real path, already normalised: concatenating is enough (and cheaper)
      const child = absReal.endsWith(path.sep) ? absReal + name : absReal + path.sep + name;
      const isYaml = opts.extensions.some((e) => name.endsWith(e));
      let type = direntType(dirent);
      if (type === undefined) {
        // the file system did not say (DT_UNKNOWN): ask
        try {
          type = statType(fs.lstatSync(child));
        } catch {
          continue;
        }
      }
      let real = child;
      if (type === 'link') {
        if (!isYaml && !opts.recursive) continue;
        const r = resolveInside(repoReal, child, childRel, problems);
        if (r === undefined) continue;
        real = r;
        try {
          type = statType(fs.statSync(real));
        } catch {
          continue;
        }
      }
      if (type === 'dir') {
        if (opts.recursive) walk(real, childRel, depth + 1);
        continue;
      }
      // regular files and anything else named like YAML: readOne refuses what is not a file
      if (!isYaml) {
        if (YAML_LIKE.test(name)) skipped.push({ rel: childRel, why: 'extension' });
        continue;
      }
      if (seenFiles.has(real)) continue;
      seenFiles.add(real);
      const file = readOne(real, childRel, limits, budget, problems);
      if (file) files.push(file);
      if (budget.exhausted) return;
    }
  };
  walk(startReal, startRel, 0);
  files.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
  skipped.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
  return { files, found: true, skipped };
}

/** Names that look like YAML in any case (`.yaml`, `.yml`, `.YAML`, ...). */
const YAML_LIKE = /\.ya?ml$/i;

/** An entry {@link readYamlFiles} did not read though it looks meant to be read. */
export interface SkippedEntry {
  /** relative to the repository root, forward slashes */
  rel: string;
  /** `hidden`: its name starts with a dot; `extension`: not one of the extensions read (case matters) */
  why: 'hidden' | 'extension';
}

/**
 * Read one file at `rel` (forward slashes) the way manifests and status files are read: a link
 * is followed only while it stays inside the repository, the file must be a regular file (a
 * FIFO, a device, a directory are refused at once: opened with `O_NONBLOCK|O_NOFOLLOW`, then
 * `fstat`), at most `limits.maxFileBytes` bytes, UTF-8 text. Nothing of a file outside the
 * repository is ever read, so no problem can quote it. For single files such as `vmplace.yaml`.
 *
 * @returns the file; `'missing'` when nothing (not even a broken link) is at `rel`; `undefined`
 *   after pushing a problem for anything else.
 */
export function readRepoFile(
  repoDir: string,
  rel: string,
  limits: Partial<ReadLimits>,
  problems: Problem[],
): SourceFile | 'missing' | undefined {
  const repoReal = fs.realpathSync(repoDir);
  const abs = path.join(repoReal, rel);
  try {
    fs.lstatSync(abs);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return 'missing';
    problems.push(problem(rel, `cannot read file: ${code ?? 'error'}`));
    return undefined;
  }
  const real = resolveInside(repoReal, abs, rel, problems);
  if (real === undefined) {
    if (!problems.some((p) => p.file === rel)) problems.push(problem(rel, 'cannot resolve path'));
    return undefined;
  }
  return readOne(real, rel, { ...DEFAULT_LIMITS, maxFiles: 1, ...limits }, newBudget(), problems);
}

type EntryType = 'dir' | 'link' | 'other';

function direntType(d: fs.Dirent): EntryType | undefined {
  if (d.isDirectory()) return 'dir';
  if (d.isSymbolicLink()) return 'link';
  if (d.isFile() || d.isFIFO() || d.isSocket() || d.isBlockDevice() || d.isCharacterDevice()) return 'other';
  return undefined;
}

function statType(st: fs.Stats): EntryType {
  return st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'link' : 'other';
}

/**
 * The real path of `abs` if it stays inside the repository; otherwise report and return
 * `undefined`. A missing path returns `undefined` silently (the caller decides).
 */
function resolveInside(repoReal: string, abs: string, rel: string, problems: Problem[]): string | undefined {
  let real: string;
  try {
    real = fs.realpathSync(abs);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') problems.push(problem(rel, 'symbolic link loop; skipped'));
    else if (code === 'ENOENT') {
      let isLink = false;
      try {
        isLink = fs.lstatSync(abs).isSymbolicLink();
      } catch {
        // missing entirely
      }
      if (isLink) problems.push(problem(rel, 'broken symbolic link; skipped'));
    } else problems.push(problem(rel, `cannot resolve path: ${code ?? 'error'}`));
    return undefined;
  }
  if (!isInside(repoReal, real)) {
    problems.push(problem(rel, 'symbolic link leads outside the repository; skipped'));
    return undefined;
  }
  return real;
}

function readOne(
  real: string,
  rel: string,
  limits: ReadLimits,
  budget: Budget,
  problems: Problem[],
): SourceFile | undefined {
  if (budget.files >= limits.maxFiles) {
    if (!budget.exhausted)
      problems.push(problem(rel, `more than ${limits.maxFiles} YAML files; this and later files skipped`));
    budget.exhausted = true;
    return undefined;
  }
  budget.files++;
  let fd: number;
  try {
    // O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOFOLLOW: `real` has no link left
    fd = fs.openSync(real, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK | fs.constants.O_NOFOLLOW);
  } catch (err) {
    problems.push(problem(rel, `cannot open file: ${(err as NodeJS.ErrnoException).code ?? 'error'}`));
    return undefined;
  }
  let buf: Buffer;
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) {
      problems.push(problem(rel, 'not a regular file; skipped'));
      return undefined;
    }
    if (st.size > limits.maxFileBytes) {
      problems.push(problem(rel, `file is too large: ${st.size} bytes, the limit is ${limits.maxFileBytes}`));
      return undefined;
    }
    // read at most one byte more than allowed, whatever fstat said (the file may be growing)
    buf = scratch(Math.min(st.size, limits.maxFileBytes) + 1);
    let n = 0;
    while (n < buf.length) {
      const r = fs.readSync(fd, buf, n, buf.length - n, null);
      if (r === 0) break;
      n += r;
    }
    if (n > limits.maxFileBytes) {
      problems.push(problem(rel, `file is too large: more than ${limits.maxFileBytes} bytes`));
      return undefined;
    }
    buf = buf.subarray(0, n);
  } catch (err) {
    problems.push(problem(rel, `cannot read file: ${(err as NodeJS.ErrnoException).code ?? 'error'}`));
    return undefined;
  } finally {
    fs.closeSync(fd);
  }
  if (budget.bytes + buf.length > limits.maxTotalBytes) {
    if (!budget.exhausted) {
      problems.push(
        problem(
          rel,
          `more than ${limits.maxTotalBytes} bytes of YAML in total; this and later files skipped`,
        ),
      );
    }
    budget.exhausted = true;
    return undefined;
  }
  budget.bytes += buf.length;
  const text = decodeText(buf, rel, problems);
  return text === undefined ? undefined : { rel, text };
}

let scratchBuf = Buffer.alloc(64 * 1024);

/**
 * A buffer of `size` bytes for one read, reused between files (decoding copies the text out),
 * so reading thousands of files allocates nothing per file.
 */
function scratch(size: number): Buffer {
  // a rare large file gets its own buffer, so the process does not keep a megabyte around
  if (size > 256 * 1024) return Buffer.alloc(size);
  if (scratchBuf.length < size) scratchBuf = Buffer.alloc(Math.max(size, scratchBuf.length * 2));
  return scratchBuf.subarray(0, size);
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** UTF-8 text, or a problem for binary content (NUL bytes) or invalid UTF-8. */
export function decodeText(buf: Uint8Array, rel: string, problems: Problem[]): string | undefined {
  const nul = buf.indexOf(0);
  if (nul >= 0) {
    const { line, col } = byteLineCol(buf, nul);
    problems.push(problem(rel, 'binary file: contains a NUL byte; expected UTF-8 YAML text', line, col));
    return undefined;
  }
  try {
    return utf8.decode(buf);
  } catch {
    const at = firstInvalidUtf8(buf);
    const { line, col } = byteLineCol(buf, at);
    problems.push(problem(rel, 'not valid UTF-8 text; expected UTF-8 YAML', line, col));
    return undefined;
  }
}

function byteLineCol(buf: Uint8Array, offset: number): { line: number; col: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset; i++) {
    if (buf[i] === 0x0a) {
      line++;
      lineStart = i + 1;
    }
  }
  return { line, col: offset - lineStart + 1 };
}

function firstInvalidUtf8(buf: Uint8Array): number {
  // binary search on the longest valid prefix would need care with split sequences; a linear scan is simple
  let i = 0;
  while (i < buf.length) {
    const b = buf[i]!;
    const len =
      b < 0x80 ? 1 : b >= 0xc2 && b < 0xe0 ? 2 : b >= 0xe0 && b < 0xf0 ? 3 : b >= 0xf0 && b < 0xf5 ? 4 : 0;
    if (len === 0) return i;
    try {
      utf8.decode(buf.subarray(i, i + len));
    } catch {
      return i;
    }
    i += len;
  }
  return 0;
}
