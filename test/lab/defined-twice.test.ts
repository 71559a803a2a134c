/**
 * Issue 9 item 5 on the two-host lab: a VM whose domain is defined on two hosts (running on
 * hv1, a stale definition on hv2 that a reboot or an operator could start) is seen as such by
 * the observation over real libvirt, written to its status (`definedOn`), reported by `plan`,
 * and never moved by `apply`.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { parse } from 'yaml';
import { LibvirtDriver } from '../../src/drivers/libvirt/driver';
import type { VirtualMachineStatus } from '../../src/types';
import { run, VMPLACE_BIN } from './support/fleet';
import {
  buildGuest,
  ensureHosts,
  guestDomainXml,
  labHostDrivers,
  labTempDir,
  labVmCleanupArgv,
  twoHostManifests,
  type HostsEnv,
  type LabHostName,
} from '../../src/lab';

jest.setTimeout(300_000);

let env: HostsEnv;
let d: Record<LabHostName, LibvirtDriver>;
let root: string;
const name = `vmpx-twice-${process.pid}`;

beforeAll(async () => {
  env = await ensureHosts();
  d = labHostDrivers(env);
  root = await labTempDir('vmplace-twice-');
});

afterAll(async () => {
  for (const h of ['hv1', 'hv2'] as const) {
    await d[h].destroy(name).catch(() => undefined);
    await d[h].undefine(name).catch(() => undefined);
    // its disk, the folder a move made for it, its serial log (`<csv>/<vm>.serial.log`)
    await d[h].exec.run(labVmCleanupArgv([env.hosts[h].storage, env.csvPath], name)).catch(() => undefined);
    await d[h].close();
  }
  await fs.rm(root, { recursive: true, force: true });
});

function manifests(storage: 'local' | 'csv'): string {
  return twoHostManifests(env, [{ name, host: 'hv1', storage }]);
}

describe('a VM defined on two hosts (two-host lab, real libvirt)', () => {
  it('is reported with both hosts in status and plan, and apply never moves it', async () => {
    const repo = path.join(root, 'repo');
    const stateDir = path.join(root, 'state');
    await fs.mkdir(path.join(repo, 'manifests'), { recursive: true });
    const disk = path.posix.join(env.hosts.hv1.storage, `${name}-vda.qcow2`);
    await d.hv1.exec.run(['qemu-img', 'create', '-q', '-f', 'qcow2', disk, String(64 * 1024 * 1024)]);
    const xml = guestDomainXml({
      name,
      disks: [{ target: 'vda', path: disk }],
      serialLog: path.posix.join(env.csvPath, `${name}.serial.log`),
      memoryMiB: 128,
      rateHz: 0,
      guest: await buildGuest(),
    });
    await d.hv1.define(xml);
    await d.hv1.start(name);
    await d.hv2.define(xml); // the stale copy: defined, not running
    const cli = (args: string[]) => run(process.execPath, [VMPLACE_BIN, ...args]);
    const status = async (): Promise<VirtualMachineStatus> =>
      parse(
        await fs.readFile(path.join(repo, 'status', 'vms', `${name}.yaml`), 'utf8'),
      ) as VirtualMachineStatus;
    const apply = () => cli(['apply', repo, '--yes', '--state-dir', stateDir, '--log-format', 'json']);

    // 1. Where it should be: nothing to move, but the status and the plan say it is defined twice.
    await fs.writeFile(path.join(repo, 'manifests', 'fleet.yaml'), manifests('local'));
    const first = await apply();
    expect({ code: first.code, stderr: first.code === 0 ? '' : first.stderr.slice(-2000) }).toEqual({
      code: 0,
      stderr: '',
    });
    expect((await status()).definedOn).toEqual(['hv1', 'hv2']);
    const planned = await cli(['plan', repo, '--format', 'json']);
    const doc = JSON.parse(planned.stdout) as {
      migrations: unknown[];
      findings: { vm: string; severity: string; reason: string }[];
    };
    expect(doc.migrations).toEqual([]);
    expect(doc.findings.map((f) => [f.vm, f.severity, f.reason])).toEqual([
      [name, 'warning', 'DefinedOnSeveralHosts'],
    ]);

    // 2. Wanted on the shared storage: the move is blocked, nothing is touched.
    await fs.writeFile(path.join(repo, 'manifests', 'fleet.yaml'), manifests('csv'));
    const second = await apply();
    expect(second.code).toBe(1);
    const s = await status();
    expect(s.phase).toBe('Blocked');
    expect(s.conditions[0]!.reason).toBe('DefinedOnSeveralHosts');
    expect(s.migration).toBeUndefined();
    for (const dir of ['migrations', 'done'])
      expect(await fs.readdir(path.join(stateDir, dir)).catch(() => [])).toEqual([]);
    const onHv1 = await d.hv1.getDomain(name);
    expect(onHv1?.state).toBe('running');
    expect(onHv1?.disks.map((x) => x.path)).toEqual([disk]);
    expect((await d.hv2.getDomain(name))?.state).toBe('shutoff');
  });
});
