/**
 * `vmplace import`: the pure decision (what to write from what hosts show) against built
 * observations, and the whole command against the FAKE hypervisor into real temporary
 * repositories, checked with the real `validate` loader and `plan`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse } from 'yaml';
import { planRepo } from '../../../src/app/commands';
import { decideImport, locationName, type ObservedHost } from '../../../src/app/import/decide';
import { parseHostOption } from '../../../src/app/import/host-option';
import { renderVm } from '../../../src/app/import/render';
import { runImport, type ImportReport } from '../../../src/app/import/run';
import type { DomainDisk, DomainInfo } from '../../../src/drivers/driver';
import { loadDesiredState } from '../../../src/manifests';
import type { DesiredState, HostSpec, VirtualMachine } from '../../../src/types';
import { FakeWorld } from '../../support/fake-hypervisor';
import { memoryLogger } from '../../support/logger';
import { cleanupTmp, tmpDir } from '../../support/tmp';

afterAll(cleanupTmp);

const SPEC: HostSpec = { driver: 'libvirt', uri: 'qemu:///system' };
const EMPTY: DesiredState = {
  hosts: new Map(),
  clusters: new Map(),
  vms: new Map(),
  problems: [],
  invalidFiles: new Set(),
};

function disk(target: string, p: string, extra: Partial<DomainDisk> = {}): DomainDisk {
  return {
    target,
    type: 'file',
    device: 'disk',
    path: p,
    format: 'qcow2',
    readonly: false,
    hasBackingStore: false,
    ...extra,
  };
}
function dom(name: string, disks: DomainDisk[], extra: Partial<DomainInfo> = {}): DomainInfo {
  return {
    name,
    uuid: `u-${name}`,
    state: 'running',
    persistent: true,
    memoryBytes: 64 << 20,
    vcpus: 1,
    disks,
    definition: { driver: 'fake', data: '' },
    ...extra,
  };
}
function host(name: string, pools: { name: string; path: string }[], domains: DomainInfo[]): ObservedHost {
  return { name, spec: SPEC, declared: false, pools, domains };
}
const OPTS = { shared: [], repoDir: '/work/nowhere-repo' };

describe('decideImport (pure)', () => {
  it('one VM per domain at its place: the location of most disks, per-disk overrides for the rest', () => {
    const d = decideImport(
      [
        host(
          'hv1',
          [{ name: 'Pool A', path: '/srv/pa' }],
          [
            dom('web', [
              disk('vda', '/srv/pa/web.qcow2'),
              disk('vdb', '/data/x/web-b.qcow2'),
              disk('vdc', '/srv/pa/web-c.qcow2'),
            ]),
            dom('cd', [disk('hdc', '/iso/x.iso', { device: 'cdrom' }), disk('vda', '/data/x/cd.qcow2')]),
          ],
        ),
      ],
      EMPTY,
      OPTS,
    );
    expect(d.hosts).toEqual([
      {
        name: 'hv1',
        spec: {
          ...SPEC,
          storage: [
            { name: 'x', path: '/data/x' },
            { name: 'pool-a', path: '/srv/pa' },
          ],
        },
      },
    ]);
    expect(d.vms.find((v) => v.name === 'web')!.spec).toEqual({
      host: 'hv1',
      storage: 'pool-a',
      disks: { vdb: { storage: 'x' } },
    });
    // a cdrom is media, not storage: its folder is no location and it needs no override
    expect(d.vms.find((v) => v.name === 'cd')!.spec).toEqual({ host: 'hv1', storage: 'x' });
    expect(d.notes).toEqual([]);
  });

  it('imports what vmplace cannot move with suspend: true and says why in a comment', () => {
    const d = decideImport(
      [
        host(
          'hv1',
          [{ name: 'a', path: '/srv/a' }],
          [
            dom('tr', [disk('vda', '/srv/a/tr.qcow2')], { persistent: false }),
            dom('blk', [
              disk('vda', '/srv/a/b.qcow2'),
              {
                target: 'vdb',
                type: 'block',
                device: 'disk',
                sourceDev: '/dev/sdb',
                readonly: false,
                hasBackingStore: false,
              },
            ]),
            dom('net', [
              { target: 'vda', type: 'network', device: 'disk', readonly: false, hasBackingStore: false },
            ]),
            dom('shr', [disk('vda', '/srv/a/s.qcow2', { shareable: true })]),
            dom('ok', [disk('vda', '/srv/a/ok.qcow2')]),
          ],
        ),
      ],
      EMPTY,
      OPTS,
    );
    const by = new Map(d.vms.map((v) => [v.name, v]));
    expect(by.get('ok')!.spec.suspend).toBeUndefined();
    for (const [name, why] of [
      ['tr', 'transient domain'],
      ['blk', 'disk vdb is a block device'],
      ['net', 'disk vda is a network disk'],
      ['shr', 'disk vda is shareable'],
    ] as const) {
      const v = by.get(name)!;
      expect(v.spec.suspend).toBe(true);
      expect(v.unmovable.join(' ')).toContain(why);
      const text = renderVm(v).text;
      expect(text).toMatch(
        new RegExp(`# vmplace cannot move this VM:\\n\\s+# - [^\\n]*${why}[^\\n]*\\n\\s+suspend: true`),
      );
    }
    // a VM with only a network disk names the host's storage (a valid manifest)
    expect(by.get('net')!.spec.storage).toBe('a');
  });

  it('leaves out hostile names and paths, and quotes odd ones so they read back exactly', () => {
    const odd = '/srv/it\'s: "odd" #x';
    const d = decideImport(
      [
        host(
          'hv1',
          [
            { name: '"; rm -rf / #', path: '/srv/p1' },
            { name: 'etc', path: '/etc' },
            { name: 'nl', path: '/srv/a\nb' },
            { name: 'up', path: '/srv/../etc' },
            { name: 'odd', path: odd },
          ],
          [
            dom('../../etc/passwd', [disk('vda', '/srv/p1/x.qcow2')]),
            dom('Web_01', [disk('vda', '/srv/p1/y.qcow2')]),
            dom('in-etc', [disk('vda', '/etc/z.qcow2')]),
            dom('fine', [disk('vda', `${odd}/f.qcow2`)]),
          ],
        ),
      ],
      EMPTY,
      OPTS,
    );
    expect(d.hosts[0]!.spec.storage).toEqual([
      { name: 'odd', path: odd },
      { name: 'rm-rf', path: '/srv/p1' },
    ]);
    expect(d.vms.map((v) => v.name)).toEqual(['fine']);
    const reasons = d.notes.map((n) => `${n.reason} ${n.subject}`);
    expect(reasons).toEqual(
      expect.arrayContaining([
        'NameNotImportable VirtualMachine/../../etc/passwd',
        'NameNotImportable VirtualMachine/Web_01',
        'DiskOutsideStorage VirtualMachine/in-etc',
        'StorageNotImportable Host/hv1',
      ]),
    );
    // no raw newline from a host reaches a message
    for (const n of d.notes) expect(n.message).not.toMatch(/[\n\r]/);
    const text = renderVm(d.vms[0]!).text;
    expect(parse(text)).toMatchObject({ spec: { host: 'hv1', storage: 'odd' } });
  });

  it('never guesses shared storage: offered when on every host, Cluster storage only with --shared', () => {
    const obs = [
      host(
        'hv1',
        [
          { name: 'csv', path: '/srv/csv' },
          { name: 'l1', path: '/srv/l1' },
        ],
        [dom('a', [disk('vda', '/srv/csv/a.qcow2')])],
      ),
      host('hv2', [{ name: 'csv', path: '/srv/csv' }], [dom('b', [disk('vda', '/srv/csv/b.qcow2')])]),
    ];
    const plain = decideImport(obs, EMPTY, OPTS);
    expect(plain.clusters).toEqual([]);
    expect(plain.hosts.map((h) => h.spec.storage)).toEqual([
      [
        { name: 'csv', path: '/srv/csv' },
        { name: 'l1', path: '/srv/l1' },
      ],
      [{ name: 'csv', path: '/srv/csv' }],
    ]);
    expect(plain.notes).toEqual([
      expect.objectContaining({ reason: 'SharedStorageOffered', subject: '"/srv/csv"' }),
    ]);

    const shared = decideImport(obs, EMPTY, { ...OPTS, cluster: 'c1', shared: ['/srv/csv', '/srv/l1'] });
    expect(shared.clusters).toEqual([{ name: 'c1', storage: [{ name: 'csv', path: '/srv/csv' }] }]);
    expect(shared.hosts.map((h) => [h.spec.cluster, h.spec.storage])).toEqual([
      ['c1', [{ name: 'l1', path: '/srv/l1' }]],
      ['c1', undefined],
    ]);
    expect(shared.vms.map((v) => v.spec)).toEqual([
      { host: 'hv1', storage: 'csv' },
      { host: 'hv2', storage: 'csv' },
    ]);
    // /srv/l1 is on hv1 only: asked for, refused, said so
    expect(shared.notes).toEqual([
      expect.objectContaining({ reason: 'SharedPathMissing', severity: 'warning' }),
    ]);
  });

  it('compares a declared VM and reports the difference instead of writing it', () => {
    const declared = {
      apiVersion: 'vmplace.dev/v1alpha1',
      kind: 'VirtualMachine',
      metadata: { name: 'a' },
      spec: { host: 'hv1', storage: 'l1' },
      source: { file: 'manifests/vms/a.yaml', line: 3, col: 1 },
    } as VirtualMachine;
    const d = decideImport(
      [
        host(
          'hv1',
          [
            { name: 'csv', path: '/srv/csv' },
            { name: 'l1', path: '/srv/l1' },
          ],
          [dom('a', [disk('vda', '/srv/csv/a.qcow2')])],
        ),
      ],
      { ...EMPTY, vms: new Map([['a', declared]]) },
      OPTS,
    );
    expect(d.vms).toEqual([]);
    expect(d.notes).toEqual([
      expect.objectContaining({
        reason: 'ManifestDiffers',
        message: expect.stringContaining(
          'manifests/vms/a.yaml:3: disk vda: the manifest wants storage l1, it is on csv',
        ),
      }),
    ]);
  });

  it.each([
    ['Default Pool', [], 'default-pool'],
    ['---', [], 'storage'],
    ['a', ['a', 'a-2'], 'a-3'],
    ['x'.repeat(80), ['x'.repeat(63)], `${'x'.repeat(61)}-2`],
  ])('locationName(%j) among %j is %j', (raw, taken, want) => {
    expect(locationName(raw, new Set(taken))).toBe(want);
  });
});

describe('parseHostOption', () => {
  it('takes ssh host, user and port from the URI and the key files from options', () => {
    expect(
      parseHostOption('hv1=qemu+ssh://root@10.0.0.1:2222/system,identityFile=/k/id,knownHostsFile=/k/kh'),
    ).toEqual({
      name: 'hv1',
      spec: {
        driver: 'libvirt',
        uri: 'qemu+ssh://root@10.0.0.1:2222/system',
        ssh: { host: '10.0.0.1', user: 'root', port: 2222, identityFile: '/k/id', knownHostsFile: '/k/kh' },
        transferAddress: '10.0.0.1',
      },
    });
  });
  it.each([
    'HV1=qemu:///system',
    'hv1',
    'hv1=qemu+ssh://h/system?command=sh',
    'hv1=qemu+tcp://h/system',
    'hv1=qemu:///system,identityFile=/k',
    'hv1=qemu+ssh://h/system,proxyCommand=sh',
  ])('refuses %j', (v) => expect(() => parseHostOption(v)).toThrow());
});

// ---------------------------------------------------------------- the command on the FAKE

function world(): FakeWorld {
  const w = new FakeWorld();
  w.durableTransitions = false;
  w.addHost('hv1', { roots: { '/srv/pa': undefined, '/srv/dir1': undefined } });
  w.addHost('hv2', { roots: { '/srv/pb': undefined }, pools: [{ name: 'Pool B', path: '/srv/pb' }] });
  w.addVm('hv1', { name: 'web', state: 'running', disks: [{ target: 'vda', path: '/srv/pa/web.qcow2' }] });
  w.addVm('hv1', {
    name: 'db',
    state: 'shutoff',
    disks: [
      { target: 'vda', path: '/srv/pa/db.qcow2' },
      { target: 'vdb', path: '/srv/dir1/db-data.qcow2' },
    ],
  });
  w.addVm('hv2', { name: 'app', state: 'running', disks: [{ target: 'vda', path: '/srv/pb/app.qcow2' }] });
  const t = w.addVm('hv2', {
    name: 'tmp',
    state: 'running',
    disks: [{ target: 'vda', path: '/srv/pb/tmp.qcow2' }],
  });
  delete t.persistent; // transient
  return w;
}

async function importInto(
  repo: string,
  w: FakeWorld,
  extra: { dryRun?: boolean } = {},
): Promise<ImportReport> {
  return await runImport({
    root: repo,
    hosts: [parseHostOption('hv1=qemu:///system'), parseHostOption('hv2=qemu+ssh://root@10.9.9.2/system')],
    shared: [],
    dryRun: extra.dryRun ?? false,
    logger: memoryLogger().logger,
    driverFor: (h) => (w.hosts.has(h) ? w.driver(h) : undefined),
    now: () => new Date('2030-01-01T00:00:00Z'),
  });
}

const listFiles = (dir: string): string[] =>
  fs.existsSync(dir) ? (fs.readdirSync(dir, { recursive: true }) as string[]).map(String).sort() : [];

describe('vmplace import on the FAKE hypervisor', () => {
  it('writes manifests and status so that validate passes and plan shows nothing to do; a second run adds only what is new', async () => {
    const repo = tmpDir('vmplace-import-');
    const w = world();
    const r = await importInto(repo, w);
    expect(r.problems).toEqual([]);
    expect(r.manifests.map((f) => f.rel)).toEqual([
      'manifests/hosts/hv1.yaml',
      'manifests/hosts/hv2.yaml',
      'manifests/vms/app.yaml',
      'manifests/vms/db.yaml',
      'manifests/vms/tmp.yaml',
      'manifests/vms/web.yaml',
    ]);
    expect(r.notes.filter((n) => n.severity === 'warning')).toEqual([]);
    expect(listFiles(path.join(repo, 'status'))).toEqual([
      'hosts',
      'hosts/hv1.yaml',
      'hosts/hv2.yaml',
      'vms',
      'vms/app.yaml',
      'vms/db.yaml',
      'vms/tmp.yaml',
      'vms/web.yaml',
    ]);
    const desired = await loadDesiredState(repo);
    expect(desired.problems).toEqual([]);
    expect(desired.vms.get('db')!.spec).toEqual({
      host: 'hv1',
      storage: 'pa',
      disks: { vdb: { storage: 'dir1' } },
    });
    expect(desired.vms.get('tmp')!.spec.suspend).toBe(true);
    expect(desired.hosts.get('hv2')!.spec.storage).toEqual([{ name: 'pool-b', path: '/srv/pb' }]);
    const { plan, problems } = await planRepo({ root: repo });
    expect(problems).toEqual([]);
    expect(plan!.migrations).toEqual([]);
    expect(plan!.unchanged).toEqual(['app', 'db', 'web']);
    expect(plan!.suspended).toEqual(['tmp']);
    expect(parse(fs.readFileSync(path.join(repo, 'status/vms/web.yaml'), 'utf8'))).toMatchObject({
      phase: 'Placed',
    });

    // second run: nothing new, nothing rewritten
    const before = new Map(
      listFiles(path.join(repo, 'manifests')).map((f) => [
        f,
        fs.statSync(path.join(repo, 'manifests', f)).mtimeMs,
      ]),
    );
    const again = await importInto(repo, w);
    expect(again.manifests).toEqual([]);
    expect(again.status).toEqual([]);
    for (const [f, m] of before) expect(fs.statSync(path.join(repo, 'manifests', f)).mtimeMs).toBe(m);

    // a new domain appears: only it (and its status) is added
    w.addVm('hv2', { name: 'new', state: 'running', disks: [{ target: 'vda', path: '/srv/pb/new.qcow2' }] });
    const third = await importInto(repo, w);
    expect(third.manifests.map((f) => f.rel)).toEqual(['manifests/vms/new.yaml']);
    expect(third.status).toEqual(['status/vms/new.yaml']);
  });

  it('never rewrites an edited manifest: reports the difference, and plan shows exactly that move', async () => {
    const repo = tmpDir('vmplace-import-');
    const w = world();
    await importInto(repo, w);
    const file = path.join(repo, 'manifests/vms/web.yaml');
    const edited =
      fs.readFileSync(file, 'utf8').replace('storage: pa', 'storage: dir1') + '# edited by a person\n';
    fs.writeFileSync(file, edited);
    const r = await importInto(repo, w);
    expect(r.manifests).toEqual([]);
    expect(fs.readFileSync(file, 'utf8')).toBe(edited);
    expect(r.notes.filter((n) => n.reason !== 'HostAlreadyDeclared')).toEqual([
      expect.objectContaining({
        reason: 'ManifestDiffers',
        subject: 'VirtualMachine/web',
        message: expect.stringContaining('disk vda: the manifest wants storage dir1, it is on pa'),
      }),
    ]);
    const { plan } = await planRepo({ root: repo });
    expect(
      plan!.migrations.map((m) => [m.vm, m.kind, m.disks.map((d) => `${d.target}:${d.from}->${d.to}`)]),
    ).toEqual([['web', 'same-host', ['vda:pa->dir1']]]);
  });

  it('--dry-run writes nothing and says what it would write', async () => {
    const repo = tmpDir('vmplace-import-');
    const r = await importInto(repo, world(), { dryRun: true });
    expect(r.manifests).toHaveLength(6);
    expect(r.status).toHaveLength(6);
    expect(listFiles(repo)).toEqual([]);
  });

  it('does not overwrite a file in the way, and refuses to work on a repository whose manifests have problems', async () => {
    const repo = tmpDir('vmplace-import-');
    fs.mkdirSync(path.join(repo, 'manifests/vms'), { recursive: true });
    fs.writeFileSync(path.join(repo, 'manifests/vms/web.yaml'), '# mine\n');
    const r = await importInto(repo, world());
    expect(fs.readFileSync(path.join(repo, 'manifests/vms/web.yaml'), 'utf8')).toBe('# mine\n');
    expect(r.notes).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ reason: 'FileExists', subject: 'VirtualMachine/web' }),
      ]),
    );
    expect((await loadDesiredState(repo)).problems).toEqual([]);

    fs.writeFileSync(path.join(repo, 'manifests/broken.yaml'), 'kind: [\n');
    const bad = await importInto(repo, world());
    expect(bad.problems.length).toBeGreaterThan(0);
    expect(bad.manifests).toEqual([]);
  });

  it('never writes through a link the repository holds', async () => {
    const repo = tmpDir('vmplace-import-');
    const outside = tmpDir('vmplace-outside-');
    fs.symlinkSync(outside, path.join(repo, 'status'));
    await expect(importInto(repo, world())).rejects.toMatchObject({ reason: 'SymlinkInStatusPath' });
    expect(listFiles(outside)).toEqual([]);
  });
});
