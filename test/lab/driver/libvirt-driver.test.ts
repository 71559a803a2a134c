/**
 * LibvirtDriver against the real local libvirtd (qemu:///system) and real qemu-img: a
 * kernel-less TCG VM with two qcow2 disks goes through a whole quick storage migration from
 * SRC to DST on one host, and the data written before and during it must arrive.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';

import { LibvirtDriver } from '../../../src/drivers/libvirt/driver';
import { parseDomainXml, rewriteDiskPaths } from '../../../src/drivers/libvirt/xml';
import { localTransport } from '../../../src/transfer/transport';
import { ensureLab } from '../../../src/lab';
import { labDescribe } from './skip';

jest.setTimeout(120_000);

const sh = (cmd: string, args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8' });

labDescribe()('LibvirtDriver on the local lab', () => {
  const name = `vmp-drv-${process.pid}`;
  let root: string;
  let src: string;
  let dst: string;
  let state: string;
  let drv: LibvirtDriver;
  /** the transport the factory gives a pair on one libvirt host */
  const local = () => localTransport(drv.exec, (p) => drv.guardPath(p));
  const timings: Record<string, number> = {};

  const domainXml = (): string => `<domain type='qemu'>
  <name>${name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${src}/a.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${src}/b.qcow2'/><target dev='vdb' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><target dev='sda' bus='sata'/><readonly/></disk>
  </devices>
</domain>
`;

  beforeAll(async () => {
    await ensureLab();
    root = mkdtempSync('/var/tmp/vmp-drv-lab-');
    src = join(root, 'src');
    dst = join(root, 'dst');
    state = join(root, 'state');
    drv = new LibvirtDriver(
      'local',
      { driver: 'libvirt', uri: 'qemu:///system' },
      { allowedRoots: [src, dst], stateDir: state },
    );
    for (const d of [src, dst, state]) await drv.makeDir(d);
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', join(src, 'a.qcow2'), '64M']);
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', join(src, 'b.qcow2'), '32M']);
    // data in the base before the VM runs: 4 MiB of 0xab at 0 in vda
    sh('qemu-io', ['-c', 'write -P 0xab 0 4M', join(src, 'a.qcow2')]);
    await drv.define(domainXml());
    await drv.start(name);
  });

  afterAll(async () => {
    if (drv) {
      await drv.destroy(name).catch(() => undefined);
      await drv.undefine(name).catch(() => undefined);
      await drv.close();
    }
    if (root) rmSync(root, { recursive: true, force: true });
    console.log(`driver lab timings (ms): ${JSON.stringify(timings)}`);
  });

  it('observes the running domain, the host CPU and the filesystem', async () => {
    expect(await drv.listDomains()).toContain(name);
    const d = await drv.getDomain(name);
    expect(d).toMatchObject({
      name,
      state: 'running',
      persistent: true,
      memoryBytes: 64 * 1024 * 1024,
      vcpus: 1,
    });
    expect(d!.disks.map((x) => [x.target, x.path, x.hasBackingStore])).toEqual([
      ['vda', join(src, 'a.qcow2'), false],
      ['vdb', join(src, 'b.qcow2'), false],
      ['sda', undefined, false],
    ]);
    expect(await drv.getDomain('vmp-no-such-domain')).toBeUndefined();
    expect(await drv.domainState(name)).toBe('running');
    expect(await drv.domainState('vmp-no-such-domain')).toBeUndefined();
    const cpu = await drv.hostCpu();
    expect(cpu.model).toBeTruthy();
    const fs = await drv.fsInfo(src);
    expect(fs.freeBytes).toBeGreaterThan(0);
    expect(fs.capacityBytes).toBeGreaterThanOrEqual(fs.freeBytes);
    const info = await drv.imageInfo(join(src, 'a.qcow2'), { format: 'qcow2' });
    expect(info).toMatchObject({ format: 'qcow2', virtualBytes: 64 * 1024 * 1024, chainLength: 1 });
    expect(info.fileBytes).toBeGreaterThan(4 * 1024 * 1024);
    // without -U the running VM's lock makes qemu-img fail
    await expect(drv.imageInfo(join(src, 'a.qcow2'), { format: 'qcow2', forceShare: false })).rejects.toThrow(
      /lock/,
    );
  });

  it('snapshots both disks into overlays, atomically and idempotently', async () => {
    const overlays = [
      { target: 'vda', path: join(src, 'a.ovl') },
      { target: 'vdb', path: join(src, 'b.ovl') },
    ];
    let t0 = Date.now();
    await drv.snapshotDisks(name, overlays);
    timings.snapshot = Date.now() - t0;
    t0 = Date.now();
    await drv.snapshotDisks(name, overlays); // again: no-op
    timings.snapshotAgain = Date.now() - t0;
    const dom = parseDomainXml(await drv.dumpXml(name));
    expect(dom.disks[0]).toMatchObject({
      path: join(src, 'a.ovl'),
      hasBackingStore: true,
      backingPaths: [join(src, 'a.qcow2')],
    });
    expect(dom.disks[1]).toMatchObject({ path: join(src, 'b.ovl'), hasBackingStore: true });
    const info = await drv.imageInfo(join(src, 'a.ovl'), { format: 'qcow2' });
    expect(info.chainLength).toBe(2);
    expect(info.backingFile).toBe(join(src, 'a.qcow2'));
    // a write while running goes to the overlay: 1 MiB of 0xcd at 8 MiB
    sh('virsh', [
      '-c',
      'qemu:///system',
      'qemu-monitor-command',
      name,
      '--hmp',
      'qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "write -P 0xcd 8M 1M"',
    ]);
  });

  it('copies the read-only bases while the VM runs, with progress and equal checksums', async () => {
    for (const f of ['a.qcow2', 'b.qcow2']) {
      const events: number[] = [];
      const t0 = Date.now();
      const copied = await local().copy(join(src, f), join(dst, f), {
        onProgress: (done, total) => {
          expect(done).toBeLessThanOrEqual(total);
          events.push(done);
        },
      });
      timings[`copy-${f}`] = Date.now() - t0;
      expect(events.length).toBeGreaterThanOrEqual(2);
      expect(events[events.length - 1]).toBe(await drv.fileSize(join(src, f)));
      expect(await drv.checksum(join(dst, f))).toBe(await drv.checksum(join(src, f)));
      // the digest the copy answers with is the one the driver computes (CopyingBase uses it)
      expect(copied.sha256).toBe(await drv.checksum(join(src, f)));
    }
    expect(await drv.fileExists(join(dst, 'a.qcow2.vmplace-part'))).toBe(false);
  });

  it('saves (idempotently), copies the overlays, rebases them and restores onto the new paths', async () => {
    const stateFile = join(state, `${name}.state`);
    let t0 = Date.now();
    await drv.save(name, stateFile);
    timings.save = Date.now() - t0;
    const pauseStart = t0;
    expect((await drv.getDomain(name))!.state).toBe('shutoff');
    await drv.save(name, stateFile); // again: the complete save is recognised

    for (const f of ['a.ovl', 'b.ovl']) await local().copy(join(src, f), join(dst, f));
    await drv.rebaseUnsafe(join(dst, 'a.ovl'), join(dst, 'a.qcow2'), 'qcow2');
    await drv.rebaseUnsafe(join(dst, 'b.ovl'), join(dst, 'b.qcow2'), 'qcow2');
    expect((await drv.imageInfo(join(dst, 'a.ovl'), { format: 'qcow2' })).backingFile).toBe(
      join(dst, 'a.qcow2'),
    );

    t0 = Date.now();
    const saved = await drv.savedStateXml(stateFile);
    timings.savedStateXml = Date.now() - t0;
    const xml = rewriteDiskPaths(saved, { vda: join(dst, 'a.ovl'), vdb: join(dst, 'b.ovl') });
    t0 = Date.now();
    await drv.restore(stateFile, xml);
    timings.restore = Date.now() - t0;
    timings.pauseSaveToRestoreIncludingCopies = Date.now() - pauseStart;
    await drv.restore(stateFile, xml); // again: already running

    const d = await drv.getDomain(name);
    expect(d!.state).toBe('running');
    expect(d!.disks[0]).toMatchObject({ path: join(dst, 'a.ovl'), hasBackingStore: true });
    expect(parseDomainXml(d!.definition.data).disks[0]!.backingPaths).toEqual([join(dst, 'a.qcow2')]);
  });

  it('merges the overlays with blockcommit, idempotently', async () => {
    const t0 = Date.now();
    await drv.blockCommit(name, 'vda', { overlay: join(dst, 'a.ovl') });
    await drv.blockCommit(name, 'vdb', { overlay: join(dst, 'b.ovl') });
    timings.blockCommit2 = Date.now() - t0;
    await drv.blockCommit(name, 'vda', { overlay: join(dst, 'a.ovl') }); // again: no-op
    const d = await drv.getDomain(name);
    expect(d!.disks.slice(0, 2).map((x) => [x.path, x.hasBackingStore])).toEqual([
      [join(dst, 'a.qcow2'), false],
      [join(dst, 'b.qcow2'), false],
    ]);
    expect(await drv.checkImage(join(dst, 'a.qcow2'), 'qcow2')).toEqual([]); // in use: checked with -U
  });

  it('redefines the persistent definition from the live XML', async () => {
    // the snapshot moved the persistent definition onto the SOURCE overlay; restore --xml did not touch it
    const before = parseDomainXml(await drv.dumpXml(name, { inactive: true }));
    expect(before.disks[0]!.path).toBe(join(src, 'a.ovl'));
    const live = await drv.dumpXml(name);
    await drv.define(live);
    await drv.define(live); // again: same definition
    const after = parseDomainXml(await drv.dumpXml(name, { inactive: true }));
    expect(after.disks.slice(0, 2).map((x) => x.path)).toEqual([join(dst, 'a.qcow2'), join(dst, 'b.qcow2')]);
    expect(after.disks[0]!.hasBackingStore).toBe(false);
  });

  it('moves a disk live with blockcopy', async () => {
    const t0 = Date.now();
    await drv.blockCopy(name, 'vdb', join(dst, 'b2.qcow2'), 'qcow2');
    timings.blockCopy = Date.now() - t0;
    await drv.blockCopy(name, 'vdb', join(dst, 'b2.qcow2'), 'qcow2'); // again: no-op
    expect((await drv.getDomain(name))!.disks[1]!.path).toBe(join(dst, 'b2.qcow2'));
  });

  it('cleans up the source, refuses paths outside storage, and everything written arrived', async () => {
    for (const f of ['a.qcow2', 'b.qcow2', 'a.ovl', 'b.ovl']) {
      await drv.removeFile(join(src, f));
      await drv.removeFile(join(src, f)); // missing: fine
      expect(await drv.fileExists(join(src, f))).toBe(false);
    }
    await expect(drv.removeFile('/etc/hostname')).rejects.toMatchObject({ reason: 'PathOutsideStorage' });
    await expect(drv.removeFile(`${src}x/file`)).rejects.toMatchObject({ reason: 'PathOutsideStorage' });

    await drv.destroy(name);
    await drv.destroy(name); // again: fine
    expect((await drv.getDomain(name))!.state).toBe('shutoff');
    expect(await drv.checkImage(join(dst, 'a.qcow2'), 'qcow2')).toEqual([]); // not in use: full check
    sh('qemu-io', ['-r', '-c', 'read -P 0xab 0 4M', '-c', 'read -P 0xcd 8M 1M', join(dst, 'a.qcow2')]);
    const out = sh('qemu-io', [
      '-r',
      '-c',
      'read -P 0xab 0 4M',
      '-c',
      'read -P 0xcd 8M 1M',
      join(dst, 'a.qcow2'),
    ]);
    expect(out).not.toMatch(/Pattern verification failed/);

    await drv.undefine(name);
    await drv.undefine(name); // again: fine
    expect(await drv.getDomain(name)).toBeUndefined();
    expect(existsSync(join(dst, 'a.qcow2'))).toBe(true);
  });
});
