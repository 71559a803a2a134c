/**
 * Windows path rules for Hyper-V hosts: what a declared storage location or a disk path may
 * look like, and the `PathSemantics` the machine and the planner use for them.
 *
 * Accepted: drive-absolute paths (`D:\VMs`, `C:\ClusterStorage\Volume1`) and UNC shares
 * (`\\fileserver\vms\hyperv`), backslashes only, normalised. Refused, because each one lets
 * two different strings name one file (so a guard comparing strings could be walked around)
 * or names something that is not a plain file:
 * - relative and drive-relative paths (`VMs`, `D:VMs`, `\VMs`), forward slashes;
 * - device and verbatim namespaces (`\\?\`, `\\.\`), `.` and `..` segments, empty segments;
 * - a segment ending in `.` or a space (Windows strips them: `D:\VMs.` is `D:\VMs`);
 * - `:` after the drive (an alternate data stream: `D:\VMs\a.vhdx:evil`), `<>"|?*`, control
 *   characters;
 * - reserved device names as a segment (`CON`, `NUL`, `COM1`, `LPT1`, ... with any extension);
 * - 8.3 short names (`PROGRA~1`): an alias of a long name the guard cannot see.
 * Comparison is case-insensitive (NTFS and SMB as Windows configures them by default).
 */
import { win32 } from 'node:path';

import type { PathSemantics } from './driver';

const DRIVE = /^[A-Za-z]:\\/;
const UNC = /^\\\\([^\\]+)\\([^\\]+)(?:\\|$)/;
const RESERVED = /^(CON|PRN|AUX|NUL|COM[0-9¹²³]|LPT[0-9¹²³]|CONIN\$|CONOUT\$)(\..*)?$/i;
// eslint-disable-next-line no-control-regex -- control characters are exactly what is refused
const BAD_CHARS = /[<>:"|?*/\u0000-\u001f]/;
const SHORT_NAME = /~\d/;

/** Why `p` is not an absolute, normalised Windows path vmplace accepts; undefined when it is one. */
export function checkWindowsPath(p: string): string | undefined {
  if (typeof p !== 'string' || p === '') return 'is empty';
  if (p.length > 32_000) return 'is longer than Windows allows';
  if (p.includes('/')) return 'contains "/"; write Windows paths with "\\"';
  if (p.startsWith('\\\\?\\') || p.startsWith('\\\\.\\'))
    return 'uses a device namespace (\\\\?\\ or \\\\.\\)';
  let segments: string[];
  if (DRIVE.test(p)) {
    if (p.length === 3) return undefined; // a volume's root, `D:\`
    if (p.endsWith('\\')) return 'ends with "\\"';
    segments = p.slice(3).split('\\');
  } else {
    const m = UNC.exec(p);
    if (!m) return 'is not absolute: start with a drive (D:\\) or a share (\\\\server\\share)';
    if (p.endsWith('\\')) return 'ends with "\\"';
    segments = p.slice(2).split('\\');
  }
  for (const s of segments) {
    if (s === '') return 'has an empty segment ("\\\\")';
    if (s === '.' || s === '..') return `has a "${s}" segment`;
    if (BAD_CHARS.test(s))
      return `has a character Windows reserves in ${JSON.stringify(s)} (<>:"|?* or a control character)`;
    if (/[. ]$/.test(s))
      return `has a segment ending in "." or a space (${JSON.stringify(s)}), which Windows strips`;
    if (RESERVED.test(s)) return `names a reserved device (${JSON.stringify(s)})`;
    if (SHORT_NAME.test(s) && /^[^.]{1,8}(\.[^.]{0,3})?$/.test(s))
      return `looks like an 8.3 short name (${JSON.stringify(s)}); write the long name`;
  }
  return undefined;
}

/** Case-folded form for comparisons (ordinal upper case, as NTFS compares names). */
function fold(p: string): string {
  return p.toUpperCase();
}

/** `p` inside `root` (both accepted by {@link checkWindowsPath}), by whole segments, case-insensitively. */
export function isInsideWindows(p: string, root: string): boolean {
  if (checkWindowsPath(p) !== undefined || checkWindowsPath(root) !== undefined) return false;
  const fp = fold(p);
  const fr = fold(root);
  if (fp === fr) return false;
  return fp.startsWith(fr.endsWith('\\') ? fr : `${fr}\\`);
}

/** Windows path semantics (Hyper-V hosts). */
export const WINDOWS_PATHS: PathSemantics = {
  style: 'windows',
  join: (...parts) => win32.join(...parts),
  dirname: (p) => win32.dirname(p),
  basename: (p) => win32.basename(p),
  isInside: (p, root) => isInsideWindows(p, root),
};
