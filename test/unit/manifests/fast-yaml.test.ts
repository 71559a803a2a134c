import * as path from 'node:path';
import { loadDesiredState } from '../../../src/manifests';
import { loadActualState, renderStatusYaml } from '../../../src/status/files';
import { parsePlainYaml, resolvePlain } from '../../../src/manifests/fast-yaml';
import { DEFAULT_LIMITS, newBudget, parseYamlFile } from '../../../src/manifests/yaml-source';
import type { Problem, SourceRef, VirtualMachineStatus } from '../../../src/types';
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
  docs: { data: string; at: SourceRef }[];
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
    (docs) => docs.map((d) => ({ data: canon(d.data), at: d.locate([]) })),
    { fastPath: false },
  );
  return r.ok ? { docs: r.result, count: budget.documents } : undefined;
}

/** The fast path's view of `text`, or undefined when it declines. */
function fast(text: string): Seen | undefined {
  const p = parsePlainYaml(text);
  if (!p) return undefined;
  return {
    docs: p.docs.map((d) => ({ data: canon(d.data), at: { file: 'x.yaml', line: d.line, col: d.col } })),
    count: p.count,
  };
}

describe('fast path: plain YAML it accepts reads exactly as the exact path reads it', () => {
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
    ['number-like keys become strings', '1: a\n0x10: b\n1.50: c\ntrue: d\n.inf: e\n'],
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
  ];
  it.each(accepted)('%s', (_name, text) => {
    const f = fast(text);
    expect(f).toBeDefined();
    expect(f).toEqual(exact(text));
  });

  const declined: [string, string][] = [
    ['an anchor and alias', 'a: &x {b: 1}\nc: *x\n'],
    ['an alias bomb', 'a: &a [x, x]\nb: &b [*a, *a]\n'],
    ['a tag', 'a: !!binary aGk=\n'],
    ['a flow mapping', 'a: {b: 1}\n'],
    ['a flow sequence', 'a: [1, 2]\n'],
    ['a block scalar', 'a: |\n  text\n'],
    ['a folded scalar', 'a: >-\n  text\n'],
    ['a plain scalar on two lines', 'a: one\n  two\n'],
    ['a quoted scalar on two lines', 'a: "one\n  two"\n'],
    ['an escaped line break', 'a: "one\\\n  two"\n'],
    ['a complex key', '? a\n: b\n'],
    ['a null key', '~: a\n'],
    ['a null key (null)', 'null: a\n'],
    ['__proto__ as a key', '__proto__: a\n'],
    ['a duplicate key', 'a: 1\na: 2\n'],
    ['a duplicate key after conversion', '1: a\n"1": b\n'],
    ['a directive', '%YAML 1.2\n---\na: 1\n'],
    ['a document end marker', 'a: 1\n...\n'],
    ['content after ---', '--- a\n'],
    ['a tab', 'a:\tb\n'],
    ['a lone CR', 'a: 1\rb: 2\n'],
    ['a BOM', '\ufeffa: 1\n'],
    ['a control character', 'a: b\u0007\n'],
    ['a line separator', 'a: b\u2028c\n'],
    ['a \\x escape', 'a: "\\x41"\n'],
    ['a \\u escape', 'a: "\\u0041"\n'],
    ['a nested mapping on one line', 'a: b: c\n'],
    ['space before the colon', 'a : b\n'],
    ['a colon without a space after a quoted key', '"a":b\n'],
    ['a deeper line after a scalar', 'a: 1\n  b: 2\n'],
    ['a line between two indentations', 'a:\n    b: 1\n  c: 2\n'],
    ['a mapping at the column of its key', 'a:\nb: 1\n c: 2\n'],
    ['a sequence entry after a scalar value', 'a: 1\n- b\n'],
    ['a line longer than 1,024 characters', `a: ${'x'.repeat(1100)}\n`],
    ['more than 8 entries opened on one line', `${'- '.repeat(9)}x\n`],
    ['a lone scalar document', 'just text\n'],
    ['an explicit null document', '---\nnull\n---\na: 1\n'],
    ['an empty flow collection as a key', '[]: a\n'],
    ['an empty flow collection with more after it', 'a: [] x\n'],
    ['a flow collection with spaces', 'a: [ ]\n'],
  ];
  it.each(declined)('declines %s', (_name, text) => {
    expect(parsePlainYaml(text)).toBeUndefined();
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
      ].map((s) => canon(resolvePlain(s))),
    ).toEqual([
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
    ]);
  });
});

describe('fast path: seeded fuzz against the exact path', () => {
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
  ];
  const MUTATIONS = [':', ' ', '-', '#', "'", '"', '\n', '  ', '---\n', '\\', 'x'];

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
      } else if (seq && r() < 0.4) out.push(`${head}${pick(VALUES)}${comment}`);
      else out.push(`${head}${key}:${pick([' ', '  '])}${pick(VALUES)}${comment}`);
    }
  }

  it('agrees on every text it accepts (and accepts a fair share)', () => {
    const r = rng(20251126);
    let accepted = 0;
    const total = 3000;
    for (let i = 0; i < total; i++) {
      const lines: string[] = [];
      const docs = 1 + Math.floor(r() * 2);
      for (let d = 0; d < docs; d++) {
        if (d > 0 || r() < 0.3) lines.push('---');
        gen(r, 0, r() < 0.1 ? '  ' : '', lines);
      }
      let text = lines.join('\n') + (r() < 0.9 ? '\n' : '');
      for (let m = Math.floor(r() * 3); m > 0 && r() < 0.5; m--) {
        const at = Math.floor(r() * text.length);
        text =
          r() < 0.5
            ? text.slice(0, at) + MUTATIONS[Math.floor(r() * MUTATIONS.length)]! + text.slice(at)
            : text.slice(0, at) + text.slice(at + 1);
      }
      const f = fast(text);
      if (!f) continue;
      accepted++;
      const e = exact(text);
      if (canon(f) !== canon(e))
        throw new Error(`fast and exact paths differ on:\n${text}\nfast: ${canon(f)}\nexact: ${canon(e)}`);
    }
    expect(accepted).toBeGreaterThan(total / 4);
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
      expect(fast(t)).toBeDefined();
      expect(fast(t)).toEqual(exact(t));
    }
  });
});
