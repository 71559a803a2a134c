/**
 * Printing problems the way compilers do, so editors and CI annotate the right line.
 */
import type { Problem } from '../types';

/**
 * `PATH:LINE:COL: Kind/name: message` (the `Kind/name: ` part only when known). Pure. Control
 * characters are replaced, so a hostile file name or value cannot add or rewrite output lines.
 */
export function formatProblem(p: Problem): string {
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  const clean = (s: string): string => s.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, '?');
  const object = p.object ? `${clean(p.object)}: ` : '';
  return `${clean(p.file)}:${p.line}:${p.col}: ${object}${clean(p.message)}`;
}
