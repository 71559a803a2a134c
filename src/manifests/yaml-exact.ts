/**
 * The exact way of parsing a YAML file: `yaml`'s documents (an AST) with a line counter, YAML 1.2
 * core schema, no merge keys, unknown tags reported, alias expansion capped, duplicate keys found
 * in linear time. This is the path that finds and locates every YAML-level problem, and that
 * gives any document its positions (see {@link ParsedDoc.locate}).
 */
import { Document, isAlias, isMap, isPair, isScalar, isSeq, LineCounter, parseAllDocuments } from 'yaml';
import type { Node as YamlNode } from 'yaml';
import type { Problem, SourceRef } from '../types';
import { problem, type ReadLimits, type SourceFile } from './repo-files';
import { quote, type DataPath } from './schemas';

/** YAML errors reported per file; the rest are summarised. */
export const MAX_ERRORS_PER_FILE = 20;

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

/** The exact parse of one file: its non-null documents, or the problems that reject it. */
export interface ExactParse {
  docs: ParsedDoc[];
  problems: Problem[];
  /** documents in the file, empty ones included (for the budget) */
  count: number;
}

/**
 * Parse every document of `file` with `yaml`; any YAML-level problem (syntax error, tab
 * indentation, duplicate key, unresolved tag, too many aliases) rejects the whole file, with
 * every problem located (at most {@link MAX_ERRORS_PER_FILE}, the rest counted).
 */
export function parseExact(file: SourceFile, limits: ReadLimits): ExactParse {
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
