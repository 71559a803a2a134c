/**
 * Image formats are never guessed (issue 9 item 3): every qemu-img argv the driver builds names
 * the format (`-f`, and `-F` for a backing file), nothing follows a backing chain, and the
 * format a file's first bytes announce is read by vmplace itself. Also the domain XML parts
 * that hold host-bound state (NVRAM, TPM) and the undefine flags that keep it (item 6).
 * Recorded outputs: test/fixtures/libvirt/formats/ (see the README there).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { CommandError } from '../../../../src/errors';
import type { HostExec } from '../../../../src/exec/types';
import { LibvirtDriver } from '../../../../src/drivers/libvirt/driver';
import { imageFormatOfHeader, parseOdHex, parseQemuImgInfo } from '../../../../src/drivers/libvirt/parsers';
import { parseDomainXml } from '../../../../src/drivers/libvirt/xml';

const FIX = join(__dirname, '../../../fixtures/libvirt');
const fixture = (name: string): string => readFileSync(join(FIX, name), 'utf8');

type Answer = { stdout?: string; exitCode?: number } | undefined;

class FakeExec implements HostExec {
  readonly calls: string[][] = [];
  constructor(
    readonly label: string,
    private readonly handler: (argv: readonly string[]) => Answer,
  ) {}
  async run(argv: readonly string[], opts: { allowExitCodes?: number[] } = {}) {
    this.calls.push([...argv]);
    const r = this.handler(argv);
    if (!r) throw new CommandError('CommandFailed', argv, 1, 'fake: no answer');
    const exitCode = r.exitCode ?? 0;
    if (exitCode !== 0 && !(opts.allowExitCodes ?? []).includes(exitCode))
      throw new CommandError('CommandFailed', argv, exitCode, 'fake failure');
    return { stdout: r.stdout ?? '', stderr: '', exitCode };
  }
  async close() {}
}

const flag = (argv: readonly string[], f: string): string | undefined => {
  const i = argv.indexOf(f);
  return i >= 0 ? argv[i + 1] : undefined;
};

/** A host that answers like the recorded qemu-img 7.2 / coreutils did. */
function recordedHost(opts: { overlayInfo?: string } = {}): (argv: readonly string[]) => Answer {
  return (a) => {
    if (a[0] === 'realpath') return { stdout: a.slice(4).join('\0') + '\0' };
    if (a[0] === 'stat') return { stdout: '16777216\n' };
    if (a[0] === 'test') return { exitCode: 1 };
    if (a[0] === 'od') return { stdout: fixture('formats/od-raw-with-qcow2-header.txt') };
    if (a[0] !== 'qemu-img') return undefined;
    const fmt = flag(a, '-f');
    switch (a[1]) {
      case 'info':
        if (fmt === 'raw') return { stdout: fixture('formats/qemu-img-info-raw-with-qcow2-header.json') };
        if (fmt === 'qcow2')
          return { stdout: opts.overlayInfo ?? fixture('formats/qemu-img-info-f-qcow2-overlay-on-raw.json') };
        return undefined; // a probe (no -f) gets no answer: it would fail the test
      case 'check':
        if (fmt === 'raw') return { exitCode: Number(fixture('formats/qemu-img-check-raw.exitcode.txt')) };
        if (fmt === 'qcow2') return { stdout: fixture('driver/qemu-img-check-clean.json.txt') };
        return undefined;
      case 'rebase':
      case 'commit':
      case 'create':
        return fmt ? {} : undefined;
      default:
        return undefined;
    }
  };
}

function makeDriver(
  host: (argv: readonly string[]) => Answer,
  virsh: (args: readonly string[]) => Answer = () => undefined,
) {
  const h = new FakeExec('host', host);
  const v = new FakeExec('local', (a) => virsh(a.slice(5)));
  const drv = new LibvirtDriver(
    'hv1',
    { driver: 'libvirt', uri: 'qemu:///system' },
    { allowedRoots: ['/srv/a', '/tmp/vmpfmt-e8jd'], exec: h, virshExec: v },
  );
  return { drv, h, v };
}

describe('image headers (recorded od of images qemu-img created)', () => {
  it.each([
    ['od-qcow2.txt', 'qcow2'],
    ['od-qcow2-with-backing.txt', 'qcow2'],
    ['od-vmdk.txt', 'vmdk'],
    ['od-vhdx.txt', 'vhdx'],
    ['od-vpc.txt', 'vpc'],
    ['od-vdi.txt', 'vdi'],
    ['od-qed.txt', 'qed'],
    ['od-raw-zeros.txt', undefined],
    ['od-raw-with-qcow2-header.txt', 'qcow2'],
  ])('%s -> %s', (file, format) => {
    const bytes = parseOdHex(fixture(`formats/${file}`));
    expect(bytes).toHaveLength(512);
    expect(imageFormatOfHeader(bytes)).toBe(format);
  });

  it('short files and text are no image', () => {
    expect(imageFormatOfHeader(Buffer.alloc(0))).toBeUndefined();
    expect(imageFormatOfHeader(Buffer.from('QFI'))).toBeUndefined();
    expect(imageFormatOfHeader(Buffer.from('hello, world\n'))).toBeUndefined();
    expect(parseOdHex('')).toHaveLength(0);
  });

  it('od output that is not hex bytes is an error', () => {
    expect(() => parseOdHex(' 3c 3z\n')).toThrow(/could not parse od/);
  });
});

describe('qemu-img info as the declared format (recorded)', () => {
  it('a raw disk whose guest wrote a qcow2 header is raw, its full size, no backing file', () => {
    const i = parseQemuImgInfo(fixture('formats/qemu-img-info-raw-with-qcow2-header.json'), '/p', 16777216);
    expect(i).toMatchObject({ format: 'raw', virtualBytes: 16777216, chainLength: 1 });
    expect(i.backingFile).toBeUndefined();
  });

  it('what probing made of the same file: qcow2 with a backing file the guest named', () => {
    const text = fixture('formats/qemu-img-info-backing-chain-raw-with-qcow2-header-probed.txt');
    const json = text.slice(0, text.lastIndexOf('exit'));
    const i = parseQemuImgInfo(json, '/p');
    expect(i).toMatchObject({ format: 'qcow2', chainLength: 2 });
    expect(i.backingFile).toMatch(/base\.raw$/);
  });

  it('an overlay records its backing format', () => {
    const i = parseQemuImgInfo(fixture('formats/qemu-img-info-f-qcow2-overlay-on-raw.json'), '/p');
    expect(i).toMatchObject({ format: 'qcow2', backingFormat: 'raw', chainLength: 2 });
  });
});

describe('every qemu-img argv the driver builds names the format', () => {
  it('info, check, rebase, commit and create: -f (and -F) always, --backing-chain never', async () => {
    const { drv, h } = makeDriver(recordedHost(), (a) => {
      if (a[0] === 'list') return { stdout: '' };
      if (a[0] === 'dumpxml') return { stdout: fixture('driver/dumpxml-running.xml') };
      if (a[0] === 'migrate') return {};
      if (a[0] === 'domjobinfo') return { exitCode: 1 };
      return undefined;
    });
    const raw = await drv.imageInfo('/srv/a/guest.raw', { format: 'raw' });
    expect(raw).toMatchObject({ format: 'raw', virtualBytes: 16777216, chainLength: 1 });
    await drv.imageInfo('/srv/a/x.ovl', { format: 'qcow2', forceShare: false });
    expect(await drv.checkImage('/srv/a/guest.raw', 'raw')).toEqual([]); // raw: exit 63, no checks
    expect(await drv.checkImage('/srv/a/x.qcow2', 'qcow2')).toEqual([]);
    await drv.rebaseUnsafe('/srv/a/x.ovl', '/srv/a/guest.raw', 'raw');
    await drv.commitOffline('/srv/a/x.ovl');
    const recorded = recordedHost();
    const target = makeDriver(
      (a) => {
        if (a[0] === 'mkdir') return {};
        if (a[0] === 'stat' && a[2] === '%d:%i') return { exitCode: 1 }; // no file there yet
        if (a[0] === 'sh' && a[3] === 'vmplace-create') return { stdout: '64769:1234\n' }; // made exclusively
        return recorded(a);
      },
      (a) => (a[0] === 'list' ? { stdout: '' } : a[0] === 'domjobinfo' ? { exitCode: 1 } : undefined),
    );
    await drv.migrateLive('vmp-rec', target.drv, {
      disks: [{ target: 'vda', path: '/srv/a/vda.raw', format: 'raw', virtualBytes: 16777216 }],
      address: '192.0.2.2',
    });

    const qemuImg = [...h.calls, ...target.h.calls].filter((c) => c[0] === 'qemu-img');
    expect(qemuImg.map((c) => c[1]).sort()).toEqual(
      ['check', 'check', 'commit', 'create', 'info', 'info', 'info', 'rebase'].sort(),
    );
    for (const argv of qemuImg) {
      expect(flag(argv, '-f')).toMatch(/^(raw|qcow2)$/);
      expect(argv).not.toContain('--backing-chain');
    }
    const byCmd = (cmd: string, path: string) => qemuImg.find((c) => c[1] === cmd && c.includes(path))!;
    expect(flag(byCmd('info', '/srv/a/guest.raw'), '-f')).toBe('raw');
    expect(flag(byCmd('check', '/srv/a/guest.raw'), '-f')).toBe('raw');
    expect(flag(byCmd('rebase', '/srv/a/x.ovl'), '-F')).toBe('raw');
    expect(flag(byCmd('create', '/srv/a/vda.raw'), '-f')).toBe('raw');
  });

  it('commitOffline refuses an overlay that does not record its backing format', async () => {
    const json = JSON.parse(fixture('formats/qemu-img-info-f-qcow2-overlay-on-raw.json')) as Record<
      string,
      unknown
    >;
    delete json['backing-filename-format'];
    json['full-backing-filename'] = json['backing-filename'] = '/srv/a/base.raw';
    const { drv, h } = makeDriver(recordedHost({ overlayInfo: JSON.stringify(json) }));
    await expect(drv.commitOffline('/srv/a/x.ovl')).rejects.toMatchObject({ reason: 'BackingFormatUnknown' });
    expect(h.calls.some((c) => c[0] === 'qemu-img' && c[1] === 'commit')).toBe(false);
  });

  it('probeFormat reads the first bytes with od, never with qemu-img', async () => {
    const { drv, h } = makeDriver(recordedHost());
    expect(await drv.probeFormat('/srv/a/guest.raw')).toBe('qcow2');
    expect(h.calls).toEqual([['od', '-An', '-v', '-tx1', '-N', '512', '--', '/srv/a/guest.raw']]);
  });
});

describe('host-bound state in domain XML (recorded libvirt 9.0 XML)', () => {
  it('reads <os><nvram> and the pflash loader', () => {
    const d = parseDomainXml(fixture('formats/dumpxml-inactive-nvram.xml'));
    expect(d).toMatchObject({ nvram: '/tmp/vmpfmt-e8jd/VARS.fd', uefi: true, tpms: [] });
  });

  it('reads <tpm> devices with their backend', () => {
    const d = parseDomainXml(fixture('formats/dumpxml-inactive-nvram-tpm-passthrough.xml'));
    expect(d.tpms).toEqual([{ model: 'tpm-crb', backend: 'passthrough' }]);
  });

  it('an emulated TPM, firmware=efi, and nvram as <source file=> (libvirt documentation forms)', () => {
    const d = parseDomainXml(`<domain type='kvm'><name>x</name><memory>1</memory>
      <os firmware='efi'><type>hvm</type><nvram type='file'><source file='/var/lib/libvirt/qemu/nvram/x_VARS.fd'/></nvram></os>
      <devices><tpm model='tpm-tis'><backend type='emulator' version='2.0'/></tpm></devices></domain>`);
    expect(d).toMatchObject({
      nvram: '/var/lib/libvirt/qemu/nvram/x_VARS.fd',
      uefi: true,
      tpms: [{ model: 'tpm-tis', backend: 'emulator' }],
    });
  });

  it('a stateless loader and a plain BIOS domain keep no NVRAM', () => {
    const stateless = parseDomainXml(`<domain><name>x</name><memory>1</memory>
      <os><type>hvm</type><loader type='pflash' stateless='yes'>/x.fd</loader></os></domain>`);
    expect(stateless).toMatchObject({ uefi: false, tpms: [] });
    expect(stateless.nvram).toBeUndefined();
    const bios = parseDomainXml(fixture('driver/dumpxml-running.xml'));
    expect(bios).toMatchObject({ uefi: false, tpms: [] });
    expect(bios.nvram).toBeUndefined();
  });

  it('getDomain passes NVRAM and TPM on', async () => {
    const { drv } = makeDriver(recordedHost(), (a) =>
      a[0] === 'dominfo'
        ? { stdout: fixture('driver/dominfo-shutoff.txt') }
        : a[0] === 'dumpxml'
          ? { stdout: fixture('formats/dumpxml-inactive-nvram-tpm-passthrough.xml') }
          : undefined,
    );
    expect(await drv.getDomain('vmp-fixture-tpm-pt')).toMatchObject({
      nvram: '/tmp/vmpfmt-e8jd/VARS.fd',
      uefi: true,
      tpms: [{ model: 'tpm-crb', backend: 'passthrough' }],
    });
  });
});

describe('undefine keeps NVRAM and TPM state', () => {
  const helpWithout = fixture('formats/virsh-help-undefine.txt').replace(/.*--keep-tpm.*\n/g, '');
  const virshFor =
    (help: string, xml = 'driver/dumpxml-inactive.xml') =>
    (a: readonly string[]): Answer =>
      a[0] === 'list'
        ? { stdout: 'vmp-rec\n' }
        : a[0] === 'dominfo'
          ? { stdout: fixture('driver/dominfo-shutoff.txt') }
          : a[0] === 'help'
            ? { stdout: help }
            : a[0] === 'dumpxml'
              ? { stdout: fixture(xml) }
              : a[0] === 'undefine'
                ? {}
                : undefined;
  const undefines = (v: FakeExec) => v.calls.map((c) => c.slice(5)).filter((a) => a[0] === 'undefine');

  it('virsh undefine --keep-nvram --keep-tpm (recorded virsh 9.0 help)', async () => {
    const { drv, v } = makeDriver(recordedHost(), virshFor(fixture('formats/virsh-help-undefine.txt')));
    await drv.undefine('vmp-rec');
    await drv.undefine('vmp-rec');
    expect(undefines(v)).toEqual([
      ['undefine', '--domain', 'vmp-rec', '--keep-nvram', '--keep-tpm'],
      ['undefine', '--domain', 'vmp-rec', '--keep-nvram', '--keep-tpm'],
    ]);
    expect(v.calls.filter((c) => c[5] === 'help')).toHaveLength(1); // asked once
  });

  it('a virsh without --keep-tpm: a domain without TPM is undefined keeping NVRAM', async () => {
    const { drv, v } = makeDriver(recordedHost(), virshFor(helpWithout));
    await drv.undefine('vmp-rec');
    expect(undefines(v)).toEqual([['undefine', '--domain', 'vmp-rec', '--keep-nvram']]);
  });

  it('a virsh without --keep-tpm: a domain with a TPM is not undefined (TpmStateAtRisk)', async () => {
    const { drv, v } = makeDriver(
      recordedHost(),
      virshFor(helpWithout, 'formats/dumpxml-inactive-nvram-tpm-passthrough.xml'),
    );
    await expect(drv.undefine('vmp-rec')).rejects.toMatchObject({ reason: 'TpmStateAtRisk' });
    expect(undefines(v)).toEqual([]);
  });
});
