/**
 * Hyper-V storage and the operator's bounds (issue 15): the always-on rules keep Windows system
 * folders, bare containers and administrative shares out of storage, and a trust file bounds
 * Hyper-V storage with Windows entries (case-insensitively), libvirt storage with POSIX ones.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { formatProblem, loadDesiredState } from '../../../src/manifests';
import { loadTrustPolicy, parseTrustPolicy, windowsStorageProblem } from '../../../src/manifests/trust';
import { makeRepo } from '../../support/manifests';
import { cleanupTmp } from '../../support/tmp';

afterAll(cleanupTmp);

describe('windowsStorageProblem', () => {
  it.each<[string, RegExp | undefined]>([
    ['D:\\VMs', undefined],
    ['C:\\ClusterStorage\\Volume1', undefined],
    ['\\\\fs\\vms\\hyperv', undefined],
    ['C:\\ProgramData\\Microsoft\\Windows\\Virtual Hard Disks', undefined],
    ['c:\\programdata\\microsoft\\windows\\virtual hard disks\\web', undefined],
    ['C:\\Windows', /system directory \(C:\\Windows\)/],
    ['d:\\windows\\vms', /system directory \(d:\\Windows\)/],
    ['C:\\Program Files\\VMs', /system directory/],
    ['C:\\Program Files (x86)', /system directory/],
    ['C:\\ProgramData\\Microsoft\\Windows\\Hyper-V', /system directory \(C:\\ProgramData\)/],
    ['E:\\System Volume Information', /system directory/],
    ['C:\\$Recycle.Bin\\x', /system directory/],
    ['C:\\Users', /itself/],
    ['C:\\Users\\hyperv\\VMs', undefined],
    ['C:\\ClusterStorage', /is C:\\ClusterStorage itself/],
    ['\\\\fs\\C$\\VMs', /administrative share "C\$"/],
    ['\\\\fs\\ADMIN$', /administrative share/],
    // refused by the path rules, which report it: nothing more to say here
    ['D:\\VMs\\..\\Windows', undefined],
  ])('%j', (p, why) => {
    const got = windowsStorageProblem(p);
    if (why === undefined) expect(got).toBeUndefined();
    else expect(got).toMatch(why);
  });
});

const hypervHost = (storage: string): string => `apiVersion: vmplace.dev/v1alpha1
kind: Host
metadata:
  name: hv-w1
spec:
  driver: hyperv
  uri: ssh://vmplace@hv-w1.example.net
  ssh: {host: hv-w1.example.net, user: vmplace}
  storage:
    - name: local
      path: ${storage}
`;

describe('a trust file bounds Hyper-V storage with Windows entries', () => {
  const trustFile = (text: string): string => {
    const f = path.join(path.dirname(makeRepo({})), 'trust.yaml');
    fs.writeFileSync(f, text, { mode: 0o644 });
    return f;
  };
  const POLICY = `apiVersion: vmplace.dev/v1alpha1
kind: TrustPolicy
storagePaths: ['D:\\VMs', 'C:\\ClusterStorage', /srv/vm]
`;

  it('reads Windows entries and refuses a Windows entry the path rules refuse', () => {
    expect(parseTrustPolicy(POLICY, 't.yaml').storagePaths).toEqual([
      'D:\\VMs',
      'C:\\ClusterStorage',
      '/srv/vm',
    ]);
    expect(() =>
      parseTrustPolicy(
        "apiVersion: vmplace.dev/v1alpha1\nkind: TrustPolicy\nstoragePaths: ['D:\\VMs\\..\\x']\n",
        't.yaml',
      ),
    ).toThrow(
      /storagePaths\[0\] "D:\\\\VMs\\\\..\\\\x" must be an absolute Windows path in normal form: it has a "\.\." segment/,
    );
    expect(() =>
      parseTrustPolicy(
        'apiVersion: vmplace.dev/v1alpha1\nkind: TrustPolicy\nstoragePaths: [srv]\n',
        't.yaml',
      ),
    ).toThrow(/must be an absolute, normalised path other than \//);
  });

  it.each<[string, boolean]>([
    ['D:\\VMs', true],
    ['d:\\vms\\fast', true],
    ['C:\\ClusterStorage\\Volume1', true],
    ['E:\\VMs', false],
    ['D:\\VMs2', false],
  ])('%j allowed: %s', async (storage, allowed) => {
    const policy = loadTrustPolicy(trustFile(POLICY))!;
    const repo = makeRepo({ 'manifests/h.yaml': hypervHost(storage) });
    const state = await loadDesiredState(repo, { trust: { policy } });
    const lines = state.problems.map(formatProblem);
    if (allowed) expect(lines).toEqual([]);
    else
      expect(lines).toEqual([
        expect.stringMatching(
          /^manifests\/h\.yaml:11:13: Host\/hv-w1: spec\.storage\[0\]\.path: ".*" is outside the storage paths the operator allows \(trust file .*\): D:\\VMs, C:\\ClusterStorage, \/srv\/vm$/,
        ),
      ]);
    expect(state.hosts.has('hv-w1')).toBe(allowed);
  });
});
