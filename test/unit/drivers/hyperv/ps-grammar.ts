/**
 * A real PowerShell grammar for the tests: tree-sitter-powershell (Airbus CERT's grammar, shipped
 * on npm with its WebAssembly build) run by web-tree-sitter, so no native build is needed.
 *
 * The grammar knows only the ASCII `'` as a single quote, while PowerShell's tokenizer also takes
 * U+2018..U+201B; {@link scanVerbatim} reads a literal by PowerShell's rules so the tests can check
 * that PowerShell would end each literal exactly where the grammar does.
 */
import { readFileSync } from 'node:fs';
import { Language, Parser, type Node, type Tree } from 'web-tree-sitter';

let ready: Promise<Parser> | undefined;

/** One parser for the whole test file (loading the grammar takes a moment). */
export function powershellParser(): Promise<Parser> {
  ready ??= (async () => {
    await Parser.init();
    const wasm = readFileSync(require.resolve('tree-sitter-powershell/tree-sitter-powershell.wasm'));
    const language = await Language.load(wasm);
    const parser = new Parser();
    parser.setLanguage(language);
    return parser;
  })();
  return ready;
}

/** Parse, hand the tree to `fn`, free it (trees live in WebAssembly memory). */
export async function withTree<T>(source: string, fn: (tree: Tree) => T): Promise<T> {
  const parser = await powershellParser();
  const tree = parser.parse(source);
  if (!tree) throw new Error('tree-sitter returned no tree');
  try {
    return fn(tree);
  } finally {
    tree.delete();
  }
}

/** Every node, depth first. */
export function nodes(root: Node): Node[] {
  const out: Node[] = [];
  const cursor = root.walk();
  try {
    let more = true;
    while (more) {
      out.push(cursor.currentNode);
      if (cursor.gotoFirstChild()) continue;
      while (!cursor.gotoNextSibling()) {
        if (!cursor.gotoParent()) {
          more = false;
          break;
        }
      }
    }
  } finally {
    cursor.delete();
  }
  return out;
}

/** ERROR and MISSING nodes, described (empty: the grammar parsed it all). */
export function parseProblems(root: Node): string[] {
  if (!root.hasError) return [];
  return nodes(root)
    .filter((n) => n.isError || n.isMissing)
    .map(
      (n) =>
        `${n.isMissing ? 'MISSING ' : ''}${n.type} at ${n.startPosition.row + 1}:${n.startPosition.column + 1}: ${JSON.stringify(n.text.slice(0, 60))}`,
    );
}

/** The single-quote characters of PowerShell's tokenizer (`SpecialCharacters.IsSingleQuote`). */
export const PS_SINGLE_QUOTES: ReadonlySet<string> = new Set(["'", '\u2018', '\u2019', '\u201A', '\u201B']);

/**
 * Read a single-quoted literal from the start of `text` as PowerShell's tokenizer does: any of
 * {@link PS_SINGLE_QUOTES} opens and closes it; two of them in a row stand for the second one.
 * Returns the value and where the literal ends (index after the closing quote; -1 when it does not
 * end within `text`: PowerShell would read on past the grammar's token).
 */
export function scanVerbatim(text: string): { value: string; end: number } {
  if (!PS_SINGLE_QUOTES.has(text[0] ?? ''))
    throw new Error(`not a single-quoted literal: ${text.slice(0, 20)}`);
  let value = '';
  let i = 1;
  for (;;) {
    const c = text[i];
    if (c === undefined) return { value, end: -1 };
    if (PS_SINGLE_QUOTES.has(c)) {
      const next = text[i + 1];
      if (next !== undefined && PS_SINGLE_QUOTES.has(next)) {
        value += next;
        i += 2;
        continue;
      }
      return { value, end: i + 1 };
    }
    value += c;
    i++;
  }
}

/** The single-quoted string literals of a tree (the grammar's `verbatim_string_characters` tokens). */
export function verbatimLiterals(root: Node): Node[] {
  return root.descendantsOfType('verbatim_string_characters');
}

/** Every string literal node of a tree, of any kind (single- or double-quoted, here-strings). */
export function stringLiterals(root: Node): Node[] {
  return root.descendantsOfType('string_literal');
}
