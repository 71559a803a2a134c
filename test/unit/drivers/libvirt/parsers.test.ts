import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import {
  ParseError,
  backingFormatOf,
  parseBlockJobRaw,
  parseCapabilitiesCpu,
  parseCapabilitiesHostUuid,
  parseDf,
  parseDomInfo,
  parseDomJobInfo,
  parseDomState,
  parseNameList,
  parseQemuImgCheck,
  parseQemuImgInfo,
  parseSha256sum,
  parseStatSizes,
} from '../../../../src/drivers/libvirt/parsers';

const FIX = join(__dirname, '../../../fixtures/libvirt/driver');
const fixture = (name: string): string => readFileSync(join(FIX, name), 'utf8');

describe('qemu-img info', () => {
  it('reads a single image', () => {
    const i = parseQemuImgInfo(fixture('qemu-img-info-single.json.txt'), '/p/a.qcow2', 1234);
    expect(i).toEqual({
      path: '/p/a.qcow2',
      format: 'qcow2',
      virtualBytes: 64 * 1024 * 1024,
      allocatedBytes: 200704,
      fileBytes: 1234,
      chainLength: 1,
    });
  });

  it('reads a backing chain', () => {
    const json = fixture('qemu-img-info-chain.json.txt');
    const i = parseQemuImgInfo(json, '/p/a.ovl');
    expect(i.chainLength).toBe(2);
    expect(i.backingFile).toMatch(/\/a\.qcow2$/);
    expect(i.format).toBe('qcow2');
    expect(backingFormatOf(json)).toBe('qcow2');
  });

  it('throws ParseError on garbage', () => {
    expect(() => parseQemuImgInfo('nope', '/x')).toThrow(ParseError);
    expect(() => parseQemuImgInfo('{}', '/x')).toThrow(ParseError);
  });
});

describe('qemu-img check', () => {
  it('clean image has no problems', () => {
    expect(parseQemuImgCheck(fixture('qemu-img-check-clean.json.txt'))).toEqual([]);
  });
  it('reports corruptions, leaks and check errors; leaks can be ignored', () => {
    const j = JSON.stringify({ 'check-errors': 1, corruptions: 2, leaks: 3 });
    expect(parseQemuImgCheck(j)).toEqual(['check-errors: 1', 'corruptions: 2', 'leaks: 3']);
    expect(parseQemuImgCheck(j, { ignoreLeaks: true })).toEqual(['check-errors: 1', 'corruptions: 2']);
  });
});

describe('virsh domstate / dominfo / list', () => {
  it.each([
    ['domstate-running.txt', 'running'],
    ['domstate-shutoff.txt', 'shutoff'],
  ])('%s', (f, state) => expect(parseDomState(fixture(f))).toBe(state));

  it.each([
    ['paused', 'paused'],
    ['paused (user)', 'paused'],
    ['idle', 'running'],
    ['crashed', 'crashed'],
    ['pmsuspended', 'pmsuspended'],
    ['in shutdown', 'other'],
    ['no state', 'other'],
    ['', 'other'],
  ])('%j -> %s', (text, state) => expect(parseDomState(text)).toBe(state));

  it('reads dominfo of a running domain', () => {
    expect(parseDomInfo(fixture('dominfo-running.txt'))).toEqual({
      id: 3,
      name: 'vmp-rec',
      uuid: '4fec33af-3e86-4b88-a22d-b91be82706bf',
      state: 'running',
      persistent: true,
      autostart: false,
      vcpus: 1,
      maxMemoryBytes: 64 * 1024 * 1024,
      usedMemoryBytes: 64 * 1024 * 1024,
      managedSave: false,
    });
  });

  it('reads dominfo of a shut-off domain (Id: -)', () => {
    const i = parseDomInfo(fixture('dominfo-shutoff.txt'));
    expect(i.state).toBe('shutoff');
    expect(i.id).toBeUndefined();
    expect(i.persistent).toBe(true);
  });

  it('throws on an error message instead of inventing a domain', () => {
    expect(() => parseDomInfo(fixture('dominfo-missing.txt'))).toThrow(ParseError);
  });

  it('reads list --name', () => {
    expect(parseNameList('vm1\nvm 2\n\n')).toEqual(['vm1', 'vm 2']);
    expect(parseNameList('\n')).toEqual([]);
  });
});

describe('virsh blockjob --raw', () => {
  it('no job', () => expect(parseBlockJobRaw(fixture('blockjob-none-raw.txt'))).toBeUndefined());
  it('ready active commit', () =>
    expect(parseBlockJobRaw(fixture('blockjob-commit-ready-raw.txt'))).toEqual({
      type: 'Active Block Commit',
      cur: 1,
      end: 1,
    }));
});

describe('virsh capabilities', () => {
  it('host CPU vendor and model', () => {
    expect(parseCapabilitiesCpu(fixture('capabilities.xml'))).toEqual({ vendor: 'AMD', model: 'kvm64' });
    expect(parseCapabilitiesHostUuid(fixture('capabilities.xml'))).toMatch(/^[0-9a-f-]{36}$/);
  });
  it('missing cpu data gives an empty object', () => {
    expect(parseCapabilitiesCpu('<capabilities><host/></capabilities>')).toEqual({});
  });
});

describe('coreutils', () => {
  it('df -B1 --output=size,avail', () => {
    expect(parseDf(fixture('df.txt'))).toEqual({ capacityBytes: 270553174016, freeBytes: 84746592256 });
    expect(() => parseDf('df: /x: No such file or directory\n')).toThrow(ParseError);
  });
  it('sha256sum', () => {
    const h = 'a'.repeat(64);
    expect(parseSha256sum(`${h}  /srv/x\n`)).toBe(h);
    expect(parseSha256sum(`\\${h}  /srv/new\\nline\n`)).toBe(h);
    expect(parseSha256sum(`${h}  -\n`)).toBe(h);
    expect(parseSha256sum(`${h} *stdin\n`)).toBe(h);
    expect(() => parseSha256sum('sha256sum: x: No such file')).toThrow(ParseError);
  });
  it('stat sizes', () => {
    expect(parseStatSizes('1073741824 1048576 512\n')).toEqual({
      apparentBytes: 1073741824,
      allocatedBytes: 536870912,
    });
  });
});

describe('virsh domjobinfo (recorded on the lab, see fixtures/libvirt/README.md)', () => {
  it('a save in flight', () =>
    expect(parseDomJobInfo(fixture('domjobinfo-save-active.txt'))).toEqual({
      type: 'Unbounded',
      operation: 'Save',
      active: true,
    }));
  it('no job', () =>
    expect(parseDomJobInfo(fixture('domjobinfo-none.txt'))).toEqual({ type: 'None', active: false }));
  it('the completed job of a save', () =>
    expect(parseDomJobInfo('Job type:         Completed   \nOperation:        Save        \n')).toEqual({
      type: 'Completed',
      operation: 'Save',
      active: false,
    }));
  it('a save in flight is "paused (saving)", after it "shut off (saved)"', () => {
    expect(parseDomState(fixture('domstate-reason-saving.txt'))).toBe('paused');
    expect(parseDomState(fixture('domstate-reason-saved.txt'))).toBe('shutoff');
  });
});
