/**
 * What manifests may name: hostile libvirt URIs (issue 9 item 7), the always-on rules and the
 * operator's trust file (item 9), secrets never echoed (item 12). Every rejection is a problem
 * at FILE:LINE:COL and the object is dropped from the desired state.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { formatProblem, loadDesiredState, type LoadOptions } from '../../../src/manifests';
import { hostMatcher, loadTrustPolicy, parseTrustPolicy } from '../../../src/manifests/trust';
import { makeRepo, REPO_ROOT } from '../../support/manifests';
import { cleanupTmp } from '../../support/tmp';

afterAll(cleanupTmp);

async function lines(files: Record<string, string>, opts?: LoadOptions, repo = makeRepo(files)) {
  const state = await loadDesiredState(repo, opts);
  return { state, repo, lines: state.problems.map(formatProblem) };
}

/** A Host with `uri` on line 7 (column 8) and `ssh` on line 8. */
const hostWith = (uri: string, ssh = '{host: h.example.net, user: root}', storage = '/srv/vm/a'): string =>
  `apiVersion: vmplace.dev/v1alpha1
kind: Host
metadata:
  name: hv-a
spec:
  driver: libvirt
  uri: ${JSON.stringify(uri)}
  ssh: ${ssh}
  storage: [{name: a, path: ${storage}}]
`;

describe('libvirt URIs from a pull request never reach virsh (item 7)', () => {
  it.each([
    'qemu+ssh://h.example.net/system?command=/path/in/repo',
    'qemu+ssh://h.example.net/system?%63ommand=/path/in/repo',
    'qemu+ssh://h.example.net/system?%63%6f%6d%6d%61%6e%64=/x',
    'qemu+ssh://h.example.net/system?no_verify=1',
    'qemu+ssh://h.example.net/system?known_hosts_verify=ignore',
    'qemu+ssh://h.example.net/system?netcat=/tmp/evil',
    'qemu+ssh://h.example.net/system?proxy=netcat&netcat=rm',
    'qemu+ssh://h.example.net/system?known_hosts=/dev/null',
    'qemu+ssh://h.example.net/system?keyfile=/tmp/key',
    'qemu+ssh://h.example.net/system?socket=/tmp/x',
    'qemu+ssh://h.example.net/system?',
    'qemu+ssh://h.example.net/system#x',
    'qemu+tcp://h.example.net/system',
    'qemu+tcp://h.example.net:16509/system',
    'qemu+tls://h.example.net/system?no_verify=1',
    'qemu+tls://h.example.net/system',
    'qemu+unix:///system?socket=/tmp/x',
    'qemu+unix:///system',
    'qemu+libssh2://h.example.net/system?known_hosts_verify=ignore',
    'qemu+libssh://h.example.net/system',
    'qemu+ext:///system?command=/bin/sh',
    'qemu:///system?socket=/tmp/x',
    'qemu://h.example.net/system',
    'QEMU+SSH://h.example.net/system',
    'test:///default',
    'qemu+ssh://h.example.net/system/../x',
  ])('refuses %s at FILE:LINE:COL, and the host is dropped', async (uri) => {
    const { state, lines: found } = await lines({ 'manifests/x.yaml': hostWith(uri) });
    expect(found).toEqual([expect.stringMatching(/^manifests\/x\.yaml:7:8: Host\/hv-a: spec\.uri: /)]);
    expect(state.hosts.size).toBe(0);
  });

  it('refuses a URI with a password without echoing it (item 12)', async () => {
    const { state, lines: found } = await lines({
      'manifests/x.yaml': hostWith('qemu+ssh://u:s3cr3t-pw@h.example.net/system', '{host: h.example.net}'),
    });
    expect(found).toHaveLength(1);
    expect(found[0]).toMatch(/^manifests\/x\.yaml:7:8: Host\/hv-a: spec\.uri: /);
    expect(found[0]).toContain('u:[REDACTED]@h.example.net');
    expect(found[0]).not.toContain('s3cr3t');
    expect(state.hosts.size).toBe(0);
  });

  it.each([
    ['qemu:///system', undefined],
    ['qemu:///session', undefined],
    ['qemu+ssh://h.example.net/system', '{host: h.example.net}'],
    ['qemu+ssh://root@h.example.net:2222/system', '{host: h.example.net, user: root, port: 2222}'],
    ['qemu+ssh://root@[fd00::5]/system', '{host: "fd00:0::5", user: root}'],
    ['qemu:///system', '{host: 10.0.0.5}'],
  ])('accepts %s (ssh: %s)', async (uri, ssh) => {
    const doc = hostWith(uri, ssh ?? '').replace(/^ {2}ssh: \n/m, '');
    const { state, lines: found } = await lines({ 'manifests/x.yaml': doc });
    expect(found).toEqual([]);
    expect(state.hosts.size).toBe(1);
  });
});

describe('always-on rules (item 9)', () => {
  it.each([
    [
      'qemu+ssh://other.example.net/system',
      '{host: h.example.net}',
      /spec\.uri: names host "other\.example\.net" but spec\.ssh\.host is "h\.example\.net"/,
    ],
    [
      'qemu+ssh://h.example.net/system',
      '',
      /spec\.uri: names the remote host "h\.example\.net" but spec\.ssh is missing/,
    ],
    [
      'qemu+ssh://admin@h.example.net/system',
      '{host: h.example.net, user: root}',
      /spec\.uri: logs in as "admin" but spec\.ssh\.user is "root"/,
    ],
    [
      'qemu+ssh://h.example.net:2200/system',
      '{host: h.example.net, port: 22}',
      /spec\.uri: uses port 2200 but spec\.ssh\.port is 22/,
    ],
  ])('URI %s with ssh %p is refused', async (uri, ssh, expected) => {
    const doc = hostWith(uri, ssh).replace(/^ {2}ssh: \n/m, '');
    const { state, lines: found } = await lines({ 'manifests/x.yaml': doc });
    expect(found).toEqual([
      expect.stringMatching(new RegExp(`^manifests/x\\.yaml:7:8: Host/hv-a: ${expected.source}`)),
    ]);
    expect(state.hosts.size).toBe(0);
  });

  it.each([
    ['/etc', /is a system directory \(\/etc\)/],
    ['/etc/vmplace/disks', /is a system directory \(\/etc\)/],
    ['/root/vms', /is a system directory \(\/root\)/],
    ['/boot/x', /system directory/],
    ['/usr/local/vms', /system directory \(\/usr\)/],
    ['/bin', /system directory/],
    ['/lib64/x', /system directory/],
    ['/proc/1', /system directory/],
    ['/sys/x', /system directory/],
    ['/dev/shm/x', /system directory/],
    ['/run/x', /system directory/],
    ['/var', /contains the system directory/],
    ['/var/lib', /contains the system directory/],
    ['/var/lib/libvirt', /contains the system directory \/var\/lib\/libvirt\/qemu/],
    ['/var/lib/libvirt/qemu/save', /system directory \(\/var\/lib\/libvirt\/qemu\)/],
    ['/var/lib/libvirt/swtpm', /system directory/],
    ['/var/log/x', /system directory/],
    ['/home', /is \/home itself/],
    ['/srv', /is \/srv itself/],
    ['/tmp', /is \/tmp itself/],
    ['/var/lib/vmplace', /vmplace's state directory/],
    ['/var/lib/vmplace/migrations', /vmplace's own state/],
    ['/var/lib/vmplace/done/x', /vmplace's own state/],
    ['/var/lib/vmplace/repo', /overlaps the daemon's clone/],
  ])('storage %s is refused', async (p, expected) => {
    const { state, lines: found } = await lines({
      'manifests/x.yaml': hostWith('qemu:///system', '', p).replace(/^ {2}ssh: \n/m, ''),
    });
    expect(found).toEqual([
      expect.stringMatching(
        new RegExp(`^manifests/x\\.yaml:8:29: Host/hv-a: spec\\.storage\\[0\\]\\.path: .*${expected.source}`),
      ),
    ]);
    expect(state.hosts.size).toBe(0);
  });

  it.each([
    '/var/lib/libvirt/images',
    '/var/lib/vmplace/a',
    '/srv/vmplace/local',
    '/srv/vmplace-csv',
    '/tmp/lab/a',
    '/home/alice/vms',
    '/mnt/disk1',
  ])('storage %s is fine', async (p) => {
    const { lines: found } = await lines({
      'manifests/x.yaml': hostWith('qemu:///system', '', p).replace(/^ {2}ssh: \n/m, ''),
    });
    expect(found).toEqual([]);
  });

  it('refuses storage that is or contains the state dir and clone given on the command line', async () => {
    const files = {
      'manifests/x.yaml': hostWith('qemu:///system', '', '/opt/vmplace').replace(/^ {2}ssh: \n/m, ''),
    };
    const a = await lines(files, { trust: { stateDir: '/opt/vmplace/state' } });
    expect(a.lines).toEqual([
      expect.stringMatching(
        /spec\.storage\[0\]\.path: "\/opt\/vmplace" is or contains vmplace's state directory/,
      ),
    ]);
    const b = await lines(files, { trust: { workdir: '/opt/vmplace/clone' } });
    expect(b.lines).toEqual([expect.stringMatching(/overlaps the daemon's clone \(\/opt\/vmplace\/clone\)/)]);
  });

  it('refuses storage inside the repository, and key or known_hosts files from it', async () => {
    const repo = makeRepo({});
    const doc = hostWith(
      'qemu+ssh://h.example.net/system',
      `{host: h.example.net, identityFile: ${repo}/keys/id, knownHostsFile: ${repo}/known_hosts}`,
      `${repo}/disks`,
    );
    fs.writeFileSync(path.join(repo, 'manifests', 'x.yaml'), doc);
    const { state, lines: found } = await lines({}, undefined, repo);
    expect(found).toEqual([
      expect.stringMatching(
        /^manifests\/x\.yaml:8:\d+: Host\/hv-a: spec\.ssh\.identityFile: .* is inside the repository/,
      ),
      expect.stringMatching(
        /^manifests\/x\.yaml:8:\d+: Host\/hv-a: spec\.ssh\.knownHostsFile: .* is inside the repository/,
      ),
      expect.stringMatching(
        /^manifests\/x\.yaml:9:\d+: Host\/hv-a: spec\.storage\[0\]\.path: .* overlaps the repository/,
      ),
    ]);
    expect(state.hosts.size).toBe(0);
  });

  it('sees a key file reached through a symlink out of the repository... into it', async () => {
    const repo = makeRepo({ 'keys/id': 'not a key' });
    const link = path.join(path.dirname(repo), 'outside-link');
    fs.symlinkSync(path.join(repo, 'keys', 'id'), link);
    fs.writeFileSync(
      path.join(repo, 'manifests', 'x.yaml'),
      hostWith('qemu+ssh://h.example.net/system', `{host: h.example.net, identityFile: ${link}}`),
    );
    const { lines: found } = await lines({}, undefined, repo);
    expect(found).toEqual([expect.stringMatching(/spec\.ssh\.identityFile: .* is inside the repository/)]);
  });

  it('refuses overlapping storage of two Hosts that are one machine', async () => {
    const h = (name: string, storage: string) =>
      hostWith('qemu+ssh://h.example.net/system', '{host: H.example.net}', storage).replace(
        'name: hv-a',
        `name: ${name}`,
      );
    const { state, lines: found } = await lines({
      'manifests/a.yaml': h('hv-a', '/srv/vm'),
      'manifests/b.yaml': h('hv-b', '/srv/vm/b'),
      'manifests/c.yaml': h('hv-c', '/srv/other').replace(/h\.example\.net/gi, 'c.example.net'),
    });
    expect(found).toEqual([
      expect.stringMatching(
        /^manifests\/b\.yaml:9:29: Host\/hv-b: spec\.storage\[0\]\.path: "\/srv\/vm\/b" overlaps storage "\/srv\/vm" of Host "hv-a", which is the same machine/,
      ),
    ]);
    expect([...state.hosts.keys()].sort()).toEqual(['hv-a', 'hv-c']);
  });

  it('accepts the manifests of the examples and of the lab tests', async () => {
    for (const ex of ['examples/fleet', 'examples/two-storages']) {
      const s = await loadDesiredState(path.join(REPO_ROOT, ex));
      expect(s.problems.map(formatProblem)).toEqual([]);
    }
    // the shapes test/lab/cross-host.test.ts and test/lab/support/fleet.ts write
    const labHost = (h: string, addr: string) => `apiVersion: vmplace.dev/v1alpha1
kind: Host
metadata: {name: ${h}}
spec:
  driver: libvirt
  uri: qemu+ssh://root@${addr}/system
  ssh: {host: ${addr}, user: root, identityFile: /run/vmplace-hosts/vmpl/mgmt/id_ed25519, knownHostsFile: /run/vmplace-hosts/vmpl/mgmt/known_hosts}
  cluster: c1
  transferAddress: ${addr}
  storage: [{name: local, path: /srv/vmplace/local}]
`;
    const { lines: found } = await lines({
      'manifests/lab.yaml': `${labHost('hv1', '10.77.0.11')}---\n${labHost('hv2', '10.77.0.12')}---
apiVersion: vmplace.dev/v1alpha1
kind: Cluster
metadata: {name: c1}
spec:
  storage: [{name: csv, path: /srv/vmplace-csv}]
---
apiVersion: vmplace.dev/v1alpha1
kind: Host
metadata: {name: lab}
spec:
  driver: libvirt
  uri: qemu:///system
  storage: [{name: a, path: /tmp/vmplace-lab-x/a}, {name: b, path: /tmp/vmplace-lab-x/b}]
`,
    });
    expect(found).toEqual([]);
  });
});

describe("the operator's trust file (item 9)", () => {
  const policyFile = (text: string, mode = 0o644): string => {
    const dir = fs.mkdtempSync(path.join(path.dirname(makeRepo({})), 'trust-'));
    const f = path.join(dir, 'trust.yaml');
    fs.writeFileSync(f, text, { mode });
    fs.chmodSync(f, mode);
    return f;
  };
  const POLICY = `apiVersion: vmplace.dev/v1alpha1
kind: TrustPolicy
storagePaths: [/srv/vm, /var/lib/vmplace]
sshFiles: [/etc/vmplace]
hosts: [10.0.1.0/24, "fd00::/8", hv-west.example.net, "*.lab.example.net"]
`;

  it('bounds storage paths, key files and host addresses, with FILE:LINE:COL and the file named', async () => {
    const file = policyFile(POLICY);
    const policy = loadTrustPolicy(file)!;
    const doc = `apiVersion: vmplace.dev/v1alpha1
kind: Host
metadata:
  name: hv-a
spec:
  driver: libvirt
  uri: qemu+ssh://root@203.0.113.9/system
  ssh: {host: 203.0.113.9, user: root, identityFile: /home/x/id, knownHostsFile: /etc/vmplace/known_hosts}
  transferAddress: evil.example.org
  storage: [{name: a, path: /srv/vm/a}, {name: b, path: /data/b}]
`;
    const { state, lines: found } = await lines({ 'manifests/x.yaml': doc }, { trust: { policy } });
    expect(found).toEqual([
      `manifests/x.yaml:7:8: Host/hv-a: spec.uri: host "203.0.113.9" is not one the operator allows (trust file ${file}): 10.0.1.0/24, fd00::/8, hv-west.example.net, *.lab.example.net`,
      expect.stringMatching(
        /^manifests\/x\.yaml:8:15: Host\/hv-a: spec\.ssh\.host: host "203\.0\.113\.9" is not one the operator allows/,
      ),
      expect.stringMatching(
        /^manifests\/x\.yaml:8:54: Host\/hv-a: spec\.ssh\.identityFile: "\/home\/x\/id" is outside the ssh files the operator allows \(trust file .*\): \/etc\/vmplace$/,
      ),
      expect.stringMatching(
        /^manifests\/x\.yaml:9:20: Host\/hv-a: spec\.transferAddress: host "evil\.example\.org" is not one/,
      ),
      expect.stringMatching(
        /^manifests\/x\.yaml:10:57: Host\/hv-a: spec\.storage\[1\]\.path: "\/data\/b" is outside the storage paths the operator allows/,
      ),
    ]);
    expect(state.hosts.size).toBe(0);

    const ok = doc
      .replace(/203\.0\.113\.9/g, '10.0.1.7')
      .replace('/home/x/id', '/etc/vmplace/id_ed25519')
      .replace('evil.example.org', 'hv7.lab.example.net')
      .replace('/data/b', '/var/lib/vmplace/b');
    expect((await lines({ 'manifests/x.yaml': ok }, { trust: { policy } })).lines).toEqual([]);
  });

  it('a Host without ssh: (the management box) needs localhost in hosts', async () => {
    const policy = parseTrustPolicy(POLICY, '/etc/vmplace/trust.yaml');
    const doc = hostWith('qemu:///system', '', '/srv/vm/a').replace(/^ {2}ssh: \n/m, '');
    const a = await lines({ 'manifests/x.yaml': doc }, { trust: { policy } });
    expect(a.lines).toEqual([expect.stringMatching(/^manifests\/x\.yaml:7:8: .*add localhost to hosts/)]);
    const withLocal = parseTrustPolicy(POLICY.replace('hosts: [', 'hosts: [localhost, '), 'f');
    expect((await lines({ 'manifests/x.yaml': doc }, { trust: { policy: withLocal } })).lines).toEqual([]);
  });

  it('matches hosts by address, CIDR, exact name and *.domain; names are not resolved', () => {
    const m = hostMatcher(['10.0.1.0/24', 'fd00::/8', '192.0.2.7', 'hv.example.net', '*.lab.example.net']);
    expect(
      ['10.0.1.200', 'fd00::1', '[fd00::2]', '192.0.2.7', 'HV.example.net', 'a.lab.example.net'].map(m),
    ).toEqual(Array(6).fill(true));
    expect(
      ['10.0.2.1', 'fe80::1', '192.0.2.8', 'hv.example.net.evil', 'lab.example.net', 'xlab.example.net'].map(
        m,
      ),
    ).toEqual(Array(6).fill(false));
  });

  it('fails closed: a missing named file, a group-writable file, bad content', () => {
    expect(() => loadTrustPolicy('/nonexistent/trust.yaml')).toThrow(
      expect.objectContaining({ reason: 'TrustFileUnreadable' }),
    );
    expect(() => loadTrustPolicy(policyFile(POLICY, 0o666))).toThrow(
      expect.objectContaining({ reason: 'TrustFileUnsafe' }),
    );
    for (const bad of [
      'kind: TrustPolicy\n',
      `${POLICY}extra: 1\n`,
      POLICY.replace('/srv/vm', 'srv/vm'),
      POLICY.replace('10.0.1.0/24', '10.0.1.0/33'),
      POLICY.replace('10.0.1.0/24', '"-oProxyCommand=x"'),
      'apiVersion: vmplace.dev/v1alpha1\nkind: TrustPolicy\nstoragePaths: /srv\n',
      '[1, 2]\n',
      'a: [\n',
    ]) {
      expect(() => loadTrustPolicy(policyFile(bad))).toThrow(
        expect.objectContaining({ reason: 'TrustFileInvalid' }),
      );
    }
  });

  it('the sample trust file admits the fleet example', async () => {
    const policy = loadTrustPolicy(path.join(REPO_ROOT, 'examples', 'daemon', 'trust.yaml'))!;
    expect(policy.hosts).toContain('*.example.net');
    const s = await loadDesiredState(path.join(REPO_ROOT, 'examples', 'fleet'), { trust: { policy } });
    expect(s.problems.map(formatProblem)).toEqual([]);
  });

  it('the default file is optional', () => {
    // /etc/vmplace/trust.yaml does not exist on the test machine
    expect(fs.existsSync('/etc/vmplace/trust.yaml')).toBe(false);
    expect(loadTrustPolicy()).toBeUndefined();
  });
});
