/**
 * Reading YAML files out of a repository without trusting them: bounded walking (symlinks that
 * leave the repository, loops, FIFOs and devices are reported and skipped), bounded reading
 * (size caps, binary and merge-conflict detection) and bounded parsing (YAML 1.2 core schema,
 * alias expansion cap, linear duplicate-key detection). Every failure becomes a {@link Problem};
 * nothing here throws on bad input.
 *
 * Parsing has two paths (see {@link parseYamlFile}): a fast one (a parser for plain block YAML,
 * see `fast-yaml.ts`) for files it can vouch for and whose documents all pass their checks, and the
 * exact one (`yaml`'s AST with a line counter) for everything else, which is the only path that
 * reports problems. A file therefore gets the same problems, at the same FILE:LINE:COL, on
 * either path.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Document, isAlias, isMap, isPair, isScalar, isSeq, LineCounter, parseAllDocuments } from 'yaml';
import type { Node as YamlNode } from 'yaml';
import type { Problem, SourceRef } from '../types';
import { parsePlainYaml, type PlainDoc } from './fast-yaml';
import { quote, type DataPath } from './schemas';

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

/** Lines longer than this are refused before parsing: no real manifest needs them, and yaml is slow on them. */
export const MAX_LINE_CHARS = 16 * 1024;
/** Directory entries looked at in one walk, and directory depth. */
const MAX_ENTRIES = 200_000;
const MAX_DEPTH = 32;
/** YAML errors reported per file; the rest are summarised. */
const MAX_ERRORS_PER_FILE = 20;

/** A file read successfully as UTF-8 text. */
export interface SourceFile {
  /** relative to the repository root, forward slashes */
  rel: string;
  text: string;
}

/** One non-empty YAML document with its plain-data value. */
export interface ParsedDoc {
  file: string;
  data: unknown;
  /** the document uses aliases, so parts of `data` may be shared between places */
  shared: boolean;
  /**
   * The position of the node at `dataPath`: the key itself when `atKey`, otherwise the value;
   * falls back to the deepest node found, so a missing field points at the mapping that should
   * hold it. `[]` is the document's root.
   */
  locate(dataPath: DataPath, atKey?: boolean): SourceRef;
}

/**
 * Check the documents of one file, pushing problems to `problems`. Called on the fast path
 * first, where any problem pushed sends the file to the exact path (where it is called again),
 * so it must not have effects other than pushing problems and returning its result.
 */
export type CheckDocs<T> = (docs: ParsedDoc[], problems: Problem[]) => T;

/** Options of {@link parseYamlFile}. */
export interface ParseOptions {
  /**
   * Try the fast path first (default true). `false` parses every file the exact way: for
   * tests comparing both paths, and to rule the fast path out when diagnosing.
   */
  fastPath?: boolean;
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

function problem(file: string, message: string, line = 1, col = 1): Problem {
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
 * skipped. Entry types come from the directory listing (no lstat per entry; a symlink still
 * gets its realpath check). Reads use synchronous I/O into one reused buffer: measured on
 * 10,000 status files, a pool of promise-based reads took 3-5 times as long and a callback pool
 * no less than sync reads, and the parse that follows is synchronous anyway.
 *
 * @returns the files read and whether `subdir` exists at all.
 */
export function readYamlFiles(
  repoDir: string,
  subdir: string,
  opts: WalkOptions,
  limits: ReadLimits,
  budget: Budget,
  problems: Problem[],
): { files: SourceFile[]; found: boolean } {
  const repoReal = fs.realpathSync(repoDir);
  const files: SourceFile[] = [];
  const seenDirs = new Set<string>();
  const seenFiles = new Set<string>();
  let entries = 0;

  const start = path.join(repoReal, subdir);
  const startRel = toRel(repoReal, start);
  const startReal = resolveInside(repoReal, start, startRel, problems);
  if (startReal === undefined) return { files, found: false };
  let startStat: fs.Stats;
  try {
    startStat = fs.statSync(startReal);
  } catch {
    return { files, found: false };
  }
  if (!startStat.isDirectory()) {
    problems.push(problem(startRel, `${startRel} is not a directory`));
    return { files, found: false };
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
      if (name.startsWith('.')) continue;
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
      if (!isYaml) continue;
      if (seenFiles.has(real)) continue;
      seenFiles.add(real);
      const file = readOne(real, childRel, limits, budget, problems);
      if (file) files.push(file);
      if (budget.exhausted) return;
    }
  };
  walk(startReal, startRel, 0);
  files.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
  return { files, found: true };
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

const CONFLICT_MARKER = /^(?:<{7}|={7}|>{7}|\|{7})(?:[ \t].*)?$/;
const DOC_START = /^---(?:[ \t]|$)/;
/** First characters of the lines above: < = > | - */
const MARKER_START = new Set([0x3c, 0x3d, 0x3e, 0x7c, 0x2d]);

/**
 * Checks on the raw text that are cheap and catch what the YAML parser would report badly or
 * slowly: merge-conflict markers (reported at their lines), absurdly long lines, and more
 * documents than the budget allows. Returns false when the file must not be parsed.
 */
function prescan(file: SourceFile, limits: ReadLimits, budget: Budget, problems: Problem[]): boolean {
  const text = file.text;
  let ok = true;
  let markers = 0;
  let docStarts = 0;
  // line by line without splitting: a line becomes a string only when it may be a marker
  for (let start = 0, i = 0; start <= text.length; i++) {
    const nl = text.indexOf('\n', start);
    let end = nl < 0 ? text.length : nl;
    if (end > start && text.charCodeAt(end - 1) === 0x0d) end--;
    const next = nl < 0 ? text.length + 1 : nl + 1;
    if (end - start > MAX_LINE_CHARS) {
      problems.push(problem(file.rel, `line is longer than ${MAX_LINE_CHARS} characters`, i + 1, 1));
      return false;
    }
    if (end - start >= 3 && MARKER_START.has(text.charCodeAt(start))) {
      const line = text.slice(start, end);
      if (CONFLICT_MARKER.test(line)) {
        if (++markers <= MAX_ERRORS_PER_FILE) {
          problems.push(
            problem(
              file.rel,
              `merge conflict marker ${quote(line.slice(0, 7))}: resolve the conflict first`,
              i + 1,
              1,
            ),
          );
        }
        ok = false;
      }
      if (DOC_START.test(line)) docStarts++;
    }
    start = next;
  }
  if (!ok) return false;
  if (budget.documents + docStarts > limits.maxDocuments) {
    if (!budget.exhausted) {
      problems.push(
        problem(
          file.rel,
          `more than ${limits.maxDocuments} YAML documents in total; this and later files skipped`,
        ),
      );
    }
    budget.exhausted = true;
    return false;
  }
  return true;
}

/**
 * Parse every document of a file with the YAML 1.2 core schema (so `yes`, `on`, `0755` stay what
 * 1.2 says: strings and decimal numbers), without merge keys, turn each into plain data and
 * hand them to `check`.
 *
 * Any YAML-level problem (syntax error, tab indentation, duplicate key, unresolved tag, too many
 * aliases) rejects the whole file (`ok: false`): when the syntax is broken, the document
 * boundaries and therefore every document of the file are suspect. Documents whose value is
 * null (a stray `---`, only comments, an explicit `null`) are ignored.
 *
 * Two paths, one result:
 * - **fast**: when `fast-yaml.ts` vouches for the file (plain block YAML without anchors, tags,
 *   flow collections or multi-line scalars, resolved with the same 1.2 core schema), its
 *   documents are checked and, if `check` pushes no problem, that result is returned. Their
 *   `locate([])` is known from the scan; any other position (needed only for problems found
 *   later, such as unresolved references) parses the file the exact way on first use, so the
 *   text stays reachable from those documents until then.
 * - **exact**: otherwise (the fast path declined, or `check` found a problem), the file is parsed
 *   with `yaml`'s AST and `check` runs again on those documents; every problem, the YAML ones
 *   and those of `check`, is reported from this path, located by the AST.
 */
export function parseYamlFile<T>(
  file: SourceFile,
  limits: ReadLimits,
  budget: Budget,
  problems: Problem[],
  check: CheckDocs<T>,
  opts: ParseOptions = {},
): { result: T; ok: true } | { ok: false } {
  if (!prescan(file, limits, budget, problems)) return { ok: false };
  let exactParse: ExactParse | undefined;
  const exact = (): ExactParse => (exactParse ??= parseExact(file, limits));
  if (opts.fastPath !== false) {
    const fast = parsePlainYaml(file.text);
    if (fast) {
      const docs = fast.docs.map((d, i) => plainDoc(file.rel, d, i, fast.docs.length, exact));
      const found: Problem[] = [];
      const result = check(docs, found);
      if (found.length === 0) {
        budget.documents += fast.count;
        return { result, ok: true };
      }
    }
  }
  const { docs, problems: found, count } = exact();
  budget.documents += count;
  if (found.length) {
    problems.push(...found);
    return { ok: false };
  }
  return { result: check(docs, problems), ok: true };
}

/** A fast-path document; positions other than its root come from the exact parse, on demand. */
function plainDoc(file: string, d: PlainDoc, index: number, of: number, exact: () => ExactParse): ParsedDoc {
  const root: SourceRef = { file, line: d.line, col: d.col };
  return {
    file,
    data: d.data,
    shared: false,
    locate(dataPath, atKey = false) {
      if (dataPath.length === 0) return { ...root };
      const e = exact();
      // both parsers read the file the same way, so the documents correspond one to one
      const doc = e.problems.length === 0 && e.docs.length === of ? e.docs[index] : undefined;
      return doc ? doc.locate(dataPath, atKey) : { ...root };
    },
  };
}

/** The exact parse of one file: its non-null documents, or the problems that reject it. */
interface ExactParse {
  docs: ParsedDoc[];
  problems: Problem[];
  /** documents in the file, empty ones included (for the budget) */
  count: number;
}

function parseExact(file: SourceFile, limits: ReadLimits): ExactParse {
  const lineCounter = new LineCounter();
  const problems: Problem[] = [];
  const stackTraceLimit = Error.stackTraceLimit;
  let docs: Document.Parsed[];
  try {
    // yaml builds an Error per syntax problem; stack traces make hostile input ~3x slower to reject
    Error.stackTraceLimit = 0;
    docs = parseAllDocuments(file.text, {
      lineCounter,
      version: '1.2',
      schema: 'core',
      merge: false,
      // yaml's own check is quadratic in the number of keys; see findDuplicateKeys
      uniqueKeys: false,
      prettyErrors: false,
      strict: true,
      // !!binary, !!set, !!omap, !!timestamp would otherwise resolve even in the core schema
      resolveKnownTags: false,
    }) as Document.Parsed[];
  } catch (err) {
    problems.push(problem(file.rel, `cannot parse YAML: ${(err as Error).message}`));
    return { docs: [], problems, count: 0 };
  } finally {
    Error.stackTraceLimit = stackTraceLimit;
  }
  if (!Array.isArray(docs)) docs = [docs];
  let reported = 0;
  const aliased = new Set<Document.Parsed>();
  const report = (offset: number, message: string): void => {
    if (++reported > MAX_ERRORS_PER_FILE) return;
    const { line, col } = lineCounter.linePos(offset);
    problems.push(problem(file.rel, message, line, col));
  };
  for (const doc of docs) {
    for (const e of doc.errors) report(e.pos[0], `YAML syntax error: ${firstLine(e.message)}`);
    for (const w of doc.warnings) report(w.pos[0], `YAML: ${firstLine(w.message)}`);
    if (doc.errors.length === 0 && findDuplicateKeys(doc, report)) aliased.add(doc);
  }
  const out: ParsedDoc[] = [];
  if (reported === 0) {
    for (const doc of docs) {
      try {
        const data: unknown = doc.toJS({ maxAliasCount: limits.maxAliasCount });
        // empty, comment-only and explicit-null documents carry nothing: ignored
        if (data === null) continue;
        out.push({
          file: file.rel,
          data,
          shared: aliased.has(doc),
          locate: (dataPath, atKey = false) => locateInAst(file.rel, doc, lineCounter, dataPath, atKey),
        });
      } catch (err) {
        const msg = err instanceof Error ? err.message : String(err);
        const why = /alias/i.test(msg)
          ? `too many alias expansions (more than ${limits.maxAliasCount}); looks like an alias bomb`
          : `cannot convert YAML: ${firstLine(msg)}`;
        report(doc.contents?.range?.[0] ?? 0, why);
      }
    }
  }
  if (reported > MAX_ERRORS_PER_FILE) {
    problems.push(problem(file.rel, `${reported - MAX_ERRORS_PER_FILE} more YAML problem(s) not shown`));
  }
  return { docs: problems.length ? [] : out, problems, count: docs.length };
}

function firstLine(s: string): string {
  const line = s.split('\n')[0] ?? '';
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  return line.replace(/[\u0000-\u001f\u007f-\u009f]/g, ' ').slice(0, 300);
}

/**
 * Report repeated keys in every mapping; linear in the size of the document (aliases are not
 * expanded). Returns whether the document uses aliases at all.
 */
function findDuplicateKeys(doc: Document.Parsed, report: (offset: number, message: string) => void): boolean {
  let aliases = false;
  const stack: unknown[] = [doc.contents];
  while (stack.length) {
    const node = stack.pop();
    if (isMap(node)) {
      const seen = new Set<string>();
      for (const pair of node.items) {
        const key = pair.key;
        if (isScalar(key)) {
          const k = String(key.value);
          if (seen.has(k)) report(key.range?.[0] ?? 0, `duplicate key ${quote(k)}`);
          seen.add(k);
        } else pushCollection(stack, key);
        if (pushCollection(stack, pair.value)) aliases = true;
      }
    } else if (isSeq(node)) {
      for (const item of node.items)
        if (pushCollection(stack, isPair(item) ? item.value : item)) aliases = true;
    }
  }
  return aliases;
}

/** Push `node` when it is a collection; returns true when it is an alias. */
function pushCollection(stack: unknown[], node: unknown): boolean {
  if (isMap(node) || isSeq(node)) stack.push(node);
  return isAlias(node);
}

/** {@link ParsedDoc.locate} for a document parsed the exact way. */
function locateInAst(
  file: string,
  doc: Document.Parsed,
  lineCounter: LineCounter,
  dataPath: DataPath,
  atKey: boolean,
): SourceRef {
  let node: unknown = doc.contents;
  let offset = (doc.contents as YamlNode | null)?.range?.[0] ?? 0;
  for (let i = 0; i < dataPath.length; i++) {
    const seg = dataPath[i]!;
    if (isAlias(node)) node = node.resolve(doc);
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(seg));
      if (!pair) break;
      const keyOffset = (pair.key as YamlNode).range?.[0] ?? offset;
      if (i === dataPath.length - 1 && atKey) {
        offset = keyOffset;
        break;
      }
      const value = pair.value as YamlNode | null;
      node = value;
      offset = value?.range?.[0] ?? keyOffset;
    } else if (isSeq(node) && typeof seg === 'number') {
      const item = node.items[seg] as YamlNode | undefined;
      if (!item) break;
      node = item;
      offset = item.range?.[0] ?? offset;
    } else break;
  }
  const { line, col } = lineCounter.linePos(offset);
  return { file, line, col };
}
