import { readdirSync } from 'node:fs';

import { ParseError } from '../../../../src/errors';
import {
  bigSizeOf,
  cpuInfoOf,
  parseCheckpointTaken,
  parseCheckpoints,
  parseFileHash,
  parseFileInfo,
  parseHostInfo,
  parseIncompatibilities,
  parseMergeStatus,
  parseRemoved,
  parseVhd,
  parseVhdChain,
  parseVhdTest,
  parseVmHostStorage,
  parseVmStates,
  parseVms,
  parseVolume,
  sizeOf,
} from '../../../../src/drivers/hyperv/parsers';
import { PowerShellRunner } from '../../../../src/drivers/hyperv/runner';
import * as scripts from '../../../../src/drivers/hyperv/scripts';
import { FIXTURES, fakeFor, fixture } from './fake-raw';

/** The result of a recorded envelope, read the way the driver reads it: through the runner. */
async function recorded(name: string, script = scripts.listVms()): Promise<unknown[]> {
  return new PowerShellRunner(fakeFor(fixture(name))).run(name, script);
}

describe('recorded outputs', () => {
  it('each names the documentation it follows and says it was not captured', () => {
    const files = readdirSync(FIXTURES).filter((f) => f.endsWith('.json'));
    expect(files.length).toBeGreaterThan(15);
    for (const f of files) {
      const j = fixture(f);
      const sources = j._source as string[];
      expect(sources.length).toBeGreaterThan(0);
      for (const s of sources) expect(s).toMatch(/^https:\/\//);
      expect(sources.some((s) => s.startsWith('https://learn.microsoft.com/'))).toBe(true);
      expect(typeof j._note).toBe('string');
    }
  });
});

describe('Hyper-V parsers on recorded outputs', () => {
  it('getVm: a running VM with its drives', async () => {
    const [vm, ...rest] = parseVms(await recorded('get-vm.json', scripts.getVm('web01')));
    expect(rest).toEqual([]);
    expect(vm).toEqual({
      name: 'web01',
      id: '6f0b2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f',
      state: 'Running',
      status: 'Operating normally',
      operationalStatus: ['Ok'],
      memoryStartupBytes: 4294967296,
      processorCount: 4,
      version: '9.0',
      generation: 2,
      path: 'D:\\Hyper-V\\web01',
      configurationLocation: 'D:\\Hyper-V\\web01',
      snapshotFileLocation: 'D:\\Hyper-V\\web01',
      automaticStartAction: 'StartIfRunning',
      hardDrives: [
        {
          path: 'D:\\Hyper-V\\web01\\Virtual Hard Disks\\web01.vhdx',
          controllerType: 'SCSI',
          controllerNumber: 0,
          controllerLocation: 0,
        },
        {
          path: 'E:\\Data\\web01-data.vhdx',
          controllerType: 'SCSI',
          controllerNumber: 0,
          controllerLocation: 1,
        },
      ],
    });
  });

  it('listVms: non-ASCII names arrive intact, a drive without a file has no path', async () => {
    const vms = parseVms(await recorded('list-vms.json'));
    expect(vms.map((v) => [v.name, v.state, v.generation, v.version])).toEqual([
      ['café-db', 'Off', 2, '8.0'],
      ['legacy', 'Saved', 1, '5.0'],
    ]);
    expect(vms[0]!.hardDrives[0]!.path).toContain('\\café-db\\');
    expect(vms[1]!.hardDrives[1]).toEqual({
      controllerType: 'SCSI',
      controllerNumber: 0,
      controllerLocation: 1,
    });
    expect(vms[1]!.hardDrives[0]!.controllerType).toBe('IDE');
  });

  it('saveVm and vmState: name, id, state', async () => {
    expect(parseVmStates(await recorded('vm-state-saved.json', scripts.saveVm('web01')))).toEqual([
      {
        name: 'web01',
        id: '6f0b2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f',
        state: 'Saved',
        status: 'Operating normally',
      },
    ]);
    // Windows PowerShell 5.1's {value, Count} array
    expect(parseVmStates(await recorded('array-count-quirk.json', scripts.vmState('web01')))).toHaveLength(1);
  });

  it('getVhd: a differencing disk, sizes from strings, an unknown minimum size absent', async () => {
    const d = parseVhd(await recorded('get-vhd-differencing.json', scripts.getVhd('x')));
    expect(d).toEqual({
      path: 'D:\\Hyper-V\\web01\\Virtual Hard Disks\\web01_8D1E5C2B-3A4F-4B6C-9D7E-1F2A3B4C5D6E.avhdx',
      vhdFormat: 'VHDX',
      vhdType: 'Differencing',
      fileBytes: 4194304,
      virtualBytes: 137438953472,
      parentPath: 'D:\\Hyper-V\\web01\\Virtual Hard Disks\\web01.vhdx',
      diskIdentifier: 'A1B2C3D4-E5F6-4718-9A0B-C1D2E3F40516',
      attached: true,
      blockSize: 2097152,
      logicalSectorSize: 512,
      physicalSectorSize: 4096,
    });
  });

  it('getVhdChain: top first, each parent the next one, the base without a parent', async () => {
    const chain = parseVhdChain(await recorded('get-vhd-chain.json', scripts.getVhdChain('x')));
    expect(chain.map((d) => d.vhdType)).toEqual(['Differencing', 'Differencing', 'Dynamic']);
    expect(chain[2]!.parentPath).toBeUndefined();
    expect(chain[2]!.minimumBytes).toBe(136365211648);
    expect(chain[2]!.fileBytes).toBe(21478981632);
  });

  it('testVhd: the problems Test-VHD wrote', async () => {
    const t = parseVhdTest(await recorded('test-vhd-broken.json', scripts.testVhd('x')));
    expect(t.valid).toBe(false);
    expect(t.problems).toHaveLength(1);
    expect(t.problems[0]).toContain('cannot locate the parent');
  });

  it('checkpointVm: the checkpoint and the drives on their new .avhdx', async () => {
    const c = parseCheckpointTaken(
      await recorded('checkpoint-vm.json', scripts.checkpointVm('web01', 'vmplace-7f3a')),
    );
    expect(c.name).toBe('vmplace-7f3a');
    expect(c.created).toBe(true);
    expect(c.hardDrives.map((d) => d.path?.endsWith('.avhdx'))).toEqual([true, true]);
  });

  it('getCheckpoints: types as names, times as ISO strings, the parent named', async () => {
    const cs = parseCheckpoints(await recorded('get-checkpoints.json', scripts.getCheckpoints('web01')));
    expect(cs.map((c) => [c.name, c.snapshotType, c.parentSnapshotName])).toEqual([
      ['before updates', 'Standard', undefined],
      ['vmplace-7f3a', 'Standard', 'before updates'],
    ]);
    expect(new Date(cs[1]!.creationTime).toISOString()).toBe('2026-03-02T10:00:00.123Z');
  });

  it('removeCheckpoint is done merging when no status says so and no drive is on an .avhdx', async () => {
    const merging = parseMergeStatus(
      await recorded('merge-status-merging.json', scripts.mergeStatus('web01')),
    );
    expect(merging.merging).toBe(true);
    expect(merging.onCheckpointDisks).toHaveLength(1);
    const done = parseMergeStatus(await recorded('merge-status-done.json', scripts.mergeStatus('web01')));
    expect(done).toMatchObject({ merging: false, onCheckpointDisks: [] });
  });

  it("compareVm: the documented example's incompatibility", async () => {
    expect(parseIncompatibilities(await recorded('compare-vm.json', scripts.compareVm('x')))).toEqual([
      {
        message: "Could not find Ethernet switch 'Production'.",
        messageId: 33012,
        source: 'Microsoft.HyperV.PowerShell.VMNetworkAdapter',
      },
    ]);
  });

  it('fileInfo: identity from the volume GUID and the file id, whatever language fsutil speaks', async () => {
    const en = parseFileInfo(await recorded('file-info.json', scripts.fileInfo('x')));
    expect(en).toEqual({
      exists: true,
      isDirectory: false,
      length: 21478981632,
      attributes: ['Archive'],
      reparsePoint: false,
      volumeId: '4c1b2a3d-0000-0000-0000-100000000000',
      fileId: '7000000012c4a',
      identity: '4c1b2a3d-0000-0000-0000-100000000000:7000000012c4a',
    });
    const ja = parseFileInfo(await recorded('file-info-ja.json', scripts.fileInfo('x')));
    expect(ja).toMatchObject({ fileId: 'da0000000158ac', reparsePoint: true, length: 1024 });
    expect(parseFileInfo(await recorded('file-info-missing.json', scripts.fileInfo('x')))).toEqual({
      exists: false,
    });
  });

  it('fileHash: lower-case hex', async () => {
    expect(parseFileHash(await recorded('file-hash.json', scripts.fileHash('x')))).toBe(
      'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    );
  });

  it('volumeInfo: capacity and free bytes beyond 2^32', async () => {
    expect(parseVolume(await recorded('volume-info.json', scripts.volumeInfo('x')))).toEqual({
      path: 'D:\\Hyper-V',
      uniqueId: '\\\\?\\Volume{4c1b2a3d-0000-0000-0000-100000000000}\\',
      driveLetter: 'D',
      fileSystem: 'ReFS',
      capacityBytes: 4000650883072,
      freeBytes: 2875999182848,
    });
  });

  it('hostInfo: processors and supported configuration versions', async () => {
    const h = parseHostInfo(await recorded('host-info.json', scripts.hostInfo()));
    expect(h.processors).toHaveLength(2);
    expect(cpuInfoOf(h)).toEqual({
      vendor: 'GenuineIntel',
      model: 'Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz',
    });
    expect(h.supportedVersions.filter((v) => v.isDefault).map((v) => v.version)).toEqual(['12.0']);
  });

  it("vmHostStorage: Hyper-V's default folders", async () => {
    expect(parseVmHostStorage(await recorded('vm-host-storage.json', scripts.vmHostStorage()))).toEqual({
      computerName: 'HV1',
      virtualHardDiskPath: 'C:\\ProgramData\\Microsoft\\Windows\\Virtual Hard Disks',
      virtualMachinePath: 'C:\\ProgramData\\Microsoft\\Windows\\Hyper-V',
    });
  });
});

describe('Hyper-V parsers refuse what the scripts do not write', () => {
  const vmFixture = (): Record<string, unknown> =>
    (fixture('get-vm.json').result as Record<string, unknown>[])[0]!;
  const vhdFixture = (): Record<string, unknown> =>
    (fixture('get-vhd-differencing.json').result as Record<string, unknown>[])[0]!;

  it.each([
    ['an enum as a number', { State: 2 }],
    ['a size as a number', { MemoryStartup: 4294967296 }],
    ['a size with a sign', { MemoryStartup: '-1' }],
    ['a size with digits grouped', { MemoryStartup: '4,294,967,296' }],
    ['a missing name', { Name: undefined }],
    ['drives not an array', { HardDrives: 'C:\\x.vhdx' }],
    ['a drive without controller', { HardDrives: [{ Path: 'x' }] }],
  ])('a VM with %s', (_what, change) => {
    expect(() => parseVms([{ ...vmFixture(), ...change }])).toThrow(ParseError);
  });

  it.each([
    ['an unknown format', { VhdFormat: 'QCOW2' }],
    ['an unknown type', { VhdType: 'Sparse' }],
    ['a differencing disk without parent', { ParentPath: '' }],
    ['a size beyond 2^53', { Size: '9007199254740993' }],
  ])('a VHD with %s', (_what, change) => {
    expect(() => parseVhd([{ ...vhdFixture(), ...change }])).toThrow(ParseError);
  });

  it('not exactly one object where one is expected', () => {
    expect(() => parseVhd([])).toThrow(ParseError);
    expect(() => parseVhd([vhdFixture(), vhdFixture()])).toThrow(ParseError);
    expect(() => parseRemoved('x')).toThrow(ParseError);
    expect(() => parseVms([1])).toThrow(ParseError);
  });

  it('a chain whose links do not meet', () => {
    const [top, , base] = fixture('get-vhd-chain.json').result as Record<string, unknown>[];
    expect(() => parseVhdChain([top, base])).toThrow(ParseError);
    expect(() => parseVhdChain([top])).toThrow(ParseError);
    expect(() => parseVhdChain([])).toThrow(ParseError);
  });

  it('a file id that is not one hex number, a volume without GUID, a hash that is not SHA-256', () => {
    const info = (fixture('file-info.json').result as Record<string, unknown>[])[0]!;
    expect(() => parseFileInfo([{ ...info, FileIdText: 'Error: Access is denied.' }])).toThrow(ParseError);
    expect(() => parseFileInfo([{ ...info, FileIdText: '0x1 0x2' }])).toThrow(ParseError);
    expect(() => parseFileInfo([{ ...info, VolumeId: 'D:\\' }])).toThrow(ParseError);
    expect(() => parseFileHash([{ Algorithm: 'SHA256', Hash: 'abc' }])).toThrow(ParseError);
    expect(() =>
      parseFileHash([
        { Algorithm: 'MD5', Hash: 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' },
      ]),
    ).toThrow(ParseError);
  });

  it('sizes: numbers up to 2^53, bigints for anything 64-bit', () => {
    expect(sizeOf('0')).toBe(0);
    expect(sizeOf('9007199254740991')).toBe(Number.MAX_SAFE_INTEGER);
    expect(() => sizeOf('9007199254740992')).toThrow(ParseError);
    expect(() => sizeOf('012')).toThrow(ParseError);
    expect(() => sizeOf('')).toThrow(ParseError);
    expect(() => sizeOf(12)).toThrow(ParseError);
    expect(bigSizeOf('18446744073709551615')).toBe(18446744073709551615n);
    expect(() => bigSizeOf('1e3')).toThrow(ParseError);
  });
});
