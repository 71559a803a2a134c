/**
 * Printing problems the way compilers do, so editors and CI annotate the right line.
 */
import type { Problem } from '../types';
import { safeText } from '../text';

/**
 * `PATH:LINE:COL: Kind/name: message` (the `Kind/name: ` part only when known). Pure. Control
 * characters and bidi/zero-width characters are replaced, so a hostile file name or value cannot
 * add, rewrite or reorder output lines.
 */
export function formatProblem(p: Problem): string {
  const clean = (s: string): string => safeText(s);
  const object = p.object ? `${clean(p.object)}: ` : '';
  return `${clean(p.file)}:${p.line}:${p.col}: ${object}${clean(p.message)}`;
}

/** At most this many problems are printed per file ... */
export const MAX_PROBLEMS_PER_FILE = 100;
/** ... and this many in all; the rest are counted. */
export const MAX_PROBLEMS_SHOWN = 1000;

/**
 * At most {@link MAX_PROBLEMS_PER_FILE} problems of one file and {@link MAX_PROBLEMS_SHOWN} in
 * all (in the given order), and notes for the rest: one per file that had more (`FILE: ... N
 * more problem(s) in this file not shown`) and a last `... N more problem(s) not shown`. One
 * hostile file cannot flood a terminal, a CI log, the daemon's log or the status summary.
 */
export function capProblems(
  problems: readonly Problem[],
  limits: { perFile?: number; total?: number } = {},
): { shown: Problem[]; notes: string[] } {
  const perFile = limits.perFile ?? MAX_PROBLEMS_PER_FILE;
  const total = limits.total ?? MAX_PROBLEMS_SHOWN;
  const shown: Problem[] = [];
  const shownPerFile = new Map<string, number>();
  const hiddenPerFile = new Map<string, number>();
  let hidden = 0;
  for (const p of problems) {
    const n = shownPerFile.get(p.file) ?? 0;
    if (n >= perFile || shown.length >= total) {
      hidden++;
      if (n >= perFile) hiddenPerFile.set(p.file, (hiddenPerFile.get(p.file) ?? 0) + 1);
      continue;
    }
    shownPerFile.set(p.file, n + 1);
    shown.push(p);
  }
  const notes: string[] = [];
  for (const [file, n] of [...hiddenPerFile].slice(0, perFile))
    notes.push(`${safeText(file)}: ... ${n} more problem(s) in this file not shown`);
  if (hidden > 0) notes.push(`... ${hidden} more problem(s) not shown (${problems.length} in all)`);
  return { shown, notes };
}

/** {@link capProblems} as lines: the problems shown (see {@link formatProblem}), then the notes. */
export function formatProblemsCapped(
  problems: readonly Problem[],
  limits: { perFile?: number; total?: number } = {},
): string[] {
  const { shown, notes } = capProblems(problems, limits);
  return [...shown.map(formatProblem), ...notes];
}
