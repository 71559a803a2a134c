/**
 * The guard every driver runs before it writes, copies to, or deletes a path: the path must
 * lie inside one of the declared storage locations or the state directory.
 */
import { posix } from 'node:path';

import { StalledError } from '../errors';

/**
 * Lexical form of an absolute path: rejects relative paths, NUL bytes and any `..` segment
 * (even one that would normalise back inside), collapses `//` and `.` and drops a trailing `/`.
 */
export function normaliseAbsolute(path: string): string | undefined {
  if (typeof path !== 'string' || path === '' || !path.startsWith('/') || path.includes('\0'))
    return undefined;
  if (path.split('/').some((seg) => seg === '..')) return undefined;
  const n = posix.normalize(path);
  return n.length > 1 && n.endsWith('/') ? n.slice(0, -1) : n;
}

/** True when `path` is `root` itself or below it, by whole path segments (`/srv/a` is not inside `/srv/ab`... and vice versa). */
export function isInside(path: string, root: string, opts: { allowRoot?: boolean } = {}): boolean {
  const p = normaliseAbsolute(path);
  const r = normaliseAbsolute(root);
  if (p === undefined || r === undefined) return false;
  if (p === r) return opts.allowRoot === true;
  return p.startsWith(r === '/' ? '/' : `${r}/`);
}

/**
 * Throw `StalledError('PathOutsideStorage')` unless `path` lies inside one of `allowedRoots`.
 * Lexical only: it does not follow symlinks (the driver resolves them on the host with
 * `realpath -m` and calls this again on the result). A root itself is accepted only with
 * `allowRoot` (for `makeDir`), never for a file write or delete.
 * @returns the normalised path
 */
export function assertInside(
  path: string,
  allowedRoots: readonly string[],
  opts: { allowRoot?: boolean } = {},
): string {
  const p = normaliseAbsolute(path);
  if (p !== undefined && allowedRoots.some((r) => isInside(p, r, opts))) return p;
  throw new StalledError(
    'PathOutsideStorage',
    `refusing to touch ${JSON.stringify(path)}: not inside any declared storage location (${allowedRoots.join(', ') || 'none'})`,
  );
}
