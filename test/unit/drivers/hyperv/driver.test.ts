/**
 * The Hyper-V driver up to the PowerShell boundary: a scripted host (scripted-host.ts) answers
 * each script the driver sends with an envelope shaped as the script prints it (the recorded
 * fixtures of test/fixtures/hyperv where there is one). Checked: what every observation method
 * makes of the answers, the routing of errors, that each changing method looks first and does
 * nothing when its work is there (idempotence), the path guard, the refusals, and that every
 * script sent parses with a real PowerShell grammar and carries values only as literals.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { CommandError, StalledError, VmplaceError } from '../../../../src/errors';
import type { HypervisorDriver, VmDefinition } from '../../../../src/drivers/driver';
import {
  componentsBelow,
  domainStateOf,
  formatOf,
  HyperVDriver,
  hypervDefinition,
} from '../../../../src/drivers/hyperv/driver';
import { definitionData } from '../../../../src/drivers/hyperv/definition';
import {
  checkpointName,
  controllerOf,
  diskTarget,
  ownFilePath,
  parseCheckpointName,
  parseOwnLayer,
  stateSidecars,
  stateSidecarsIn,
  checkpointSidecarStem,
  importRoot,
} from '../../../../src/drivers/hyperv/names';
import { PowerShellError } from '../../../../src/drivers/hyperv/runner';
import { psQuote } from '../../../../src/drivers/hyperv/powershell';
import type { CopyClaim } from '../../../../src/transfer/copy-local';
import type { HostSpec } from '../../../../src/types';
import { fixture } from './fake-raw';
import { parseProblems, powershellParser, verbatimLiterals, withTree } from './ps-grammar';
import { fail, fixtureResult, ok, ScriptedHost, type Sent, sshRefused } from './scripted-host';

const ROOT = path.resolve(__dirname, '../../../..');
const LOCAL = 'D:\\Hyper-V';
const CSV = 'C:\\ClusterStorage\\Volume1';
const SPEC: HostSpec = { driver: 'hyperv', uri: 'ssh://vmplace@hv1', ssh: { host: 'hv1', user: 'vmplace' } };

/** Every script any driver of this file sent, for the grammar checks at the end. */
const ALL_SENT: Sent[] = [];

function driverOn(host: ScriptedHost, roots = [LOCAL, 'E:\\Data', CSV]): HyperVDriver {
  return new HyperVDriver('hv1', SPEC, {
    allowedRoots: roots,
    runner: host,
    pollMs: 0,
    sleep: async () => {},
  });
}

function hostWith(): ScriptedHost {
  const h = new ScriptedHost();
  const origin = h.runRaw.bind(h);
  h.runRaw = async (line, opts) => {
    try {
      return await origin(line, opts);
    } finally {
      const last = h.sent[h.sent.length - 1];
      if (last && !ALL_SENT.includes(last)) ALL_SENT.push(last);
    }
  };
  return h
    .answer('hostInfo', fixture('host-info.json'))
    .answer('pathAttributes', (_s, c) =>
      Object.values(c.values).map((p) => ({ Path: p, Exists: false, Attributes: null })),
    );
}

const WEB = fixtureResult('get-vm.json')[0]!;
const BASE = `${LOCAL}\\web01\\Virtual Hard Disks\\web01.vhdx`;
const DATA = 'E:\\Data\\web01-data.vhdx';
const AVHDX = `${LOCAL}\\web01\\Virtual Hard Disks\\web01_8D1E5C2B-3A4F-4B6C-9D7E-1F2A3B4C5D6E.avhdx`;
const DATA_AVHDX = 'E:\\Data\\web01-data_5E6F7A8B-9C0D-4E1F-8A2B-3C4D5E6F7A8B.avhdx';
const MIG = '20260302T100000-7f3a01';
const LAYER = ownFilePath(`${LOCAL}\\web01\\Virtual Hard Disks`, 'web01', MIG, {
  what: 'layer',
  disk: 'sda',
  round: 1,
});
const DATA_LAYER = ownFilePath('E:\\Data', 'web01', MIG, { what: 'layer', disk: 'sdb', round: 1 });

type Drive = { path: string; type?: 'Dynamic' | 'Differencing' | 'Fixed'; parent?: string; loc?: number };

/** web01 of get-vm.json as vmDisks answers it: each drive with what Get-VHD says of its file. */
function webDisks(drives: Drive[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    ...WEB,
    ...extra,
    HardDrives: drives.map((d, i) => ({
      Path: d.path,
      ControllerType: 'SCSI',
      ControllerNumber: 0,
      ControllerLocation: d.loc ?? i,
      VhdFormat: 'VHDX',
      VhdType: d.type ?? 'Dynamic',
      ParentPath: d.parent ?? null,
      VhdError: null,
    })),
  };
}

const ON_BASES: Drive[] = [{ path: BASE }, { path: DATA }];
const ON_LAYERS: Drive[] = [
  { path: AVHDX, type: 'Differencing', parent: BASE },
  { path: DATA_AVHDX, type: 'Differencing', parent: DATA },
];

/** layerLinks' answer: each `.avhdx` with file id 0xA<n>, and the links given (name -> same file or not). */
function linksAnswer(links: Record<string, string[]>): (s: string, c: Sent) => unknown[] {
  return (_s, c) =>
    Object.values(c.values).map((p, i) => ({
      Path: p,
      FileIdText: `File ID is 0x0000000000000000000000000000a${i}`,
      Links: (links[p] ?? []).map((l) => ({
        Path: l,
        FileIdText: l.startsWith('!') ? 'File ID is 0x99' : `File ID is 0x0000000000000000000000000000a${i}`,
      })),
    }));
}

const fileInfoOf = (id: string, length = '1024'): Record<string, unknown> => ({
  Exists: true,
  IsDirectory: false,
  Length: length,
  Attributes: 'Archive',
  VolumeId: '\\\\?\\Volume{4c1b2a3d-0000-0000-0000-100000000000}\\',
  FileIdText: `File ID is 0x${id}`,
});

const withoutRunner = (kinds: string[]): string[] =>
  kinds.filter((k) => k !== 'hostInfo' && k !== 'pathAttributes');

beforeAll(async () => {
  await powershellParser();
});

// ---------------------------------------------------------------- names

describe('Hyper-V names', () => {
  it.each([
    ['SCSI', 0, 0, 'sda'],
    ['SCSI', 0, 1, 'sdb'],
    ['SCSI', 0, 25, 'sdz'],
    ['SCSI', 0, 26, 'sdaa'],
    ['SCSI', 1, 0, 'sdbm'],
    ['SCSI', 3, 63, 'sdiv'],
    ['IDE', 0, 0, 'hda'],
    ['IDE', 0, 1, 'hdb'],
    ['IDE', 1, 0, 'hdc'],
    ['IDE', 1, 1, 'hdd'],
    ['PMEM', 0, 0, 'pmem0l0'],
  ])('%s %i:%i is %s, and back', (type, n, l, target) => {
    expect(diskTarget(type, n, l)).toBe(target);
    expect(controllerOf(target)).toEqual({
      controllerType: type,
      controllerNumber: n,
      controllerLocation: l,
    });
  });

  it('every target fits the status schema and the SCSI and IDE ones the manifests `disks:` keys', () => {
    const status = JSON.parse(
      fs.readFileSync(path.join(ROOT, 'schemas/virtualmachinestatus.schema.json'), 'utf8'),
    ) as unknown;
    const vmSchema = fs.readFileSync(path.join(ROOT, 'schemas/virtualmachine.schema.json'), 'utf8');
    const targetPattern = new RegExp(
      JSON.stringify(status)
        .match(/"target":\{"type":"string","pattern":"([^"]+)"/)![1]!
        .replace(/\\\\/g, '\\'),
    );
    const keyPattern = new RegExp(/"propertyNames":\s*\{\s*"pattern":\s*"([^"]+)"/.exec(vmSchema)![1]!);
    expect(targetPattern.source).toBe('^[a-z][a-z0-9]{0,31}$');
    for (let n = 0; n < 4; n++)
      for (let l = 0; l < 64; l++) {
        const t = diskTarget('SCSI', n, l)!;
        expect(t).toMatch(targetPattern);
        expect(t).toMatch(keyPattern);
        expect(controllerOf(t)).toEqual({
          controllerType: 'SCSI',
          controllerNumber: n,
          controllerLocation: l,
        });
      }
    for (const t of ['hda', 'hdb', 'hdc', 'hdd']) expect(t).toMatch(keyPattern);
    expect('pmem0l0').toMatch(targetPattern);
    expect('pmem0l0').not.toMatch(keyPattern);
    expect(diskTarget('SCSI', 4, 0)).toBeUndefined();
    expect(diskTarget('IDE', 0, 2)).toBeUndefined();
    expect(controllerOf('sdix')).toBeUndefined(); // 4:1, a fifth SCSI controller
    expect(controllerOf('vda')).toBeUndefined();
  });

  it('own files: recognisably vmplace, with the extension Hyper-V needs; a saved state has its guest state beside it', () => {
    expect(LAYER).toBe(`${LOCAL}\\web01\\Virtual Hard Disks\\web01.sda.overlay.vmplace-${MIG}.avhdx`);
    expect(ownFilePath(CSV, 'web01', MIG, { what: 'layer', disk: 'sda', round: 2 })).toBe(
      `${CSV}\\web01.sda.overlay2.vmplace-${MIG}.avhdx`,
    );
    const state = ownFilePath(CSV, 'web01', MIG, { what: 'state' });
    expect(state).toBe(`${CSV}\\web01.state.vmplace-${MIG}.vmrs`);
    expect(stateSidecars(state)).toEqual([
      `${CSV}\\web01.state.vmplace-${MIG}.vmgs`,
      `${CSV}\\web01.state.vmplace-${MIG}.vmcx`,
    ]);
    expect(importRoot(state)).toBe(`${CSV}\\web01.state.vmplace-${MIG}.import`);
    expect(checkpointSidecarStem(state, '3C4D5E6F-7A8B-4C9D-8E0F-1A2B3C4D5E6F')).toBe(
      `${CSV}\\web01.state.vmplace-${MIG}.checkpoint-3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f`,
    );
    expect(checkpointSidecarStem(state, "x'; Stop-Computer")).toBeUndefined();
    expect(checkpointSidecarStem(LAYER, '3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f')).toBeUndefined();
    // the files that go with the state, read from a folder's names without regard to case
    const stem = `web01.state.vmplace-${MIG}`;
    expect(
      stateSidecarsIn(state, [
        `${stem}.vmrs`,
        `${stem.toUpperCase()}.VMGS`,
        `${stem}.vmcx`,
        `${stem}.vmcx.vmplace-part`,
        `${stem}.checkpoint-3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f.vmcx`,
        `${stem}.checkpoint-3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f.vmrs`,
        `${stem}.checkpoint-3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f.avhdx`,
        `${stem}.checkpoint-nope.vmcx`,
        `web01.state.vmplace-other.vmcx`,
        `${stem}x.vmcx`,
      ]),
    ).toEqual([
      {
        path: `${CSV}\\${stem}.checkpoint-3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f.vmcx`,
        checkpoint: '3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f',
        kind: 'vmcx',
      },
      {
        path: `${CSV}\\${stem}.checkpoint-3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f.vmrs`,
        checkpoint: '3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f',
        kind: 'vmrs',
      },
      { path: `${CSV}\\${stem}.vmcx`, kind: 'vmcx' },
      { path: `${CSV}\\${stem.toUpperCase()}.VMGS`, kind: 'vmgs' },
    ]);
    expect(stateSidecars(LAYER)).toEqual([]);
    expect(ownFilePath(CSV, 'web01', MIG, { what: 'probe' })).toBe(`${CSV}\\web01.probe.vmplace-${MIG}.tmp`);
    const d = driverOn(hostWith());
    expect(d.ownFile(CSV, 'web01', MIG, { what: 'state' })).toBe(state);
  });

  it('reads back only the names it gives', () => {
    expect(parseOwnLayer(LAYER, 'web01', 'sda')).toEqual({ migration: MIG, round: 1 });
    expect(
      parseOwnLayer(
        LAYER.toUpperCase().replace('VMPLACE-', 'vmplace-').replace(MIG.toUpperCase(), MIG),
        'web01',
        'sda',
      ),
    ).toEqual({ migration: MIG, round: 1 });
    expect(
      parseOwnLayer(
        ownFilePath('C:\\x', 'web01', MIG, { what: 'layer', disk: 'sda', round: 3 }),
        'web01',
        'sda',
      ),
    ).toEqual({ migration: MIG, round: 3 });
    for (const other of [
      AVHDX,
      BASE,
      `${LOCAL}\\web01.sda.overlay1.vmplace-${MIG}.avhdx`,
      `${LOCAL}\\web01.sdb.overlay.vmplace-${MIG}.avhdx`,
      `${LOCAL}\\web01.sda.overlay.vmplace-${MIG}.vhdx`,
    ])
      expect(parseOwnLayer(other, 'web01', 'sda')).toBeUndefined();
    expect(checkpointName(MIG, 1)).toBe(`vmplace-${MIG}`);
    expect(checkpointName(MIG, 2)).toBe(`vmplace-${MIG}-r2`);
    expect(parseCheckpointName(`vmplace-${MIG}`)).toEqual({ migration: MIG, round: 1 });
    expect(parseCheckpointName(`vmplace-${MIG}-r2`)).toEqual({ migration: MIG, round: 2 });
    for (const other of ['before updates', `vmplace-${MIG}-r1`, `Vmplace-${MIG}`, 'vmplace-'])
      expect(parseCheckpointName(other)).toBeUndefined();
  });

  it("VM states and formats in the contract's words", () => {
    expect(
      [
        'Running',
        'Paused',
        'Off',
        'Saved',
        'FastSaved',
        'Saving',
        'Starting',
        'RunningCritical',
        'OffCritical',
      ].map(domainStateOf),
    ).toEqual(['running', 'paused', 'shutoff', 'shutoff', 'shutoff', 'other', 'other', 'crashed', 'crashed']);
    expect(formatOf('VHDX', 'Dynamic')).toBe('vhdx');
    expect(formatOf('VHDX', 'Differencing')).toBe('avhdx');
    expect(formatOf('VHD', 'Fixed')).toBe('vhd');
    expect(componentsBelow(`${LOCAL}\\web01\\x.vhdx`, LOCAL)).toEqual([
      `${LOCAL}\\web01`,
      `${LOCAL}\\web01\\x.vhdx`,
    ]);
    expect(componentsBelow('D:\\x\\y', 'D:\\')).toEqual(['D:\\x', 'D:\\x\\y']);
    expect(componentsBelow(LOCAL, LOCAL)).toEqual([]);
  });
});

// ---------------------------------------------------------------- observation

describe('observation', () => {
  it('listDomains: every VM once', async () => {
    const h: ScriptedHost = hostWith().answer('listVms', fixture('list-vms.json'));
    expect(await driverOn(h).listDomains()).toEqual(['café-db', 'legacy']);
  });

  it('getDomain: Get-VM, drives and Get-VHD in one script; targets from controller places, formats, the definition', async () => {
    const h: ScriptedHost = hostWith().answer('vmDisks', ok(webDisks(ON_BASES)));
    const d = driverOn(h);
    const dom = (await d.getDomain('web01'))!;
    expect(withoutRunner(h.kinds())).toEqual(['vmDisks']);
    expect(h.sent.find((s) => s.kind === 'vmDisks')!.values).toEqual({ n: 'web01' });
    expect(dom).toMatchObject({
      name: 'web01',
      uuid: '6f0b2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f',
      state: 'running',
      persistent: true,
      memoryBytes: 4294967296,
      vcpus: 4,
      domainType: 'hyperv',
      autostart: false,
    });
    expect(dom.uefi).toBeUndefined();
    expect(dom.disks).toEqual([
      {
        target: 'sda',
        type: 'file',
        device: 'disk',
        path: BASE,
        format: 'vhdx',
        readonly: false,
        hasBackingStore: false,
      },
      {
        target: 'sdb',
        type: 'file',
        device: 'disk',
        path: DATA,
        format: 'vhdx',
        readonly: false,
        hasBackingStore: false,
      },
    ]);
    expect(dom.definition.driver).toBe('hyperv');
    expect(definitionData(dom.definition)).toMatchObject({
      id: '6f0b2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f',
      version: '9.0',
      generation: 2,
      processorVendor: 'GenuineIntel',
      configurationLocation: `${LOCAL}\\web01`,
    });
    expect(d.diskPathsOf(dom.definition)).toEqual({ sda: BASE, sdb: DATA });
  });

  it("getDomain: a disk on a checkpoint layer shows the asked name when the .avhdx has that hard link, else Hyper-V's", async () => {
    const h: ScriptedHost = hostWith()
      .answer('vmDisks', ok(webDisks(ON_LAYERS)))
      .answer('layerLinks', linksAnswer({ [AVHDX]: [LAYER], [DATA_AVHDX]: [`!${DATA_LAYER}`] }));
    const dom = (await driverOn(h).getDomain('web01'))!;
    expect(withoutRunner(h.kinds())).toEqual(['vmDisks', 'layerLinks']);
    expect(dom.disks.map((x) => [x.target, x.path, x.format, x.hasBackingStore])).toEqual([
      ['sda', LAYER, 'avhdx', true],
      // a layer-named file that is another file (another file id) is not the disk
      ['sdb', DATA_AVHDX, 'avhdx', true],
    ]);
  });

  it('getDomain: no VM of that name is undefined; two are refused', async () => {
    expect(await driverOn(hostWith().answer('vmDisks', ok())).getDomain('web01')).toBeUndefined();
    await expect(
      driverOn(hostWith().answer('vmDisks', ok(webDisks(ON_BASES), webDisks(ON_BASES)))).getDomain('web01'),
    ).rejects.toMatchObject({ reason: 'VmNameAmbiguous', kind: 'stalled' });
  });

  it('getDomain: a pass-through disk is a block disk, and a file Get-VHD cannot read has no format', async () => {
    const vm = webDisks(ON_BASES);
    (vm.HardDrives as Record<string, unknown>[])[1] = {
      Path: 'Disk 2 200.00 GB Bus 0 Lun 0 Target 1',
      ControllerType: 'SCSI',
      ControllerNumber: 0,
      ControllerLocation: 1,
      VhdFormat: null,
      VhdType: null,
      ParentPath: null,
      VhdError: null,
    };
    (vm.HardDrives as Record<string, unknown>[])[0]!.VhdError = 'The system cannot find the file specified.';
    (vm.HardDrives as Record<string, unknown>[])[0]!.VhdFormat = null;
    (vm.HardDrives as Record<string, unknown>[])[0]!.VhdType = null;
    const dom = (await driverOn(hostWith().answer('vmDisks', ok(vm))).getDomain('web01'))!;
    expect(dom.disks).toEqual([
      { target: 'sda', type: 'file', device: 'disk', path: BASE, readonly: false, hasBackingStore: false },
      {
        target: 'sdb',
        type: 'block',
        device: 'disk',
        sourceDev: 'Disk 2 200.00 GB Bus 0 Lun 0 Target 1',
        readonly: false,
        hasBackingStore: false,
      },
    ]);
  });

  it('domainState: the cheap script; Saved is shut off; the 5.1 {value, Count} shape; none is undefined', async () => {
    expect(
      await driverOn(hostWith().answer('vmState', fixture('vm-state-saved.json'))).domainState('web01'),
    ).toBe('shutoff');
    expect(
      await driverOn(hostWith().answer('vmState', fixture('array-count-quirk.json'))).domainState('web01'),
    ).toBe('running');
    expect(await driverOn(hostWith().answer('vmState', ok())).domainState('web01')).toBeUndefined();
  });

  it('imageInfo: the chain read by Get-VHD; the format must be the one asked (a layer without one)', async () => {
    const h: ScriptedHost = hostWith().answer('getVhdChain', fixture('get-vhd-chain.json'));
    const top = (fixture('get-vhd-chain.json').result as { Path: string }[])[0]!.Path;
    const i = await driverOn(h).imageInfo(top);
    expect(i).toMatchObject({
      path: top,
      format: 'avhdx',
      virtualBytes: 137438953472,
      fileBytes: 37748736,
      allocatedBytes: 37748736,
      backingFile: AVHDX,
      backingFormat: 'avhdx',
      chainLength: 3,
    });
    await expect(driverOn(h).imageInfo(top, { format: 'vhdx' })).rejects.toMatchObject({
      reason: 'DiskFormatMismatch',
    });
    // Get-VHD answering for another file than asked is not taken
    await expect(driverOn(h).imageInfo(BASE, { format: 'avhdx' })).rejects.toMatchObject({
      reason: 'UnexpectedOutput',
    });
  });

  it('probeFormat: the magic of the first bytes; Get-VHD when Hyper-V holds the file', async () => {
    const hex = (s: string): string =>
      [...Buffer.from(s, 'latin1')].map((b) => b.toString(16).padStart(2, '0').toUpperCase()).join('-');
    const at = (a: Record<string, unknown>): ScriptedHost =>
      hostWith().answer('fileHeader', ok({ Path: BASE, Denied: false, VhdFormat: null, ...a }));
    expect(await driverOn(at({ Hex: hex('vhdxfile') })).probeFormat(BASE)).toBe('vhdx');
    expect(await driverOn(at({ Hex: hex('conectix') })).probeFormat(BASE)).toBe('vhd');
    expect(
      await driverOn(at({ Hex: hex('\x00\x00\x00\x00\x00\x00\x00\x00') })).probeFormat(BASE),
    ).toBeUndefined();
    const boot = hex('\xeb\x63\x90\x10\x8e\xd0\xbc\x00');
    expect(await driverOn(at({ Hex: boot, Tail: hex('conectix') })).probeFormat(BASE)).toBe('vhd');
    expect(await driverOn(at({ Hex: boot, Tail: hex('vhdxfile') })).probeFormat(BASE)).toBeUndefined();
    expect(await driverOn(at({ Hex: null, Denied: true, VhdFormat: 'VHDX' })).probeFormat(BASE)).toBe('vhdx');
  });

  it('fsInfo, storageLocations, hostCpu (asked once), fileExists, fileSize, checksum', async () => {
    const h: ScriptedHost = hostWith()
      .answer('volumeInfo', fixture('volume-info.json'))
      .answer('vmHostStorage', fixture('vm-host-storage.json'))
      .answer('fileHash', fixture('file-hash.json'))
      .answer('fileInfo', (_s, c) =>
        c.values.p === BASE
          ? fixture('file-info.json')
          : c.values.p === DATA
            ? ok({
                Exists: true,
                IsDirectory: true,
                Length: '',
                Attributes: 'Directory',
                VolumeId: '\\\\?\\Volume{4c1b2a3d-0000-0000-0000-100000000000}\\',
                FileIdText: 'File ID is 0x1',
              })
            : fixture('file-info-missing.json'),
      );
    const d = driverOn(h);
    expect(await d.fsInfo(`${LOCAL}\\web01`)).toEqual({
      capacityBytes: 4000650883072,
      freeBytes: 2875999182848,
    });
    expect(await d.storageLocations()).toEqual([
      { name: 'virtual-hard-disks', path: 'C:\\ProgramData\\Microsoft\\Windows\\Virtual Hard Disks' },
      { name: 'virtual-machines', path: 'C:\\ProgramData\\Microsoft\\Windows\\Hyper-V' },
    ]);
    expect(await d.hostCpu()).toEqual({
      vendor: 'GenuineIntel',
      model: 'Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz',
    });
    await d.hostCpu();
    expect(h.kinds().filter((k) => k === 'hostInfo')).toHaveLength(1);
    expect(await d.fileExists(BASE)).toBe(true);
    expect(await d.fileExists(`${LOCAL}\\nope`)).toBe(false);
    expect(await d.fileSize(BASE)).toBe(21478981632);
    expect(await d.fileSize(DATA)).toBeUndefined();
    expect(await d.fileSize(`${LOCAL}\\nope`)).toBeUndefined();
    expect(await d.checksum(`${LOCAL}\\empty.bin`)).toBe(
      'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    );
  });

  it('canRun: a configuration version the host runs, on processors of the same vendor', async () => {
    const d = driverOn(hostWith());
    const def = (version: string, processorVendor?: string): VmDefinition =>
      hypervDefinition({
        kind: 'vmplace.hyperv.vm/v1',
        id: 'x',
        name: 'web01',
        generation: 2,
        version,
        ...(processorVendor ? { processorVendor } : {}),
        disks: [],
      });
    expect(await d.canRun(def('9.0', 'GenuineIntel'))).toMatchObject({ compatible: true });
    expect(await d.canRun(def('5.0'))).toMatchObject({
      compatible: false,
      message: expect.stringContaining('8.0, 9.0, 12.0') as unknown,
    });
    expect(await d.canRun(def('9.0', 'AuthenticAMD'))).toMatchObject({
      compatible: false,
      message: expect.stringContaining('AuthenticAMD') as unknown,
    });
    await expect(d.canRun({ driver: 'libvirt', data: '<domain/>' })).rejects.toMatchObject({
      reason: 'DriverMismatch',
    });
  });

  it('filesInUse: drives, checkpoints and parents of every VM, and the asked names of layers', async () => {
    const h: ScriptedHost = hostWith()
      .answer(
        'vmFiles',
        ok(
          { Name: 'web01', Id: 'a', State: 'Running', Paths: [AVHDX, BASE, DATA] },
          { Name: 'clone', Id: 'b', State: 'Off', Paths: ['E:\\Data\\clone.avhdx', BASE] },
        ),
      )
      .answer('layerLinks', linksAnswer({ [AVHDX]: [LAYER] }));
    const used = await driverOn(h).filesInUse();
    expect(Object.fromEntries([...used].map(([p, s]) => [p, [...s].sort()]))).toEqual({
      [AVHDX]: ['web01'],
      [LAYER]: ['web01'],
      [BASE]: ['clone', 'web01'],
      [DATA]: ['web01'],
      'E:\\Data\\clone.avhdx': ['clone'],
    });
  });
});

// ---------------------------------------------------------------- files and the guard

describe('files and the path guard', () => {
  it.each([
    ['outside storage', 'F:\\VMs\\x.vhdx'],
    ['a .. segment', `${LOCAL}\\web01\\..\\..\\Windows\\x`],
    ['an alternate data stream', `${LOCAL}\\web01\\x.vhdx:evil`],
    ['forward slashes', 'D:/Hyper-V/x.vhdx'],
    ['a short name', `${LOCAL}\\PROGRA~1\\x`],
    ['a device name', `${LOCAL}\\NUL`],
    ['the storage location itself', LOCAL],
    ['another case of a prefix that is not a parent', 'D:\\Hyper-V2\\x'],
  ])('refuses %s before asking the host', async (_t, p) => {
    const h: ScriptedHost = hostWith();
    await expect(driverOn(h).removeFile(p)).rejects.toMatchObject({
      reason: 'PathOutsideStorage',
      kind: 'stalled',
    });
    expect(h.sent).toEqual([]);
  });

  it('refuses a path through a reparse point below the storage location; the location itself may be one (a CSV)', async () => {
    const h: ScriptedHost = hostWith().answer('pathAttributes', (_s, c) =>
      Object.values(c.values).map((p) => ({
        Path: p,
        Exists: true,
        Attributes: p === `${CSV}\\web01` ? 'Directory, ReparsePoint' : 'Archive',
      })),
    );
    const d = driverOn(h);
    await expect(d.removeFile(`${CSV}\\web01\\x.avhdx`)).rejects.toMatchObject({
      reason: 'PathOutsideStorage',
      message: expect.stringContaining('reparse point') as unknown,
    });
    const asked = h.sent.find((s) => s.kind === 'pathAttributes')!.values;
    expect(Object.values(asked)).toEqual([`${CSV}\\web01`, `${CSV}\\web01\\x.avhdx`]);
    // a dangling symbolic link as the file itself
    const h2: ScriptedHost = hostWith().answer('pathAttributes', (_s, c) =>
      Object.values(c.values).map((p) => ({
        Path: p,
        Exists: true,
        Attributes: p.endsWith('.vhdx') ? 'Archive, ReparsePoint' : 'Directory',
      })),
    );
    await expect(driverOn(h2).createExclusive(`${LOCAL}\\web01\\x.vhdx`)).rejects.toMatchObject({
      reason: 'PathOutsideStorage',
    });
    expect(withoutRunner(h2.kinds())).toEqual([]);
  });

  it('the storage location itself only for makeDir; the host is asked once in 10 s per path', async () => {
    const h: ScriptedHost = hostWith().answer('newDirectory', ok({ Path: LOCAL, Created: false }));
    const d = driverOn(h);
    await d.makeDir(LOCAL);
    await d.makeDir(`${LOCAL}\\web01`);
    await d.makeDir(`${LOCAL}\\web01`);
    expect(h.kinds()).toEqual(['newDirectory', 'pathAttributes', 'newDirectory', 'newDirectory']);
  });

  it('fileIdentity, createExclusive (never over a name that exists), removeIfIdentity, removeDirIfEmpty', async () => {
    const h: ScriptedHost = hostWith()
      .answer('fileInfo', fixture('file-info.json'))
      .answer('createNewFile', (_s, c) =>
        c.values.p!.endsWith('taken.tmp')
          ? fail('FileExists', 'ResourceExists')
          : ok(fileInfoOf('00000000000000000007000000012c4b', '0')),
      )
      .answer('removeIfIdentity', (_s, c) =>
        ok({
          Outcome: c.values.i === '4c1b2a3d-0000-0000-0000-100000000000:7000000012c4a' ? 'Removed' : 'Other',
        }),
      )
      .answer('removeDirIfEmpty', ok({ Existed: true, Removed: false }));
    const d = driverOn(h);
    expect(await d.fileIdentity(BASE)).toBe('4c1b2a3d-0000-0000-0000-100000000000:7000000012c4a');
    expect(await d.createExclusive(`${LOCAL}\\p.tmp`)).toBe(
      '4c1b2a3d-0000-0000-0000-100000000000:7000000012c4b',
    );
    await expect(d.createExclusive(`${LOCAL}\\taken.tmp`)).rejects.toMatchObject({
      reason: 'FileExists',
      kind: 'stalled',
    });
    expect(await d.removeIfIdentity(BASE, '4c1b2a3d-0000-0000-0000-100000000000:7000000012c4a')).toBe(
      'removed',
    );
    expect(await d.removeIfIdentity(BASE, '4c1b2a3d-0000-0000-0000-100000000000:1')).toBe('other');
    await d.removeDirIfEmpty(`${LOCAL}\\web01`);
  });

  it('removeFile of a saved state removes its guest state, configuration and checkpoint copies with it', async () => {
    const state = ownFilePath(CSV, 'web01', MIG, { what: 'state' });
    const ck = `${checkpointSidecarStem(state, '3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f')!}.vmcx`;
    const h: ScriptedHost = hostWith()
      .answer('removeFile', ok({ Removed: true }))
      .answer('filesNamed', ok({ Names: [`web01.state.vmplace-${MIG}.vmgs`, ck.slice(CSV.length + 1)] }));
    await driverOn(h).removeFile(state);
    expect(h.sent.find((s) => s.kind === 'filesNamed')!.values).toEqual({
      d: CSV,
      s: `web01.state.vmplace-${MIG}.`,
    });
    expect(h.sent.filter((s) => s.kind === 'removeFile').map((s) => s.values.p)).toEqual([
      state,
      ck,
      ...stateSidecars(state),
    ]);
    // any other file: no listing
    const other: ScriptedHost = hostWith().answer('removeFile', ok({ Removed: true }));
    await driverOn(other).removeFile(LAYER);
    expect(withoutRunner(other.kinds())).toEqual(['removeFile']);
  });
});

// ---------------------------------------------------------------- errors

describe('errors, routed once', () => {
  const run = async (answer: Parameters<ScriptedHost['answer']>[1]): Promise<unknown> =>
    driverOn(hostWith().answer('startVm', answer))
      .start('web01')
      .then(
        () => 'resolved',
        (e: unknown) => e,
      );

  it('VmNotFound of a script is DomainNotFound (where the contract has no undefined)', async () => {
    expect(await run(fixture('error-vm-not-found.json'))).toMatchObject({
      reason: 'DomainNotFound',
      kind: 'transient',
    });
  });

  it('two VMs of one name, an active VM removed, access denied: stalled', async () => {
    expect(await run(fail('VmNameAmbiguous', 'InvalidResult'))).toMatchObject({
      reason: 'VmNameAmbiguous',
      kind: 'stalled',
    });
    expect(
      await run(
        fail(
          'AccessDenied,Microsoft.HyperV.PowerShell.Commands.StartVM',
          'PermissionDenied',
          'You do not have the required permission to complete this task.',
          'Microsoft.HyperV.PowerShell.VirtualizationException',
        ),
      ),
    ).toMatchObject({ reason: 'AccessDenied', kind: 'stalled' });
    expect(
      await run(
        fail('UnauthorizedAccess', 'NotSpecified', 'Access is denied', 'System.UnauthorizedAccessException'),
      ),
    ).toMatchObject({ reason: 'AccessDenied' });
    const removeActive = await driverOn(hostWith().answer('removeVm', fail('VmIsActive', 'InvalidOperation')))
      .undefine('web01')
      .catch((e: unknown) => e);
    expect(removeActive).toMatchObject({ reason: 'DomainRunning', kind: 'stalled' });
  });

  it('anything else is the PowerShell error as it is: a command that failed, retried', async () => {
    const e = await run(fixture('error-import-vm.json'));
    expect(e).toBeInstanceOf(PowerShellError);
    expect(e).toMatchObject({ reason: 'CommandFailed', kind: 'transient' });
  });

  it('ssh that cannot reach the host is HostUnreachable naming the host; other transport errors as they are', async () => {
    const e = await run(sshRefused());
    expect(e).toMatchObject({ reason: 'HostUnreachable', kind: 'transient' });
    expect((e as Error).message).toBe(
      'Hyper-V host hv1 (vmplace@hv1) does not answer over ssh: ssh: connect to host hv1 port 22: Connection refused',
    );
    const timeout = await run(new CommandError('CommandTimedOut', ['ssh:vmplace@hv1'], null, 'timed out'));
    expect(timeout).toMatchObject({ reason: 'CommandTimedOut' });
    const garbage = await run({ ok: 'maybe' });
    expect(garbage).toMatchObject({ reason: 'UnexpectedOutput' });
  });
});

// ---------------------------------------------------------------- layers

describe('freezeDisks: Checkpoint-VM, the asked names as hard links', () => {
  const checkpoint = (created: boolean): Record<string, unknown> => ({
    ok: true,
    result: [
      {
        VMName: 'web01',
        Name: checkpointName(MIG, 1),
        Id: '3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f',
        Created: created,
        HardDrives: ON_LAYERS.map((d, i) => ({
          Path: d.path,
          ControllerType: 'SCSI',
          ControllerNumber: 0,
          ControllerLocation: i,
        })),
      },
    ],
  });
  const checkpoints = ok({
    Name: checkpointName(MIG, 1),
    Id: '3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f',
    SnapshotType: 'Standard',
    ParentSnapshotName: null,
    CreationTime: '2026-03-02T10:00:00.1234567Z',
    HardDrives: ON_BASES.map((d, i) => ({
      Path: d.path,
      ControllerType: 'SCSI',
      ControllerNumber: 0,
      ControllerLocation: i,
    })),
  });
  const asked = [
    { target: 'sda', layer: LAYER },
    { target: 'sdb', layer: DATA_LAYER },
  ];

  it('takes the checkpoint, links each .avhdx under the asked name, returns each layer with the image below', async () => {
    let linked: Record<string, string> = {};
    const h: ScriptedHost = hostWith()
      .answer('vmDisks', () =>
        h.kinds().includes('checkpointVm') ? ok(webDisks(ON_LAYERS)) : ok(webDisks(ON_BASES)),
      )
      .answer('layerLinks', (s, c) =>
        linksAnswer(Object.fromEntries(Object.entries(linked).map(([k, v]) => [v, [k]])))(s, c),
      )
      .answer('checkpointVm', checkpoint(true))
      .answer('getCheckpoints', checkpoints)
      .answer('hardLink', (_s, c) => {
        linked = { ...linked, [c.values.l!]: c.values.e! };
        return ok({ Created: true, LinkIdText: 'File ID is 0x7', TargetIdText: 'File ID is 0x7' });
      });
    const made = await driverOn(h).freezeDisks('web01', asked);
    expect(made).toEqual([
      { target: 'sda', layer: LAYER, below: BASE },
      { target: 'sdb', layer: DATA_LAYER, below: DATA },
    ]);
    const cp = h.sent.find((s) => s.kind === 'checkpointVm')!;
    expect(cp.values).toEqual({ n: 'web01', c: `vmplace-${MIG}` });
    expect(h.sent.filter((s) => s.kind === 'hardLink').map((s) => [s.values.l, s.values.e])).toEqual([
      [LAYER, AVHDX],
      [DATA_LAYER, DATA_AVHDX],
    ]);
  });

  it('again with every disk on its asked layer: nothing taken, nothing linked, the same answer', async () => {
    const h: ScriptedHost = hostWith()
      .answer('vmDisks', ok(webDisks(ON_LAYERS)))
      .answer('layerLinks', linksAnswer({ [AVHDX]: [LAYER], [DATA_AVHDX]: [DATA_LAYER] }));
    expect(await driverOn(h).freezeDisks('web01', asked)).toEqual([
      { target: 'sda', layer: LAYER, below: BASE },
      { target: 'sdb', layer: DATA_LAYER, below: DATA },
    ]);
    expect(withoutRunner(h.kinds())).toEqual(['vmDisks', 'layerLinks']);
  });

  it('half done (checkpoint taken, a link missing): the checkpoint is found by name, the link made', async () => {
    let linked = false;
    const h: ScriptedHost = hostWith()
      .answer('vmDisks', ok(webDisks(ON_LAYERS)))
      .answer('layerLinks', (s, c) =>
        linksAnswer({ [AVHDX]: [LAYER], [DATA_AVHDX]: linked ? [DATA_LAYER] : [] })(s, c),
      )
      .answer('checkpointVm', checkpoint(false))
      .answer('getCheckpoints', checkpoints)
      .answer('hardLink', () => {
        linked = true;
        return ok({ Created: true, LinkIdText: 'File ID is 0x7', TargetIdText: 'File ID is 0x7' });
      });
    await driverOn(h).freezeDisks('web01', asked);
    expect(h.sent.filter((s) => s.kind === 'hardLink').map((s) => s.values.l)).toEqual([DATA_LAYER]);
  });

  it('refuses a VM with a disk that stays, before taking anything (a checkpoint merges as a whole)', async () => {
    const h: ScriptedHost = hostWith().answer('vmDisks', ok(webDisks(ON_BASES)));
    await expect(driverOn(h).freezeDisks('web01', [asked[0]!])).rejects.toMatchObject({
      reason: 'SnapshotPartial',
      kind: 'stalled',
    });
    expect(h.kinds()).not.toContain('checkpointVm');
  });

  it('refuses names it did not give, and a disk whose .avhdx is not of that checkpoint; an asked name that is another file', async () => {
    const h: ScriptedHost = hostWith().answer('vmDisks', ok(webDisks(ON_BASES)));
    await expect(
      driverOn(h).freezeDisks('web01', [
        { target: 'sda', layer: `${LOCAL}\\web01\\Virtual Hard Disks\\mine.avhdx` },
        asked[1]!,
      ]),
    ).rejects.toMatchObject({ reason: 'NotSupportedByDriver' });
    const foreign: ScriptedHost = hostWith()
      .answer('vmDisks', () =>
        foreign.kinds().includes('checkpointVm')
          ? ok(
              webDisks([
                { path: AVHDX, type: 'Differencing', parent: 'D:\\Hyper-V\\other.vhdx' },
                ON_LAYERS[1]!,
              ]),
            )
          : ok(webDisks(ON_BASES)),
      )
      .answer('layerLinks', linksAnswer({}))
      .answer('checkpointVm', checkpoint(true))
      .answer('getCheckpoints', checkpoints);
    await expect(driverOn(foreign).freezeDisks('web01', asked)).rejects.toMatchObject({
      reason: 'UnexpectedDiskSource',
    });
    expect(foreign.kinds()).not.toContain('hardLink');
    const other: ScriptedHost = hostWith()
      .answer('vmDisks', () =>
        other.kinds().includes('checkpointVm') ? ok(webDisks(ON_LAYERS)) : ok(webDisks(ON_BASES)),
      )
      .answer('layerLinks', linksAnswer({}))
      .answer('checkpointVm', checkpoint(true))
      .answer('getCheckpoints', checkpoints)
      .answer(
        'hardLink',
        ok({ Created: false, LinkIdText: 'File ID is 0x5', TargetIdText: 'File ID is 0x7' }),
      );
    await expect(driverOn(other).freezeDisks('web01', asked)).rejects.toMatchObject({
      reason: 'OverlayExists',
    });
  });
});

describe('mergeLayers: Remove-VMCheckpoint, waited for, the asked names removed', () => {
  it('removes the checkpoint of the migration, polls until the disk runs from its base, removes the links by identity', async () => {
    let polls = 0;
    const h: ScriptedHost = hostWith()
      .answer('vmDisks', ok(webDisks(ON_LAYERS)))
      .answer('layerLinks', linksAnswer({ [AVHDX]: [LAYER], [DATA_AVHDX]: [DATA_LAYER] }))
      .answer('getCheckpoints', fixture('get-checkpoints.json'))
      .answer('removeCheckpoint', ok({ Removed: true }))
      .answer('mergeStatus', () =>
        h.kinds().includes('removeCheckpoint') && ++polls > 2
          ? fixture('merge-status-done.json')
          : fixture('merge-status-merging.json'),
      )
      .answer('fileInfo', (_s, c) =>
        c.values.p === LAYER
          ? ok(fileInfoOf('a0'))
          : c.values.p === DATA_LAYER
            ? ok(fileInfoOf('a1'))
            : fixture('file-info-missing.json'),
      )
      .answer('removeIfIdentity', ok({ Outcome: 'Removed' }));
    // the fixture's checkpoint of ours is `vmplace-7f3a`: the migration of the layer named so
    const layer7f3a = ownFilePath(`${LOCAL}\\web01\\Virtual Hard Disks`, 'web01', '7f3a', {
      what: 'layer',
      disk: 'sda',
      round: 1,
    });
    h.answer('layerLinks', linksAnswer({ [AVHDX]: [layer7f3a] }));
    h.answer('fileInfo', (_s, c) =>
      c.values.p === layer7f3a ? ok(fileInfoOf('a0')) : fixture('file-info-missing.json'),
    );
    await driverOn(h).mergeLayers('web01', 'sda', { top: layer7f3a });
    expect(h.sent.filter((s) => s.kind === 'removeCheckpoint').map((s) => s.values.c)).toEqual([
      'vmplace-7f3a',
    ]);
    expect(h.kinds().filter((k) => k === 'mergeStatus').length).toBeGreaterThanOrEqual(3);
    expect(h.sent.filter((s) => s.kind === 'removeIfIdentity').map((s) => [s.values.p, s.values.i])).toEqual([
      [layer7f3a, '4c1b2a3d-0000-0000-0000-100000000000:a0'],
    ]);
    // never the checkpoint someone else took
    expect(h.sent.filter((s) => s.kind === 'removeCheckpoint').map((s) => s.values.c)).not.toContain(
      'before updates',
    );
  });

  it('a disk on its base, or no longer on `top`: nothing removed', async () => {
    const h: ScriptedHost = hostWith().answer('vmDisks', ok(webDisks(ON_BASES)));
    await driverOn(h).mergeLayers('web01', 'sda', { top: LAYER });
    const h2: ScriptedHost = hostWith()
      .answer('vmDisks', ok(webDisks(ON_LAYERS)))
      .answer('layerLinks', linksAnswer({}));
    await driverOn(h2).mergeLayers('web01', 'sda', { top: LAYER });
    expect([...withoutRunner(h.kinds()), ...withoutRunner(h2.kinds())]).toEqual([
      'vmDisks',
      'vmDisks',
      'layerLinks',
    ]);
  });

  it('a merge an interrupted run started (no checkpoint left, Hyper-V merging) is waited for', async () => {
    let polls = 0;
    const h: ScriptedHost = hostWith()
      .answer('vmDisks', ok(webDisks(ON_LAYERS)))
      .answer('layerLinks', linksAnswer({ [AVHDX]: [LAYER] }))
      .answer('getCheckpoints', ok())
      .answer('mergeStatus', () =>
        ++polls > 2 ? fixture('merge-status-done.json') : fixture('merge-status-merging.json'),
      )
      .answer('fileInfo', fixture('file-info-missing.json'));
    await driverOn(h).mergeLayers('web01', 'sda', { top: LAYER });
    expect(h.kinds()).not.toContain('removeCheckpoint');
    expect(polls).toBe(3);
  });

  it("refuses to merge a running VM's differencing disk that no checkpoint of vmplace holds", async () => {
    const h: ScriptedHost = hostWith()
      .answer('vmDisks', ok(webDisks(ON_LAYERS)))
      .answer('layerLinks', linksAnswer({ [AVHDX]: [LAYER] }))
      .answer('getCheckpoints', ok())
      .answer('mergeStatus', fixture('merge-status-done.json'));
    await expect(driverOn(h).mergeLayers('web01', 'sda', { top: LAYER })).rejects.toMatchObject({
      reason: 'NotSupportedByDriver',
      kind: 'stalled',
    });
  });
});

describe('the other layer operations', () => {
  it('mergeLayerOffline: gone is done; a layer whose parent changed is never merged; else Merge-VHD and the file removed', async () => {
    const gone: ScriptedHost = hostWith().answer('fileInfo', fixture('file-info-missing.json'));
    await driverOn(gone).mergeLayerOffline(LAYER);
    expect(withoutRunner(gone.kinds())).toEqual(['fileInfo']);
    const base = (valid: boolean): ScriptedHost =>
      hostWith()
        .answer('fileInfo', ok(fileInfoOf('a0')))
        .answer('vmFiles', ok())
        .answer('getVhd', fixture('get-vhd-differencing.json'))
        .answer(
          'testVhd',
          valid ? ok({ Path: LAYER, Valid: true, Problems: [] }) : fixture('test-vhd-broken.json'),
        )
        .answer('mergeVhd', fixture('get-vhd-differencing.json'))
        .answer('removeFile', ok({ Removed: true }));
    const broken = base(false);
    await expect(driverOn(broken).mergeLayerOffline(LAYER)).rejects.toMatchObject({
      reason: 'ImageCheckFailed',
    });
    expect(broken.kinds()).not.toContain('mergeVhd');
    const fine = base(true);
    await driverOn(fine).mergeLayerOffline(LAYER);
    expect(withoutRunner(fine.kinds())).toEqual([
      'fileInfo',
      'vmFiles',
      'getVhd',
      'testVhd',
      'mergeVhd',
      'removeFile',
    ]);
    expect(fine.sent.find((s) => s.kind === 'mergeVhd')!.values).toEqual({ p: LAYER, d: BASE });
  });

  it('mergeLayerOffline of a layer a running VM uses: refused', async () => {
    const h: ScriptedHost = hostWith()
      .answer('fileInfo', ok(fileInfoOf('a0')))
      .answer('vmFiles', ok({ Name: 'web01', Id: 'a', State: 'Running', Paths: [AVHDX, BASE] }))
      .answer('layerLinks', linksAnswer({ [AVHDX]: [LAYER] }))
      .answer('vmDisks', ok(webDisks(ON_LAYERS)));
    await expect(driverOn(h).mergeLayerOffline(LAYER)).rejects.toMatchObject({ reason: 'DestinationInUse' });
  });

  it('relinkLayer: Set-VHD -ParentPath only when the layer records another parent, never -IgnoreIdMismatch', async () => {
    const h: ScriptedHost = hostWith()
      .answer('getVhd', fixture('get-vhd-differencing.json'))
      .answer('setVhdParent', fixture('get-vhd-differencing.json'));
    await driverOn(h).relinkLayer(LAYER, BASE, 'vhdx');
    expect(withoutRunner(h.kinds())).toEqual(['getVhd']);
    await driverOn(h).relinkLayer(LAYER, `${CSV}\\web01\\web01.vhdx`, 'vhdx');
    const set = h.sent.find((s) => s.kind === 'setVhdParent')!;
    expect(set.values).toEqual({ p: LAYER, q: `${CSV}\\web01\\web01.vhdx` });
    expect(set.script).not.toContain('-IgnoreIdMismatch');
  });

  it('createLayer replaces a file of its name; checkImage reports what Test-VHD wrote', async () => {
    const h: ScriptedHost = hostWith()
      .answer('removeFile', ok({ Removed: false }))
      .answer('newDifferencingVhd', fixture('get-vhd-differencing.json'))
      .answer('testVhd', fixture('test-vhd-broken.json'));
    const d = driverOn(h);
    await d.createLayer(LAYER, BASE, 'vhdx');
    expect(withoutRunner(h.kinds())).toEqual(['removeFile', 'newDifferencingVhd']);
    expect(await d.checkImage(LAYER, 'avhdx')).toEqual([
      'The chain of virtual hard disks is broken. The system cannot locate the parent virtual hard disk for the differencing disk.',
    ]);
  });
});

// ---------------------------------------------------------------- lifecycle

describe('save, saved state and restore', () => {
  const STATE = ownFilePath(CSV, 'web01', MIG, { what: 'state' });
  const VMRS = `${LOCAL}\\web01\\Virtual Machines\\6F0B2D3E-4A5B-4C6D-8E9F-0A1B2C3D4E5F.vmrs`;
  const VMGS = VMRS.replace(/\.vmrs$/, '.vmgs');
  const stateFiles = (state: string): Record<string, unknown> =>
    ok({
      Name: 'web01',
      Id: '6f0b2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f',
      State: state,
      Files: [
        { Kind: 'vmrs', Path: VMRS, FileIdText: 'File ID is 0x51' },
        { Kind: 'vmgs', Path: VMGS, FileIdText: 'File ID is 0x52' },
      ],
    });
  const sameFiles = (_s: string, c: Sent): Record<string, unknown> =>
    ok(fileInfoOf(c.values.p === STATE || c.values.p === VMRS ? '51' : '52'));

  /** a host that saves web01 and links its state files under the asked names */
  const savedHere = (): ScriptedHost =>
    hostWith()
      .answer('saveVm', fixture('vm-state-saved.json'))
      .answer('stateFiles', stateFiles('Saved'))
      .answer(
        'hardLink',
        ok({ Created: true, LinkIdText: 'File ID is 0x51', TargetIdText: 'File ID is 0x51' }),
      );
  /** get-checkpoints.json's checkpoint of vmplace only (its other one a person took) */
  const OURS = fixtureResult('get-checkpoints.json').slice(1);
  const CK = '3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f';

  it('save: Save-VM, the state and guest state files get the asked names, the configurations are copied beside them', async () => {
    const h: ScriptedHost = savedHere()
      .answer('getCheckpoints', ok(...OURS))
      .answer('copyConfiguration', ok({ From: 'a', To: 'b' }));
    await driverOn(h).save('web01', STATE, { knownActive: true });
    expect(withoutRunner(h.kinds())).toEqual([
      'saveVm',
      'stateFiles',
      'hardLink',
      'hardLink',
      'getCheckpoints',
      'copyConfiguration',
    ]);
    expect(h.sent.filter((s) => s.kind === 'hardLink').map((s) => [s.values.l, s.values.e])).toEqual([
      [STATE, VMRS],
      [stateSidecars(STATE)[0], VMGS],
    ]);
    // the VM's configuration to x.vmcx, vmplace's checkpoint's files under its id
    const copy = h.sent.find((s) => s.kind === 'copyConfiguration')!;
    expect(copy.values).toEqual({
      n: 'web01',
      c: stateSidecars(STATE)[1],
      k0: CK,
      t0: checkpointSidecarStem(STATE, CK),
    });
    // a checkpoint vmplace did not take is never carried along: stopped, nothing copied
    const foreign: ScriptedHost = savedHere().answer('getCheckpoints', fixture('get-checkpoints.json'));
    await expect(driverOn(foreign).save('web01', STATE)).rejects.toMatchObject({
      reason: 'DiskHasBackingChain',
      message: expect.stringContaining('before updates') as unknown,
    });
    expect(foreign.kinds()).not.toContain('copyConfiguration');
    // an asked name that is another file: stopped, never replaced
    const other: ScriptedHost = hostWith()
      .answer('saveVm', fixture('vm-state-saved.json'))
      .answer('stateFiles', stateFiles('Saved'))
      .answer(
        'hardLink',
        ok({ Created: false, LinkIdText: 'File ID is 0x9', TargetIdText: 'File ID is 0x51' }),
      );
    await expect(driverOn(other).save('web01', STATE)).rejects.toMatchObject({ reason: 'FileExists' });
    // a state file on another volume than the VM's configuration: no hard link, stalled (not retried)
    const elsewhere = hostWith()
      .answer('saveVm', fixture('vm-state-saved.json'))
      .answer('stateFiles', stateFiles('Saved'))
      .answer('hardLink', fail('LinkFailed', 'WriteError', 'fsutil hardlink create exited 1'));
    await expect(driverOn(elsewhere).save('web01', STATE)).rejects.toMatchObject({
      reason: 'NotSupportedByDriver',
      kind: 'stalled',
    });
  });

  it('save: many checkpoints (delta rounds) are copied in as few scripts as fit the command line, each once', async () => {
    const ids = Array.from(
      { length: 20 },
      (_, i) => `3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e${String(i).padStart(2, '0')}`,
    );
    const h: ScriptedHost = savedHere()
      .answer(
        'getCheckpoints',
        ok(
          ...ids.map((id, i) => ({
            ...OURS[0],
            Id: id,
            Name: i ? `vmplace-${MIG}-r${i + 1}` : `vmplace-${MIG}`,
          })),
        ),
      )
      .answer('copyConfiguration', ok({ From: 'a', To: 'b' }));
    await driverOn(h).save('web01', STATE);
    const copies = h.sent.filter((s) => s.kind === 'copyConfiguration');
    expect(copies.length).toBeGreaterThan(1);
    expect(copies.length).toBeLessThan(ids.length);
    expect(copies.map((c) => c.values.c)).toEqual([
      stateSidecars(STATE)[1],
      ...copies.slice(1).map(() => undefined),
    ]);
    const sentIds = copies.flatMap((c) =>
      Object.keys(c.values)
        .filter((k) => /^k\d+$/.test(k))
        .map((k) => c.values[k]),
    );
    expect(sentIds).toEqual(ids);
  });

  it("holdsSavedState: saved, and both names the VM's own files", async () => {
    const yes: ScriptedHost = hostWith()
      .answer('stateFiles', stateFiles('Saved'))
      .answer('fileInfo', sameFiles);
    expect(await driverOn(yes).holdsSavedState(STATE, 'web01')).toBe(true);
    const running: ScriptedHost = hostWith()
      .answer('stateFiles', stateFiles('Running'))
      .answer('fileInfo', sameFiles);
    expect(await driverOn(running).holdsSavedState(STATE, 'web01')).toBe(false);
    const lostGuestState: ScriptedHost = hostWith()
      .answer('stateFiles', stateFiles('Saved'))
      .answer('fileInfo', (s, c) =>
        c.values.p === stateSidecars(STATE)[0] ? fixture('file-info-missing.json') : sameFiles(s, c),
      );
    expect(await driverOn(lostGuestState).holdsSavedState(STATE, 'web01')).toBe(false);
    const gone: ScriptedHost = hostWith().answer('stateFiles', fixture('error-vm-not-found.json'));
    expect(await driverOn(gone).holdsSavedState(STATE, 'web01')).toBe(false);
  });

  it('restore: Start-VM of the VM that holds the state; a running one is fine; other disks or another host refused', async () => {
    const saved = (): ScriptedHost =>
      hostWith()
        .answer('vmDisks', ok(webDisks(ON_BASES, { State: 'Saved' })))
        .answer('stateFiles', stateFiles('Saved'))
        .answer('fileInfo', sameFiles)
        .answer('startVm', ok({ Name: 'web01', Id: 'x', State: 'Running', Status: 'Operating normally' }));
    const h = saved();
    await driverOn(h).restore(STATE);
    expect(withoutRunner(h.kinds())).toContain('startVm');
    const running: ScriptedHost = hostWith().answer('vmDisks', ok(webDisks(ON_BASES)));
    await driverOn(running).restore(STATE);
    expect(withoutRunner(running.kinds())).toEqual(['vmDisks']);
    const d = driverOn(saved());
    const def = (await d.getDomain('web01'))!.definition;
    await d.restore(STATE, def);
    await expect(
      driverOn(saved()).restore(
        STATE,
        d.withDiskPaths(def, { sda: { path: `${CSV}\\web01\\web01.sda.overlay.vmplace-${MIG}.avhdx` } }),
      ),
    ).rejects.toMatchObject({
      reason: 'NotSupportedByDriver',
      message: expect.stringContaining('does not change the disks of a saved VM') as unknown,
    });
    // not registered here, and no copy of its configuration beside the state: nothing registered
    const bare = hostWith()
      .answer('vmDisks', ok())
      .answer('filesNamed', ok({ Names: [] }));
    await expect(driverOn(bare).restore(STATE, def)).rejects.toMatchObject({ reason: 'SavedStateMismatch' });
    expect(bare.kinds()).not.toContain('importSavedVm');
    // not registered, and no definition to register it with
    await expect(driverOn(hostWith().answer('vmDisks', ok())).restore(STATE)).rejects.toMatchObject({
      reason: 'NotSupportedByDriver',
    });
    const notOurs: ScriptedHost = hostWith()
      .answer('vmDisks', ok(webDisks(ON_BASES, { State: 'Saved' })))
      .answer('stateFiles', stateFiles('Saved'))
      .answer('fileInfo', (_s, c) => ok(fileInfoOf(c.values.p === STATE ? '77' : '51')));
    await expect(driverOn(notOurs).restore(STATE)).rejects.toMatchObject({ reason: 'SavedStateMismatch' });
    expect(notOurs.kinds()).not.toContain('startVm');
  });

  it('restore on another host: the copied configuration laid out and registered (Compare-VM, drives fixed, Import-VM), then Start-VM', async () => {
    const d0 = driverOn(hostWith().answer('vmDisks', ok(webDisks(ON_BASES, { State: 'Saved' }))));
    const id = definitionData((await d0.getDomain('web01'))!.definition).id;
    const TOP = `${CSV}\\web01.sda.overlay.vmplace-${MIG}.avhdx`;
    const TOP2 = `${CSV}\\web01.sdb.overlay.vmplace-${MIG}.avhdx`;
    const def = d0.withDiskPaths((await d0.getDomain('web01'))!.definition, {
      sda: { path: TOP },
      sdb: { path: TOP2 },
    });
    const stem = `web01.state.vmplace-${MIG}`;
    const ROOT = importRoot(STATE)!;
    const REG_VMRS = `${ROOT}\\Virtual Machines\\${id}.vmrs`;
    let registered = false;
    const target = (answer: 'imported' | 'incompatible'): ScriptedHost =>
      hostWith()
        .answer('vmDisks', () =>
          registered
            ? ok(
                webDisks(
                  [
                    { path: TOP, type: 'Differencing', parent: `${CSV}\\web01.vhdx` },
                    { path: TOP2, type: 'Differencing', parent: `${CSV}\\web01-data.vhdx` },
                  ],
                  { State: 'Saved' },
                ),
              )
            : ok(),
        )
        .answer(
          'filesNamed',
          ok({ Names: [`${stem}.vmrs`, `${stem}.vmgs`, `${stem}.vmcx`, `${stem}.checkpoint-${CK}.vmcx`] }),
        )
        .answer('hardLinks', ok({ Linked: 4 }))
        // the drives on our own names: no hard link of Hyper-V's beside them
        .answer('layerLinks', linksAnswer({}))
        .answer('importSavedVm', () => {
          if (answer === 'incompatible') return fixture('import-saved-vm-incompatible.json');
          registered = true;
          return fixture('import-saved-vm.json');
        })
        .answer('stateFiles', () =>
          ok({
            Name: 'web01',
            Id: id,
            State: 'Saved',
            Files: [{ Kind: 'vmrs', Path: REG_VMRS, FileIdText: 'File ID is 0x61' }],
          }),
        )
        .answer('fileInfo', () => ok(fileInfoOf('61')))
        .answer('startVm', ok({ Name: 'web01', Id: id, State: 'Running', Status: 'Operating normally' }));
    const h = target('imported');
    await driverOn(h).restore(STATE, def);
    expect(withoutRunner(h.kinds())).toEqual([
      'vmDisks',
      'filesNamed',
      'hardLinks',
      'importSavedVm',
      'vmDisks',
      'layerLinks',
      'stateFiles',
      'fileInfo',
      'fileInfo',
      'startVm',
    ]);
    const imp = h.sent.find((s) => s.kind === 'importSavedVm')!;
    const ln = h.sent.find((s) => s.kind === 'hardLinks')!;
    // the configuration under Hyper-V's names, hard links to the verified copies
    expect(imp.values.c).toBe(`${ROOT}\\Virtual Machines\\${id}.vmcx`);
    const links = Object.keys(ln.values)
      .filter((k) => /^f\d+$/.test(k))
      .map((k) => [ln.values[k], ln.values[`l${k.slice(1)}`]]);
    expect(links).toEqual([
      [STATE, REG_VMRS],
      [`${CSV}\\${stem}.checkpoint-${CK}.vmcx`, `${ROOT}\\Snapshots\\${CK}.vmcx`],
      [`${CSV}\\${stem}.vmcx`, `${ROOT}\\Virtual Machines\\${id}.vmcx`],
      [`${CSV}\\${stem}.vmgs`, `${ROOT}\\Virtual Machines\\${id}.vmgs`],
    ]);
    // each drive at its controller place, pointed at the copy on this host
    expect([imp.values.y0, imp.values.p0, imp.values.y1, imp.values.p1]).toEqual(['SCSI', TOP, 'SCSI', TOP2]);
    expect(imp.script).toContain('N=0;L=0;P=$p0');
    expect(imp.script).toContain('N=0;L=1;P=$p1');
    // a target that lacks what the VM needs (a virtual switch): nothing registered, not started, named
    registered = false;
    const no = target('incompatible');
    await expect(driverOn(no).restore(STATE, def)).rejects.toMatchObject({
      reason: 'ImportIncompatible',
      kind: 'stalled',
      message: expect.stringContaining("Could not find Ethernet switch 'Production'. (33012)") as unknown,
    });
    expect(no.kinds()).not.toContain('startVm');
    // a name under the import folder that is another file (not the copy): nothing registered
    registered = false;
    const planted = target('imported').answer(
      'hardLinks',
      fail('FileExists', 'ResourceExists', 'the name is another file'),
    );
    await expect(driverOn(planted).restore(STATE, def)).rejects.toMatchObject({
      reason: 'FileExists',
      kind: 'stalled',
    });
    expect(planted.kinds()).not.toContain('importSavedVm');
  });

  it('savedDefinition: the definition of the VM the state file names, where it holds that state', async () => {
    const h: ScriptedHost = hostWith()
      .answer('vmDisks', ok(webDisks(ON_BASES, { State: 'Saved' })))
      .answer('stateFiles', stateFiles('Saved'))
      .answer('fileInfo', sameFiles);
    expect(definitionData(await driverOn(h).savedDefinition(STATE)).name).toBe('web01');
    await expect(driverOn(hostWith()).savedDefinition(`${CSV}\\whatever.vmrs`)).rejects.toMatchObject({
      reason: 'NotSupportedByDriver',
    });
  });
});

describe('definitions', () => {
  it('withDiskPaths is pure and keeps the controller places; a target the VM has not is refused', async () => {
    const d = driverOn(hostWith().answer('vmDisks', ok(webDisks(ON_BASES))));
    const def = (await d.getDomain('web01'))!.definition;
    const moved = d.withDiskPaths(def, {
      sda: { path: `${CSV}\\web01\\web01.vhdx`, format: 'vhdx' },
      sdb: { path: LAYER },
    });
    expect(d.diskPathsOf(moved)).toEqual({ sda: `${CSV}\\web01\\web01.vhdx`, sdb: LAYER });
    expect(definitionData(moved).disks.map((x) => [x.target, x.controllerLocation, x.format])).toEqual([
      ['sda', 0, 'vhdx'],
      ['sdb', 1, 'avhdx'],
    ]);
    expect(d.diskPathsOf(def)).toEqual({ sda: BASE, sdb: DATA });
    expect(() => d.withDiskPaths(def, { sdc: { path: LAYER } })).toThrow(StalledError);
  });

  it('define: Set-VMHardDiskDrive for the drives whose file differs, only while off; nothing when they are named', async () => {
    const off = (): ScriptedHost =>
      hostWith()
        .answer('vmDisks', ok(webDisks(ON_BASES, { State: 'Off' })))
        .answer('setDrivePath', ok({ Name: 'web01', Id: 'x', State: 'Off', Status: 'Operating normally' }));
    const h = off();
    const d = driverOn(h);
    const def = (await d.getDomain('web01'))!.definition;
    await d.define(def);
    expect(h.kinds()).not.toContain('setDrivePath');
    await d.define(d.withDiskPaths(def, { sda: { path: `${CSV}\\web01\\web01.vhdx`, format: 'vhdx' } }));
    expect(h.sent.filter((s) => s.kind === 'setDrivePath').map((s) => s.values)).toEqual([
      { n: 'web01', t: 'SCSI', c: '0', l: '0', p: `${CSV}\\web01\\web01.vhdx` },
    ]);
    for (const state of ['Running', 'Saved']) {
      const x: ScriptedHost = hostWith().answer('vmDisks', ok(webDisks(ON_BASES, { State: state })));
      await expect(
        driverOn(x).define(
          d.withDiskPaths(def, { sda: { path: `${CSV}\\web01\\web01.vhdx`, format: 'vhdx' } }),
        ),
      ).rejects.toMatchObject({ reason: 'DomainStateUnsupported' });
    }
    await expect(driverOn(hostWith().answer('vmDisks', ok())).define(def)).rejects.toMatchObject({
      reason: 'NotSupportedByDriver',
    });
    const twin: ScriptedHost = hostWith().answer(
      'vmDisks',
      ok(webDisks(ON_BASES, { Id: '00000000-0000-4000-8000-000000000000' })),
    );
    await expect(driverOn(twin).define(def)).rejects.toMatchObject({ reason: 'DomainExistsOnTarget' });
  });

  it('definition: one configuration; undefine: Remove-VM, none there is fine', async () => {
    const h: ScriptedHost = hostWith()
      .answer('vmDisks', ok(webDisks(ON_BASES)))
      .answer('removeVm', ok({ Removed: false }));
    const d = driverOn(h);
    expect(await d.definition('web01', { inactive: true })).toEqual(await d.definition('web01'));
    await d.undefine('web01');
    await expect(driverOn(hostWith().answer('vmDisks', ok())).definition('web01')).rejects.toMatchObject({
      reason: 'DomainNotFound',
    });
  });
});

describe('the lifecycle cmdlets', () => {
  const state = (s: string): Record<string, unknown> =>
    ok({ Name: 'web01', Id: 'x', State: s, Status: 'Operating normally' });

  it('start, pause, resume, destroy, setAutostart send their cmdlet; each script looks at the state first', async () => {
    const h: ScriptedHost = hostWith()
      .answer('startVm', state('Running'))
      .answer('suspendVm', state('Paused'))
      .answer('resumeVm', state('Running'))
      .answer('stopVm', state('Off'))
      .answer('setStartAction', state('Running'));
    const d = driverOn(h);
    await d.start('web01');
    await d.pause('web01');
    await d.resume('web01');
    await d.destroy('web01');
    await d.setAutostart('web01', true);
    await d.setAutostart('web01', false);
    expect(h.kinds()).toEqual([
      'startVm',
      'suspendVm',
      'resumeVm',
      'stopVm',
      'setStartAction',
      'setStartAction',
    ]);
    expect(h.sent[3]!.script).toContain('Stop-VM -VM $v -TurnOff');
    expect(h.sent[4]!.script).toContain('-AutomaticStartAction Start ');
    expect(h.sent[5]!.script).toContain('-AutomaticStartAction Nothing ');
    for (const s of h.sent.slice(0, 4)) expect(s.script).toMatch(/if\(.*\[string\]\$v\.State/);
    await expect(
      driverOn(hostWith().answer('suspendVm', state('Running'))).pause('web01'),
    ).rejects.toMatchObject({ reason: 'SuspendFailed' });
  });

  it('guestRunTime: Uptime ticks of an active VM; waitForSaveJob and waitForMigrationJob poll while Hyper-V works', async () => {
    const h: ScriptedHost = hostWith().answer(
      'vmUptime',
      ok({ Name: 'web01', State: 'Running', UptimeTicks: '36000000000' }),
    );
    expect(await driverOn(h).guestRunTime('web01')).toBe('36000000000');
    const off: ScriptedHost = hostWith().answer(
      'vmUptime',
      ok({ Name: 'web01', State: 'Off', UptimeTicks: '0' }),
    );
    expect(await driverOn(off).guestRunTime('web01')).toBeUndefined();
    let n = 0;
    const saving: ScriptedHost = hostWith().answer('vmState', () =>
      ok({ Name: 'web01', Id: 'x', State: ++n < 3 ? 'Saving' : 'Saved' }),
    );
    expect(await driverOn(saving).waitForSaveJob('web01')).toBe(true);
    expect(await driverOn(hostWith().answer('vmState', state('Running'))).waitForSaveJob('web01')).toBe(
      false,
    );
    let m = 0;
    const migrating: ScriptedHost = hostWith().answer('getVm', () => {
      const vm = {
        ...fixtureResult('get-vm.json')[0]!,
        OperationalStatus: ++m < 3 ? ['Ok', 'MigratingVirtualMachine'] : ['Ok'],
      };
      return ok(vm);
    });
    expect(await driverOn(migrating).waitForMigrationJob('web01')).toBe(true);
    await driverOn(migrating).abortJobs('web01');
  });
});

// ---------------------------------------------------------------- fast paths

describe('moveDiskLive: Move-VMStorage -VHDs', () => {
  const DEST = `${CSV}\\web01\\web01.vhdx`;
  const claim = (owned: string[] = []): CopyClaim & { log: string[] } => {
    const log: string[] = [];
    return {
      log,
      intend: async () => {
        log.push('intend');
      },
      record: async (id) => {
        log.push(`record ${id}`);
      },
      owns: (id) => owned.includes(id),
    };
  };

  it("moves, then records the new file's identity in the claim", async () => {
    const h: ScriptedHost = hostWith()
      .answer('getVm', fixture('get-vm.json'))
      .answer('vmDisks', () =>
        ok(webDisks(h.kinds().includes('moveVmVhd') ? [{ path: DEST }, { path: DATA }] : ON_BASES)),
      )
      .answer('fileInfo', () =>
        h.kinds().includes('moveVmVhd') ? ok(fileInfoOf('d1')) : fixture('file-info-missing.json'),
      )
      .answer('moveVmVhd', fixture('get-vm.json'));
    const c = claim();
    await driverOn(h).moveDiskLive('web01', 'sda', DEST, 'vhdx', { claim: c });
    expect(h.sent.find((s) => s.kind === 'moveVmVhd')!.values).toEqual({ n: 'web01', s: BASE, d: DEST });
    expect(h.sent.find((s) => s.kind === 'moveVmVhd')!.opts?.timeoutMs).toBeUndefined();
    expect(c.log).toEqual(['intend', 'record 4c1b2a3d-0000-0000-0000-100000000000:d1']);
  });

  it('already on the destination: nothing moved; a file there the claim does not own: refused', async () => {
    const h: ScriptedHost = hostWith()
      .answer('getVm', fixture('get-vm.json'))
      .answer('vmDisks', ok(webDisks([{ path: DEST }, { path: DATA }])));
    await driverOn(h).moveDiskLive('web01', 'sda', DEST, 'vhdx');
    expect(h.kinds()).not.toContain('moveVmVhd');
    const taken: ScriptedHost = hostWith()
      .answer('getVm', fixture('get-vm.json'))
      .answer('vmDisks', ok(webDisks(ON_BASES)))
      .answer('fileInfo', ok(fileInfoOf('d9')));
    await expect(
      driverOn(taken).moveDiskLive('web01', 'sda', DEST, 'vhdx', { claim: claim() }),
    ).rejects.toMatchObject({ reason: 'DestinationExists' });
    expect(taken.kinds()).not.toContain('moveVmVhd');
  });

  it("aborted: waits for Hyper-V's job, then Cancelled unless the disk had switched", async () => {
    const ac = new AbortController();
    const h: ScriptedHost = hostWith()
      .answer('getVm', fixture('get-vm.json'))
      .answer('vmDisks', ok(webDisks(ON_BASES)))
      .answer('fileInfo', fixture('file-info-missing.json'))
      .answer('moveVmVhd', () => {
        ac.abort();
        return new CommandError('CommandAborted', ['ssh:vmplace@hv1'], null, 'aborted');
      });
    await expect(
      driverOn(h).moveDiskLive('web01', 'sda', DEST, 'vhdx', { signal: ac.signal }),
    ).rejects.toMatchObject({ reason: 'Cancelled' });
    expect(h.kinds().filter((k) => k === 'getVm').length).toBeGreaterThanOrEqual(2);
  });
});

describe('migrateLive: Move-VM -IncludeStorage; the capabilities it lacks', () => {
  const target = (h: ScriptedHost): HyperVDriver =>
    new HyperVDriver(
      'hv2',
      { ...SPEC, ssh: { host: 'hv2' } },
      { allowedRoots: [LOCAL, 'E:\\Data'], runner: h, pollMs: 0, sleep: async () => {} },
    );

  it("one folder, the files' own names: Move-VM to the target's address; already there is done", async () => {
    const src: ScriptedHost = hostWith()
      .answer('vmDisks', ok(webDisks(ON_BASES)))
      .answer('moveVm', ok({ Name: 'web01', Id: 'x', DestinationHost: '10.0.20.12' }));
    const there = [{ path: `${LOCAL}\\web01\\web01.vhdx` }, { path: `${LOCAL}\\web01\\web01-data.vhdx` }];
    const dst: ScriptedHost = hostWith().answer('vmDisks', () =>
      ok(...(src.kinds().includes('moveVm') ? [webDisks(there)] : [])),
    );
    const disks = there.map((t, i) => ({
      target: i ? 'sdb' : 'sda',
      path: t.path,
      format: 'vhdx',
      virtualBytes: 1,
    }));
    expect(await driverOn(src).migrateLive('web01', target(dst), { disks, address: '10.0.20.12' })).toEqual(
      {},
    );
    expect(src.sent.find((s) => s.kind === 'moveVm')!.values).toEqual({
      n: 'web01',
      h: '10.0.20.12',
      d: `${LOCAL}\\web01`,
    });
    const again: ScriptedHost = hostWith();
    expect(await driverOn(again).migrateLive('web01', target(dst), { disks, address: '10.0.20.12' })).toEqual(
      {},
    );
    expect(withoutRunner(again.kinds())).toEqual([]);
  });

  it('disks planned in two folders or under other names: refused before anything moves', async () => {
    const src: ScriptedHost = hostWith().answer('vmDisks', ok(webDisks(ON_BASES)));
    const dst: ScriptedHost = hostWith().answer('vmDisks', ok());
    const disks = [
      { target: 'sda', path: `${LOCAL}\\web01\\web01.vhdx`, format: 'vhdx', virtualBytes: 1 },
      { target: 'sdb', path: `E:\\Data\\web01\\sdb-web01-data.vhdx`, format: 'vhdx', virtualBytes: 1 },
    ];
    await expect(
      driverOn(src).migrateLive('web01', target(dst), { disks, address: 'x' }),
    ).rejects.toMatchObject({ reason: 'NotSupportedByDriver' });
    expect(src.kinds()).not.toContain('moveVm');
    const libvirtLike = { hostName: 'kvm1' } as unknown as HypervisorDriver;
    await expect(
      driverOn(src).migrateLive('web01', libvirtLike, { disks, address: 'x' }),
    ).rejects.toMatchObject({ reason: 'DriverMismatch' });
  });

  it('migratePaused and migrateOntoLayers: not offered (capabilities false)', async () => {
    const d = driverOn(hostWith());
    expect(d.capabilities).toEqual({
      family: 'hyperv',
      liveStorageMove: true,
      liveMigration: true,
      stateOnSharedStorage: false,
      pausedMigration: false,
      liveOntoLayers: false,
      quickStorageMigration: true,
      quickWithinHost: false,
      defineOnOtherHost: false,
    });
    await expect(d.migratePaused('web01', d, { disks: [], address: 'x' })).rejects.toMatchObject({
      reason: 'NotSupportedByDriver',
    });
    await expect(d.migrateOntoLayers('web01', d, { disks: [], address: 'x' })).rejects.toMatchObject({
      reason: 'NotSupportedByDriver',
    });
  });
});

// ---------------------------------------------------------------- every script sent

describe('every script the driver sent', () => {
  const HOSTILE_VM = "web'; Stop-Computer; ’$(Remove-Item C:\\ -Recurse)‘";
  const HOSTILE_DIR = `${LOCAL}\\it's $(Stop-Computer) ‘x’ & a;b`;

  it('the driver, driven with a hostile VM name and path, sends them only as literals', async () => {
    const h: ScriptedHost = hostWith()
      .answer('vmDisks', ok())
      .answer('vmState', ok())
      .answer('fileInfo', fixture('file-info-missing.json'))
      .answer('removeFile', ok({ Removed: false }))
      .answer('newDirectory', ok({ Path: HOSTILE_DIR, Created: true }))
      .answer('startVm', ok({ Name: HOSTILE_VM, Id: 'x', State: 'Running' }))
      .answer('fileHash', fixture('file-hash.json'))
      .answer('vmUptime', ok({ Name: HOSTILE_VM, State: 'Running', UptimeTicks: '1' }))
      .answer('removeVm', ok({ Removed: false }));
    const d = driverOn(h);
    await d.getDomain(HOSTILE_VM);
    await d.domainState(HOSTILE_VM);
    await d.makeDir(HOSTILE_DIR);
    await d.removeFile(`${HOSTILE_DIR}\\${HOSTILE_VM.replace(/[:\\]/g, '')}.vhdx`);
    await d.start(HOSTILE_VM);
    await d.checksum(`${HOSTILE_DIR}\\x.vhdx`);
    await d.guestRunTime(HOSTILE_VM);
    await d.undefine(HOSTILE_VM);
    for (const s of h.sent) {
      const literals = await withTree(s.script, (t) => ({
        problems: parseProblems(t.rootNode),
        texts: verbatimLiterals(t.rootNode).map((n) => n.text),
      }));
      expect(literals.problems).toEqual([]);
      // what is left once every single-quoted literal is cut out holds no piece of a value
      let rest = s.script;
      for (const v of Object.values(s.values)) rest = rest.split(psQuote(v)).join("''");
      for (const piece of ['Stop-Computer', 'Remove-Item C:\\', "it's", '‘x’', 'a;b'])
        expect(rest).not.toContain(piece);
      for (const v of Object.values(s.values)) expect(s.script).toContain(psQuote(v));
    }
    expect(new Set(h.kinds())).toEqual(
      new Set([
        'hostInfo',
        'vmDisks',
        'vmState',
        'pathAttributes',
        'newDirectory',
        'removeFile',
        'startVm',
        'fileHash',
        'vmUptime',
        'removeVm',
      ]),
    );
  });

  it('every script sent in this file parses with the PowerShell grammar, with no error or missing node', async () => {
    expect(ALL_SENT.length).toBeGreaterThan(100);
    const kinds = new Set<string>();
    for (const s of ALL_SENT) {
      kinds.add(s.kind);
      const problems = await withTree(s.script, (t) => parseProblems(t.rootNode));
      if (problems.length) throw new Error(`${s.kind}: ${problems.join('; ')}`);
    }
    // every script of scripts.ts the driver uses was sent at least once here
    for (const k of [
      'vmDisks',
      'layerLinks',
      'vmFiles',
      'pathAttributes',
      'createNewFile',
      'removeIfIdentity',
      'hardLink',
      'stateFiles',
      'moveVmVhd',
      'setDrivePath',
      'setStartAction',
      'vmUptime',
      'fileHeader',
      'checkpointVm',
      'getCheckpoints',
      'removeCheckpoint',
      'mergeStatus',
      'getVhdChain',
      'getVhd',
      'testVhd',
      'mergeVhd',
      'setVhdParent',
      'newDifferencingVhd',
      'fileHash',
      'fileInfo',
      'removeFile',
      'newDirectory',
      'removeDirIfEmpty',
      'volumeInfo',
      'hostInfo',
      'vmHostStorage',
      'saveVm',
      'startVm',
      'stopVm',
      'suspendVm',
      'resumeVm',
      'removeVm',
      'moveVm',
      'listVms',
      'getVm',
      'vmState',
    ])
      expect([...kinds]).toContain(k);
  });
});

describe('construction', () => {
  it('refuses a host that is not hyperv, a bad storage path, a host without ssh', () => {
    expect(() => new HyperVDriver('x', { ...SPEC, driver: 'libvirt' }, { allowedRoots: [] })).toThrow(
      TypeError,
    );
    expect(
      () => new HyperVDriver('x', SPEC, { allowedRoots: ['D:\\VMs\\..\\x'], runner: new ScriptedHost() }),
    ).toThrow(TypeError);
    const noSsh: HostSpec = { driver: 'hyperv', uri: 'ssh://hv1' };
    expect(() => new HyperVDriver('x', noSsh, { allowedRoots: [] })).toThrow(
      expect.objectContaining({ reason: 'UnsafeHostUri' }),
    );
  });

  it('by default an SshExec with the ssh options of every vmplace host: host key checked', async () => {
    const d = new HyperVDriver(
      'hv1',
      {
        ...SPEC,
        ssh: { host: 'hv1.example', user: 'vmplace', port: 2222, knownHostsFile: '/etc/vmplace/known_hosts' },
      },
      { allowedRoots: [LOCAL] },
    );
    expect(d.raw.label).toBe('vmplace@hv1.example:2222');
    await d.close();
  });

  it('a definition of another family is refused', () => {
    const d = driverOn(hostWith());
    expect(() => d.diskPathsOf({ driver: 'libvirt', data: '<domain/>' })).toThrow(
      expect.objectContaining({ reason: 'DriverMismatch' }),
    );
    expect(() => d.diskPathsOf({ driver: 'hyperv', data: '{"kind":"other"}' })).toThrow(VmplaceError);
  });
});
