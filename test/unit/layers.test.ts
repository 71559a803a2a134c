/**
 * Layers that point one way: every relative import in `src/` is checked against a table of what
 * each top-level folder (or top-level file) of `src/` may import. A new folder or top-level file
 * fails here until it is given a row, so its place in the layers is a decision, not an accident.
 *
 * The table is the one in the README ("What each folder may import"); change both together.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ts from 'typescript';

const SRC = path.resolve(__dirname, '../../src');

/** Pure vocabulary and helpers at the bottom: they import nothing of ours but each other. */
const BOTTOM = ['errors', 'types', 'text', 'duration', 'backoff', 'log', 'atomic-file', 'connection-uri'];

/**
 * What each module may import, besides itself. A module is a top-level folder of `src/`
 * (`drivers`) or a top-level file without `.ts` (`errors`). An entry with a `/` allows one file
 * of a folder only (`drivers/paths`: the lexical path checks, not the drivers).
 */
export const ALLOWED: Record<string, readonly string[]> = {
  // bottom
  errors: ['backoff'],
  types: [],
  text: [],
  backoff: [],
  log: [],
  'atomic-file': [],
  duration: ['errors'],
  'connection-uri': ['text', 'types'],
  // effects on hosts: run a command; copy files; drive a hypervisor
  exec: [...BOTTOM],
  transfer: [...BOTTOM, 'exec'],
  drivers: [...BOTTOM, 'exec', 'transfer'],
  // desired state from the repository, and the daemon's settings file (of drivers/: the lexical
  // path checks and each driver's path rules, both pure)
  manifests: [...BOTTOM, 'drivers/paths', 'drivers/path-rules'],
  settings: [...BOTTOM, 'manifests'],
  // decisions: pure (see PURE below); of drivers/, only each driver's path rules (pure too)
  planner: ['errors', 'types', 'text', 'duration', 'backoff', 'drivers/path-rules', 'drivers/capabilities'],
  // actual state: observed through drivers; status files and git
  inventory: [...BOTTOM, 'drivers', 'planner'],
  status: [...BOTTOM, 'manifests'],
  // one migration
  machine: [...BOTTOM, 'transfer', 'drivers', 'planner'],
  // several daemon replicas sharing a fleet: etcd membership, locks, fences, migration state
  coord: [...BOTTOM, 'transfer', 'drivers', 'machine'],
  // notifications: the outbox and its receivers (machine: the migration's context type only)
  notify: [...BOTTOM, 'manifests', 'settings', 'machine'],
  // the loop
  reconciler: [
    ...BOTTOM,
    'exec',
    'transfer',
    'drivers',
    'manifests',
    'settings',
    'planner',
    'inventory',
    'status',
    'machine',
    'coord',
  ],
  // the fleet page: its view of the daemon's state (pure), its routes and event stream
  ui: [...BOTTOM],
  daemon: [
    ...BOTTOM,
    'exec',
    'transfer',
    'drivers',
    'manifests',
    'settings',
    'planner',
    'inventory',
    'status',
    'machine',
    'coord',
    'notify',
    'reconciler',
    'ui',
  ],
  // composition root: builds drivers, store, step actors, reconciler and daemon for the CLI
  app: [
    ...BOTTOM,
    'exec',
    'transfer',
    'drivers',
    'manifests',
    'settings',
    'planner',
    'inventory',
    'status',
    'machine',
    'coord',
    'notify',
    'reconciler',
    'ui',
    'daemon',
  ],
  cli: [
    ...BOTTOM,
    'exec',
    'transfer',
    'drivers',
    'manifests',
    'settings',
    'planner',
    'inventory',
    'status',
    'machine',
    'coord',
    'notify',
    'reconciler',
    'ui',
    'daemon',
    'app',
  ],
  // the test lab's library (lab tests, bench, demo): nothing in src/ imports it
  lab: [...BOTTOM, 'exec', 'transfer', 'drivers'],
};

/** Modules that do no I/O: none of these packages, none of our modules that do. */
const IO_PACKAGES = [
  'fs',
  'fs/promises',
  'child_process',
  'net',
  'dgram',
  'dns',
  'http',
  'https',
  'http2',
  'tls',
  'os',
  'worker_threads',
  'simple-git',
  'chokidar',
  'pino',
];
const PURE: Record<string, string> = {
  planner: 'the planner is pure: diff and plan from data, no I/O',
  errors: 'the bottom is pure',
  types: 'the bottom is pure',
  text: 'the bottom is pure',
  duration: 'the bottom is pure',
  backoff: 'the bottom is pure',
  'machine/migration-machine.ts': 'the machine definition names its effects, it runs none',
  // the path rules the planner and the manifests import from drivers/
  'drivers/paths.ts': 'the lexical path checks are pure',
  'drivers/path-rules.ts': 'the path rules are pure: the planner imports them',
  'drivers/capabilities.ts': "the drivers' capabilities are data: the planner imports them",
  'drivers/windows-paths.ts': 'the path rules are pure: the planner imports them',
  'drivers/driver.ts':
    'the driver contract is pure: the path rules the planner imports take POSIX_PATHS from it',
  'ui/view.ts': "the fleet page's view is built from data, no I/O",
};
/**
 * Files held to more than their folder's row: they may not import these modules or files (a
 * prefix of the target's path below `src/`, without `.ts`).
 */
const FILE_FORBIDDEN: Record<string, readonly string[]> = {
  'machine/migration-machine.ts': [
    'exec',
    'transfer',
    'drivers',
    'machine/steps',
    'machine/store',
    'machine/runner',
  ],
};

function walk(dir: string): string[] {
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .flatMap((e) =>
      e.isDirectory()
        ? walk(path.join(dir, e.name))
        : e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')
          ? [path.join(dir, e.name)]
          : [],
    );
}

/** `drivers` for `src/drivers/libvirt/xml.ts`, `errors` for `src/errors.ts`. */
function moduleOf(relToSrc: string): string {
  const [first = '', ...rest] = relToSrc.split('/');
  return rest.length === 0 ? first.replace(/\.ts$/, '') : first;
}

/** The file a relative specifier names, relative to `src/` with `/`, or undefined outside it. */
function resolve(srcDir: string, fromFile: string, spec: string): string | undefined {
  const base = path.resolve(path.dirname(fromFile), spec);
  const candidates = [base, `${base}.ts`, path.join(base, 'index.ts'), base.replace(/\.js$/, '.ts')];
  const hit = candidates.find((c) => fs.existsSync(c) && fs.statSync(c).isFile()) ?? `${base}.ts`;
  const rel = path.relative(srcDir, hit);
  if (rel.startsWith('..') || path.isAbsolute(rel)) return undefined;
  return rel.split(path.sep).join('/');
}

/** Every import (static, `export ... from`, `import()`, `require`), type-only ones included. */
function importsOf(file: string): string[] {
  const info = ts.preProcessFile(fs.readFileSync(file, 'utf8'), true, true);
  return info.importedFiles.map((f) => f.fileName);
}

function isIoPackage(spec: string): boolean {
  const bare = spec.replace(/^node:/, '');
  return IO_PACKAGES.some((p) => bare === p || bare.startsWith(`${p}/`));
}

/** One line per forbidden import: `FILE imports TARGET (FOLDER may not import FOLDER2)`. */
export function layerViolations(srcDir = SRC): string[] {
  const out: string[] = [];
  for (const abs of walk(srcDir).sort()) {
    const rel = path.relative(srcDir, abs).split(path.sep).join('/');
    const from = moduleOf(rel);
    const allowed = ALLOWED[from];
    if (!allowed) {
      out.push(
        `src/${rel} is in no layer (add ${JSON.stringify(from)} to ALLOWED in test/unit/layers.test.ts)`,
      );
      continue;
    }
    const pureWhy = PURE[rel] ?? PURE[from];
    for (const spec of importsOf(abs)) {
      if (!spec.startsWith('.')) {
        if (pureWhy && isIoPackage(spec))
          out.push(`src/${rel} imports ${spec} (${from} may not import ${spec}: ${pureWhy})`);
        continue;
      }
      const target = resolve(srcDir, abs, spec);
      if (target === undefined) continue; // outside src/ (schemas, package.json)
      const to = moduleOf(target);
      const stem = target.replace(/\.ts$/, '').replace(/\/index$/, '');
      if (to !== from && !allowed.includes(to) && !allowed.includes(stem)) {
        out.push(`src/${rel} imports src/${target} (${from} may not import ${to})`);
        continue;
      }
      const banned = (FILE_FORBIDDEN[rel] ?? []).find((f) => stem === f || stem.startsWith(`${f}/`));
      if (banned) out.push(`src/${rel} imports src/${target} (src/${rel} may not import ${banned})`);
    }
  }
  return out;
}

describe('layers', () => {
  it('every relative import in src/ points down the table', () => {
    const violations = layerViolations();
    if (violations.length)
      console.error(`${violations.length} import(s) against the layers:\n${violations.join('\n')}`);
    expect(violations).toEqual([]);
  });

  it('the table has no cycles between modules', () => {
    const state = new Map<string, 'open' | 'done'>();
    const cycles: string[] = [];
    const visit = (m: string, trail: string[]): void => {
      if (state.get(m) === 'done') return;
      if (state.get(m) === 'open') {
        cycles.push([...trail.slice(trail.indexOf(m)), m].join(' -> '));
        return;
      }
      state.set(m, 'open');
      for (const dep of ALLOWED[m] ?? []) if (!dep.includes('/') && dep !== m) visit(dep, [...trail, m]);
      state.set(m, 'done');
    };
    for (const m of Object.keys(ALLOWED)) visit(m, []);
    expect(cycles).toEqual([]);
  });

  it('sees an upward import (the check is not vacuous)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmplace-layers-'));
    try {
      fs.mkdirSync(path.join(dir, 'exec'));
      fs.mkdirSync(path.join(dir, 'planner'));
      fs.mkdirSync(path.join(dir, 'manifests'));
      fs.writeFileSync(path.join(dir, 'manifests', 'checks.ts'), 'export const x = 1;\n');
      fs.writeFileSync(path.join(dir, 'exec', 'exec.ts'), "import { x } from '../manifests/checks';\n");
      fs.writeFileSync(
        path.join(dir, 'planner', 'plan.ts'),
        "import * as fs from 'node:fs';\nexport const y = () => import('../exec/exec');\n",
      );
      fs.mkdirSync(path.join(dir, 'machine', 'steps'), { recursive: true });
      fs.writeFileSync(path.join(dir, 'machine', 'steps', 'index.ts'), 'export const z = 1;\n');
      fs.writeFileSync(path.join(dir, 'machine', 'migration-machine.ts'), "export * from './steps';\n");
      fs.writeFileSync(path.join(dir, 'stray.ts'), 'export {};\n');
      expect(layerViolations(dir)).toEqual([
        'src/exec/exec.ts imports src/manifests/checks.ts (exec may not import manifests)',
        'src/machine/migration-machine.ts imports src/machine/steps/index.ts (src/machine/migration-machine.ts may not import machine/steps)',
        'src/planner/plan.ts imports node:fs (planner may not import node:fs: the planner is pure: diff and plan from data, no I/O)',
        'src/planner/plan.ts imports src/exec/exec.ts (planner may not import exec)',
        'src/stray.ts is in no layer (add "stray" to ALLOWED in test/unit/layers.test.ts)',
      ]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
