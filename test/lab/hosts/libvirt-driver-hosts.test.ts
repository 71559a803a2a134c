/**
 * The unchanged LibvirtDriver against both lab hosts through qemu+ssh, and a cold-path move of
 * a running guest from hv1 to hv2 with the pieces a cross-host migration uses: `save` into the
 * cluster shared storage, `copyBetweenHosts` for the disk, `restore` on hv2.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { LibvirtDriver } from '../../../src/drivers/libvirt/driver';
import { parseCapabilitiesHostUuid } from '../../../src/drivers/libvirt/parsers';
import { copyBetweenHosts } from '../../../src/transfer/between-hosts';
import {
  ackedSequences,
  buildGuest,
  ensureHosts,
  guestDomainXml,
  transferSsh,
  waitForAcks,
  type HostsEnv,
} from '../../../src/lab';

jest.setTimeout(300_000);

let env: HostsEnv;
let d1: LibvirtDriver;
let d2: LibvirtDriver;
const vm = `vmpl-drv-${process.pid}`;

beforeAll(async () => {
  env = await ensureHosts();
  const mk = (h: 'hv1' | 'hv2'): LibvirtDriver =>
    new LibvirtDriver(h, env.hosts[h].hostSpec, {
      allowedRoots: [env.hosts[h].storage, env.csvPath],
      stateDir: env.hosts[h].stateDir,
    });
  d1 = mk('hv1');
  d2 = mk('hv2');
});

afterAll(async () => {
  for (const d of [d1, d2]) {
    if (!d) continue;
    await d.destroy(vm).catch(() => undefined);
    await d.undefine(vm).catch(() => undefined);
    for (const f of [`${vm}.qcow2`, `${vm}.log`])
      await d.exec.run(['rm', '-f', '--', `/srv/vmplace/local/${f}`]).catch(() => undefined);
  }
  await fs.rm(path.join(env.csvMgmtPath, `${vm}.state`), { force: true }).catch(() => undefined);
  await Promise.all([d1?.close(), d2?.close()]);
});

it.each(['hv1', 'hv2'] as const)('observes %s over qemu+ssh: getDomain, fsInfo, hostCpu', async (h) => {
  const d = h === 'hv1' ? d1 : d2;
  expect(d.uri).toMatch(
    new RegExp(`^qemu\\+ssh://root@${env.hosts[h].addr.replace(/\./g, '\\.')}(:22)?/system\\?`),
  );
  expect(await d.getDomain('no-such-domain-here')).toBeUndefined();
  const fsInfo = await d.fsInfo(env.hosts[h].storage);
  expect(fsInfo.capacityBytes).toBeGreaterThan(0);
  expect(fsInfo.freeBytes).toBeGreaterThan(0);
  const cpu = await d.hostCpu();
  expect(typeof cpu.model === 'string' || typeof cpu.vendor === 'string').toBe(true);
  expect((await d.exec.run(['hostname'])).stdout.trim()).toBe(h);
});

it('gives each host its own host UUID (libvirt refuses migrations "to the same host" otherwise)', async () => {
  const u1 = parseCapabilitiesHostUuid((await d1.virsh(['capabilities'])).stdout);
  const u2 = parseCapabilitiesHostUuid((await d2.virsh(['capabilities'])).stdout);
  expect(u1).toBeDefined();
  expect(u1).not.toBe(u2);
});

it('runs a guest on hv1 and moves it to hv2: save to shared storage, copy the disk, restore', async () => {
  const guest = await buildGuest();
  const disk = `/srv/vmplace/local/${vm}.qcow2`;
  const serial = `/srv/vmplace/local/${vm}.log`;
  const stateFile = `${env.csvPath}/${vm}.state`;
  await d1.exec.run(['qemu-img', 'create', '-q', '-f', 'qcow2', disk, '64M']);
  await d1.define(
    guestDomainXml({ name: vm, disks: [{ target: 'vda', path: disk }], serialLog: serial, guest }),
  );
  await d1.start(vm);
  const info = await d1.getDomain(vm);
  expect(info).toMatchObject({ name: vm, state: 'running', persistent: true });
  expect(info!.disks.map((x) => x.path)).toEqual([disk]);
  const log1 = path.join(env.hosts.hv1.storageMgmtPath, `${vm}.log`);
  const before = await waitForAcks(log1, { disk: 'vda', atLeast: 5, timeoutMs: 60_000 });

  // the state file is written by hv1's libvirtd, on hv1, at a host-side path
  const t0 = Date.now();
  await d1.save(vm, stateFile);
  const saveMs = Date.now() - t0;
  expect((await d1.getDomain(vm))?.state).toBe('shutoff');
  await fs.access(path.join(env.csvMgmtPath, `${vm}.state`));
  const r = await copyBetweenHosts(d1.exec, d2.exec, disk, disk, {
    targetSsh: transferSsh(env.hosts.hv1, env.hosts.hv2),
  });
  expect(r.alreadyDone).toBe(false);
  const t1 = Date.now();
  // hv2 reads the same state file through the shared storage; the disk path is the same there
  await d2.restore(stateFile);
  const restoreMs = Date.now() - t1;
  expect((await d2.getDomain(vm))?.state).toBe('running');
  const log2 = path.join(env.hosts.hv2.storageMgmtPath, `${vm}.log`);
  await waitForAcks(log2, { disk: 'vda', atLeast: before + 5, timeoutMs: 60_000 });
  expect((await ackedSequences(log2)).get('vda')).toBeGreaterThan(before);
  // restore makes a transient domain on hv2: persist it there, drop the definition on hv1
  await d2.define(await d2.dumpXml(vm));
  expect((await d2.getDomain(vm))?.persistent).toBe(true);
  await d1.undefine(vm);
  expect(await d1.getDomain(vm)).toBeUndefined();
  console.log(
    `cross-host cold move: save ${saveMs} ms, disk copy ${r.durationMs} ms, restore ${restoreMs} ms`,
  );
});
