/**
 * What a new user trips on (issue 11): validate's CI formats and clickable paths, plan's exit
 * codes and `-o`, warnings for a missing status/ and skipped files, validate reading what plan
 * reads, a per-disk override naming no disk, a migration in flight.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { escapeGithubData, escapeGithubProperty, formatGithub } from '../../../src/manifests/format-ci';
import { hostDoc, makeRepo, vmDoc } from '../../support/manifests';
import { runCli } from '../../support/cli';
import { cleanupTmp } from '../../support/tmp';

afterAll(cleanupTmp);

const run = runCli;

const rel = (repo: string, file: string) => `${path.relative(process.cwd(), repo)}/${file}`;

function vmStatusDoc(name: string, host: string, disks: [string, string, number][], extra = ''): string {
  return `apiVersion: vmplace.dev/v1alpha1
kind: VirtualMachineStatus
metadata:
  name: ${name}
placement:
  host: ${host}
  memoryBytes: 1073741824
  disks:
${disks
  .map(
    ([t, storage, bytes]) => `    - target: ${t}
      path: /var/lib/vmplace/${storage}/${name}-${t}.qcow2
      storage: ${storage}
      format: qcow2
      virtualBytes: ${bytes}
      allocatedBytes: ${bytes}`,
  )
  .join('\n')}
${extra}`;
}

const PLACED = `phase: Placed
conditions: []
`;

const hostStatusDoc = (name: string) => `apiVersion: vmplace.dev/v1alpha1
kind: HostStatus
metadata:
  name: ${name}
observedAt: '2025-01-01T00:00:00Z'
storage:
  - {name: a, path: /var/lib/vmplace/a, capacityBytes: 1099511627776, freeBytes: 549755813888}
  - {name: b, path: /var/lib/vmplace/b, capacityBytes: 1099511627776, freeBytes: 549755813888}
`;

/** A repository whose one VM `demo` is on storage `a` and should be on `b` (one move). */
function movingRepo(files: Record<string, string> = {}): string {
  return makeRepo({
    'manifests/h.yaml': hostDoc('lab'),
    'manifests/vm.yaml': vmDoc('demo', 'lab', 'b'),
    'status/vms/demo.yaml': vmStatusDoc('demo', 'lab', [['vda', 'a', 2 ** 30]], PLACED),
    'status/hosts/lab.yaml': hostStatusDoc('lab'),
    ...files,
  });
}

describe('validate --format', () => {
  const bad = () =>
    makeRepo({ 'manifests/h.yaml': hostDoc('lab'), 'manifests/vm.yaml': vmDoc('demo', 'lab', 'nope') });

  it('github: one ::error workflow command per problem, at the path from the working directory; exit 2', async () => {
    const repo = bad();
    const r = await run('validate', '--format', 'github', repo);
    expect(r.code).toBe(2);
    const file = escapeGithubProperty(rel(repo, 'manifests/vm.yaml'));
    const lines = r.out.split('\n').filter(Boolean);
    expect(lines.every((l) => /^::(error|warning) file=/.test(l))).toBe(true);
    expect(r.out).toContain(
      `::error file=${file},line=7,col=12,title=VirtualMachine/demo::spec.storage: "nope" is not a storage location`,
    );
  });

  it('gitlab: a Code Quality report; json: a list; exit codes unchanged', async () => {
    const repo = bad();
    const g = await run('validate', '--format', 'gitlab', repo);
    expect(g.code).toBe(2);
    const report = JSON.parse(g.out).filter((i: { severity: string }) => i.severity === 'major');
    expect(report).toEqual([
      expect.objectContaining({
        check_name: 'vmplace',
        severity: 'major',
        fingerprint: expect.stringMatching(/^[0-9a-f]{32}$/),
        location: { path: rel(repo, 'manifests/vm.yaml'), lines: { begin: 7 } },
      }),
    ]);
    const j = await run('validate', '--format', 'json', repo);
    expect(j.code).toBe(2);
    expect(JSON.parse(j.out).filter((p: { severity: string }) => p.severity === 'error')).toEqual([
      expect.objectContaining({ severity: 'error', file: rel(repo, 'manifests/vm.yaml'), line: 7, col: 12 }),
    ]);
    const ok = await run('validate', '--format', 'json', movingRepo());
    expect([ok.code, JSON.parse(ok.out)]).toEqual([0, []]);
  });

  it('escapes workflow-command data and properties as the runner unescapes them', () => {
    expect(escapeGithubData('50%\r\nnext')).toBe('50%25%0D%0Anext');
    expect(escapeGithubProperty('a:b,c%\n')).toBe('a%3Ab%2Cc%25%0A');
    // a message cannot start a second command
    const [line] = formatGithub([{ file: 'x.yaml', line: 1, col: 1, message: 'bad\n::error::forged' }]);
    expect(line).toBe('::error file=x.yaml,line=1,col=1::bad%0A::error::forged');
  });
});

describe('plan exit codes and output', () => {
  it('--help says what --detailed-exitcode means and offers --fail-on-blocked and -o', async () => {
    const r = await run('plan', '--help');
    r.out = r.out.replace(/\s+/g, ' ');
    expect(r.out).toMatch(/--detailed-exitcode[\s\S]*1 when migrations are planned[\s\S]*2 on error/);
    expect(r.out).toMatch(/Terraform/);
    expect(r.out).toContain('--fail-on-blocked');
    expect(r.out).toContain('-o, --output <file>');
    expect(r.out).toContain('exit 1 when any planned migration is blocked');
  });

  it('--fail-on-blocked exits 1 when a migration is blocked, 0 when none is', async () => {
    const ok = movingRepo();
    expect((await run('plan', '--fail-on-blocked', ok)).code).toBe(0);
    // 600 GiB do not fit in the 512 GiB free on b
    const full = movingRepo({
      'status/vms/demo.yaml': vmStatusDoc('demo', 'lab', [['vda', 'a', 600 * 2 ** 30]], PLACED),
    });
    const plain = await run('plan', full);
    expect(plain.code).toBe(0);
    expect(plain.out).toContain('blocked');
    expect((await run('plan', '--fail-on-blocked', full)).code).toBe(1);
  });

  it('-o FILE writes the plan there, nothing on standard output', async () => {
    const repo = movingRepo();
    const file = path.join(path.dirname(repo), 'plan.json');
    const r = await run('plan', '--format', 'json', '-o', file, repo);
    expect([r.code, r.out]).toEqual([0, '']);
    expect(JSON.parse(fs.readFileSync(file, 'utf8')).migrations[0].vm).toBe('demo');
  });
});

describe('warnings instead of silence', () => {
  it('a missing status/ is a warning (exit codes unchanged)', async () => {
    const repo = makeRepo({ 'manifests/h.yaml': hostDoc('lab'), 'manifests/vm.yaml': vmDoc('demo') });
    for (const cmd of ['validate', 'plan']) {
      const r = await run(cmd, repo);
      expect(r.code).toBe(0);
      expect(r.err).toContain(`${rel(repo, 'status')}:1:1: warning: status/ not found`);
    }
  });

  it('.YAML, .yml in status/ and hidden files are reported as skipped', async () => {
    const repo = movingRepo({
      'manifests/extra.YAML': vmDoc('other'),
      'manifests/.hidden.yaml': vmDoc('ghost'),
      'manifests/.archive/old.yaml': vmDoc('old'),
      'status/vms/x.yml': 'whatever',
      'manifests/.gitkeep': '',
    });
    const r = await run('validate', repo);
    expect(r.code).toBe(0);
    expect(r.err).toContain(
      `${rel(repo, 'manifests/extra.YAML')}:1:1: warning: skipped: only .yaml and .yml (lower case) are read`,
    );
    expect(r.err).toContain(`${rel(repo, 'manifests/.hidden.yaml')}:1:1: warning: skipped: hidden`);
    expect(r.err).toContain(`${rel(repo, 'manifests/.archive')}:1:1: warning: skipped: hidden`);
    expect(r.err).toContain(
      `${rel(repo, 'status/vms/x.yml')}:1:1: warning: skipped: only .yaml is read in status/`,
    );
    expect(r.err).not.toContain('.gitkeep');
    const gh = await run('validate', '--format', 'github', repo);
    expect(gh.out).toContain(
      `::warning file=${escapeGithubProperty(rel(repo, 'manifests/extra.YAML'))},line=1,col=1::skipped`,
    );
  });
});

describe('validate and plan agree', () => {
  it('validate reads vmplace.yaml: an invalid one fails validate as it fails plan', async () => {
    const repo = movingRepo({ 'vmplace.yaml': 'limits:\n  concurrent: 0\n' });
    const v = await run('validate', repo);
    const p = await run('plan', repo);
    expect([v.code, p.code]).toEqual([2, 2]);
    expect(v.err).toContain(`${rel(repo, 'vmplace.yaml')}:2:15: limits.concurrent`);
  });

  it('validate reads status/: a broken status file fails validate as it fails plan', async () => {
    const repo = movingRepo({
      'status/vms/demo.yaml': 'apiVersion: vmplace.dev/v1alpha1\nkind: VirtualMachineStatus\n',
    });
    const v = await run('validate', repo);
    expect(v.code).toBe(2);
    expect(v.err).toContain(rel(repo, 'status/vms/demo.yaml'));
    expect((await run('plan', repo)).code).toBe(2);
  });

  it('a per-disk override naming a disk the VM does not have is a problem at its key', async () => {
    // (`vbd` is no device name: the schema refuses it; `vdc` is one, but not of this VM)
    const repo = movingRepo({
      'manifests/vm.yaml': vmDoc('demo', 'lab', 'b', '  disks:\n    vdc:\n      storage: a\n'),
      'status/vms/demo.yaml': vmStatusDoc(
        'demo',
        'lab',
        [
          ['vda', 'a', 2 ** 30],
          ['vdb', 'a', 2 ** 30],
        ],
        PLACED,
      ),
    });
    for (const cmd of ['validate', 'plan']) {
      const r = await run(cmd, repo);
      expect(r.code).toBe(2);
      expect(r.err).toContain(
        `${rel(repo, 'manifests/vm.yaml')}:9:5: VirtualMachine/demo: spec.disks.vdc: demo has no disk vdc (status/ shows vda, vdb)`,
      );
    }
  });
});

describe('a migration in flight', () => {
  const migrating = (host: string, storage: string) => `phase: Migrating
conditions: []
migration:
  id: m-20250101-1
  strategy: quick
  from: {host: lab, storage: a}
  to: {host: lab, storage: b}
  step: ${storage === 'b' ? 'CleaningUp' : 'CopyingBase'}
  bytesDone: 536870912
  bytesTotal: 1073741824
  attempts: 1
`;

  it('already where the manifests say: in flight, not unchanged', async () => {
    const repo = movingRepo({
      'status/vms/demo.yaml': vmStatusDoc('demo', 'lab', [['vda', 'b', 2 ** 30]], migrating('lab', 'b')),
    });
    const r = await run('plan', repo);
    expect(r.out).toContain('0 unchanged');
    expect(r.out).toContain('1 in flight');
    expect(r.out).toContain('In flight (a migration runs, to where the manifests say): demo');
    const j = JSON.parse((await run('plan', '--format', 'json', repo)).out);
    expect([j.unchanged, j.inFlight]).toEqual([[], ['demo']]);
  });

  it('still to move: the planned move says a migration is in flight', async () => {
    const repo = movingRepo({
      'status/vms/demo.yaml': vmStatusDoc('demo', 'lab', [['vda', 'a', 2 ** 30]], migrating('lab', 'a')),
    });
    const r = await run('plan', repo);
    expect(r.out).toMatch(/demo .* in flight/);
    expect(r.out).toContain(
      'MigrationInFlight  migration m-20250101-1 to lab/b is at CopyingBase (50% copied)',
    );
  });
});
