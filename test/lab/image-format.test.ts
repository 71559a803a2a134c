/**
 * Image formats on the real lab (issue 9 item 3) and host-bound firmware state within one host
 * (item 6): a raw disk whose guest wrote a valid qcow2 image into it moves as raw, byte for
 * byte; a disk declared qcow2 whose file is not qcow2 is blocked before anything is written;
 * a VM with a UEFI variables file moves its disks on one host and keeps its NVRAM.
 */
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { XMLBuilder } from 'fast-xml-parser';
import { parseDomainXml } from '../../src/drivers/libvirt/xml';
import { applyCli, readVmStatus, type Fleet } from './support/fleet';
import { domState, dumpXml, ensureLab, labTempDir, run, virsh } from '../../src/lab';
import { LibvirtDriver } from '../../src/drivers/libvirt/driver';
import { newStepMemo, type RunDeps } from '../../src/machine/steps/deps';
import { preflight } from '../../src/machine/steps/preflight';
import { snapshotDisks } from '../../src/machine/steps/copy';
import { rollBack } from '../../src/machine/steps/rollback';
import type { MigrationContext } from '../../src/machine/types';
import { localTransport } from '../../src/transfer/transport';

jest.setTimeout(300_000);

const MiB = 1024 * 1024;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  await ensureLab();
});

afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

async function sha256(file: string): Promise<string> {
  return createHash('sha256')
    .update(await fs.readFile(file))
    .digest('hex');
}

interface Bare {
  name: string;
  root: string;
  a: string;
  b: string;
  fleet: Fleet;
}

/**
 * An empty domain (no OS: SeaBIOS finds nothing to boot and waits) with one disk `vda` on
 * storage `a`, and a repo desiring it on `b` with `strategy`.
 */
async function bareVm(
  tag: string,
  disk: { file: string; format: string },
  opts: { os?: object; features?: object; start?: boolean; strategy?: string } = {},
): Promise<Bare> {
  const name = `vmp-${tag}-${process.pid}`;
  const root = await labTempDir(`${name}-`);
  const a = path.join(root, 'a');
  const b = path.join(root, 'b');
  await fs.mkdir(a);
  await fs.mkdir(b);
  const xml = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@_', format: true }).build({
    domain: {
      '@_type': 'qemu',
      name,
      memory: { '@_unit': 'MiB', '#text': '64' },
      vcpu: '1',
      os: opts.os ?? { type: { '@_arch': 'x86_64', '@_machine': 'pc', '#text': 'hvm' } },
      ...(opts.features ? { features: opts.features } : {}),
      devices: {
        disk: {
          '@_type': 'file',
          '@_device': 'disk',
          driver: { '@_name': 'qemu', '@_type': disk.format },
          source: { '@_file': path.join(a, disk.file) },
          target: { '@_dev': 'vda', '@_bus': 'virtio' },
        },
        memballoon: { '@_model': 'none' },
      },
    },
  });
  await fs.writeFile(path.join(root, 'domain.xml'), xml);
  await virsh(['define', path.join(root, 'domain.xml')]);
  cleanups.push(async () => {
    if ((await domState(name)) === 'running') await virsh(['destroy', name]);
    await virsh(['undefine', name, '--nvram']).catch(() => undefined);
    await fs.rm(root, { recursive: true, force: true });
  });
  if (opts.start ?? true) await virsh(['start', name]);
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
spec: {host: lab, storage: b${opts.strategy ? `, strategy: ${opts.strategy}` : ''}}
`,
  );
  const fleet = { repo, stateDir: path.join(root, 'state'), vm: name } as Fleet;
  return { name, root, a, b, fleet };
}

/** HMP `qemu-io` on the running domain's vda: what its guest could have written. */
async function guestIo(vm: string, cmd: string): Promise<string> {
  const out = await virsh([
    'qemu-monitor-command',
    vm,
    '--hmp',
    `qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "${cmd}"`,
  ]);
  if (/error|fail/i.test(out)) throw new Error(`qemu-io ${cmd}: ${out}`);
  return out;
}

describe('image formats on real libvirt', () => {
  it('a raw disk whose guest wrote a qcow2 image into it moves quick as raw, byte for byte', async () => {
    const vm = await bareVm('rawq', { file: 'disk.raw', format: 'raw' }, { start: false, strategy: 'quick' });
    const src = path.join(vm.a, 'disk.raw');
    await run('qemu-img', ['create', '-q', '-f', 'raw', src, String(64 * MiB)]);
    await virsh(['start', vm.name]);
    // a complete, valid qcow2 image of another size (header, refcounts, L1), written by the guest
    // at offset 0 of its raw disk, and some data of the guest's own further on
    const q = path.join(vm.root, 'inner.qcow2');
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', q, String(1024 * MiB)]);
    const qBytes = (await fs.stat(q)).size;
    await guestIo(vm.name, `write -s ${q} 0 ${qBytes}`);
    await guestIo(vm.name, `write -P 0xab ${8 * MiB} ${MiB}`);
    await guestIo(vm.name, 'flush');
    const before = await sha256(src);
    expect((await fs.readFile(src)).subarray(0, 4).toString('latin1')).toBe('QFI\xfb');

    const res = await applyCli(vm.fleet);
    expect({ code: res.code, stderr: res.code === 0 ? '' : res.stderr }).toEqual({ code: 0, stderr: '' });
    const dst = path.join(vm.b, vm.name, 'disk.raw'); // the VM's directory on b (targetDiskPath)
    expect(await domState(vm.name)).toBe('running');
    for (const inactive of [false, true]) {
      const disk = parseDomainXml(await dumpXml(vm.name, { inactive })).disks[0]!;
      expect({ path: disk.path, format: disk.format, chain: disk.hasBackingStore }).toEqual({
        path: dst,
        format: 'raw',
        chain: false,
      });
    }
    expect((await readVmStatus(vm.fleet)).phase).toBe('Placed');
    await virsh(['destroy', vm.name]);
    expect(await sha256(dst)).toBe(before);
    expect((await fs.stat(dst)).size).toBe(64 * MiB);
    const info = JSON.parse((await run('qemu-img', ['info', '--output=json', '-f', 'raw', dst])).stdout) as {
      format: string;
      'virtual-size': number;
    };
    expect(info).toMatchObject({ format: 'raw', 'virtual-size': 64 * MiB });
    // read as raw, the image the guest wrote is at 0 and its data at 8 MiB
    const io = await run('qemu-io', [
      '-f',
      'raw',
      '-r',
      '-c',
      'read -v 0 4',
      '-c',
      `read -P 0xab ${8 * MiB} ${MiB}`,
      dst,
    ]);
    expect(io.stdout).toMatch(/^0+:\s+51 46 49 fb/m);
    expect(io.stdout).not.toMatch(/fail/i);
    expect(await fs.readdir(vm.a)).toEqual([]);
    expect(`${res.stdout}${res.stderr}`).toMatch(/starts with a qcow2 header.*moves as raw, byte for byte/);
  });

  it('a raw VM shut down after its disks were frozen rolls back onto its raw base, opened as raw', async () => {
    // The freeze makes libvirt's persistent definition name the qcow2 overlay. The rollback of a
    // VM that stopped meanwhile merges the overlay offline and redefines the VM on its base: with
    // the base's own format, never the overlay's (this guest wrote a qcow2 image into its raw
    // disk: opened as qcow2 it would be the guest's image, with whatever backing file it names).
    const vm = await bareVm('rawrb', { file: 'disk.raw', format: 'raw' }, { start: false });
    const src = path.join(vm.a, 'disk.raw');
    await run('qemu-img', ['create', '-q', '-f', 'raw', src, String(64 * MiB)]);
    await virsh(['start', vm.name]);
    const q = path.join(vm.root, 'inner.qcow2');
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', q, String(1024 * MiB)]);
    await guestIo(vm.name, `write -s ${q} 0 ${(await fs.stat(q)).size}`);
    await guestIo(vm.name, 'flush');
    const drv = new LibvirtDriver(
      'lab',
      { driver: 'libvirt', uri: 'qemu:///system' },
      { allowedRoots: [vm.a, vm.b] },
    );
    cleanups.push(() => drv.close());
    const deps: RunDeps = {
      driverFor: () => drv,
      transportFor: () => localTransport(drv.exec, (p) => drv.guardPath(p)),
      memo: newStepMemo(),
      intents: { mark: async () => undefined, has: async () => false, at: async () => undefined },
    };
    let ctx: MigrationContext = {
      id: 'rb1',
      vm: vm.name,
      strategy: 'quick',
      fromHost: 'lab',
      toHost: 'lab',
      moves: [{ target: 'vda', fromStorage: 'a', toStorage: 'b', toPath: vm.b }],
      targetMarginBytes: 0,
      sourceHeadroomRatio: 0.1,
      maxForwardAttempts: 2,
      disks: [],
      memoryBytes: 0,
      bytesDone: 0,
      bytesTotal: 0,
      startedAt: new Date().toISOString(),
      committed: false,
      attempts: 0,
    };
    ctx = { ...ctx, ...(await preflight(ctx, deps)) };
    ctx = { ...ctx, ...(await snapshotDisks(ctx, deps)) };
    const overlay = ctx.disks[0]!.srcOverlay;
    expect(parseDomainXml(await dumpXml(vm.name, { inactive: true })).disks[0]).toMatchObject({
      path: overlay,
      format: 'qcow2',
    });
    // written after the freeze: into the overlay, merged back into the base by the rollback
    await guestIo(vm.name, `write -P 0xcd ${8 * MiB} ${MiB}`);
    await guestIo(vm.name, 'flush');
    await virsh(['destroy', vm.name]);
    await rollBack({ ...ctx, lastError: { reason: 'DomainNotRunning', message: 'the guest stopped' } }, deps);
    expect(parseDomainXml(await dumpXml(vm.name, { inactive: true })).disks[0]).toMatchObject({
      path: src,
      format: 'raw',
    });
    await expect(fs.access(overlay)).rejects.toThrow();
    const bytes = await fs.readFile(src);
    expect(bytes.subarray(0, 4).toString('latin1')).toBe('QFI\xfb'); // the guest's own data, kept
    expect(bytes.subarray(8 * MiB, 9 * MiB).every((b) => b === 0xcd)).toBe(true);
    // and it boots on it as raw
    await virsh(['start', vm.name]);
    expect(parseDomainXml(await dumpXml(vm.name)).disks[0]).toMatchObject({ path: src, format: 'raw' });
  });

  it('a disk declared qcow2 whose file is not qcow2 is blocked (DiskFormatMismatch), nothing written', async () => {
    const vm = await bareVm('notq', { file: 'disk.qcow2', format: 'qcow2' }, { start: false });
    const src = path.join(vm.a, 'disk.qcow2');
    await run('qemu-img', ['create', '-q', '-f', 'raw', src, String(16 * MiB)]);
    const before = await sha256(src);
    const res = await applyCli(vm.fleet);
    expect(res.code).toBe(1);
    const status = await readVmStatus(vm.fleet);
    expect(status.phase).toBe('Blocked');
    expect(status.conditions[0]?.reason).toBe('DiskFormatMismatch');
    expect(await fs.readdir(vm.b)).toEqual([]);
    expect(await sha256(src)).toBe(before);
    expect(parseDomainXml(await dumpXml(vm.name, { inactive: true })).disks[0]!.path).toBe(src);
  });

  it('a running VM with a UEFI variables file moves its disk on one host and keeps its NVRAM', async () => {
    const nvramDir = await labTempDir('vmplace-nvram-');
    cleanups.push(() => fs.rm(nvramDir, { recursive: true, force: true }));
    const nvram = path.join(nvramDir, 'VARS.fd');
    await fs.writeFile(nvram, Buffer.alloc(128 * 1024, 0x5a));
    const vm = await bareVm(
      'nvram',
      { file: 'disk.qcow2', format: 'qcow2' },
      {
        start: false,
        strategy: 'quick',
        // SeaBIOS as the pflash code: a firmware with a separate variables file, no OVMF needed
        os: {
          type: { '@_arch': 'x86_64', '@_machine': 'q35', '#text': 'hvm' },
          loader: { '@_readonly': 'yes', '@_type': 'pflash', '#text': '/usr/share/seabios/bios-256k.bin' },
          nvram,
        },
        features: { acpi: '' },
      },
    );
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(vm.a, 'disk.qcow2'), String(16 * MiB)]);
    await virsh(['start', vm.name]);
    const nvramBefore = await sha256(nvram);
    const res = await applyCli(vm.fleet);
    expect({ code: res.code, stderr: res.code === 0 ? '' : res.stderr }).toEqual({ code: 0, stderr: '' });
    expect(await domState(vm.name)).toBe('running');
    const inactive = await dumpXml(vm.name, { inactive: true });
    expect(parseDomainXml(inactive).disks[0]!.path).toBe(path.join(vm.b, vm.name, 'disk.qcow2'));
    expect(inactive).toContain(`<nvram>${nvram}</nvram>`);
    expect(await sha256(nvram)).toBe(nvramBefore);
  });
});
