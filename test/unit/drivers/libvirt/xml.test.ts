import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { StalledError } from '../../../../src/errors';
import { parseDomainXml, rewriteDiskPaths, scaledBytes } from '../../../../src/drivers/libvirt/xml';

const FIX = join(__dirname, '../../../fixtures/libvirt/driver');
const fixture = (name: string): string => readFileSync(join(FIX, name), 'utf8');

describe('scaledBytes', () => {
  it.each([
    ['65536', 'KiB', 65536 * 1024],
    ['65536', undefined, 65536 * 1024],
    ['64', 'MiB', 64 * 1024 ** 2],
    ['64', 'M', 64 * 1024 ** 2],
    ['2', 'GiB', 2 * 1024 ** 3],
    ['2', 'G', 2 * 1024 ** 3],
    ['1', 'KB', 1000],
    ['1', 'k', 1024],
    ['1', 'MB', 1e6],
    ['512', 'b', 512],
    ['512', 'bytes', 512],
    ['1', 'TiB', 1024 ** 4],
  ])('%s %s = %d bytes', (v, u, bytes) => expect(scaledBytes(v, u)).toBe(bytes));

  it.each([
    [undefined, 'KiB'],
    ['x', 'KiB'],
    ['1', 'furlongs'],
    ['-1', 'KiB'],
  ])('undefined for %j %j', (v, u) => expect(scaledBytes(v, u)).toBeUndefined());
});

describe('parseDomainXml', () => {
  it('reads a running domain', () => {
    const d = parseDomainXml(fixture('dumpxml-running.xml'));
    expect(d.name).toBe('vmp-rec');
    expect(d.uuid).toBe('4fec33af-3e86-4b88-a22d-b91be82706bf');
    expect(d.memoryBytes).toBe(64 * 1024 * 1024);
    expect(d.vcpus).toBe(1);
    expect(d.domainType).toBe('qemu');
    expect(d.id).toBeDefined();
    expect(d.disks.map((x) => [x.target, x.type, x.device, x.format, x.readonly, x.hasBackingStore])).toEqual(
      [
        ['vda', 'file', 'disk', 'qcow2', false, false],
        ['vdb', 'file', 'disk', 'qcow2', false, false],
        ['sda', 'file', 'cdrom', undefined, true, false],
      ],
    );
    expect(d.disks[0]!.path).toMatch(/\/a\.qcow2$/);
    expect(d.disks[2]!.path).toBeUndefined();
  });

  it('sees the overlay and its backing store after a disk-only snapshot', () => {
    const d = parseDomainXml(fixture('dumpxml-after-snapshot.xml'));
    const vda = d.disks[0]!;
    expect(vda.path).toMatch(/\/a\.ovl$/);
    expect(vda.hasBackingStore).toBe(true);
    expect(vda.backingPaths).toEqual([expect.stringMatching(/\/a\.qcow2$/)]);
    expect(vda.sourceIndex).toBe('4');
    // an empty <backingStore/> is not a backing store
    expect(d.disks[1]!.hasBackingStore).toBe(false);
  });

  it('reads a saved-state XML', () => {
    const d = parseDomainXml(fixture('save-image-dumpxml.xml'));
    expect(d.name).toBe('vmp-rec');
    expect(d.disks[0]!.hasBackingStore).toBe(true);
  });

  it('never crashes on odd disks and reports them as they are', () => {
    const d = parseDomainXml(fixture('dumpxml-odd-disks-inactive.xml'));
    expect(d.memoryBytes).toBe(2 * 1024 ** 3);
    expect(d.currentMemoryBytes).toBe(1536 * 1024 ** 2);
    expect(d.vcpus).toBe(2);
    expect(d.maxVcpus).toBe(4);
    expect(d.id).toBeUndefined();
    const by = Object.fromEntries(d.disks.map((x) => [x.target, x]));
    expect(by.vda!.path).toBe("/srv/vm,with&odd 'chars'.img");
    expect(by.vdb).toMatchObject({ type: 'block', sourceDev: '/dev/vg0/lv1' });
    expect(by.vdb!.path).toBeUndefined();
    expect(by.vdc).toMatchObject({ type: 'network', protocol: 'nbd', sourceName: 'export1' });
    expect(by.vdd).toMatchObject({ type: 'volume', sourceName: 'default/v1.qcow2' });
    expect(by.vde).toMatchObject({
      path: '/srv/missing.qcow2',
      hasBackingStore: true,
      backingPaths: ['/srv/base.qcow2'],
    });
    expect(by.sda).toMatchObject({ device: 'cdrom', readonly: true });
    expect(by.sda!.path).toBeUndefined();
  });

  it('throws on a document that is not a domain', () => {
    expect(() => parseDomainXml('<capabilities/>')).toThrow(/expected <domain>/);
  });
});

describe('rewriteDiskPaths', () => {
  it('changes only the mapped sources and drops their backing stores and stale index', () => {
    const xml = fixture('dumpxml-after-snapshot.xml');
    const out = rewriteDiskPaths(xml, { vda: '/new/place/a.ovl' });
    const d = parseDomainXml(out);
    expect(d.disks[0]).toMatchObject({ path: '/new/place/a.ovl', hasBackingStore: false, backingPaths: [] });
    expect(d.disks[0]!.sourceIndex).toBeUndefined();
    expect(out).not.toContain('<backingStore type');
    // unrelated disks untouched, including their empty <backingStore/>
    expect(d.disks[1]!.path).toBe(parseDomainXml(xml).disks[1]!.path);
    expect(out).toContain("<source file='/new/place/a.ovl'/>".replace(/'/g, '"'));
  });

  it('sets the format with the path: a raw base named where a qcow2 layer was is opened as raw', () => {
    const xml = fixture('dumpxml-after-snapshot.xml');
    expect(parseDomainXml(xml).disks[0]!.format).toBe('qcow2');
    const out = rewriteDiskPaths(xml, { vda: '/a/base.img' }, { vda: 'raw' });
    expect(parseDomainXml(out).disks[0]).toMatchObject({ path: '/a/base.img', format: 'raw' });
    // without a format the driver element is left as it was
    expect(parseDomainXml(rewriteDiskPaths(xml, { vda: '/a/base.img' })).disks[0]!.format).toBe('qcow2');
  });

  it('gives a disk without a driver element one, with the format', () => {
    const xml =
      "<domain><name>x</name><devices><disk type='file' device='disk'><source file='/a/x.qcow2'/><target dev='vda'/></disk></devices></domain>";
    const out = rewriteDiskPaths(xml, { vda: '/a/x.img' }, { vda: 'raw' });
    expect(parseDomainXml(out).disks[0]).toMatchObject({ path: '/a/x.img', format: 'raw' });
  });

  it('keeps everything else: every other line of the document survives', () => {
    const xml = fixture('save-image-dumpxml.xml');
    const out = rewriteDiskPaths(xml, { vda: '/new/a.ovl', vdb: '/new/b.qcow2' });
    const norm = (s: string): string[] =>
      s
        .replace(/'/g, '"')
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l !== '');
    const before = norm(xml).filter(
      (l) => !l.includes('<source file=') && !/backingStore|<format type/.test(l),
    );
    const after = norm(out).filter((l) => !l.includes('<source file='));
    expect(after).toEqual(before);
  });

  it('is a no-op round trip with an empty map (same document, same order)', () => {
    for (const f of ['dumpxml-running.xml', 'dumpxml-odd-disks-inactive.xml', 'save-image-dumpxml.xml']) {
      const xml = fixture(f);
      const out = rewriteDiskPaths(xml, {});
      // libvirt quotes attributes with ' (literal apostrophes are &apos;); the builder uses "
      expect(out).toBe(`${xml.replace(/'/g, '"').trimEnd()}\n`);
      expect(parseDomainXml(out)).toEqual(parseDomainXml(xml));
    }
  });

  it('escapes hostile characters in new paths', () => {
    const hostile = `/srv/b/it's "x" & <y>.qcow2`;
    const out = rewriteDiskPaths(fixture('dumpxml-running.xml'), { vdb: hostile });
    expect(parseDomainXml(out).disks[1]!.path).toBe(hostile);
    expect(out).not.toContain('<y>');
  });

  it('keeps comments, CDATA and unknown elements', () => {
    const xml = `<domain type='kvm'><!-- keep me --><name>x</name><metadata><app:x xmlns:app="urn:a"><![CDATA[<raw>]]></app:x></metadata><devices><disk type='file' device='disk'><source file='/a'/><target dev='vda'/></disk></devices></domain>`;
    const out = rewriteDiskPaths(xml, { vda: '/b' });
    expect(out).toContain('<!-- keep me -->');
    expect(out).toContain('<![CDATA[<raw>]]>');
    expect(out).toContain('<app:x xmlns:app="urn:a">');
    expect(parseDomainXml(out).disks[0]!.path).toBe('/b');
  });

  it('gives an empty cdrom a source', () => {
    const out = rewriteDiskPaths(fixture('dumpxml-running.xml'), { sda: '/iso/x.iso' });
    expect(parseDomainXml(out).disks[2]!.path).toBe('/iso/x.iso');
  });

  it('refuses unknown targets and non-file disks', () => {
    const odd = fixture('dumpxml-odd-disks-inactive.xml');
    expect(() => rewriteDiskPaths(odd, { vdz: '/x' })).toThrow(StalledError);
    expect(() => rewriteDiskPaths(odd, { vdb: '/x' })).toThrow(/not a file/);
  });
});
