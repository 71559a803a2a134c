/**
 * The other single-host cases on the real lab: a shut-off VM (cold), the live strategy (mirror,
 * no pause), and the VMs vmplace must refuse with a reason instead of crashing: a disk with a
 * backing chain, a block-device disk, a VM that is not defined anywhere.
 */
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { XMLBuilder } from 'fast-xml-parser';
import {
  ackedSequences,
  buildGuest,
  createDisk,
  destroyVm,
  domState,
  dumpXml,
  ensureLab,
  run as labRun,
  verifyRecords,
  virsh,
  waitForAcks,
} from '../../src/lab';
import { applyCli, exists, makeFleet, readVmStatus, writeManifests, type Fleet } from './support/fleet';
import { parseDomainXml } from '../../src/drivers/libvirt/xml';

jest.setTimeout(300_000);

const fleets: Fleet[] = [];
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  await ensureLab();
  await buildGuest();
});

afterAll(async () => {
  for (const f of fleets) await destroyVm(f.vm).catch(() => undefined);
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  for (const f of fleets) await fs.rm(f.root, { recursive: true, force: true }).catch(() => undefined);
});

async function newFleet(tag: string, opts: Parameters<typeof makeFleet>[1] = {}): Promise<Fleet> {
  const f = await makeFleet(`vmp-${tag}-${process.pid}`, opts);
  fleets.push(f);
  for (const d of f.disks) await waitForAcks(f.serialLog, { disk: d.target, atLeast: 3, timeoutMs: 60_000 });
  return f;
}

async function diskPaths(vm: string, inactive = false): Promise<string[]> {
  return parseDomainXml(await dumpXml(vm, { inactive })).disks.map((d) => d.path ?? d.sourceDev ?? '');
}

/** Define (not start) an empty domain with the given disk elements. */
async function defineBareVm(name: string, disks: object[]): Promise<void> {
  const xml = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@_', format: true }).build({
    domain: {
      '@_type': 'qemu',
      name,
      memory: { '@_unit': 'MiB', '#text': '64' },
      vcpu: '1',
      os: { type: { '@_arch': 'x86_64', '@_machine': 'pc', '#text': 'hvm' } },
      devices: { disk: disks },
    },
  });
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmplace-bare-'));
  await fs.writeFile(path.join(dir, 'd.xml'), xml);
  await virsh(['define', path.join(dir, 'd.xml')]);
  await fs.rm(dir, { recursive: true, force: true });
}

describe('single-host cases on real libvirt', () => {
  it('moves a shut-off VM cold: definition on b, sources gone, every acknowledged record on b', async () => {
    const f = await newFleet('cold', { fillBytes: 16 * 1024 * 1024 });
    await virsh(['destroy', f.vm]);
    const acked = await ackedSequences(f.serialLog);
    await writeManifests(f, 'b');
    const res = await applyCli(f);
    expect({ code: res.code, stderr: res.code === 0 ? '' : res.stderr }).toEqual({ code: 0, stderr: '' });
    expect(await domState(f.vm)).toBe('shut off');
    const want = f.disks.map((d) => path.join(f.storage.b, f.vm, path.basename(d.path)));
    expect(await diskPaths(f.vm, true)).toEqual(want);
    for (const d of f.disks) expect(await exists(d.path)).toBe(false);
    const status = await readVmStatus(f);
    expect(status.phase).toBe('Placed');
    expect(status.migration?.step).toBe('Completed');
    expect(status.migration?.pauseMs).toBeUndefined();
    for (const d of f.disks) {
      const check = await verifyRecords(
        path.join(f.storage.b, f.vm, path.basename(d.path)),
        d.target,
        acked.get(d.target) ?? 0,
      );
      expect(check.bad).toEqual([]);
    }
    // and it boots from b
    await virsh(['start', f.vm]);
    expect(await domState(f.vm)).toBe('running');
  });

  it('moves a running VM live (blockcopy + pivot): no pause, nothing lost', async () => {
    const f = await newFleet('live', { fillBytes: 16 * 1024 * 1024 });
    await writeManifests(f, 'b', '  strategy: live\n');
    const res = await applyCli(f);
    expect({ code: res.code, stderr: res.code === 0 ? '' : res.stderr }).toEqual({ code: 0, stderr: '' });
    const want = f.disks.map((d) => path.join(f.storage.b, f.vm, path.basename(d.path)));
    expect(await domState(f.vm)).toBe('running');
    expect(await diskPaths(f.vm)).toEqual(want);
    expect(await diskPaths(f.vm, true)).toEqual(want);
    for (const d of f.disks) expect(await exists(d.path)).toBe(false);
    const status = await readVmStatus(f);
    expect(status.phase).toBe('Placed');
    expect(status.migration?.strategy).toBe('live');
    expect(status.migration?.pauseMs).toBe(0);
    const before = await ackedSequences(f.serialLog);
    for (const d of f.disks)
      await waitForAcks(f.serialLog, {
        disk: d.target,
        atLeast: (before.get(d.target) ?? 0) + 3,
        timeoutMs: 30_000,
      });
    await virsh(['destroy', f.vm]);
    const acked = await ackedSequences(f.serialLog);
    for (const d of f.disks) {
      const check = await verifyRecords(
        path.join(f.storage.b, f.vm, path.basename(d.path)),
        d.target,
        acked.get(d.target) ?? 0,
      );
      expect(check.bad).toEqual([]);
      expect(check.checked).toBe(acked.get(d.target));
    }
  });

  it('blocks a VM whose disk already has a backing chain, and changes nothing', async () => {
    const f = await newFleet('chain');
    await virsh(['destroy', f.vm]);
    // give vdb a backing chain: base <- overlay, and point the definition at the overlay
    const vdb = f.disks[1]!;
    const overlay = path.join(f.storage.a, `${f.vm}-vdb.top.qcow2`);
    await labRun('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', vdb.path, overlay]);
    const xml = await dumpXml(f.vm, { inactive: true });
    const { rewriteDiskPaths } = await import('../../src/drivers/libvirt/xml');
    const file = path.join(f.root, 'chain.xml');
    await fs.writeFile(file, rewriteDiskPaths(xml, { vdb: overlay }));
    await virsh(['define', file]);
    await virsh(['start', f.vm]);
    await writeManifests(f, 'b');
    const res = await applyCli(f);
    expect(res.code).toBe(1);
    const status = await readVmStatus(f);
    expect(status.phase).toBe('Blocked');
    expect(status.conditions[0]?.reason).toBe('DiskHasBackingChain');
    expect(await domState(f.vm)).toBe('running');
    expect(await diskPaths(f.vm)).toEqual([f.disks[0]!.path, overlay]);
    expect(await fs.readdir(f.storage.b)).toEqual([]);
  });

  it('blocks a VM with a block-device disk (DiskOutsideStorage), and a VM defined nowhere (DomainNotFound)', async () => {
    const root = await fs.mkdtemp(path.join(os.tmpdir(), 'vmplace-blk-'));
    cleanups.push(() => fs.rm(root, { recursive: true, force: true }));
    const backing = path.join(root, 'lun.img');
    await fs.writeFile(backing, Buffer.alloc(0));
    await fs.truncate(backing, 16 * 1024 * 1024);
    const loop = (await labRun('losetup', ['-f', '--show', backing])).stdout.trim();
    cleanups.push(() => labRun('losetup', ['-d', loop]));
    const name = `vmp-blk-${process.pid}`;
    const a = path.join(root, 'a');
    const b = path.join(root, 'b');
    await fs.mkdir(a);
    await fs.mkdir(b);
    await createDisk(path.join(a, `${name}-vda.qcow2`), 16 * 1024 * 1024);
    await defineBareVm(name, [
      {
        '@_type': 'file',
        '@_device': 'disk',
        driver: { '@_name': 'qemu', '@_type': 'qcow2' },
        source: { '@_file': path.join(a, `${name}-vda.qcow2`) },
        target: { '@_dev': 'vda', '@_bus': 'virtio' },
      },
      {
        '@_type': 'block',
        '@_device': 'disk',
        driver: { '@_name': 'qemu', '@_type': 'raw' },
        source: { '@_dev': loop },
        target: { '@_dev': 'vdb', '@_bus': 'virtio' },
      },
    ]);
    cleanups.push(() => destroyVm(name));
    const repo = path.join(root, 'repo');
    await fs.mkdir(path.join(repo, 'manifests'), { recursive: true });
    await fs.writeFile(
      path.join(repo, 'manifests', 'f.yaml'),
      `apiVersion: vmplace.dev/v1alpha1
kind: Host
metadata: {name: lab}
spec:
  driver: libvirt
  uri: qemu:///system
  storage: [{name: a, path: ${a}}, {name: b, path: ${b}}]
---
apiVersion: vmplace.dev/v1alpha1
kind: VirtualMachine
metadata: {name: ${name}}
spec: {host: lab, storage: b}
---
apiVersion: vmplace.dev/v1alpha1
kind: VirtualMachine
metadata: {name: vmp-ghost-${process.pid}}
spec: {host: lab, storage: b}
`,
    );
    const fleet = { repo, stateDir: path.join(root, 'state') } as Fleet;
    const res = await applyCli(fleet);
    expect(res.code).toBe(1);
    const status = await readVmStatus({ ...fleet, vm: name });
    expect(status.phase).toBe('Blocked');
    // the plan already blocks it: the device is outside every declared storage (the status
    // checks of issue 9); Preflight would say DiskNotFile
    expect(status.conditions[0]?.reason).toBe('DiskOutsideStorage');
    expect(status.conditions[0]?.message).toContain(loop);
    expect(status.placement?.disks.map((d) => d.path)).toEqual([path.join(a, `${name}-vda.qcow2`), loop]);
    expect(await fs.readdir(b)).toEqual([]);
    const ghost = await readVmStatus({ ...fleet, vm: `vmp-ghost-${process.pid}` });
    expect(ghost.phase).toBe('Blocked');
    expect(ghost.conditions[0]?.reason).toBe('DomainNotFound');
  });
});
