import * as path from 'node:path';
import { loadDesiredState } from '../../../src/manifests';
import { loadActualState, renderStatusYaml } from '../../../src/status/files';
import { parseFast } from '../../../src/manifests/yaml-fast';
import { DEFAULT_LIMITS, newBudget, parseYamlFile } from '../../../src/manifests/yaml-source';
import type { Problem, VirtualMachineStatus } from '../../../src/types';
import { FIXTURES, hostDoc, makeRepo, REPO_ROOT, vmDoc } from '../../support/manifests';
import { cleanupTmp } from '../../support/tmp';

afterAll(cleanupTmp);

/** A canonical text of a value: key order, -0, NaN and Infinity all count. */
function canon(v: unknown): string {
  if (typeof v === 'number') return Object.is(v, -0) ? '-0' : String(v);
  if (Array.isArray(v)) return `[${v.map(canon).join(',')}]`;
  if (typeof v === 'object' && v !== null)
    return `{${Object.entries(v)
      .map(([k, x]) => `${JSON.stringify(k)}:${canon(x)}`)
      .join(',')}}`;
  return JSON.stringify(v) ?? String(v);
}

interface Seen {
  /** each document's data, and where its root is (`undefined`: the fast path leaves it to the exact one) */
  docs: { data: string; at?: string }[];
  count: number;
}

/** The exact path's view of `text`, or undefined when it reports a problem. */
function exact(text: string): Seen | undefined {
  const budget = newBudget();
  const problems: Problem[] = [];
  const r = parseYamlFile(
    { rel: 'x.yaml', text },
    DEFAULT_LIMITS,
    budget,
    problems,
    (docs) =>
      docs.map((d) => {
        const at = d.locate([]);
        return { data: canon(d.data), at: `${at.line}:${at.col}` };
      }),
    { fastPath: false },
  );
  return r.ok ? { docs: r.result, count: budget.documents } : undefined;
}

/** The fast path's view of `text`, or undefined when it declines. */
function fast(text: string): Seen | undefined {
  const p = parseFast(text);
  if (!p) return undefined;
  return {
    docs: p.docs.map((d) => ({ data: canon(d.data), at: d.root && `${d.root.line}:${d.root.col}` })),
    count: p.count,
  };
}

/** Whether the exact path reads `text` as the fast path did (data, count and root positions). */
function sameAsExact(f: Seen, text: string): boolean {
  const e = exact(text);
  return (
    e !== undefined &&
    e.count === f.count &&
    e.docs.length === f.docs.length &&
    f.docs.every((d, i) => d.data === e.docs[i]!.data && (d.at === undefined || d.at === e.docs[i]!.at))
  );
}

describe('fast path (js-yaml): what it accepts reads exactly as the exact path (yaml) reads it', () => {
  const accepted: [string, string][] = [
    ['a manifest', vmDoc('demo', 'lab', 'b', '  disks:\n    vdb:\n      storage: a\n')],
    [
      'several documents with comments and blank lines',
      `# c\n---\n${hostDoc('a')}\n---\n# only\n---\n${hostDoc('b')}---\n`,
    ],
    ['content before the first marker', `a: 1\n---\nb: 2\n`],
    ['YAML 1.1 booleans stay strings', 'a: yes\nb: on\nc: off\nd: No\ne: y\n'],
    ['1.2 core booleans and nulls', 'a: true\nb: False\nc: TRUE\nd: ~\ne: null\nf: NULL\ng:\n'],
    [
      'numbers',
      'a: 0755\nb: 0o17\nc: 0x1F\nd: -0x1F\ne: +12\nf: -0\ng: 1_000\nh: 1e3\ni: .5\nj: 5.\nk: -.Inf\nl: .NaN\nm: 0b101\nn: 12345678901234567890\n',
    ],
    ['quoted scalars', `a: 'it''s'\nb: "q\\"uote\\\\ \\n \\t"\nc: ''\nd: "#not a comment"\n"e f": 'g: h'\n`],
    [
      'plain scalars with indicators inside',
      "a: x]\nb: a, b\nc: it's\nd: a#b\ne: http://h:1/p?q=1\nf: -oX\ng: <<\nh: é ü\n",
    ],
    ['comments after values', 'a: b # c\nb: "q" # c\nc: # c\n  d: 1\n'],
    [
      'indentless and nested sequences',
      'a:\n- 1\n- - 2\n  - 3\n-\nb:\n  - x: 1\n    y: 2\n  -   z: 3\n      w: 4\n',
    ],
    ['empty entries and values', 'a:\n-\n- # c\n-\n  b: 1\nc:\n'],
    ['CRLF line ends', 'a: 1\r\nb:\r\n  - c\r\n'],
    ['a root at column 3', '   a: 1\n   b: 2\n'],
    ['empty flow collections as values', 'a: []\nb: {}\nc:\n  - []\n  - {} # c\n'],
    ['a root sequence', '- a\n- b\n'],
    ['a flow mapping', 'a: {b: 1, c: [x, "y"]}\n'],
    ['a flow sequence', 'a: [1, 2]\n'],
    ['a flow collection with spaces', 'a: [ ]\n'],
    ['a block scalar', 'a: |\n  text\n   more\n'],
    ['a folded scalar', 'a: >-\n  text\n\n  more\n'],
    ['a plain scalar on two lines', 'a: one\n  two\n'],
    ['a quoted scalar on two lines', 'a: "one\n  two"\n'],
    ['an escaped line break', 'a: "one\\\n  two"\n'],
    ['\\x, \\u and \\U escapes', 'a: "\\x41\\u00e9\\U0001F600"\n'],
    ['a complex key that is a string', '? a\n: b\n'],
    ['content after ---', '--- a\n'],
    ['a tab between tokens', 'a:\tb\n'],
    ['a line separator inside a value', 'a: b\u2028c\n'],
    ['space before the colon', 'a : b\n'],
    ['a line longer than 1,024 characters', `a: ${'x'.repeat(1100)}\n`],
    ['many entries opened on one line', `${'- '.repeat(9)}x\n`],
    ['a lone scalar document', 'just text\n'],
    ['an explicit null document', '---\nnull\n---\na: 1\n'],
  ];
  it.each(accepted)('%s', (_name, text) => {
    const f = fast(text);
    expect(f).toBeDefined();
    expect(sameAsExact(f!, text)).toBe(true);
  });

  const declined: [string, string][] = [
    ['an anchor and alias', 'a: &x {b: 1}\nc: *x\n'],
    ['an alias bomb', 'a: &a [x, x]\nb: &b [*a, *a]\n'],
    ['an anchor alone', 'a: &x 1\n'],
    ['an anchor glued to a flow sequence (yaml refuses it)', 'b: &a[1, 2]\n'],
    ['an unknown tag', 'a: !!binary aGk=\n'],
    ['a core tag', 'a: !!str 5\n'],
    ['a local tag', 'a: !x 5\n'],
    ['a null key', '~: a\n'],
    ['a null key (null)', 'null: a\n'],
    ['a number key', '1: a\n'],
    ['a boolean key', 'true: a\n'],
    ['a collection key', '[a]: b\n'],
    ['an empty flow collection as a key', '[]: a\n'],
    ['__proto__ as a key', '__proto__: a\n'],
    ['__proto__ as a quoted key', '"__proto__": a\n'],
    ['a duplicate key', 'a: 1\na: 2\n'],
    ['a duplicate key after conversion', '1: a\n"1": b\n'],
    ['a tab as indentation', 'a:\n\t- b\n'],
    ['a tab before ---', '\t---\na: 1\n'],
    ['a lone CR', 'a: 1\rb: 2\n'],
    ['a BOM', '\ufeffa: 1\n'],
    ['a BOM before a sequence (yaml refuses it)', '\ufeff- 0755\n'],
    ['an indented ---', ' ---\na: 1\n'],
    ['a document end marker', 'a: 1\n...\n'],
    ['a control character', 'a: b\u0007\n'],
    ['a nested mapping on one line', 'a: b: c\n'],
    ['a colon without a space after a quoted key', '"a":b\n'],
    ['a deeper line after a scalar', 'a: 1\n  b: 2\n'],
    ['a line between two indentations', 'a:\n    b: 1\n  c: 2\n'],
    ['a sequence entry after a scalar value', 'a: 1\n- b\n'],
    ['an empty flow collection with more after it', 'a: [] x\n'],
    ['an unclosed quote', 'a: "b\n'],
    ['a directive', '%YAML 1.2\n---\na: 1\n'],
    ['an unknown directive (js-yaml skips it, yaml refuses it)', '%YML 1.2\n---\na: 1\n'],
    ['an indented %', ' %x\n---\na: 1\n'],
    ['text right after a closing quote (js-yaml splits it off)', 'a:\n- "x"y: 1\n'],
  ];
  it.each(declined)('declines %s', (_name, text) => {
    expect(parseFast(text)).toBeUndefined();
  });

  it('resolves plain scalars as the YAML 1.2 core schema does', () => {
    expect(
      [
        'yes',
        'on',
        '0755',
        '0o17',
        '0x1F',
        '-0x1F',
        '+1',
        '1_000',
        '1e3',
        '.5',
        '-.inf',
        '~',
        'Null',
        'TRUE',
      ].map((s) => fast(`a: ${s}\n`)?.docs[0]?.data),
    ).toEqual(
      [
        '"yes"',
        '"on"',
        '755',
        '15',
        '31',
        '"-0x1F"',
        '1',
        '"1_000"',
        '1000',
        '0.5',
        '-Infinity',
        'null',
        'null',
        'true',
      ].map((v) => `{"a":${v}}`),
    );
  });
});

describe('fast path (js-yaml): seeded fuzz against the exact path (yaml)', () => {
  // mulberry32: deterministic, so a failure can be replayed
  const rng = (seed: number) => () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const KEYS = ['a', 'b', 'name', '1', '0x10', 'true', '"q k"', "'s k'", 'x-y', 'é', '"null"', '-k', '.5'];
  const VALUES = [
    'v',
    'yes',
    'on',
    '0755',
    '0o17',
    '0x1F',
    '-0x1F',
    '+1',
    '1_000',
    '1e3',
    '.5',
    '5.',
    '.inf',
    '-.Inf',
    '.NaN',
    '~',
    'null',
    'true',
    'FALSE',
    'a b',
    'a#b',
    'x]',
    'x}',
    'a,b',
    "it's",
    '-5',
    '-oX',
    'http://h:1/p',
    '2025-01-15T10:00:00Z',
    '<<',
    "'q'",
    '"dq"',
    '"a\\nb"',
    "'it''s'",
    '""',
    '"\\\\"',
    '"a # b"',
    '12345678901234567890',
    '-0',
    '0.0',
    '1.50',
    '%x',
    '@x',
    '`x',
    '&x',
    '*x',
    '!x',
    '|',
    '>',
    '[x',
    '{x',
    '? x',
    '[]',
    '{}',
    '[ ]',
    // what js-yaml takes beyond the plain subset (multi-line ones are indented by gen)
    '[x, y]',
    '{x: 1, y: [2, "z"]}',
    '|\nlit\n eral',
    '>-\nfold\n\ned',
    '|+\nkeep\n',
    '"multi\n line"',
    'plain\n cont',
    "'a\n\n b'",
    '"\\x41\\u00e9\\U0001F600"',
    '"\\e\\0\\N\\_\\L\\P\\/"',
    '&a [1, 2]',
    '!!str 5',
    '!!binary aGk=',
    'x\u0085y',
    'x\u2028y',
    'x\u200by',
    'a\tb',
  ];
  const MUTATIONS = [
    ...[':', ' ', '-', '#', "'", '"', '\n', '  ', '---\n', '\\', 'x', '\t', '\r', '\r\n', '...\n'],
    ...['%YAML 1.2\n', '? ', '[', ']', '{', '}', ',', '&a ', '*a', '!', '|', '>', '\ufeff', '\u0085'],
  ];

  function gen(r: () => number, depth: number, indent: string, out: string[]): void {
    const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)]!;
    const n = 1 + Math.floor(r() * 3);
    const seq = r() < 0.3;
    for (let i = 0; i < n; i++) {
      if (r() < 0.1) out.push(r() < 0.5 ? '' : `${indent}# comment`);
      const comment = r() < 0.1 ? ' # c' : '';
      const head = seq ? `${indent}-${pick([' ', '  '])}` : indent;
      const key = pick(KEYS);
      if (depth < 3 && r() < 0.35) {
        out.push(
          seq && r() < 0.3 ? `${indent}-${comment}` : `${head}${seq ? `${key}:` : `${key}:`}${comment}`,
        );
        const deeper = seq ? `${indent}${pick(['  ', '    '])}` : `${indent}${pick(['  ', '    ', ''])}`;
        gen(r, depth + 1, deeper, out);
      } else {
        // continuation lines of a multi-line value go one step deeper than the entry
        const value = pick(VALUES).replace(/\n/g, `\n${indent}  `);
        if (seq && r() < 0.4) out.push(`${head}${value}${comment}`);
        else out.push(`${head}${key}:${pick([' ', '  '])}${value}${comment}`);
      }
    }
  }

  it('agrees on every text it accepts (and accepts a fair share)', () => {
    const r = rng(20251126);
    let accepted = 0;
    const total = 4000;
    for (let i = 0; i < total; i++) {
      const lines: string[] = [];
      const docs = 1 + Math.floor(r() * 2);
      for (let d = 0; d < docs; d++) {
        if (d > 0 || r() < 0.3) lines.push(r() < 0.8 ? '---' : '--- ');
        gen(r, 0, r() < 0.1 ? '  ' : '', lines);
      }
      let text = lines.join('\n') + (r() < 0.9 ? '\n' : '');
      for (let m = Math.floor(r() * 4); m > 0 && r() < 0.5; m--) {
        const at = Math.floor(r() * text.length);
        text =
          r() < 0.5
            ? text.slice(0, at) + MUTATIONS[Math.floor(r() * MUTATIONS.length)]! + text.slice(at)
            : text.slice(0, at) + text.slice(at + 1);
      }
      const f = fast(text);
      if (!f) continue;
      accepted++;
      if (!sameAsExact(f, text))
        throw new Error(
          `fast and exact paths differ on:\n${JSON.stringify(text)}\nfast: ${canon(f)}\nexact: ${canon(exact(text))}`,
        );
    }
    // keys such as `1`, `0x10`, `true` are not strings and anchors, tags, `...` are declined by
    // design, so only about one text in eight is accepted
    expect(accepted).toBeGreaterThan(total / 10);
  });
});

describe('fast path: the loaders give the same result either way', () => {
  const strip = (s: object): string => canon(s);
  it.each([
    ['examples/two-storages', path.join(REPO_ROOT, 'examples/two-storages')],
    ['examples/fleet', path.join(REPO_ROOT, 'examples/fleet')],
    ['fixtures/manifests/mixed', path.join(FIXTURES, 'manifests/mixed')],
  ])('%s', async (_name, dir) => {
    expect(strip(await loadDesiredState(dir))).toBe(strip(await loadDesiredState(dir, { fastPath: false })));
    expect(strip(await loadActualState(dir))).toBe(strip(await loadActualState(dir, { fastPath: false })));
  });

  it('reference problems found after a fast parse are located exactly', async () => {
    const files = {
      'manifests/h.yaml': `${hostDoc('lab')}---\n${hostDoc('lab')}`,
      'manifests/v.yaml': `${vmDoc('a', 'nope', 'b')}---\n${vmDoc('b', 'lab', 'b')}---\n${vmDoc('c', 'other', 'zz', '  disks:\n    vdb:\n      storage: q\n')}`,
      'manifests/c.yaml':
        'apiVersion: vmplace.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c\nspec:\n  storage:\n    - name: s\n      path: /srv/s\n    - name: s\n      path: /srv/s/t\n',
    };
    const repo = makeRepo(files);
    const f = await loadDesiredState(repo);
    const e = await loadDesiredState(repo, { fastPath: false });
    expect(f.problems.length).toBeGreaterThan(3);
    expect(strip(f)).toBe(strip(e));
  });

  it('a generated fleet and the status files vmplace writes all take the fast path', () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { generate } = require('../../../bench/gen-fleet.js') as {
      generate: (o: object) => { root: string };
    };
    const repo = makeRepo();
    generate({ out: repo, vms: 60, hosts: 6, clusters: 2, files: 5 });
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const fs = require('node:fs') as typeof import('node:fs');
    const texts: string[] = [];
    for (const sub of ['manifests', 'status/vms', 'status/hosts'])
      for (const n of fs.readdirSync(path.join(repo, sub)))
        texts.push(fs.readFileSync(path.join(repo, sub, n), 'utf8'));
    const status: VirtualMachineStatus = {
      apiVersion: 'vmplace.dev/v1alpha1',
      kind: 'VirtualMachineStatus',
      metadata: { name: 'demo' },
      observedRevision: 'abc1234',
      placement: { host: 'lab', memoryBytes: 1, disks: [] },
      phase: 'Migrating',
      conditions: [
        {
          type: 'Placed',
          status: 'False',
          reason: 'Moving',
          message: "it's: moving [1/2] #3",
          lastTransitionTime: '2025-01-15T10:00:00Z',
        },
      ],
      migration: {
        id: 'm-1',
        strategy: 'quick',
        from: { host: 'a', storage: 'b' },
        to: { host: 'a', storage: 'c' },
        step: 'CopyingBase',
        bytesDone: 5,
        bytesTotal: 10,
        startedAt: '2025-01-15T10:00:00Z',
        attempts: 1,
        lastError: { reason: 'X', message: 'y: z' },
      },
    };
    texts.push(renderStatusYaml(status));
    for (const t of texts) {
      const f = fast(t);
      expect(f).toBeDefined();
      expect(f!.docs.every((d) => d.at !== undefined)).toBe(true);
      expect(sameAsExact(f!, t)).toBe(true);
    }
  });
});
