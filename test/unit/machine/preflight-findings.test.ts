import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { parseDomainXml } from '../../../src/drivers/libvirt/xml';
import { hostStateFindings, judgeDiskFormat } from '../../../src/machine/preflight-findings';

const FIX = join(__dirname, '../../fixtures/libvirt');
const fixture = (name: string): string => readFileSync(join(FIX, name), 'utf8');

describe('judgeDiskFormat (declared format vs. the first bytes)', () => {
  it.each([
    // declared, found, ok, warned
    ['raw', undefined, true, false],
    ['qcow2', 'qcow2', true, false],
    ['vmdk', 'vmdk', true, false],
    // a raw disk whose guest wrote an image header: moves as raw, with a warning
    ['raw', 'qcow2', true, true],
    ['raw', 'vmdk', true, true],
    ['raw', 'luks', true, true],
    // a declared structured format the bytes do not confirm: blocked
    ['qcow2', undefined, false, false],
    ['qcow2', 'qed', false, false],
    ['qcow2', 'qcow', false, false],
    ['vmdk', 'qcow2', false, false],
  ] as const)('declared %s, header %s: ok=%s, warned=%s', (declared, found, ok, warned) => {
    const v = judgeDiskFormat(declared, found);
    expect(v.ok).toBe(ok);
    if (v.ok) expect(v.warning !== undefined).toBe(warned);
    else expect(v.reason).toBe('DiskFormatMismatch');
  });
});

describe('hostStateFindings (state that stays on the host)', () => {
  it('a domain with NVRAM (recorded XML): NvramNotMovable naming the file', () => {
    const dom = parseDomainXml(fixture('formats/dumpxml-inactive-nvram.xml'));
    expect(hostStateFindings(dom)).toEqual([
      { reason: 'NvramNotMovable', message: expect.stringContaining('/tmp/vmpfmt-e8jd/VARS.fd') },
    ]);
  });

  it('NVRAM and a TPM (recorded XML): both findings, NVRAM first', () => {
    const dom = parseDomainXml(fixture('formats/dumpxml-inactive-nvram-tpm-passthrough.xml'));
    expect(hostStateFindings(dom).map((f) => f.reason)).toEqual(['NvramNotMovable', 'TpmStateNotMovable']);
  });

  it('an emulated TPM alone: TpmStateNotMovable', () => {
    expect(hostStateFindings({ tpms: [{ model: 'tpm-crb', backend: 'emulator' }] })).toEqual([
      { reason: 'TpmStateNotMovable', message: expect.stringContaining('backend emulator') },
    ]);
  });

  it('UEFI firmware without an NVRAM path yet: NvramNotMovable', () => {
    expect(hostStateFindings({ uefi: true }).map((f) => f.reason)).toEqual(['NvramNotMovable']);
  });

  it('a plain BIOS domain without TPM (recorded XML): nothing', () => {
    expect(hostStateFindings(parseDomainXml(fixture('driver/dumpxml-inactive.xml')))).toEqual([]);
  });
});
