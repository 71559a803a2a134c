/**
 * Parsing YAML files read out of a repository without trusting them: cheap checks on the raw
 * text first (merge-conflict markers, overlong lines, the document budget), then YAML 1.2 core
 * schema with an alias expansion cap and linear duplicate-key detection. Every failure becomes a
 * {@link Problem}; nothing here throws on bad input. Reading the files is `repo-files.ts`'s job
 * (re-exported here, so loaders import one module).
 *
 * Parsing has two paths (see {@link parseYamlFile}), both maintained parsers: a fast one
 * (js-yaml, `yaml-fast.ts`) for files it accepts and whose documents all pass their checks, and
 * the exact one (`yaml`'s AST with a line counter, `yaml-exact.ts`) for everything else, which is
 * the only path that reports problems. A file therefore gets the same problems, at the same
 * FILE:LINE:COL, on either path.
 */
import type { Problem } from '../types';
import { problem, type Budget, type ReadLimits, type SourceFile } from './repo-files';
import { MAX_ERRORS_PER_FILE, parseExact, type ExactParse, type ParsedDoc } from './yaml-exact';
import { parseFast, type FastDoc } from './yaml-fast';
import { quote } from './schemas';

export {
  DEFAULT_LIMITS,
  decodeText,
  newBudget,
  readRepoFile,
  readYamlFiles,
  type Budget,
  type ReadLimits,
  type SourceFile,
} from './repo-files';
export type { ParsedDoc } from './yaml-exact';

/** Lines longer than this are refused before parsing: no real manifest needs them, and yaml is slow on them. */
export const MAX_LINE_CHARS = 16 * 1024;

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
 * - **fast**: when js-yaml accepts the file (`yaml-fast.ts`: no aliases, no tags, string keys,
 *   no syntax error or duplicate key), its documents are checked and, if `check` pushes no
 *   problem, that result is returned. Their `locate([])` is known from js-yaml's events; any
 *   other position (needed only for problems found later, such as unresolved references) parses
 *   the file the exact way on first use, so the text stays reachable from those documents until
 *   then.
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
    const fast = parseFast(file.text);
    if (fast) {
      const docs = fast.docs.map((d, i) => fastDoc(file.rel, d, i, fast.docs.length, exact));
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
function fastDoc(file: string, d: FastDoc, index: number, of: number, exact: () => ExactParse): ParsedDoc {
  const root = d.root;
  return {
    file,
    data: d.data,
    shared: false,
    locate(dataPath, atKey = false) {
      if (dataPath.length === 0 && root) return { file, line: root.line, col: root.col };
      const e = exact();
      // both parsers read the file the same way, so the documents correspond one to one
      const doc = e.problems.length === 0 && e.docs.length === of ? e.docs[index] : undefined;
      return doc ? doc.locate(dataPath, atKey) : { file, line: root?.line ?? 1, col: root?.col ?? 1 };
    },
  };
}
