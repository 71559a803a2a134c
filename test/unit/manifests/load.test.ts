import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { formatProblem, loadDesiredState } from '../../../src/manifests';
import { StalledError } from '../../../src/errors';
import { FIXTURES, hostDoc, makeRepo, REPO_ROOT, vmDoc } from '../../support/manifests';
import { cleanupTmp } from '../../support/tmp';

afterAll(cleanupTmp);

const lines = async (repo: string): Promise<string[]> =>
  (await loadDesiredState(repo)).problems.map(formatProblem);

describe('loadDesiredState on the examples', () => {
  it('loads examples/two-storages without problems', async () => {
    const s = await loadDesiredState(path.join(REPO_ROOT, 'examples/two-storages'));
    expect(s.problems).toEqual([]);
    expect(s.invalidFiles.size).toBe(0);
    const lab = s.hosts.get('lab')!;
    expect(lab.spec).toEqual({
      driver: 'libvirt',
      uri: 'qemu:///system',
      storage: [
        { name: 'a', path: '/var/lib/vmplace/a' },
        { name: 'b', path: '/var/lib/vmplace/b' },
      ],
    });
    expect(lab.source).toEqual({ file: 'manifests/hosts.yaml', line: 3, col: 1 });
    expect(s.vms.get('demo')!.spec).toEqual({ host: 'lab', storage: 'b', strategy: 'quick', maxPause: '2s' });
    expect(s.vms.get('demo')!.metadata.labels).toEqual({ app: 'demo' });
  });

  it('loads examples/fleet without problems', async () => {
    const s = await loadDesiredState(path.join(REPO_ROOT, 'examples/fleet'));
    expect(s.problems).toEqual([]);
    expect([...s.clusters.keys()].sort()).toEqual(['east', 'west']);
    expect([...s.hosts.keys()].sort()).toEqual(['hv-east-1', 'hv-east-2', 'hv-solo', 'hv-west-1']);
    expect([...s.vms.keys()].sort()).toEqual(['app-01', 'db-01', 'legacy-01', 'mon-01', 'web-01', 'web-02']);
    expect(s.vms.get('db-01')!.spec.disks).toEqual({ vdb: { storage: 'fast' } });
    expect(s.vms.get('legacy-01')!.spec.suspend).toBe(true);
    expect(s.hosts.get('hv-solo')!.spec.ssh).toEqual({
      host: 'solo.example.net',
      user: 'vmplace',
      port: 2222,
      identityFile: '/etc/vmplace/id_ed25519',
      knownHostsFile: '/etc/vmplace/known_hosts',
    });
  });
});

describe('documents in a file with problems', () => {
  it('drops only the invalid document, reports every problem of it, lists the file', async () => {
    const s = await loadDesiredState(path.join(FIXTURES, 'manifests/mixed'));
    expect(s.problems.map(formatProblem)).toEqual([
      'manifests/mixed.yaml:23:12: VirtualMachine/web-01: spec.suspend: must be boolean (got "yes")',
      'manifests/mixed.yaml:24:3: VirtualMachine/web-01: spec.colour: unknown field',
    ]);
    expect([...s.hosts.keys()]).toEqual(['hv-a']);
    expect([...s.vms.keys()]).toEqual(['web-02']);
    expect([...s.invalidFiles]).toEqual(['manifests/mixed.yaml']);
  });
});

describe('formatProblem', () => {
  it('prints PATH:LINE:COL: Kind/name: message', () => {
    expect(
      formatProblem({
        file: 'manifests/a.yaml',
        line: 3,
        col: 9,
        object: 'Host/hv-a',
        message: 'spec.x: unknown field',
      }),
    ).toBe('manifests/a.yaml:3:9: Host/hv-a: spec.x: unknown field');
  });
  it('leaves out the object when unknown and never prints control characters', () => {
    expect(formatProblem({ file: 'a\nb.yaml', line: 1, col: 1, message: 'bad\r\nthing\u001b[31m' })).toBe(
      'a?b.yaml:1:1: bad??thing?[31m',
    );
  });
});

/** [description, files, expected formatted problem lines (exactly)] */
const schemaCases: [string, string, string[]][] = [
  [
    'YAML 1.2: yes is a string, not a boolean',
    vmDoc('demo', 'lab', 'b', '  suspend: yes\n'),
    ['manifests/x.yaml:8:12: VirtualMachine/demo: spec.suspend: must be boolean (got "yes")'],
  ],
  [
    'YAML 1.2: on/off are strings',
    vmDoc('demo', 'lab', 'b', '  suspend: off\n'),
    ['manifests/x.yaml:8:12: VirtualMachine/demo: spec.suspend: must be boolean (got "off")'],
  ],
  [
    'closed enum',
    vmDoc('demo', 'lab', 'b', '  strategy: fast\n'),
    [
      'manifests/x.yaml:8:13: VirtualMachine/demo: spec.strategy: must be one of quick, live, cold, auto (got "fast")',
    ],
  ],
  [
    'missing required field points at the mapping',
    'apiVersion: vmplace.dev/v1alpha1\nkind: VirtualMachine\nmetadata:\n  name: demo\nspec:\n  storage: b\n',
    ['manifests/x.yaml:6:3: VirtualMachine/demo: spec.host: missing required field'],
  ],
  [
    'missing spec',
    'apiVersion: vmplace.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: east\n',
    ['manifests/x.yaml:1:1: Cluster/east: spec: missing required field'],
  ],
  [
    'unknown top-level field, at the key',
    vmDoc('demo', 'lab', 'b') + 'status: {}\n',
    ['manifests/x.yaml:8:1: VirtualMachine/demo: status: unknown field'],
  ],
  [
    'maxPause must be a duration',
    vmDoc('demo', 'lab', 'b', '  maxPause: 1 second\n'),
    [
      'manifests/x.yaml:8:13: VirtualMachine/demo: spec.maxPause: must be a duration like 500ms, 2s or 1m (got "1 second")',
    ],
  ],
  [
    'disk override keys are device names',
    vmDoc('demo', 'lab', 'b', '  disks:\n    nvme0:\n      storage: a\n'),
    [
      'manifests/x.yaml:9:5: VirtualMachine/demo: spec.disks: key "nvme0" is not allowed: disk keys are target device names like vda, sdb, hdc or xvda',
    ],
  ],
  [
    'labels must be a string map',
    'apiVersion: vmplace.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: east\n  labels:\n    tier: 1\nspec: {}\n',
    ['manifests/x.yaml:6:11: Cluster/east: metadata.labels.tier: must be string (got 1)'],
  ],
  [
    'every problem of a document, not just the first',
    vmDoc('demo', 'lab', 'b', '  suspend: 1\n  strategy: x\n  extra: 1\n'),
    [
      'manifests/x.yaml:8:12: VirtualMachine/demo: spec.suspend: must be boolean (got 1)',
      'manifests/x.yaml:9:13: VirtualMachine/demo: spec.strategy: must be one of quick, live, cold, auto (got "x")',
      'manifests/x.yaml:10:3: VirtualMachine/demo: spec.extra: unknown field',
    ],
  ],
];

describe('schema validation', () => {
  it.each(schemaCases)('%s', async (_name, doc, expected) => {
    const repo = makeRepo({ 'manifests/x.yaml': doc, 'manifests/lab.yaml': hostDoc('lab') });
    expect(await lines(repo)).toEqual(expected);
  });
});

const cluster = (name: string, storage: [string, string][]): string =>
  `apiVersion: vmplace.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: ${name}\n` +
  (storage.length
    ? 'spec:\n  storage:\n' + storage.map(([n, p]) => `    - name: ${n}\n      path: ${p}\n`).join('')
    : 'spec: {}\n');
const clusteredHost = (name: string, clusterName: string, storage: [string, string][] = []): string =>
  `apiVersion: vmplace.dev/v1alpha1\nkind: Host\nmetadata:\n  name: ${name}\nspec:\n  driver: libvirt\n  uri: qemu:///system\n  cluster: ${clusterName}\n` +
  (storage.length
    ? '  storage:\n' + storage.map(([n, p]) => `    - name: ${n}\n      path: ${p}\n`).join('')
    : '');

/** [description, files, expected lines, surviving VMs] */
const referenceCases: [string, Record<string, string>, string[], string[]][] = [
  [
    'VM on an unknown host',
    { 'manifests/v.yaml': vmDoc('demo', 'nope', 'a') },
    ['manifests/v.yaml:6:9: VirtualMachine/demo: spec.host: Host "nope" not found'],
    [],
  ],
  [
    'VM on a storage the host does not have',
    { 'manifests/h.yaml': hostDoc('lab'), 'manifests/v.yaml': vmDoc('demo', 'lab', 'c') },
    [
      'manifests/v.yaml:7:12: VirtualMachine/demo: spec.storage: "c" is not a storage location of Host "lab" (available: a, b)',
    ],
    [],
  ],
  [
    'per-disk override naming an unknown storage',
    {
      'manifests/h.yaml': hostDoc('lab'),
      'manifests/v.yaml': vmDoc('demo', 'lab', 'a', '  disks:\n    vdb:\n      storage: z\n'),
    },
    [
      'manifests/v.yaml:10:16: VirtualMachine/demo: spec.disks.vdb.storage: "z" is not a storage location of Host "lab" (available: a, b)',
    ],
    [],
  ],
  [
    'VM using the shared storage of its host cluster (valid)',
    {
      'manifests/c.yaml': cluster('east', [['csv1', '/srv/csv1']]),
      'manifests/h.yaml': clusteredHost('hv-a', 'east', [['local', '/var/lib/vmplace/local']]),
      'manifests/v.yaml': vmDoc('demo', 'hv-a', 'csv1', '  disks:\n    vdb:\n      storage: local\n'),
    },
    [],
    ['demo'],
  ],
  [
    'host in an unknown cluster takes its VMs out too',
    { 'manifests/h.yaml': clusteredHost('hv-a', 'west'), 'manifests/v.yaml': vmDoc('demo', 'hv-a', 'a') },
    [
      'manifests/h.yaml:8:12: Host/hv-a: spec.cluster: Cluster "west" not found',
      'manifests/v.yaml:6:9: VirtualMachine/demo: spec.host: Host "hv-a" has problems (see above)',
    ],
    [],
  ],
  [
    'local storage name clashing with the cluster storage',
    {
      'manifests/c.yaml': cluster('east', [['csv1', '/srv/csv1']]),
      'manifests/h.yaml': clusteredHost('hv-a', 'east', [['csv1', '/var/lib/x']]),
    },
    [
      'manifests/h.yaml:10:13: Host/hv-a: spec.storage[0].name: storage name "csv1" clashes with the shared storage of Cluster "east"',
    ],
    [],
  ],
  [
    'duplicate storage names in one host',
    { 'manifests/h.yaml': hostDoc('lab', '    - name: a\n      path: /var/lib/vmplace/c\n') },
    [
      'manifests/h.yaml:13:13: Host/lab: spec.storage[2].name: duplicate storage name "a" (first at spec.storage[0])',
    ],
    [],
  ],
  [
    'nested storage paths in one host',
    { 'manifests/h.yaml': hostDoc('lab', '    - name: c\n      path: /var/lib/vmplace/a/inner\n') },
    [
      'manifests/h.yaml:14:13: Host/lab: spec.storage[2].path: "/var/lib/vmplace/a/inner" is inside storage "a" ("/var/lib/vmplace/a")',
    ],
    [],
  ],
  [
    'host local path equal to a cluster path',
    {
      'manifests/c.yaml': cluster('east', [['csv1', '/srv/csv1']]),
      'manifests/h.yaml': clusteredHost('hv-a', 'east', [['local', '/srv/csv1']]),
    },
    [
      'manifests/h.yaml:11:13: Host/hv-a: spec.storage[0].path: same path as shared storage "csv1" of Cluster "east"',
    ],
    [],
  ],
  [
    'host local path containing a cluster path',
    {
      'manifests/c.yaml': cluster('east', [['csv1', '/srv/vm/csv1']]),
      'manifests/h.yaml': clusteredHost('hv-a', 'east', [['local', '/srv/vm']]),
    },
    [
      'manifests/h.yaml:11:13: Host/hv-a: spec.storage[0].path: "/srv/vm" contains shared storage "csv1" of Cluster "east" ("/srv/vm/csv1")',
    ],
    [],
  ],
  [
    'similar but not nested paths are fine',
    {
      'manifests/h.yaml': hostDoc('lab', '    - name: c\n      path: /var/lib/vmplace/a-2\n'),
      'manifests/v.yaml': vmDoc('demo', 'lab', 'c'),
    },
    [],
    ['demo'],
  ],
  [
    'duplicate VM names: reported at the later one, all dropped',
    {
      'manifests/h.yaml': hostDoc('lab'),
      'manifests/v1.yaml': vmDoc('demo', 'lab', 'a'),
      'manifests/v2.yaml': `# second\n${vmDoc('demo', 'lab', 'b')}`,
      'manifests/v3.yaml': vmDoc('other', 'lab', 'b'),
    },
    [
      'manifests/v2.yaml:5:9: VirtualMachine/demo: metadata.name: duplicate VirtualMachine name "demo"; first declared at manifests/v1.yaml:4:9 (all declarations ignored)',
    ],
    ['other'],
  ],
  [
    'duplicate host names take their VMs out',
    {
      'manifests/h.yaml': `${hostDoc('lab')}---\n${hostDoc('lab')}`,
      'manifests/v.yaml': vmDoc('demo', 'lab', 'a'),
    },
    [
      'manifests/h.yaml:17:9: Host/lab: metadata.name: duplicate Host name "lab"; first declared at manifests/h.yaml:4:9 (all declarations ignored)',
      'manifests/v.yaml:6:9: VirtualMachine/demo: spec.host: Host "lab" is declared more than once',
    ],
    [],
  ],
  [
    'the same name for different kinds is fine',
    {
      'manifests/h.yaml': hostDoc('lab'),
      'manifests/c.yaml': cluster('lab', []),
      'manifests/v.yaml': vmDoc('lab', 'lab', 'a'),
    },
    [],
    ['lab'],
  ],
  [
    'a missing host is hinted when a file could not be parsed',
    { 'manifests/h.yaml': `${hostDoc('lab')}\tbad: tab\n`, 'manifests/v.yaml': vmDoc('demo', 'lab', 'a') },
    [
      'manifests/h.yaml:13:1: YAML syntax error: Tabs are not allowed as indentation',
      'manifests/v.yaml:6:9: VirtualMachine/demo: spec.host: Host "lab" not found (1 manifest file(s) could not be loaded; it may be declared there)',
    ],
    [],
  ],
];

describe('cross-references', () => {
  it.each(referenceCases)('%s', async (_name, files, expected, vms) => {
    const s = await loadDesiredState(makeRepo(files));
    expect(s.problems.map(formatProblem)).toEqual(expected);
    expect([...s.vms.keys()]).toEqual(vms);
  });
});

describe('repository layout', () => {
  it('reads .yml files and nested directories, ignores other files and hidden entries', async () => {
    const repo = makeRepo({
      'manifests/hosts/lab.yml': hostDoc('lab'),
      'manifests/vms/deep/demo.yaml': vmDoc('demo'),
      'manifests/README.md': '# not yaml',
      'manifests/.hidden.yaml': 'garbage: [',
      'manifests/.git/x.yaml': 'garbage: [',
    });
    const s = await loadDesiredState(repo);
    expect(s.problems).toEqual([]);
    expect(s.vms.get('demo')!.source.file).toBe('manifests/vms/deep/demo.yaml');
  });

  it('reports a missing manifests/ directory', async () => {
    const repo = makeRepo();
    fs.rmdirSync(path.join(repo, 'manifests'));
    expect(await lines(repo)).toEqual(['manifests:1:1: manifests/ directory not found']);
  });

  it('throws a StalledError for a repository that does not exist', async () => {
    await expect(loadDesiredState(path.join(os.tmpdir(), 'vmplace-no-such-repo'))).rejects.toBeInstanceOf(
      StalledError,
    );
  });

  it('returns objects that do not share parts even when the YAML used aliases', async () => {
    const repo = makeRepo({
      'manifests/h.yaml': `${hostDoc('lab')}`,
      'manifests/v.yaml': vmDoc('demo', 'lab', 'a', '  disks:\n    vda: &d {storage: b}\n    vdb: *d\n'),
    });
    const s = await loadDesiredState(repo);
    expect(s.problems).toEqual([]);
    const disks = s.vms.get('demo')!.spec.disks!;
    expect(disks.vda).toEqual({ storage: 'b' });
    expect(disks.vda).not.toBe(disks.vdb);
  });
});

describe('performance', () => {
  it('loads 10,000 VMs, 500 hosts and 20 clusters in ~50 files quickly', async () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { generate } = require('../../../bench/gen-fleet.js') as {
      generate: (o: object) => { root: string };
    };
    const repo = makeRepo();
    generate({ out: repo, vms: 10_000, hosts: 500, clusters: 20, files: 50 });
    const started = Date.now();
    const s = await loadDesiredState(repo);
    const ms = Date.now() - started;
    expect(s.problems).toEqual([]);
    expect([s.vms.size, s.hosts.size, s.clusters.size]).toEqual([10_000, 500, 20]);
    // the bench (node against dist/) measures the real figure; this guards against regressions
    // such as quadratic checks, with headroom for ts-jest and a busy CI machine
    expect(ms).toBeLessThan(5_000);
  }, 30_000);
});
