/**
 * `vmplace import` on the two-host lab: domains on two real libvirt hosts (reached over ssh),
 * with disks in two libvirt storage pools and a plain folder, one of them spread over a pool
 * and the folder, one transient. Import into an empty repository; `validate` passes and `plan`
 * shows nothing to do; a second import adds nothing; edit one VM's storage and `plan` shows
 * exactly that move (and a third import reports the edit instead of undoing it).
 */
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { parse } from 'yaml';
import { libvirtDefinition } from '../../src/drivers/libvirt/definition';
import type { LibvirtDriver } from '../../src/drivers/libvirt/driver';
import { ensureHosts, labHostDrivers, labTempDir, type HostsEnv, type LabHostName } from '../../src/lab';
import { VMPLACE_BIN } from './support/fleet';

jest.setTimeout(600_000);

const tag = `vmpimp${process.pid}`;
let env: HostsEnv;
let d: Record<LabHostName, LibvirtDriver>;
let root: string;
let repo: string;
const defined: { host: LabHostName; name: string }[] = [];
const pools: { host: LabHostName; name: string }[] = [];
/** host-side directories this test made */
const dirs = (h: LabHostName): string[] =>
  h === 'hv1' ? [`/srv/vmplace/${tag}-pa`, `/srv/vmplace/${tag}-dir`] : [`/srv/vmplace/${tag}-pb`];

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [VMPLACE_BIN, ...args], { timeout: 300_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 99) : 0, stdout, stderr }),
    );
  });
}

const virshOn = (h: LabHostName, args: string[]) =>
  d[h].exec.run(['virsh', '-q', '-c', 'qemu:///system', ...args]);

function domainXml(name: string, disks: { target: string; file: string }[]): string {
  const ds = disks
    .map(
      (x) =>
        `<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${x.file}'/><target dev='${x.target}' bus='virtio'/></disk>`,
    )
    .join('');
  return `<domain type='qemu'><name>${name}</name><memory unit='MiB'>32</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os><devices>${ds}</devices></domain>`;
}

async function vm(
  h: LabHostName,
  short: string,
  disks: { target: string; dir: string }[],
  state: 'running' | 'shutoff' | 'transient',
): Promise<string> {
  const name = `${tag}-${short}`;
  const files = disks.map((x) => ({ target: x.target, file: `${x.dir}/${name}-${x.target}.qcow2` }));
  for (const f of files) await d[h].exec.run(['qemu-img', 'create', '-q', '-f', 'qcow2', f.file, '16M']);
  defined.push({ host: h, name });
  await d[h].define(libvirtDefinition(domainXml(name, files)));
  if (state !== 'shutoff') await d[h].start(name);
  // an active persistent domain undefined becomes transient: it keeps running, with no definition
  if (state === 'transient') await d[h].undefine(name);
  return name;
}

beforeAll(async () => {
  env = await ensureHosts();
  d = labHostDrivers(env);
  root = await labTempDir('vmplace-import-');
  repo = path.join(root, 'repo');
  await fs.mkdir(repo);
  for (const h of ['hv1', 'hv2'] as const) await d[h].exec.run(['mkdir', '-p', ...dirs(h)]);
  for (const [h, dir] of [
    ['hv1', `/srv/vmplace/${tag}-pa`],
    ['hv2', `/srv/vmplace/${tag}-pb`],
  ] as const) {
    const name = path.posix.basename(dir);
    await virshOn(h, ['pool-define-as', '--name', name, '--type', 'dir', '--target', dir]);
    pools.push({ host: h, name });
  }
});

afterAll(async () => {
  for (const x of defined) {
    await d[x.host].destroy(x.name).catch(() => undefined);
    await d[x.host].undefine(x.name).catch(() => undefined);
  }
  for (const p of pools) await virshOn(p.host, ['pool-undefine', '--pool', p.name]).catch(() => undefined);
  for (const h of ['hv1', 'hv2'] as const) {
    await d[h].exec.run(['rm', '-rf', '--', ...dirs(h)]).catch(() => undefined);
    await d[h].close();
  }
  await fs.rm(root, { recursive: true, force: true });
});

const hostArg = (h: LabHostName): string =>
  `${h}=${env.hosts[h].uri},identityFile=${env.mgmtKey},knownHostsFile=${env.mgmtKnownHosts}`;

interface PlanJson {
  migrations: { vm: string; kind: string; disks: { target: string; from: string; to: string }[] }[];
  unchanged: string[];
  suspended: string[];
}

async function planJson(): Promise<PlanJson> {
  const r = await cli(['plan', repo, '--format', 'json']);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as PlanJson;
}

it('imports two running hosts; plan shows nothing to do; an edited storage is exactly one move', async () => {
  const pa = `/srv/vmplace/${tag}-pa`;
  const folder = `/srv/vmplace/${tag}-dir`;
  const pb = `/srv/vmplace/${tag}-pb`;
  const web = await vm('hv1', 'web', [{ target: 'vda', dir: pa }], 'running');
  const db = await vm(
    'hv1',
    'db',
    [
      { target: 'vda', dir: pa },
      { target: 'vdb', dir: folder },
    ],
    'shutoff',
  );
  const app = await vm('hv2', 'app', [{ target: 'vda', dir: pb }], 'running');
  const tr = await vm('hv2', 'tr', [{ target: 'vda', dir: pb }], 'transient');

  const t0 = Date.now();
  const first = await cli(['import', repo, '--host', hostArg('hv1'), '--host', hostArg('hv2')]);
  const importMs = Date.now() - t0;
  console.log(`import of two lab hosts: ${importMs} ms\n${first.stdout}${first.stderr}`);
  expect(first.stdout).toContain('wrote manifests/hosts/hv1.yaml');
  for (const name of [web, db, app, tr]) expect(first.stdout).toContain(`wrote manifests/vms/${name}.yaml`);

  const read = async (rel: string): Promise<{ spec: Record<string, unknown> }> =>
    parse(await fs.readFile(path.join(repo, rel), 'utf8')) as { spec: Record<string, unknown> };
  const hv1 = (await read('manifests/hosts/hv1.yaml')).spec;
  expect(hv1.storage).toEqual(
    expect.arrayContaining([
      { name: `${tag}-pa`, path: pa },
      { name: `${tag}-dir`, path: folder },
    ]),
  );
  expect((await read('manifests/hosts/hv2.yaml')).spec.storage).toEqual(
    expect.arrayContaining([{ name: `${tag}-pb`, path: pb }]),
  );
  expect((await read(`manifests/vms/${web}.yaml`)).spec).toEqual({ host: 'hv1', storage: `${tag}-pa` });
  expect((await read(`manifests/vms/${db}.yaml`)).spec).toEqual({
    host: 'hv1',
    storage: `${tag}-pa`,
    disks: { vdb: { storage: `${tag}-dir` } },
  });
  expect((await read(`manifests/vms/${app}.yaml`)).spec).toEqual({ host: 'hv2', storage: `${tag}-pb` });
  const trText = await fs.readFile(path.join(repo, `manifests/vms/${tr}.yaml`), 'utf8');
  expect(trText).toMatch(/# - it is a transient domain[^\n]*\n\s+suspend: true/);
  const webStatus = parse(await fs.readFile(path.join(repo, `status/vms/${web}.yaml`), 'utf8')) as {
    phase: string;
    placement: { host: string; running: boolean; disks: { storage: string }[] };
  };
  expect(webStatus).toMatchObject({ phase: 'Placed', placement: { host: 'hv1', running: true } });
  expect(webStatus.placement.disks[0]!.storage).toBe(`${tag}-pa`);

  const v = await cli(['validate', repo]);
  expect(v.stderr).toBe('');
  expect(v.code).toBe(0);
  const plan0 = await planJson();
  expect(plan0.migrations).toEqual([]);
  expect(plan0.unchanged).toEqual(expect.arrayContaining([web, db, app]));
  expect(plan0.suspended).toEqual(expect.arrayContaining([tr]));

  // a second run adds nothing and rewrites nothing
  const again = await cli(['import', repo, '--host', hostArg('hv1'), '--host', hostArg('hv2')]);
  expect(again.stdout).not.toContain('wrote manifests/');

  // a person edits one VM's storage: plan shows exactly that move; import does not undo it
  const file = path.join(repo, `manifests/vms/${web}.yaml`);
  const edited = (await fs.readFile(file, 'utf8')).replace(`storage: ${tag}-pa`, `storage: ${tag}-dir`);
  await fs.writeFile(file, edited);
  const plan1 = await planJson();
  expect(
    plan1.migrations.map((m) => [m.vm, m.kind, m.disks.map((x) => `${x.target}:${x.from}->${x.to}`)]),
  ).toEqual([[web, 'same-host', [`vda:${tag}-pa->${tag}-dir`]]]);
  const third = await cli(['import', repo]);
  expect(third.stdout).toContain(`ManifestDiffers: VirtualMachine/${web}`);
  expect(await fs.readFile(file, 'utf8')).toBe(edited);
});
