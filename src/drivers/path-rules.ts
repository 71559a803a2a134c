/**
 * The lexical path rules of each driver, in one place: what an absolute path in normal form is
 * on its hosts, how two paths are compared, joined and split. Pure (no I/O), so the manifest
 * loader, the planner and the drivers can share it: the plan shows the paths the migration
 * uses, and a guard comparing strings compares them the way the host's filesystem does.
 *
 * libvirt hosts use POSIX paths (`/var/lib/vmplace/local`), compared byte for byte; Hyper-V
 * hosts use Windows paths (`D:\VMs`, `C:\ClusterStorage\Volume1`, `\\fileserver\vms`), compared
 * case-insensitively (see `windows-paths.ts` for what is refused and why).
 */
import { posix } from 'node:path';

import { POSIX_PATHS, type PathSemantics } from './driver';
import { checkWindowsPath, isInsideWindows, WINDOWS_PATHS } from './windows-paths';

/** `posix` (libvirt) or `windows` (Hyper-V). */
export type PathStyle = PathSemantics['style'];

/**
 * A driver's path rules: its {@link PathSemantics} (join, dirname, basename, strict
 * `isInside`) and what the manifests and the planner need besides.
 */
export interface PathRules extends PathSemantics {
  /** the separator between segments */
  readonly sep: '/' | '\\';
  /** a storage path of this style, for messages */
  readonly example: string;
  /**
   * Why `p` is not an absolute path in normal form of this style; undefined when it is one.
   * Only such paths are compared with storage locations: `/srv/a/../../etc/x` starts with
   * `/srv/a/` but is not inside it, and `D:\VMs\..\Windows` starts with `D:\VMs\`.
   */
  check(p: string): string | undefined;
  /** `p` looks absolute in this style (in normal form or not): what observation records. */
  isAbsolute(p: string): boolean;
  /**
   * The lexical normal form of an absolute path (POSIX: `posix.normalize`; Windows: the path
   * itself, since {@link check} accepts Windows paths only in normal form).
   */
  normalise(p: string): string;
  /** The form in which two paths name one file: equal keys, one file (upper case on Windows). */
  key(p: string): string;
  /** `p` is `dir` itself or lies below it, by whole segments (a trailing separator is ignored). */
  isAtOrInside(p: string, dir: string): boolean;
}

/** Without trailing slashes (`/` stays `/`). */
function trimSlashes(p: string): string {
  const trimmed = p.replace(/\/+$/, '');
  return trimmed === '' ? '/' : trimmed;
}

/** POSIX rules (libvirt hosts). Comparisons are byte for byte. */
export const POSIX_RULES: PathRules = {
  ...POSIX_PATHS,
  sep: '/',
  example: '/var/lib/vmplace/local',
  check: (p) =>
    p.startsWith('/') && posix.normalize(p) === p && (p === '/' || !p.endsWith('/'))
      ? undefined
      : 'is not an absolute path in normal form (no ., .., // or trailing /)',
  isAbsolute: (p) => p.startsWith('/'),
  // `posix.normalize`, skipped for the common already-normal absolute path (same result)
  normalise: (p) =>
    p.includes('//') || p.includes('/.') || (p.endsWith('/') && p.length > 1) ? posix.normalize(p) : p,
  key: (p) => p,
  isAtOrInside: (p, dir) => {
    const a = trimSlashes(p);
    const d = trimSlashes(dir);
    if (d === '/') return a.startsWith('/');
    return a === d || a.startsWith(`${d}/`);
  },
};

/** Windows rules (Hyper-V hosts). Comparisons are case-insensitive, as NTFS and SMB compare. */
export const WINDOWS_RULES: PathRules = {
  ...WINDOWS_PATHS,
  sep: '\\',
  example: 'D:\\VMs',
  check: (p) => checkWindowsPath(p),
  isAbsolute: (p) => /^[A-Za-z]:\\/.test(p) || p.startsWith('\\\\'),
  normalise: (p) => p,
  key: (p) => p.toUpperCase(),
  isAtOrInside: (p, dir) =>
    (checkWindowsPath(p) === undefined && p.toUpperCase() === dir.toUpperCase()) || isInsideWindows(p, dir),
};

/** The rules of a path style. */
export function pathRulesOfStyle(style: PathStyle): PathRules {
  return style === 'windows' ? WINDOWS_RULES : POSIX_RULES;
}

/**
 * The path rules of a host's driver (`spec.driver`): Windows for `hyperv`, POSIX for `libvirt`
 * and for anything else (a host nobody declared is treated as it always was).
 */
export function pathRulesFor(driver: string | undefined): PathRules {
  return driver === 'hyperv' ? WINDOWS_RULES : POSIX_RULES;
}
