/**
 * Watch a local working copy so a pass runs soon after an operator edits or commits manifests,
 * instead of at the next poll.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { watch } from 'chokidar';
import { StalledError } from '../errors';

/** Options of {@link watchManifests}. */
export interface WatchOptions {
  /** quiet time after the last event before `onChange` runs (default 500 ms) */
  debounceMs?: number;
  /**
   * Also watch the branch refs (`.git/refs/heads/`, `.git/packed-refs`), so a commit triggers a
   * pass: the daemon fetches committed history, and a commit changes no file in `manifests/`
   * (default true; ignored when `.git` is not a directory, e.g. a linked worktree).
   */
  gitRefs?: boolean;
}

/** A running watcher. */
export interface ManifestWatcher {
  /** Stop watching; no `onChange` runs afterwards, not even a pending one. */
  close(): Promise<void>;
}

/**
 * Call `onChange` (debounced: once per burst of events) when files under `<repoDir>/manifests/`
 * are added, changed or removed. Dotfiles and dot-directories (editor swap files, `.git`) are
 * ignored; existing files do not count as changes. Resolves once the watcher is ready, so a
 * change made after the promise resolves is seen.
 *
 * @throws StalledError `ManifestsDirNotFound` when `<repoDir>/manifests` is not a directory.
 */
export async function watchManifests(
  repoDir: string,
  onChange: () => void,
  opts: WatchOptions = {},
): Promise<ManifestWatcher> {
  const debounceMs = opts.debounceMs ?? 500;
  const manifests = path.resolve(repoDir, 'manifests');
  if (!isDir(manifests)) {
    throw new StalledError('ManifestsDirNotFound', `cannot watch ${manifests}: not a directory`);
  }
  const gitDir = path.resolve(repoDir, '.git');
  const roots = [manifests];
  if ((opts.gitRefs ?? true) && isDir(gitDir))
    roots.push(path.join(gitDir, 'refs', 'heads'), path.join(gitDir, 'packed-refs'));

  const ignored = (p: string): boolean => {
    const abs = path.resolve(p);
    if (abs.startsWith(gitDir + path.sep)) return abs.endsWith('.lock');
    const rel = path.relative(manifests, abs);
    return rel.split(path.sep).some((seg) => seg.startsWith('.'));
  };
  // a link in the working copy is watched as a link, never followed out of it
  const watcher = watch(roots, { ignoreInitial: true, ignored, persistent: true, followSymlinks: false });

  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  const fire = () => {
    timer = undefined;
    if (!closed) onChange();
  };
  // chokidar reports a link found by the initial scan as added even with ignoreInitial
  let ready = false;
  watcher.on('all', () => {
    if (closed || !ready) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(fire, debounceMs);
  });

  await new Promise<void>((resolve, reject) => {
    watcher.once('ready', () => {
      ready = true;
      resolve();
    });
    watcher.once('error', reject);
  });
  return {
    close: async () => {
      closed = true;
      if (timer) clearTimeout(timer);
      timer = undefined;
      await watcher.close();
    },
  };
}

function isDir(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}
