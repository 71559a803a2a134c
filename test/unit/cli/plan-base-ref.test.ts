/**
 * `vmplace plan --base-ref REF` on a real temporary git repository: a pull request that edits
 * status/ to hide a migration still gets the migration planned (status is read at the merge base)
 * and a warning in every output format (issue 9, item 10).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { main } from '../../../src/cli/main';
import { renderStatusYaml } from '../../../src/status/files';
import type { HostStatus } from '../../../src/types';
import { git, vmStatus } from '../../support/git';
import { hostDoc, vmDoc } from '../../support/manifests';
import { cleanupTmp, tmpDir } from '../../support/tmp';

afterAll(cleanupTmp);

async function run(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(['node', 'vmplace', ...argv], {
    out: (s) => (out += s),
    err: (s) => (err += s),
    isTTY: false,
  });
  return { code, out, err };
}

const hostStatus: HostStatus = {
  apiVersion: 'vmplace.dev/v1alpha1',
  kind: 'HostStatus',
  metadata: { name: 'lab' },
  observedAt: '2025-01-01T00:00:00Z',
  storage: [
    { name: 'a', path: '/var/lib/vmplace/a', capacityBytes: 100 * 2 ** 30, freeBytes: 90 * 2 ** 30 },
    { name: 'b', path: '/var/lib/vmplace/b', capacityBytes: 100 * 2 ** 30, freeBytes: 90 * 2 ** 30 },
  ],
};

function write(repo: string, files: Record<string, string>): void {
  for (const [rel, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(repo, rel)), { recursive: true });
    fs.writeFileSync(path.join(repo, rel), text);
  }
}

function commit(repo: string, message: string): void {
  git(repo, 'add', '--all');
  git(repo, 'commit', '--quiet', '--no-gpg-sign', '-m', message);
}

/**
 * main: VM `demo` on storage a (status), desired on a. Branch `pr`: desired on b, and status/
 * edited to claim it is already on b, so without the base the plan would show nothing to do.
 */
function prRepo(): string {
  const repo = path.join(tmpDir('vmplace-baseref-'), 'repo');
  git(path.dirname(repo), 'init', '--quiet', '--initial-branch=main', repo);
  write(repo, {
    'manifests/lab.yaml': hostDoc('lab'),
    'manifests/demo.yaml': vmDoc('demo', 'lab', 'a'),
    'status/vms/demo.yaml': renderStatusYaml(vmStatus('demo')),
    'status/hosts/lab.yaml': renderStatusYaml(hostStatus),
  });
  commit(repo, 'base');
  git(repo, 'checkout', '--quiet', '-b', 'pr');
  const hidden = vmStatus('demo');
  hidden.placement!.disks = [
    { ...hidden.placement!.disks[0]!, path: '/var/lib/vmplace/b/demo-vda.qcow2', storage: 'b' },
  ];
  write(repo, {
    'manifests/demo.yaml': vmDoc('demo', 'lab', 'b'),
    'status/vms/demo.yaml': renderStatusYaml(hidden),
  });
  commit(repo, 'move demo to b (and hide it)');
  return repo;
}

describe('vmplace plan --base-ref', () => {
  it('without --base-ref the edited status hides the migration (the hole)', async () => {
    const repo = prRepo();
    const r = await run('plan', repo, '--format', 'json');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out).migrations).toEqual([]);
  });

  it.each(['json', 'table', 'markdown'])(
    'plans the migration from the base status and warns that the change edits status/ (%s)',
    async (format) => {
      const repo = prRepo();
      const r = await run('plan', repo, '--base-ref', 'main', '--format', format, '--detailed-exitcode');
      expect(r.err).toBe('');
      expect(r.code).toBe(1);
      expect(r.out).toContain('StatusEditedByChange');
      expect(r.out).toContain('status/vms/demo.yaml');
      if (format === 'json') {
        const doc = JSON.parse(r.out);
        expect(doc.migrations.map((m: { vm: string; disks: unknown[] }) => [m.vm, m.disks])).toEqual([
          [
            'demo',
            [
              {
                target: 'vda',
                from: 'a',
                to: 'b',
                bytes: 1610612736,
                toPath: '/var/lib/vmplace/b/demo/demo-vda.qcow2',
              },
            ],
          ],
        ]);
        expect(doc.findings[0]).toMatchObject({
          subject: 'status/',
          severity: 'warning',
          reason: 'StatusEditedByChange',
        });
      } else {
        expect(r.out).toMatch(/demo/);
        expect(r.out).toMatch(format === 'table' ? /lab:a\s+lab:b/ : /vda: a → b/);
      }
    },
  );

  it('says nothing when the change leaves status/ alone', async () => {
    const repo = prRepo();
    git(repo, 'checkout', '--quiet', 'main', '--', 'status');
    commit(repo, 'restore status');
    const r = await run('plan', repo, '--base-ref', 'main', '--format', 'json');
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.out);
    expect(doc.findings).toBeUndefined();
    expect(doc.migrations).toHaveLength(1);
  });

  it('refuses a symbolic link in status/ at the base and a ref that is not there', async () => {
    const repo = prRepo();
    git(repo, 'checkout', '--quiet', 'main');
    fs.symlinkSync('/etc/passwd', path.join(repo, 'status/vms/evil.yaml'));
    commit(repo, 'link');
    git(repo, 'checkout', '--quiet', 'pr');
    git(repo, 'rebase', '--quiet', 'main');
    const r = await run('plan', repo, '--base-ref', 'main');
    expect(r.code).toBe(2);
    expect(r.err).toContain('status/vms/evil.yaml');
    expect(r.err).toContain('symbolic link');
    expect(r.err).not.toContain('root:');
    const missing = await run('plan', repo, '--base-ref', 'no-such-branch');
    expect(missing.code).toBe(2);
    expect(missing.err).toContain('no-such-branch');
    const option = await run('plan', repo, '--base-ref=--output=/tmp/x');
    expect(option.code).toBe(2);
  });
});
