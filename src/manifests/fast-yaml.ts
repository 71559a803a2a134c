/**
 * The fast path for parsing YAML: a small parser for a plain subset of YAML, the subset that
 * vmplace's own status files (`renderStatusYaml`) and typical hand-written manifests use. It
 * never reports problems: for anything outside the subset, and for anything odd inside it, it
 * returns `undefined`, and the caller parses the file with the exact path (`yaml` with an AST and
 * a line counter, see `parseYamlFile` in yaml-source.ts), which finds and locates problems.
 *
 * Why not js-yaml: measured on the 10,000-VM fleet it is about 2.5 times slower than this parser
 * (and ten times faster than `yaml`'s AST), and it would still need the same line scan to vouch
 * that it reads a file as `yaml` does (its CORE_SCHEMA also reads `0b1`, `+0x1`... as numbers,
 * it turns a `null` key into `"null"` where yaml gives `""`, collection keys, etc.).
 *
 * The subset, checked on every line:
 * - block mappings and sequences only: no flow collections other than an empty `[]` or `{}`
 *   as a whole value (what `renderStatusYaml` writes for empty ones), no block scalars (`|`,
 *   `>`), no anchors, aliases or tags (`&`, `*`, `!`), no complex keys (`?`), no directives
 *   (`%`), no `...`, nothing after `---` on its line;
 * - every scalar on one line: quoted scalars close on the line they open, a line holding only a
 *   scalar must be a sequence entry (so continuation lines of plain scalars are refused);
 *   double-quoted escapes other than `\x`, `\u`, `\U` only;
 * - keys are plain or quoted scalars followed by `: ` or `:` at the end of the line; keys YAML
 *   reads as null (`~`, `null`) and `__proto__` are refused, and so are duplicate keys;
 * - indentation: a block continues only on lines starting at exactly its column (a sequence may
 *   sit at the column of its key), and a document is accepted only if its root took every line;
 * - no tabs, no lone CR, no BOM, no control or line-separator characters, no line longer than
 *   1,024 characters (yaml's limit on implicit keys), at most 8 `- ` opened on one line.
 *
 * A property (`&`, `*`, `!`) can only start a token and every token start is looked at, so no
 * accepted file has aliases: every value is a fresh object, nothing is shared and alias bombs
 * always take the exact path, with its expansion cap. Plain scalars are resolved as `yaml`'s
 * YAML 1.2 core schema does ({@link resolvePlain}): `yes`, `on`, `0755` stay what 1.2 says.
 *
 * test/unit/manifests/fast-yaml.test.ts compares both paths on tables of inputs and on seeded
 * random ones: whatever this parser accepts, the exact path must read identically.
 */

/** One document of a file accepted by the fast path. */
export interface PlainDoc {
  /** the value; never null (null documents are left out, as on the exact path) */
  data: unknown;
  /** 1-based line and column of the document's first token (yaml's `contents.range[0]`) */
  line: number;
  col: number;
}

/** A file accepted by the fast path. */
export interface PlainParse {
  docs: PlainDoc[];
  /** documents as yaml's `parseAllDocuments` counts them, empty ones included */
  count: number;
}

const NULL_RE = /^(?:~|[Nn]ull|NULL)?$/;
const BOOL_RE = /^(?:[Tt]rue|TRUE|[Ff]alse|FALSE)$/;
const INT_OCT_RE = /^0o[0-7]+$/;
const INT_RE = /^[-+]?[0-9]+$/;
const INT_HEX_RE = /^0x[0-9a-fA-F]+$/;
const FLOAT_NAN_RE = /^(?:[-+]?\.(?:inf|Inf|INF)|\.nan|\.NaN|\.NAN)$/;
const FLOAT_EXP_RE = /^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$/;
const FLOAT_RE = /^[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*)$/;

/** Characters that send a file to the exact path wherever they are (a lone CR is checked apart). */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const UNSAFE_CHARS = /[\u0000-\u0008\t\u000b\u000c\u000e-\u001f\u007f-\u009f\u2028\u2029\ufeff\ufffe\uffff]/;
const LONE_CR = /\r(?!\n)/;

/** Longest line the fast path takes; yaml refuses implicit keys longer than 1,024 characters. */
const MAX_PLAIN_LINE = 1024;
/** Most `- ` entries opened on one line. */
const MAX_DASHES = 8;

const SPACE = 0x20;
const HASH = 0x23;
const COLON = 0x3a;
const DASH = 0x2d;
const SQUOTE = 0x27;
const DQUOTE = 0x22;
const BACKSLASH = 0x5c;

/** Characters that cannot start a plain scalar in the subset: YAML indicators. */
const NOT_PLAIN_START = new Set([...'-?:,[]{}#&*!|>\'"%@`'].map((c) => c.charCodeAt(0)));

/**
 * End of the quoted scalar starting at `i` (the index after its closing quote), or -1 when it
 * does not close on this line.
 */
function quotedEnd(line: string, i: number, end: number): number {
  const q = line.charCodeAt(i);
  for (let j = i + 1; j < end; j++) {
    const c = line.charCodeAt(j);
    if (q === DQUOTE && c === BACKSLASH) {
      // an escape; a backslash at the end of the line would continue the scalar on the next
      if (j + 1 >= end) return -1;
      j++;
    } else if (c === q) {
      if (q === SQUOTE && j + 1 < end && line.charCodeAt(j + 1) === SQUOTE) j++;
      else return j + 1;
    }
  }
  return -1;
}

/**
 * End of the plain scalar starting at `i`: before `: `, `:` at the end, ` #`, or the end of the
 * line (trailing spaces excluded); -1 when `i` cannot start a plain scalar.
 */
function plainEnd(line: string, i: number, end: number): number {
  const c = line.charCodeAt(i);
  if (NOT_PLAIN_START.has(c)) {
    // `-x` is a plain scalar (`-5`, `-oOption`); `- ` is a sequence entry, not allowed here
    if (c !== DASH || i + 1 >= end || line.charCodeAt(i + 1) === SPACE) return -1;
  }
  let last = i + 1;
  for (let j = i + 1; j < end; j++) {
    const d = line.charCodeAt(j);
    if (d === COLON && (j + 1 >= end || line.charCodeAt(j + 1) === SPACE)) return last;
    if (d === HASH && line.charCodeAt(j - 1) === SPACE) return last;
    if (d !== SPACE) last = j + 1;
  }
  return last;
}

function skipSpaces(line: string, i: number, end: number): number {
  while (i < end && line.charCodeAt(i) === SPACE) i++;
  return i;
}

/** The scalar token at `i`: its end, or -1. */
function tokenEnd(line: string, i: number, end: number): number {
  const c = line.charCodeAt(i);
  return c === SQUOTE || c === DQUOTE ? quotedEnd(line, i, end) : plainEnd(line, i, end);
}

/** `[]` or `{}` at `i` (what renderStatusYaml writes for empty collections): its end, or -1. */
function emptyFlowEnd(line: string, i: number, end: number): number {
  const c = line.charCodeAt(i);
  const close = c === 0x5b ? 0x5d : c === 0x7b ? 0x7d : -1;
  return close >= 0 && i + 1 < end && line.charCodeAt(i + 1) === close ? i + 2 : -1;
}

/** The value token at `i` (a scalar, `[]` or `{}`) when nothing but a comment follows, else FAIL. */
function valueAt(line: string, i: number, end: number): unknown {
  const flow = emptyFlowEnd(line, i, end);
  if (flow >= 0) {
    if (!restIsEmpty(line, flow, end)) return FAIL;
    return line.charCodeAt(i) === 0x5b ? [] : {};
  }
  const to = tokenEnd(line, i, end);
  if (to < 0 || !restIsEmpty(line, to, end)) return FAIL;
  return scalarValue(line, i, to);
}

/** After a token: only spaces, then the end of the line or a comment. */
function restIsEmpty(line: string, i: number, end: number): boolean {
  const j = skipSpaces(line, i, end);
  return j >= end || (line.charCodeAt(j) === HASH && j > i);
}

const ESCAPES: Record<string, string> = {
  '0': '\0',
  a: '\x07',
  b: '\b',
  t: '\t',
  n: '\n',
  v: '\v',
  f: '\f',
  r: '\r',
  e: '\x1b',
  ' ': ' ',
  '"': '"',
  '/': '/',
  '\\': '\\',
  N: '\u0085',
  _: '\u00a0',
  L: '\u2028',
  P: '\u2029',
};

/** The value of a scalar token `text[i..j)`, or {@link FAIL} for escapes left to the exact path. */
function scalarValue(text: string, i: number, j: number): YamlScalar | typeof FAIL {
  const q = text.charCodeAt(i);
  if (q === SQUOTE) return text.slice(i + 1, j - 1).replace(/''/g, "'");
  if (q === DQUOTE) {
    const body = text.slice(i + 1, j - 1);
    if (!body.includes('\\')) return body;
    let failed = false;
    // \x, \u and \U (and unknown escapes) are rare: the exact path decodes them
    const out = body.replace(/\\(.)/g, (_m, c: string) => {
      const r = ESCAPES[c];
      if (r === undefined) failed = true;
      return r ?? '';
    });
    return failed ? FAIL : out;
  }
  return resolvePlain(text.slice(i, j));
}

/** What a scalar resolves to under the YAML 1.2 core schema. */
type YamlScalar = string | number | boolean | null;

/** A plain scalar resolved by the YAML 1.2 core schema, as `yaml` 2 does (tests and order). */
export function resolvePlain(s: string): YamlScalar {
  const c = s.charCodeAt(0);
  if (s.length <= 5) {
    if (NULL_RE.test(s)) return null;
    if (BOOL_RE.test(s)) return c === 0x74 || c === 0x54; // t T
  }
  // 0-9 + - .
  if (!((c >= 0x30 && c <= 0x39) || c === 0x2b || c === 0x2d || c === 0x2e)) return s;
  if (INT_OCT_RE.test(s)) return parseInt(s.substring(2), 8);
  if (INT_RE.test(s)) return parseInt(s, 10);
  if (INT_HEX_RE.test(s)) return parseInt(s.substring(2), 16);
  if (FLOAT_NAN_RE.test(s))
    return s.slice(-3).toLowerCase() === 'nan' ? NaN : c === 0x2d ? -Infinity : Infinity;
  if (FLOAT_EXP_RE.test(s) || FLOAT_RE.test(s)) return parseFloat(s);
  return s;
}

/** Returned when a value is outside the subset. */
const FAIL: unique symbol = Symbol('fail');

/** One content line, tokenised: `(- )* [key: ] [value]`, by column (0-based). */
interface Line {
  /** 1-based */
  no: number;
  /** column of the first token */
  indent: number;
  /** columns of the `-` entries, in order */
  dashes: number[];
  /** column of the key, -1 without one */
  keyCol: number;
  key: string;
  /** column of the value, -1 without one */
  valueCol: number;
  value: unknown;
}

/**
 * Tokenise one content line (`text[start..end)`, `start` at its first non-space character) into
 * `line`; false when it is outside the subset: a key or at least one `- ` is required, so a line
 * holding only a scalar (a continuation line) is refused.
 */
function tokenise(
  line: Line,
  text: string,
  no: number,
  lineStart: number,
  start: number,
  end: number,
): boolean {
  line.no = no;
  line.indent = start - lineStart;
  line.dashes.length = 0;
  line.keyCol = -1;
  line.key = '';
  line.valueCol = -1;
  line.value = null;
  let i = start;
  while (text.charCodeAt(i) === DASH && (i + 1 >= end || text.charCodeAt(i + 1) === SPACE)) {
    // a few levels of `- - ` are all real files use; more would make the lookups quadratic
    if (line.dashes.length === MAX_DASHES) return false;
    line.dashes.push(i - lineStart);
    i = skipSpaces(text, i + 1, end);
    if (i >= end || text.charCodeAt(i) === HASH) return true;
  }
  const first = emptyFlowEnd(text, i, end) >= 0 ? -1 : tokenEnd(text, i, end);
  if (first >= 0 && first < end && text.charCodeAt(first) === COLON) {
    if (first + 1 < end && text.charCodeAt(first + 1) !== SPACE) return false;
    const key = scalarValue(text, i, first);
    // yaml turns a null key into "" and refuses collection keys; keys are strings in JS
    if (key === null || key === FAIL) return false;
    line.keyCol = i - lineStart;
    line.key = typeof key === 'string' ? key : String(key);
    if (line.key === '__proto__') return false;
    const v = skipSpaces(text, first + 1, end);
    if (v >= end || text.charCodeAt(v) === HASH) return true;
    // `a: b: c` and `a: "b": c` are errors; valueAt refuses anything after the value
    line.valueCol = v - lineStart;
    line.value = valueAt(text, v, end);
    return line.value !== FAIL;
  }
  if (line.dashes.length === 0) return false;
  line.valueCol = i - lineStart;
  line.value = valueAt(text, i, end);
  return line.value !== FAIL;
}

/**
 * Build one document from its content lines. Every block continues only on lines whose first
 * token is at exactly its column; anything else ends it, and the document is accepted only if
 * its root consumed every line, so odd indentation goes to the exact path.
 */
class Builder {
  private i = 0;
  /** `lines[0..n)` are this document's */
  constructor(
    private readonly lines: Line[],
    private readonly n: number,
  ) {}

  build(): unknown {
    const value = this.node(this.lines[0]!.indent);
    return this.i === this.n ? value : FAIL;
  }

  private line(): Line | undefined {
    return this.i < this.n ? this.lines[this.i] : undefined;
  }

  /** The node whose first token is at column `col` of the current line. */
  private node(col: number): unknown {
    const line = this.line()!;
    if (line.dashes.includes(col)) return this.seq(col);
    if (line.keyCol === col) return this.map(col);
    if (line.valueCol === col) {
      this.i++;
      return line.value;
    }
    return FAIL;
  }

  /** The token after column `col` on the current line, or -1. */
  private after(line: Line, col: number): number {
    for (const d of line.dashes) if (d > col) return d;
    if (line.keyCol > col) return line.keyCol;
    if (line.valueCol > col) return line.valueCol;
    return -1;
  }

  /** A nested block on the next line when it is indented more than `col`, else null. */
  private nested(col: number, seqAtSameColumn: boolean): unknown {
    const next = this.line();
    if (next && (next.indent > col || (seqAtSameColumn && next.indent === col && next.dashes[0] === col)))
      return this.node(next.indent);
    return null;
  }

  private seq(col: number): unknown {
    const out: unknown[] = [];
    for (;;) {
      const line = this.line()!;
      const at = this.after(line, col);
      let item: unknown;
      if (at >= 0) item = this.node(at);
      else {
        this.i++;
        item = this.nested(col, false);
      }
      if (item === FAIL) return FAIL;
      out.push(item);
      const next = this.line();
      if (!next || next.indent !== col || next.dashes[0] !== col) return out;
    }
  }

  private map(col: number): unknown {
    const out: Record<string, unknown> = {};
    for (;;) {
      const line = this.line()!;
      if (Object.prototype.hasOwnProperty.call(out, line.key)) return FAIL; // duplicate: the exact path reports it
      let value: unknown;
      if (line.valueCol >= 0) {
        value = line.value;
        this.i++;
      } else {
        this.i++;
        // a sequence may sit at the key's own column (`key:\n- a`), a mapping may not
        value = this.nested(col, true);
      }
      if (value === FAIL) return FAIL;
      out[line.key] = value;
      const next = this.line();
      if (!next || next.indent !== col || next.keyCol !== col || next.dashes.length > 0) return out;
    }
  }
}

/**
 * Parse `text` on the fast path: every non-null document with the position of its first token,
 * or `undefined` when the text is outside the subset (the caller then uses the exact path,
 * which also reports any problem). Documents are split at `---` lines; `count` is the number of
 * documents yaml would see, empty ones included.
 */
export function parsePlainYaml(text: string): PlainParse | undefined {
  try {
    return parseLines(text);
  } finally {
    if (linePool.length > MAX_POOLED_LINES) linePool.length = MAX_POOLED_LINES;
  }
}

function parseLines(text: string): PlainParse | undefined {
  // one character class is a fast scan; the look-ahead for a lone CR only runs when there is a CR
  if (UNSAFE_CHARS.test(text) || (text.includes('\r') && LONE_CR.test(text))) return undefined;
  const docs: PlainDoc[] = [];
  const lines = linePool;
  let n = 0;
  let markers = 0;
  let contentBeforeMarker = false;
  const finish = (): boolean => {
    if (n === 0) return true;
    const data = new Builder(lines, n).build();
    if (data === FAIL) return false;
    // explicit-null documents are ignored, as on the exact path
    if (data !== null) docs.push({ data, line: lines[0]!.no, col: lines[0]!.indent + 1 });
    n = 0;
    return true;
  };
  let no = 0;
  for (let pos = 0; pos < text.length;) {
    no++;
    const nl = text.indexOf('\n', pos);
    const next = nl < 0 ? text.length : nl + 1;
    let end = nl < 0 ? text.length : nl;
    if (end > pos && text.charCodeAt(end - 1) === 0x0d) end--;
    if (end - pos > MAX_PLAIN_LINE) return undefined;
    const first = skipSpaces(text, pos, end);
    if (first < end && text.charCodeAt(first) !== HASH) {
      const c = text.charCodeAt(pos);
      if (
        first === pos &&
        c === DASH &&
        text.startsWith('---', pos) &&
        (end - pos === 3 || text.charCodeAt(pos + 3) === SPACE)
      ) {
        // a document marker, alone on its line
        if (skipSpaces(text, pos + 3, end) < end) return undefined;
        if (markers === 0) contentBeforeMarker = n > 0;
        if (!finish()) return undefined;
        markers++;
      } else {
        // directives and document end markers
        if (first === pos && (c === 0x25 || text.startsWith('...', pos))) return undefined;
        if (n === lines.length) lines.push(newLine());
        if (!tokenise(lines[n]!, text, no, pos, first, end)) return undefined;
        n++;
      }
    }
    pos = next;
  }
  if (markers === 0) contentBeforeMarker = n > 0;
  if (!finish()) return undefined;
  return { docs, count: markers + (contentBeforeMarker ? 1 : 0) };
}

/**
 * Line records reused from file to file (parsing is synchronous and not re-entrant), so that
 * tokenising allocates nothing per line; trimmed after a very long file.
 */
const linePool: Line[] = [];
const MAX_POOLED_LINES = 4096;

function newLine(): Line {
  return { no: 0, indent: 0, dashes: [], keyCol: -1, key: '', valueCol: -1, value: null };
}
