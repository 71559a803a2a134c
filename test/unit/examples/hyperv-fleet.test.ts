/**
 * Issue 15: the Hyper-V example fleet (`examples/hyperv-fleet`) validates and plans offline
 * against its status files, with Windows target paths; and `vmplace validate` refuses hostile
 * Windows storage paths with a FILE:LINE:COL problem naming the field (schema, path rules and
 * the always-on storage rules), while a libvirt host keeps its POSIX rules.
 */
import Ajv2020 from 'ajv/dist/2020';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { escapeMarkdown } from '../../../src/planner/render';
import type { Plan } from '../../../src/types';
import { hostDoc, makeRepo } from '../../support/manifests';
import { runCli } from '../../support/cli';
import { cleanupTmp, tmpDir } from '../../support/tmp';

const ROOT = path.resolve(__dirname, '../../..');
const EXAMPLE = path.join(ROOT, 'examples/hyperv-fleet');

afterAll(cleanupTmp);

const run = runCli;

/** Error lines only (a repository without git history may warn). */
const errors = (err: string): string[] => err.split('\n').filter((l) => l !== '' && !/: warning: /.test(l));

describe('examples/hyperv-fleet', () => {
  it('validates: three Hyper-V hosts, one Hyper-V cluster, five VMs and their status', async () => {
    const r = await run('validate', EXAMPLE);
    expect(errors(r.err)).toEqual([]);
    expect(r.out).toBe('valid: 3 host(s), 1 cluster(s), 5 VM(s), 5 VM status file(s)\n');
    expect(r.code).toBe(0);
  });

  it('plans offline: local -> CSV, volume -> volume, across hosts, state only; Windows target paths', async () => {
    const r = await run('plan', '--format', 'json', EXAMPLE);
    expect(errors(r.err)).toEqual([]);
    expect(r.code).toBe(0);
    const plan = JSON.parse(r.out) as Plan;
    const schema = new Ajv2020({ allErrors: true, strict: true }).compile(
      JSON.parse(fs.readFileSync(path.join(ROOT, 'schemas/plan.schema.json'), 'utf8')) as object,
    );
    expect(schema(plan)).toBe(true);
    const shape = plan.migrations.map((m) => ({
      vm: m.vm,
      kind: m.kind,
      stateOnly: m.stateOnly,
      blocked: m.blocked,
      findings: m.findings,
      disks: m.disks.map((d) => `${d.target} ${d.from} -> ${d.to} ${d.toPath ?? '-'}`),
    }));
    const common = { blocked: false, findings: [] };
    expect(shape).toEqual([
      {
        vm: 'sql-01',
        kind: 'same-host',
        stateOnly: false,
        ...common,
        // sql-01.vhdx and Logs\SQL-01.VHDX are one name on Windows: each gets its device as a prefix
        disks: [
          'sda local -> volume1 C:\\ClusterStorage\\Volume1\\sql-01\\sda-sql-01.vhdx',
          'sdb local -> volume1 C:\\ClusterStorage\\Volume1\\sql-01\\sdb-SQL-01.VHDX',
        ],
      },
      {
        vm: 'web-01',
        kind: 'same-host',
        stateOnly: false,
        ...common,
        disks: ['sda volume1 -> volume2 C:\\ClusterStorage\\Volume2\\web-01\\web-01.vhdx'],
      },
      {
        vm: 'web-02',
        kind: 'cross-host',
        stateOnly: true,
        ...common,
        disks: ['sda volume1 -> volume1 C:\\ClusterStorage\\Volume1\\web-02\\web-02.vhdx'],
      },
      // blocked moves come last
      {
        vm: 'app-01',
        kind: 'cross-host',
        stateOnly: false,
        // shut off, to another host: the Hyper-V driver cannot define a VM there yet (Import-VM)
        blocked: true,
        findings: [
          expect.objectContaining({
            severity: 'error',
            reason: 'StrategyUnsupported',
            message: expect.stringContaining('cold move to another host') as unknown,
          }),
        ],
        // its status names the disk d:\vms\app-01\app-01.vhdx: in D:\VMs all the same
        disks: [
          'sda local -> data D:\\VMs\\app-01\\app-01.vhdx',
          'sdb local -> fast E:\\Hyper-V\\Fast\\app-01\\data.vhdx',
        ],
      },
    ]);
    expect(plan.unchanged).toEqual(['file-01']);
    expect(plan.findings).toBeUndefined();
  });

  it('plans the default strategy (quick) on a Hyper-V host as blocked: StrategyUnsupported, saying to use auto or live', async () => {
    const { repo } = editedExample('vms.yaml', /\n {2}strategy: auto/, '');
    const r = await run('plan', '--format', 'json', repo);
    const plan = JSON.parse(r.out) as Plan;
    const sql = plan.migrations.find((m) => m.vm === 'sql-01')!;
    expect(sql.blocked).toBe(true);
    expect(sql.findings).toEqual([
      expect.objectContaining({
        reason: 'StrategyUnsupported',
        message: expect.stringMatching(/quick \(the default\).*strategy: auto/) as unknown,
      }),
    ]);
    // web-01 keeps its strategy: auto, and plans as before
    expect(plan.migrations.find((m) => m.vm === 'web-01')!.blocked).toBe(false);
  });

  it('plans as a table and as a pull request comment', async () => {
    const table = await run('plan', EXAMPLE);
    expect(table.code).toBe(0);
    expect(table.out).toContain('sql-01  sdb  C:\\ClusterStorage\\Volume1\\sql-01\\sdb-SQL-01.VHDX');
    expect(table.out).toContain('Plan: 4 migrations (1 blocked), 1 unchanged');
    const comment = await run('plan', '--format', 'markdown', EXAMPLE);
    expect(comment.code).toBe(0);
    for (const vm of ['app-01', 'sql-01', 'web-01', 'web-02']) expect(comment.out).toContain(vm);
    // backslashes escaped, so the comment shows the path as it is
    expect(comment.out).toContain(escapeMarkdown('C:\\ClusterStorage\\Volume1\\sql-01\\sda-sql-01.vhdx'));
  });
});

/** A copy of the example with one line of `file` replaced; the line and column of `to`'s first character. */
function editedExample(file: string, from: RegExp, to: string): { repo: string; at: string } {
  const repo = path.join(tmpDir('vmplace-hyperv-'), 'repo');
  fs.cpSync(EXAMPLE, repo, { recursive: true });
  const abs = path.join(repo, 'manifests', file);
  const text = fs.readFileSync(abs, 'utf8');
  const m = from.exec(text);
  if (!m) throw new Error(`${String(from)} not in ${file}`);
  const edited = text.slice(0, m.index) + to + text.slice(m.index + m[0].length);
  fs.writeFileSync(abs, edited);
  const before = edited.slice(0, m.index).split('\n');
  const at = `${path.relative(process.cwd(), abs)}:${before.length}:${before.at(-1)!.length + 1}`;
  return { repo, at };
}

const HOST_PATH = /(?<=path: )D:\\VMs/; // hv-w1's local storage, the first in hosts.yaml
const CLUSTER_PATH = /(?<=path: )C:\\ClusterStorage\\Volume1/;
const SCHEMA = 'must be an absolute Windows path such as D:\\VMs, C:\\ClusterStorage\\Volume1';

describe('validate refuses hostile Windows storage paths at FILE:LINE:COL', () => {
  it.each<[string, string, RegExp, string, string]>([
    ['a .. segment', 'hosts.yaml', HOST_PATH, "'D:\\VMs\\..\\Windows'", SCHEMA],
    ['an alternate data stream', 'hosts.yaml', HOST_PATH, "'D:\\VMs\\a.vhdx:ads'", SCHEMA],
    ['a verbatim path', 'hosts.yaml', HOST_PATH, "'\\\\?\\C:\\x'", SCHEMA],
    ['a device path', 'hosts.yaml', HOST_PATH, "'\\\\.\\PhysicalDrive0'", SCHEMA],
    ['forward slashes', 'hosts.yaml', HOST_PATH, "'D:/VMs'", SCHEMA],
    ['a trailing backslash', 'hosts.yaml', HOST_PATH, "'D:\\VMs\\'", SCHEMA],
    ['a drive-relative path', 'hosts.yaml', HOST_PATH, "'D:VMs'", SCHEMA],
    ['a POSIX path', 'hosts.yaml', HOST_PATH, '/var/lib/vmplace/local', SCHEMA],
    [
      'an 8.3 short name',
      'hosts.yaml',
      HOST_PATH,
      "'C:\\PROGRA~1'",
      'must be an absolute Windows path such as D:\\VMs: it looks like an 8.3 short name ("PROGRA~1"); write the long name (got "C:\\\\PROGRA~1")',
    ],
    [
      'a reserved device name',
      'hosts.yaml',
      HOST_PATH,
      "'D:\\VMs\\NUL'",
      'it names a reserved device ("NUL")',
    ],
    ['a trailing dot', 'hosts.yaml', HOST_PATH, "'D:\\VMs.'", 'which Windows strips'],
    [
      'a system directory',
      'hosts.yaml',
      HOST_PATH,
      "'C:\\Windows\\VMs'",
      'is a system directory (C:\\Windows)',
    ],
    [
      "Hyper-V's own configuration",
      'hosts.yaml',
      HOST_PATH,
      "'c:\\programdata\\Microsoft\\Windows\\Hyper-V'",
      'is a system directory (c:\\ProgramData)',
    ],
    [
      'an administrative share',
      'hosts.yaml',
      HOST_PATH,
      "'\\\\fs\\C$\\VMs'",
      'is on the administrative share "C$"',
    ],
    [
      'the Cluster Shared Volumes folder itself',
      'clusters.yaml',
      CLUSTER_PATH,
      "'C:\\ClusterStorage'",
      'is C:\\ClusterStorage itself; name a directory inside it',
    ],
    ['a CSV path with ..', 'clusters.yaml', CLUSTER_PATH, "'C:\\ClusterStorage\\..\\Windows'", SCHEMA],
  ])('%s', async (_title, file, from, to, message) => {
    const { repo, at } = editedExample(file, from, to);
    const r = await run('validate', repo);
    expect(r.code).toBe(2);
    const object = file === 'hosts.yaml' ? 'Host/hv-w1' : 'Cluster/csv';
    const lines = errors(r.err).filter((l) => l.startsWith(`${at}: ${object}: spec.storage[0].path: `));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(message);
  });

  it('two storage locations of one host nested but for case', async () => {
    const { repo, at } = editedExample('hosts.yaml', /(?<=path: )E:\\Hyper-V\\Fast/, 'd:\\vms\\Fast');
    const r = await run('validate', repo);
    expect(r.code).toBe(2);
    expect(errors(r.err)).toContain(
      `${at}: Host/hv-w3: spec.storage[1].path: "d:\\\\vms\\\\Fast" is inside storage "data" ("D:\\\\VMs")`,
    );
  });

  it('a libvirt host in a Hyper-V cluster', async () => {
    const { repo } = editedExample(
      'hosts.yaml',
      /driver: hyperv\n {2}uri: ssh:\/\/vmplace@hv-w1\.example\.net\n/,
      'driver: libvirt\n  uri: qemu+ssh://vmplace@hv-w1.example.net/system\n',
    );
    const hosts = path.join(repo, 'manifests/hosts.yaml');
    fs.writeFileSync(
      hosts,
      fs.readFileSync(hosts, 'utf8').replace('path: D:\\VMs', 'path: /var/lib/vmplace/local'),
    );
    const r = await run('validate', repo);
    expect(r.code).toBe(2);
    const line = fs.readFileSync(hosts, 'utf8').split('\n').indexOf('  cluster: csv') + 1;
    expect(errors(r.err)).toContain(
      `${path.relative(process.cwd(), hosts)}:${line}:12: Host/hv-w1: spec.cluster: Cluster "csv" is a hyperv cluster and this host's driver is libvirt; the hosts of a cluster have its driver (declared at manifests/clusters.yaml:4:1)`,
    );
  });

  it('a libvirt host keeps the POSIX rules: a Windows path is refused there', async () => {
    const repo = makeRepo({ 'manifests/h.yaml': hostDoc('lab').replace('/var/lib/vmplace/a', "'D:\\VMs'") });
    const r = await run('validate', repo);
    expect(r.code).toBe(2);
    expect(errors(r.err)).toContain(
      `${path.relative(process.cwd(), repo)}/manifests/h.yaml:10:13: Host/lab: spec.storage[0].path: must be an absolute, normalised path: starts with '/', no '.' or '..' segments, no '//', no trailing '/', no control characters (got "D:\\\\VMs")`,
    );
  });
});
