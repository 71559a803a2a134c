/**
 * Status files: `status/vms/<name>.yaml` (VirtualMachineStatus) and `status/hosts/<name>.yaml`
 * (HostStatus). Reading validates them against `schemas/`; writing renders them in a fixed key
 * order so identical state gives byte-identical files and git sees no noise.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Document } from 'yaml';
import { StalledError } from '../errors';
import { assertRepo, capFindings, cloneTree, describeType, sortProblems } from '../manifests/load';
import { objectLabel } from '../manifests/references';
import { quote, validateAgainstSchema, type DataPath } from '../manifests/schemas';
import {
  DEFAULT_LIMITS,
  newBudget,
  parseYamlFile,
  readYamlFiles,
  type ParsedDoc,
  type ParseOptions,
  type ReadLimits,
} from '../manifests/yaml-source';
import { type ActualState, type HostStatus, type Problem, type VirtualMachineStatus } from '../types';

/** Directory of the status files, relative to the repository root. */
export const STATUS_DIR = 'status';

const SUBDIRS = { VirtualMachineStatus: 'vms', HostStatus: 'hosts' } as const;
type StatusKind = keyof typeof SUBDIRS;

/**
 * Read every `status/vms/*.yaml` and `status/hosts/*.yaml` (not recursive; `.yaml` only, as
 * written by {@link writeStatusFiles}). Each file holds exactly one document of the kind its
 * directory implies, and its name must be `<metadata.name>.yaml`. A file with any problem is
 * skipped whole and reported as `FILE:LINE:COL`; a missing `status/` means nothing observed yet.
 * The same read limits and hostile-input protections as {@link loadDesiredState} apply, and the
 * same two parsing paths: files as {@link renderStatusYaml} writes them take the fast path
 * (js-yaml), while a hand-edited file with anchors, aliases or tags, and any file with a problem,
 * is parsed the exact way (yaml), which reports the problem.
 *
 * @throws StalledError `RepositoryNotFound` when `repoDir` itself does not exist.
 */
export async function loadActualState(
  repoDir: string,
  opts: Partial<ReadLimits> & ParseOptions = {},
): Promise<{ state: ActualState; problems: Problem[] }> {
  assertRepo(repoDir);
  const { fastPath, ...rest } = opts;
  const limits: ReadLimits = { ...DEFAULT_LIMITS, maxFiles: 100_000, ...rest };
  const problems: Problem[] = [];
  const budget = newBudget();
  const state: ActualState = { vms: new Map(), hosts: new Map() };
  for (const kind of ['VirtualMachineStatus', 'HostStatus'] as const) {
    const sub = `${STATUS_DIR}/${SUBDIRS[kind]}`;
    const { files } = readYamlFiles(
      repoDir,
      sub,
      { recursive: false, extensions: ['.yaml'] },
      limits,
      budget,
      problems,
    );
    for (const file of files) {
      const stem = path.posix.basename(file.rel, '.yaml');
      const check = (docs: ParsedDoc[], found: Problem[]): VirtualMachineStatus | HostStatus | undefined => {
        if (docs.length !== 1) {
          const at = docs[1] ? docs[1].locate([]) : { file: file.rel, line: 1, col: 1 };
          found.push({ ...at, message: `a status file holds exactly one document; found ${docs.length}` });
          return undefined;
        }
        return checkStatusDocument(docs[0]!, kind, stem, found);
      };
      const r = parseYamlFile(file, limits, budget, problems, check, { fastPath });
      const obj = r.ok ? r.result : undefined;
      if (!obj) continue;
      if (kind === 'VirtualMachineStatus') state.vms.set(obj.metadata.name, obj as VirtualMachineStatus);
      else state.hosts.set(obj.metadata.name, obj as HostStatus);
    }
  }
  sortProblems(problems);
  return { state, problems };
}

function checkStatusDocument(
  parsed: ParsedDoc,
  kind: StatusKind,
  stem: string,
  problems: Problem[],
): VirtualMachineStatus | HostStatus | undefined {
  const data = parsed.data;
  const at = (p: DataPath, atKey = false) => parsed.locate(p, atKey);
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    problems.push({
      ...at([]),
      message: `status file must hold a ${kind} mapping; got ${describeType(data)}`,
    });
    return undefined;
  }
  const obj = data as Record<string, unknown>;
  const object = objectLabel(kind, (obj.metadata as Record<string, unknown> | undefined)?.name ?? stem);
  if (obj.kind !== kind) {
    problems.push({
      ...at(obj.kind === undefined ? [] : ['kind']),
      object,
      message: `kind: must be ${quote(kind)} in ${STATUS_DIR}/${SUBDIRS[kind]}/ (got ${quote(obj.kind)})`,
    });
    return undefined;
  }
  const findings = validateAgainstSchema(kind, data);
  for (const f of capFindings(findings))
    problems.push({ ...at(f.path, f.atKey), object, message: f.message });
  if (findings.length) return undefined;
  const name = (obj.metadata as { name: string }).name;
  if (name !== stem) {
    problems.push({
      ...at(['metadata', 'name']),
      object,
      message: `metadata.name: ${quote(name)} does not match the file name ${quote(stem + '.yaml')}`,
    });
    return undefined;
  }
  return (parsed.shared ? cloneTree(data) : data) as VirtualMachineStatus | HostStatus;
}

// ---------------------------------------------------------------- rendering

/** Key order of each object, as declared in src/types.ts; nested objects by key. */
interface Shape {
  keys: readonly string[];
  nested?: Record<string, Shape>;
}
const WHERE: Shape = { keys: ['host', 'storage'] };
const VM_SHAPE: Shape = {
  keys: [
    'apiVersion',
    'kind',
    'metadata',
    'observedRevision',
    'placement',
    'definedOn',
    'phase',
    'conditions',
    'migration',
  ],
  nested: {
    metadata: { keys: ['name'] },
    placement: {
      keys: ['host', 'memoryBytes', 'running', 'disks'],
      nested: { disks: { keys: ['target', 'path', 'storage', 'format', 'virtualBytes', 'allocatedBytes'] } },
    },
    conditions: { keys: ['type', 'status', 'reason', 'message', 'lastTransitionTime'] },
    migration: {
      keys: [
        'id',
        'strategy',
        'from',
        'to',
        'step',
        'round',
        'bytesDone',
        'bytesTotal',
        'startedAt',
        'finishedAt',
        'pauseMs',
        'attempts',
        'lastError',
      ],
      nested: { from: WHERE, to: WHERE, lastError: { keys: ['reason', 'message'] } },
    },
  },
};
const HOST_SHAPE: Shape = {
  keys: ['apiVersion', 'kind', 'metadata', 'observedAt', 'cpu', 'storage'],
  nested: {
    metadata: { keys: ['name'] },
    cpu: { keys: ['vendor', 'model'] },
    storage: { keys: ['name', 'path', 'capacityBytes', 'freeBytes'] },
  },
};

function ordered(value: unknown, shape: Shape): unknown {
  if (Array.isArray(value)) return value.map((v) => ordered(v, shape));
  if (typeof value !== 'object' || value === null) return value;
  const src = value as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const k of shape.keys) {
    const v = src[k];
    if (v === undefined) continue;
    const sub = shape.nested?.[k];
    out[k] = sub ? ordered(v, sub) : v;
  }
  return out;
}

/**
 * Plain data of a status object in the fixed key order of src/types.ts, without undefined
 * fields and without fields the type does not declare.
 */
export function normaliseStatus<T extends VirtualMachineStatus | HostStatus>(obj: T): T {
  return ordered(obj, obj.kind === 'HostStatus' ? HOST_SHAPE : VM_SHAPE) as T;
}

/**
 * The YAML text of a status object: keys in the order of src/types.ts (not sorted), undefined
 * fields omitted, fields not in the type dropped, no timestamps or comments added, no line
 * folding. Identical input gives byte-identical output, ending with one newline.
 */
export function renderStatusYaml(obj: VirtualMachineStatus | HostStatus): string {
  const doc = new Document(normaliseStatus(obj), { version: '1.2' });
  return doc.toString({ lineWidth: 0, minContentWidth: 0, indentSeq: true, singleQuote: true });
}

// ---------------------------------------------------------------- writing

/**
 * Write status files for the given objects, each atomically (see {@link writeRepoFile}) and only
 * when the rendered content differs from what is on disk. Files of objects not given are left
 * alone (nothing is deleted).
 *
 * Everything is validated first: an object that fails its schema, or a name given twice, throws
 * before any file is written, so a bug upstream cannot leave half an update or a path outside
 * `status/` (names are DNS labels, so they cannot contain `/` or `..`). No symbolic link is
 * followed: `status/`, `status/vms`, `status/hosts` and each file must be real directories and
 * files (or missing), whatever the repository committed.
 *
 * @returns the changed files, relative to `repoDir` with forward slashes, sorted.
 * @throws StalledError `InvalidStatus` for invalid objects; `SymlinkInStatusPath` or
 *   `StatusPathNotADirectory` (nothing written at or below that path) when the repository holds a
 *   symbolic link or a file where a status directory or file belongs.
 */
export async function writeStatusFiles(
  repoDir: string,
  actual: { vms?: VirtualMachineStatus[]; hosts?: HostStatus[] },
): Promise<string[]> {
  assertRepo(repoDir);
  const jobs: { kind: StatusKind; name: string; text: string }[] = [];
  const seen = new Set<string>();
  const all: (VirtualMachineStatus | HostStatus)[] = [...(actual.vms ?? []), ...(actual.hosts ?? [])];
  for (const raw of all) {
    const obj = normaliseStatus(raw);
    const kind = obj.kind;
    const schemaKind = kind in SUBDIRS ? kind : 'VirtualMachineStatus';
    const findings = validateAgainstSchema(schemaKind, obj);
    const name = (obj.metadata as { name?: unknown } | undefined)?.name;
    if (findings.length) {
      throw new StalledError(
        'InvalidStatus',
        `refusing to write ${schemaKind} ${quote(name)}: ${findings.map((f) => f.message).join('; ')}`,
      );
    }
    const key = `${kind}/${String(name)}`;
    if (seen.has(key))
      throw new StalledError('InvalidStatus', `refusing to write ${key} twice in one update`);
    seen.add(key);
    jobs.push({ kind, name: String(name), text: renderStatusYaml(obj) });
  }
  const changed: string[] = [];
  for (const kind of ['VirtualMachineStatus', 'HostStatus'] as const) {
    const mine = jobs.filter((j) => j.kind === kind);
    if (mine.length === 0) continue;
    const dirRel = `${STATUS_DIR}/${SUBDIRS[kind]}`;
    const dir = ensureRealDirs(repoDir, dirRel);
    let wrote = false;
    for (const j of mine) {
      const rel = `${dirRel}/${j.name}.yaml`;
      if (writeInto(dir, rel, j.text)) {
        wrote = true;
        changed.push(rel);
      }
    }
    if (wrote) fsyncDir(dir);
  }
  return changed.sort();
}

/**
 * Write `text` to `rel` (forward slashes, below `repoDir`) without following a symbolic link
 * anywhere below `repoDir`: every directory on the way is checked with `lstat` (and created when
 * missing), the text goes to a new temporary file with a random name opened with
 * `O_CREAT|O_EXCL|O_NOFOLLOW`, is flushed, and is renamed onto `rel` when `rel` is missing, a
 * regular file or a symbolic link (the rename replaces the link itself, never its target).
 * Nothing is written when the content is already there.
 *
 * For the daemon's clone, whose content a pull request decides: a committed link
 * (`status -> /etc`, `status/summary.yaml -> /root/x`) must never make vmplace write outside it.
 *
 * @returns whether the file changed.
 * @throws StalledError `SymlinkInStatusPath` / `StatusPathNotADirectory` (nothing written).
 */
export function writeRepoFile(repoDir: string, rel: string, text: string): boolean {
  const dirRel = path.posix.dirname(rel);
  const dir = dirRel === '.' ? fs.realpathSync(repoDir) : ensureRealDirs(repoDir, dirRel);
  const changed = writeInto(dir, rel, text);
  if (changed) fsyncDir(dir);
  return changed;
}

/**
 * The absolute path of `repoDir/dirRel`, every component below `repoDir` checked to be a real
 * directory (not a link), created (one level at a time, never through a link) when missing.
 * `repoDir` itself is the operator's choice and may be reached through links.
 */
function ensureRealDirs(repoDir: string, dirRel: string): string {
  let dir = fs.realpathSync(repoDir);
  const segs = dirRel.split('/');
  for (const [i, seg] of segs.entries()) {
    if (seg === '' || seg === '.' || seg === '..') {
      throw new StalledError('InvalidStatus', `not a plain relative path: ${quote(dirRel)}`);
    }
    dir = path.join(dir, seg);
    const rel = segs.slice(0, i + 1).join('/');
    let st = lstatOrUndefined(dir);
    if (st === undefined) {
      try {
        // mkdir never follows a link at its last component: a link there is EEXIST
        fs.mkdirSync(dir, { mode: 0o755 });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      st = fs.lstatSync(dir);
    }
    checkNotLink(st, rel);
    if (!st.isDirectory()) {
      throw new StalledError(
        'StatusPathNotADirectory',
        `${rel} in the repository is not a directory; refusing to write status below it`,
      );
    }
  }
  return dir;
}

function lstatOrUndefined(p: string): fs.Stats | undefined {
  try {
    return fs.lstatSync(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

function checkNotLink(st: fs.Stats, rel: string): void {
  if (st.isSymbolicLink()) {
    throw new StalledError(
      'SymlinkInStatusPath',
      `${rel} in the repository is a symbolic link; vmplace never writes through links: remove it from the repository`,
    );
  }
}

/** Write one file into the checked directory `dir`; false when the content is already there. */
function writeInto(dir: string, rel: string, text: string): boolean {
  const file = path.join(dir, path.posix.basename(rel));
  const st = lstatOrUndefined(file);
  // a link at the file itself is replaced by the rename (rename never follows it)
  if (st !== undefined && !st.isSymbolicLink()) {
    if (!st.isFile()) {
      throw new StalledError(
        'StatusPathNotADirectory',
        `${rel} in the repository is not a regular file; refusing to replace it`,
      );
    }
    if (sameContent(file, text)) return false;
  }
  writeAtomically(dir, file, text);
  return true;
}

function sameContent(file: string, text: string): boolean {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch {
    return false;
  }
  try {
    const st = fs.fstatSync(fd);
    const want = Buffer.from(text, 'utf8');
    if (!st.isFile() || st.size !== want.length) return false;
    const buf = Buffer.alloc(want.length);
    let n = 0;
    while (n < buf.length) {
      const r = fs.readSync(fd, buf, n, buf.length - n, null);
      if (r === 0) break;
      n += r;
    }
    return n === want.length && buf.equals(want);
  } catch {
    return false;
  } finally {
    fs.closeSync(fd);
  }
}

function writeAtomically(dir: string, file: string, text: string): void {
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  let fd: number | undefined;
  try {
    fd = fs.openSync(
      tmp,
      fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW,
      0o644,
    );
    fs.writeSync(fd, text);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    // rename replaces the directory entry `file` (checked above to be a regular file or missing)
    fs.renameSync(tmp, file);
  } catch (err) {
    if (fd !== undefined) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW);
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
