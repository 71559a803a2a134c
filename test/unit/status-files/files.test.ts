import * as fs from 'node:fs';
import * as path from 'node:path';
import { formatProblem } from '../../../src/manifests';
import { loadActualState, renderStatusYaml, writeStatusFiles } from '../../../src/status/files';
import { StalledError } from '../../../src/errors';
import type { HostStatus, VirtualMachineStatus } from '../../../src/types';
import { FIXTURES, makeRepo, REPO_ROOT } from '../../support/manifests';
import { cleanupTmp } from '../../support/tmp';
import { vmStatus } from '../../support/git';

afterAll(cleanupTmp);

const hostStatus = (name = 'lab'): HostStatus => ({
  apiVersion: 'vmplace.dev/v1alpha1',
  kind: 'HostStatus',
  metadata: { name },
  observedAt: '2025-01-15T10:00:00Z',
  cpu: { vendor: 'AMD', model: 'EPYC' },
  storage: [{ name: 'a', path: '/var/lib/vmplace/a', capacityBytes: 100, freeBytes: 50 }],
});

describe('loadActualState', () => {
  it.each([
    ['examples/two-storages', 1, 1],
    ['examples/fleet', 6, 4],
  ])('loads %s without problems', async (dir, vms, hosts) => {
    const { state, problems } = await loadActualState(path.join(REPO_ROOT, dir));
    expect(problems).toEqual([]);
    expect([state.vms.size, state.hosts.size]).toEqual([vms, hosts]);
  });

  it('returns an empty state when status/ does not exist', async () => {
    const { state, problems } = await loadActualState(makeRepo());
    expect(problems).toEqual([]);
    expect(state.vms.size + state.hosts.size).toBe(0);
  });

  it('example status files are exactly what renderStatusYaml writes (after the modeline)', async () => {
    for (const dir of ['examples/two-storages', 'examples/fleet']) {
      const root = path.join(REPO_ROOT, dir);
      const { state } = await loadActualState(root);
      for (const [sub, map] of [
        ['vms', state.vms],
        ['hosts', state.hosts],
      ] as const) {
        for (const [name, obj] of map) {
          const text = fs.readFileSync(path.join(root, 'status', sub, `${name}.yaml`), 'utf8');
          expect(text.replace(/^# yaml-language-server: .*\n/, '')).toBe(renderStatusYaml(obj));
        }
      }
    }
  });

  /** [description, file (relative), content, expected formatted problem] */
  const bad: [string, string, string | Buffer, RegExp][] = [
    [
      'wrong type, with the line and column of the value',
      'status/vms/demo.yaml',
      renderStatusYaml(vmStatus()).replace('memoryBytes: 1073741824', 'memoryBytes: lots'),
      /^status\/vms\/demo\.yaml:8:16: VirtualMachineStatus\/demo: placement\.memoryBytes: must be integer \(got "lots"\)$/,
    ],
    [
      'unknown field',
      'status/vms/demo.yaml',
      renderStatusYaml(vmStatus()) + 'extra: 1\n',
      /^status\/vms\/demo\.yaml:\d+:1: VirtualMachineStatus\/demo: extra: unknown field$/,
    ],
    [
      'closed phase enum',
      'status/vms/demo.yaml',
      renderStatusYaml(vmStatus()).replace('phase: Placed', 'phase: Moving'),
      /phase: must be one of Placed, Pending, Migrating, Blocked, Failed, Unknown \(got "Moving"\)$/,
    ],
    [
      'name not matching the file name',
      'status/vms/other.yaml',
      renderStatusYaml(vmStatus()),
      /^status\/vms\/other\.yaml:4:9: VirtualMachineStatus\/demo: metadata\.name: "demo" does not match the file name "other\.yaml"$/,
    ],
    [
      'a HostStatus in status/vms',
      'status/vms/lab.yaml',
      renderStatusYaml(hostStatus()),
      /^status\/vms\/lab\.yaml:2:7: VirtualMachineStatus\/lab: kind: must be "VirtualMachineStatus" in status\/vms\/ \(got "HostStatus"\)$/,
    ],
    [
      'two documents',
      'status/hosts/lab.yaml',
      renderStatusYaml(hostStatus()) + '---\n' + renderStatusYaml(hostStatus()),
      /^status\/hosts\/lab\.yaml:\d+:1: a status file holds exactly one document; found 2$/,
    ],
    [
      'bad timestamp',
      'status/hosts/lab.yaml',
      renderStatusYaml(hostStatus()).replace('2025-01-15T10:00:00Z', 'yesterday'),
      /^status\/hosts\/lab\.yaml:5:13: HostStatus\/lab: observedAt: must match format "date-time" \(got "yesterday"\)$/,
    ],
    [
      'binary content',
      'status/hosts/lab.yaml',
      Buffer.from([0x6b, 0x3a, 0x00, 0x01]),
      /^status\/hosts\/lab\.yaml:1:3: binary file/,
    ],
    [
      'merge conflict',
      'status/hosts/lab.yaml',
      '<<<<<<< HEAD\nkind: HostStatus\n=======\n>>>>>>> x\n',
      /^status\/hosts\/lab\.yaml:1:1: merge conflict marker/,
    ],
    [
      'alias bomb',
      'status/hosts/lab.yaml',
      fs.readFileSync(path.join(FIXTURES, 'hostile', 'alias-bomb.yaml')),
      /^status\/hosts\/lab\.yaml:1:1: too many alias expansions/,
    ],
  ];

  it.each(bad)('skips a bad file and reports it: %s', async (_name, rel, content, expected) => {
    const repo = makeRepo({ [rel]: content, 'status/vms/good.yaml': renderStatusYaml(vmStatus('good')) });
    const { state, problems } = await loadActualState(repo);
    expect(problems.map(formatProblem)).toEqual(expect.arrayContaining([expect.stringMatching(expected)]));
    expect([...state.vms.keys()]).toEqual(['good']);
    expect(state.hosts.size).toBe(0);
  });

  it('skips status files that are symbolic links leading outside the repository', async () => {
    const repo = makeRepo({ 'status/vms/good.yaml': renderStatusYaml(vmStatus('good')) });
    const outside = path.join(path.dirname(repo), 'demo.yaml');
    fs.writeFileSync(outside, renderStatusYaml(vmStatus('demo')));
    fs.symlinkSync(outside, path.join(repo, 'status', 'vms', 'demo.yaml'));
    const { state, problems } = await loadActualState(repo);
    expect(problems.map(formatProblem)).toEqual([
      'status/vms/demo.yaml:1:1: symbolic link leads outside the repository; skipped',
    ]);
    expect([...state.vms.keys()]).toEqual(['good']);
  });
});

describe('renderStatusYaml', () => {
  it('writes keys in the order of the types, whatever the input order', () => {
    const s = vmStatus('demo', {
      migration: {
        attempts: 1,
        bytesTotal: 10,
        bytesDone: 5,
        step: 'CopyingBase',
        to: { storage: 'b', host: 'lab' },
        from: { host: 'lab', storage: 'a' },
        strategy: 'quick',
        id: 'm-1',
      },
    });
    const shuffled = Object.fromEntries(Object.entries(s).reverse()) as unknown as VirtualMachineStatus;
    const text = renderStatusYaml(shuffled);
    expect(text).toBe(renderStatusYaml(s));
    const topKeys = text
      .split('\n')
      .filter((l) => /^[a-zA-Z]/.test(l))
      .map((l) => l.split(':')[0]);
    expect(topKeys).toEqual([
      'apiVersion',
      'kind',
      'metadata',
      'observedRevision',
      'placement',
      'phase',
      'conditions',
      'migration',
    ]);
    expect(text).toContain('  from:\n    host: lab\n    storage: a\n  to:\n    host: lab\n    storage: b\n');
  });

  it('is byte-identical for identical input, adds nothing, quotes YAML-ambiguous strings', () => {
    const a = renderStatusYaml(vmStatus());
    expect(renderStatusYaml(vmStatus())).toBe(a);
    expect(a).not.toMatch(/\d{4}-\d\d-\d\dT(?!10:00:00Z)/);
    expect(a).toContain("    status: 'True'\n");
    expect(a.endsWith('\n')).toBe(true);
  });

  it('omits undefined fields and drops fields the type does not declare', () => {
    const s = { ...vmStatus(), observedRevision: undefined, bogus: 1 } as unknown as VirtualMachineStatus;
    const text = renderStatusYaml(s);
    expect(text).not.toContain('observedRevision');
    expect(text).not.toContain('bogus');
  });

  it('keeps multi-line messages readable and round-trips them', async () => {
    const s = vmStatus('demo');
    s.conditions[0]!.message = 'line one\nline two: with colon';
    const repo = makeRepo();
    await writeStatusFiles(repo, { vms: [s] });
    const { state, problems } = await loadActualState(repo);
    expect(problems).toEqual([]);
    expect(state.vms.get('demo')).toEqual(s);
  });

  it('keeps definedOn (a VM defined on two hosts) after the placement, through write and read', async () => {
    const s = vmStatus('demo', { definedOn: ['lab', 'lab2'] });
    const repo = makeRepo();
    await writeStatusFiles(repo, { vms: [s] });
    expect(fs.readFileSync(path.join(repo, 'status/vms/demo.yaml'), 'utf8')).toContain(
      '      allocatedBytes: 1610612736\ndefinedOn:\n  - lab\n  - lab2\nphase: Placed\n',
    );
    const { state, problems } = await loadActualState(repo);
    expect(problems).toEqual([]);
    expect(state.vms.get('demo')).toEqual(s);
  });
});

describe('writeStatusFiles', () => {
  const listDir = (dir: string): string[] => fs.readdirSync(dir).sort();

  it('writes new files, then nothing when unchanged, then only what changed', async () => {
    const repo = makeRepo();
    const first = await writeStatusFiles(repo, {
      vms: [vmStatus('a'), vmStatus('b')],
      hosts: [hostStatus('lab')],
    });
    expect(first).toEqual(['status/hosts/lab.yaml', 'status/vms/a.yaml', 'status/vms/b.yaml']);
    const mtime = fs.statSync(path.join(repo, 'status/vms/a.yaml')).mtimeMs;
    expect(
      await writeStatusFiles(repo, { vms: [vmStatus('a'), vmStatus('b')], hosts: [hostStatus('lab')] }),
    ).toEqual([]);
    expect(fs.statSync(path.join(repo, 'status/vms/a.yaml')).mtimeMs).toBe(mtime);
    const changed = await writeStatusFiles(repo, {
      vms: [vmStatus('a'), vmStatus('b', { phase: 'Pending' })],
    });
    expect(changed).toEqual(['status/vms/b.yaml']);
    expect(listDir(path.join(repo, 'status/vms'))).toEqual(['a.yaml', 'b.yaml']);
    const { state } = await loadActualState(repo);
    expect(state.vms.get('b')!.phase).toBe('Pending');
    expect(state.hosts.get('lab')).toEqual(hostStatus('lab'));
  });

  it('leaves no temporary files behind and writes complete files', async () => {
    const repo = makeRepo();
    await writeStatusFiles(repo, { vms: [vmStatus('a')] });
    expect(listDir(path.join(repo, 'status/vms'))).toEqual(['a.yaml']);
    expect(fs.readFileSync(path.join(repo, 'status/vms/a.yaml'), 'utf8')).toBe(
      renderStatusYaml(vmStatus('a')),
    );
  });

  it.each([
    ['a name that is not a DNS label (path traversal)', [vmStatus('../../etc/passwd')]],
    ['an invalid field', [vmStatus('a', { phase: 'Sideways' as VirtualMachineStatus['phase'] })]],
    ['the same VM twice', [vmStatus('a'), vmStatus('a')]],
  ])('refuses %s and writes nothing', async (_name, vms) => {
    const repo = makeRepo();
    await expect(writeStatusFiles(repo, { vms: [vmStatus('ok'), ...vms] })).rejects.toBeInstanceOf(
      StalledError,
    );
    expect(fs.existsSync(path.join(repo, 'status'))).toBe(false);
  });

  it('refuses to write through a status directory symlinked outside the repository', async () => {
    const repo = makeRepo();
    const outside = path.join(path.dirname(repo), 'elsewhere');
    fs.mkdirSync(outside);
    fs.mkdirSync(path.join(repo, 'status'));
    fs.symlinkSync(outside, path.join(repo, 'status', 'vms'));
    await expect(writeStatusFiles(repo, { vms: [vmStatus('a')] })).rejects.toMatchObject({
      reason: 'SymlinkInStatusPath',
    });
    expect(fs.readdirSync(outside)).toEqual([]);
  });

  it('replaces a symlinked status file instead of writing through it', async () => {
    const repo = makeRepo();
    const outside = path.join(path.dirname(repo), 'target.yaml');
    fs.writeFileSync(outside, 'untouched\n');
    fs.mkdirSync(path.join(repo, 'status', 'vms'), { recursive: true });
    fs.symlinkSync(outside, path.join(repo, 'status', 'vms', 'a.yaml'));
    expect(await writeStatusFiles(repo, { vms: [vmStatus('a')] })).toEqual(['status/vms/a.yaml']);
    expect(fs.readFileSync(outside, 'utf8')).toBe('untouched\n');
    expect(fs.lstatSync(path.join(repo, 'status', 'vms', 'a.yaml')).isFile()).toBe(true);
  });
});
