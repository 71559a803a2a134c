/**
 * Writing status files into a repository clone whose content a pull request decides: validated
 * first, rendered by `render.ts`, each replaced atomically, never through a symbolic link.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fsyncDirSync, writeFileAtomicSync } from '../atomic-file';
import { StalledError } from '../errors';
import { assertRepo } from '../manifests/load';
import { quote, validateAgainstSchema } from '../manifests/schemas';
import type { HostStatus, VirtualMachineStatus } from '../types';
import { normaliseStatus, renderStatusYaml, STATUS_DIR, SUBDIRS, type StatusKind } from './render';

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
    if (wrote) fsyncDirSync(dir);
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
  if (changed) fsyncDirSync(dir);
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
  // the temporary file is created O_EXCL|O_NOFOLLOW; one flush of `dir` after the last file
  writeFileAtomicSync(file, text, { mode: 0o644, syncDir: false });
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
