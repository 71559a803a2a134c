/**
 * The fast way of parsing a YAML file: js-yaml 5 (a maintained parser that builds plain objects
 * straight from its event stream, without an AST), used only to *accept* files. It never reports
 * problems: for anything it refuses, and for anything where it could read a file otherwise than
 * `yaml` does, it returns `undefined` and the caller takes the exact path (`yaml-exact.ts`), which
 * finds and locates problems. Measured on the 10,000-VM bench fleet it parses ~10 times faster
 * than `yaml`'s AST (bench/RESULTS.md, "YAML parser for plan at 10,000 VMs").
 *
 * Declined, so that every accepted file reads exactly as the exact path reads it
 * (test/unit/manifests/yaml-fast.test.ts compares both on tables and on seeded random texts):
 * - any alias or anchor (`*x`, `&x`), so alias bombs always meet the exact path's expansion cap
 *   and no value is shared between places (and `&x[1]`, which js-yaml reads and `yaml` refuses,
 *   is left to `yaml`);
 * - any tag (`!x`, `!!str`), although js-yaml's core tags read as yaml's do: the exact path
 *   reports unknown ones (`!!binary`, `!!timestamp`) and resolves the rest;
 * - any mapping key that is not a string after resolution (`~:`, `1:`, `true:`, `[a]:`, which
 *   yaml and js-yaml turn into different strings) and `__proto__`;
 * - duplicate keys, syntax errors, tab indentation, nesting deeper than js-yaml's default limit
 *   (js-yaml throws on each);
 * - cases found by comparing both parsers on random texts, where js-yaml reads what `yaml`
 *   reports or counts differently: a carriage return not followed by a line feed (YAML 1.2 makes
 *   it a line break, as js-yaml does; `yaml` reads it as content and then fails); a tab in a
 *   line's leading white space (`yaml` reports it as indentation where js-yaml may not); a byte
 *   order mark, an indented `---`, and a line starting with `%` (a directive: js-yaml skips
 *   unknown ones, `yaml` reports them); a `...` document end marker (the two count the
 *   documents around it differently), all checked on the raw text; and a quoted scalar with
 *   text right after its closing quote (`- "x"y: 1`), checked from js-yaml's events.
 * Plain scalars resolve with js-yaml's `CORE_SCHEMA`, the YAML 1.2 core schema, as in `yaml`
 * (`yes`, `on`, `0755` stay what 1.2 says).
 */
import {
  constructFromEvents,
  CORE_SCHEMA,
  defineMappingTag,
  EVENT_ALIAS,
  EVENT_DOCUMENT,
  EVENT_MAPPING,
  EVENT_POP,
  EVENT_SCALAR,
  EVENT_SEQUENCE,
  parseEvents,
  SCALAR_STYLE_DOUBLE_QUOTED,
  SCALAR_STYLE_SINGLE_QUOTED,
  type Event,
} from 'js-yaml';

/** One non-null document accepted by the fast path. */
export interface FastDoc {
  data: unknown;
  /**
   * 1-based line and column of the root collection (yaml's `contents.range[0]`), which loaders
   * ask for on every document; `undefined` for a scalar root (the exact path then tells).
   */
  root?: { line: number; col: number };
}

/** A file accepted by the fast path. */
export interface FastParse {
  /** the non-null documents, in order (null documents are left out, as on the exact path) */
  docs: FastDoc[];
  /** documents in the file, empty ones included (for the budget) */
  count: number;
}

/** Returned by `addPair` to make js-yaml throw, which declines the file. */
const DECLINE = 'declined by the fast path';

/** Plain-object mappings whose keys are strings as written (and never `__proto__`). */
const stringKeyMap = defineMappingTag<Record<string, unknown>>('tag:yaml.org,2002:map', {
  create: () => ({}),
  addPair: (map, key, value) => {
    if (typeof key !== 'string' || key === '__proto__') return DECLINE;
    map[key] = value;
    return '';
  },
  has: (map, key) => typeof key === 'string' && Object.prototype.hasOwnProperty.call(map, key),
  keys: (map) => Object.keys(map),
  get: (map, key) => (typeof key === 'string' ? map[key] : undefined),
  identify: () => false,
});

const SCHEMA = CORE_SCHEMA.withTags(stringKeyMap);

const LONE_CR = /\r(?!\n)/;
const LEADING_TAB = /^ *\t/m;
const DOC_END = /^\.\.\.(?:[ \t\r\n]|$)/m;
const INDENTED_MARKER = /^[ \t]+(?:---|\.\.\.)(?:[ \t\r\n]|$)/m;
const DIRECTIVE = /^[ \t]*%/m;
/** What may follow the closing quote of a quoted scalar (or the end of the text). */
const AFTER_QUOTE = new Set([' ', '\t', '\n', '\r', ':', ',', ']', '}', undefined]);

/**
 * Parse `text` on the fast path: every non-null document's value and the number of documents,
 * or `undefined` when the file must be parsed the exact way.
 */
export function parseFast(text: string): FastParse | undefined {
  // each regular expression only runs when its character is there at all
  if (text.includes('\r') && LONE_CR.test(text)) return undefined;
  if (text.includes('\t') && LEADING_TAB.test(text)) return undefined;
  if (text.includes('...') && DOC_END.test(text)) return undefined;
  if (text.includes('\ufeff') || INDENTED_MARKER.test(text)) return undefined;
  if (text.includes('%') && DIRECTIVE.test(text)) return undefined;
  const stackTraceLimit = Error.stackTraceLimit;
  try {
    // a declined file throws; its stack trace would only cost time
    Error.stackTraceLimit = 0;
    const events = parseEvents(text, {});
    const roots = rootOffsets(events, text);
    if (roots === undefined) return undefined;
    const values = constructFromEvents(events, { source: text, schema: SCHEMA, maxAliases: 0 });
    if (values.length !== roots.length) return undefined;
    const positions = linesAndColumns(text, roots);
    const docs: FastDoc[] = [];
    for (let i = 0; i < values.length; i++) {
      // empty, comment-only and explicit-null documents carry nothing: ignored
      if (values[i] !== null) docs.push({ data: values[i], root: positions[i] });
    }
    return { docs, count: values.length };
  } catch {
    return undefined;
  } finally {
    Error.stackTraceLimit = stackTraceLimit;
  }
}

/**
 * Per document, the offset of its root collection (-1 for a scalar or empty root); `undefined`
 * when there is an alias, an anchor or a tag anywhere, or text right after a closing quote.
 */
function rootOffsets(events: Event[], text: string): number[] | undefined {
  const roots: number[] = [];
  let atRoot = false;
  for (const e of events) {
    if (e.type === EVENT_DOCUMENT) {
      roots.push(-1);
      atRoot = true;
      continue;
    }
    if (e.type === EVENT_POP) {
      atRoot = false;
      continue;
    }
    if (e.type === EVENT_ALIAS || e.tagStart >= 0 || e.anchorStart >= 0) return undefined;
    const quoted =
      e.type === EVENT_SCALAR &&
      (e.style === SCALAR_STYLE_SINGLE_QUOTED || e.style === SCALAR_STYLE_DOUBLE_QUOTED);
    // a quoted scalar's valueEnd is the offset of its closing quote
    if (quoted && !AFTER_QUOTE.has(text[e.valueEnd + 1])) return undefined;
    if (atRoot && (e.type === EVENT_MAPPING || e.type === EVENT_SEQUENCE)) roots[roots.length - 1] = e.start;
    atRoot = false;
  }
  return roots;
}

/** 1-based line and column of each offset (increasing, or -1), in one pass over the text. */
function linesAndColumns(text: string, offsets: number[]): ({ line: number; col: number } | undefined)[] {
  let line = 1;
  let lineStart = 0;
  return offsets.map((offset) => {
    if (offset < 0) return undefined;
    for (let nl = text.indexOf('\n', lineStart); nl >= 0 && nl < offset; nl = text.indexOf('\n', lineStart)) {
      line++;
      lineStart = nl + 1;
    }
    return { line, col: offset - lineStart + 1 };
  });
}
