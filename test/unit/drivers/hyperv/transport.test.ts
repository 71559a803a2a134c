/**
 * Copies on and between Hyper-V hosts (src/drivers/hyperv/transport.ts) up to the PowerShell
 * boundary, with two scripted hosts; and the factory's choice of driver and transport.
 */
import pino from 'pino';

import { createDrivers, windowsTargetSshOf } from '../../../../src/drivers/factory';
import { HyperVDriver } from '../../../../src/drivers/hyperv/driver';
import { checkpointSidecarStem, ownFilePath, stateSidecars } from '../../../../src/drivers/hyperv/names';
import { LibvirtDriver } from '../../../../src/drivers/libvirt/driver';
import type { CopyClaim } from '../../../../src/transfer/copy-local';
import {
  sftpPathOf,
  windowsLocalTransport,
  windowsSshTransport,
} from '../../../../src/drivers/hyperv/transport';
import type { DesiredState, HostSpec } from '../../../../src/types';
import { parseProblems, powershellParser, withTree } from './ps-grammar';
import { fixture } from './fake-raw';
import { ok, ScriptedHost, type Sent } from './scripted-host';

const SPEC: HostSpec = { driver: 'hyperv', uri: 'ssh://vmplace@hv', ssh: { host: 'hv', user: 'vmplace' } };
const SRC = 'D:\\VMs\\web01\\web01.vhdx';
const DST = 'E:\\VMs\\web01\\web01.vhdx';
const PART = `${DST}.vmplace-part`;
const HASH = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

const info = (id: string, length = '1048576'): Record<string, unknown> =>
  ok({
    Exists: true,
    IsDirectory: false,
    Length: length,
    Attributes: 'Archive',
    VolumeId: '\\\\?\\Volume{4c1b2a3d-0000-0000-0000-100000000000}\\',
    FileIdText: `File ID is 0x${id}`,
  });
const missing = fixture('file-info-missing.json');

function hvHost(label: string, files: Record<string, string>): ScriptedHost {
  return (
    new ScriptedHost(label)
      .answer('pathAttributes', (_s, c) =>
        Object.values(c.values).map((p) => ({ Path: p, Exists: false, Attributes: null })),
      )
      .answer('fileInfo', (_s, c) => (c.values.p! in files ? info(files[c.values.p!]!) : missing))
      // the files of a folder beginning with a name: those of `files` there
      .answer('filesNamed', (_s, c) =>
        ok({
          Names: Object.keys(files)
            .filter((p) => p.slice(0, p.lastIndexOf('\\')) === c.values.d)
            .map((p) => p.slice(p.lastIndexOf('\\') + 1))
            .filter((n) => n.toLowerCase().startsWith(c.values.s!.toLowerCase())),
        }),
      )
      .answer('fileHash', fixture('file-hash.json'))
      .answer('removeFile', ok({ Removed: true }))
      .answer('finishCopy', (_s, c) => ok({ Hash: c.values.x, Moved: true }))
  );
}

const driver = (name: string, h: ScriptedHost, roots: string[]): HyperVDriver =>
  new HyperVDriver(name, SPEC, { allowedRoots: roots, runner: h, pollMs: 0, sleep: async () => {} });

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

const sent: Sent[] = [];
afterAll(async () => {
  await powershellParser();
  for (const s of sent) expect(await withTree(s.script, (t) => parseProblems(t.rootNode))).toEqual([]);
});

describe('between two Hyper-V hosts: scp.exe -s from the source host, verified, renamed into place', () => {
  it("copies into a claimed part with the source's scp, to the target's sshd, then flushes, hashes and renames on the target", async () => {
    const src = hvHost('hv1', { [SRC]: 'a1' }).answer('scpToHost', ok({ Copied: true }));
    const dst = hvHost('hv2', {}).answer('createNewFile', info('b1', '0'));
    const t = windowsSshTransport(driver('hv1', src, ['D:\\VMs']), driver('hv2', dst, ['E:\\VMs']), {
      host: '10.0.20.12',
      user: 'vmplace',
      port: 22,
    });
    const c = claim();
    const progress: [number, number][] = [];
    const r = await t.copy(SRC, DST, {
      claim: c,
      bwlimitKiBps: 1000,
      onProgress: (a, b) => progress.push([a, b]),
    });
    expect(r).toEqual({ mode: 'direct', sha256: HASH });
    expect(c.log).toEqual(['intend', 'record 4c1b2a3d-0000-0000-0000-100000000000:b1']);
    const scp = src.sent.find((s) => s.kind === 'scpToHost')!;
    expect(scp.values).toEqual({
      s: SRC,
      u: 'vmplace',
      h: '10.0.20.12',
      t: '22',
      r: '/E:/VMs/web01/web01.vhdx.vmplace-part',
      k: '8000',
    });
    for (const o of [
      "'-s'",
      "'BatchMode=yes'",
      "'StrictHostKeyChecking=yes'",
      "'IdentityAgent=none'",
      "'ForwardAgent=no'",
    ])
      expect(scp.script).toContain(o);
    expect(scp.opts?.timeoutMs).toBeUndefined();
    expect(dst.sent.find((s) => s.kind === 'createNewFile')!.values).toEqual({ p: PART });
    expect(dst.sent.find((s) => s.kind === 'finishCopy')!.values).toEqual({ p: PART, d: DST, x: HASH });
    // the part is claimed before the bytes go, the rename comes after them
    expect(dst.kinds().indexOf('createNewFile')).toBeLessThan(dst.kinds().indexOf('finishCopy'));
    expect(progress.at(-1)).toEqual([1048576, 1048576]);
    sent.push(...src.sent, ...dst.sent);
  });

  it('a destination that already matches is done; one that differs is never overwritten', async () => {
    const src = hvHost('hv1', { [SRC]: 'a1' });
    const same = hvHost('hv2', { [DST]: 'b1' });
    const t = windowsSshTransport(driver('hv1', src, ['D:\\VMs']), driver('hv2', same, ['E:\\VMs']), {
      host: 'x',
      user: '',
      port: 22,
    });
    expect(await t.copy(SRC, DST)).toEqual({ mode: 'direct', sha256: HASH });
    expect(src.kinds()).not.toContain('scpToHost');
    const differs = hvHost('hv2', { [DST]: 'b1' }).answer(
      'fileHash',
      ok({ Path: DST, Algorithm: 'SHA256', Hash: 'A'.repeat(64) }),
    );
    const t2 = windowsSshTransport(driver('hv1', src, ['D:\\VMs']), driver('hv2', differs, ['E:\\VMs']), {
      host: 'x',
      user: '',
      port: 22,
    });
    await expect(t2.copy(SRC, DST)).rejects.toMatchObject({ reason: 'DestinationDiffers' });
    const notClaimed = hvHost('hv2', { [DST]: 'b1' });
    const t3 = windowsSshTransport(driver('hv1', src, ['D:\\VMs']), driver('hv2', notClaimed, ['E:\\VMs']), {
      host: 'x',
      user: '',
      port: 22,
    });
    await expect(t3.copy(SRC, DST, { claim: claim() })).rejects.toMatchObject({
      reason: 'DestinationExists',
    });
  });

  it('a part it does not own stops the copy; without a claim a part is ours by its name and goes', async () => {
    const src = hvHost('hv1', { [SRC]: 'a1' }).answer('scpToHost', ok({ Copied: true }));
    const dst = hvHost('hv2', { [PART]: 'b9' });
    const t = windowsSshTransport(driver('hv1', src, ['D:\\VMs']), driver('hv2', dst, ['E:\\VMs']), {
      host: 'x',
      user: '',
      port: 22,
    });
    await expect(t.copy(SRC, DST, { claim: claim() })).rejects.toMatchObject({ reason: 'PartFileNotOwned' });
    expect(src.kinds()).not.toContain('scpToHost');
    await t.copy(SRC, DST);
    expect(dst.sent.filter((s) => s.kind === 'removeFile').map((s) => s.values.p)).toEqual([PART]);
    sent.push(...src.sent, ...dst.sent);
  });

  it('a part whose hash differs is not renamed: CopyVerifyFailed', async () => {
    const src = hvHost('hv1', { [SRC]: 'a1' }).answer('scpToHost', ok({ Copied: true }));
    const dst = hvHost('hv2', {}).answer('finishCopy', ok({ Hash: 'f'.repeat(64), Moved: false }));
    const t = windowsSshTransport(driver('hv1', src, ['D:\\VMs']), driver('hv2', dst, ['E:\\VMs']), {
      host: 'x',
      user: '',
      port: 22,
    });
    await expect(t.copy(SRC, DST)).rejects.toMatchObject({ reason: 'CopyVerifyFailed' });
  });

  it('a saved state goes with its guest state, configuration and checkpoint configurations, all before it', async () => {
    const state = ownFilePath('D:\\VMs', 'web01', 'm1', { what: 'state' });
    const to = ownFilePath('E:\\VMs', 'web01', 'm1', { what: 'state' });
    const ck = checkpointSidecarStem(state, '1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f')!;
    const src = hvHost('hv1', {
      [state]: 'a1',
      [stateSidecars(state)[0]!]: 'a2',
      [stateSidecars(state)[1]!]: 'a3',
      [`${ck}.vmcx`]: 'a4',
      [`${ck}.vmrs`]: 'a5',
      // not the state's: another migration's, and a part file
      [ownFilePath('D:\\VMs', 'web01', 'm2', { what: 'state' }).replace(/vmrs$/, 'vmcx')]: 'a6',
      [`${stateSidecars(state)[1]!}.vmplace-part`]: 'a7',
    }).answer('scpToHost', ok({ Copied: true }));
    const dst = hvHost('hv2', {});
    const t = windowsSshTransport(driver('hv1', src, ['D:\\VMs']), driver('hv2', dst, ['E:\\VMs']), {
      host: 'x',
      user: '',
      port: 22,
    });
    await t.copy(state, to);
    const toCk = checkpointSidecarStem(to, '1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f')!;
    expect(src.sent.filter((s) => s.kind === 'scpToHost').map((s) => s.values.s)).toEqual([
      `${ck}.vmcx`,
      `${ck}.vmrs`,
      stateSidecars(state)[1],
      stateSidecars(state)[0],
      state,
    ]);
    expect(dst.sent.filter((s) => s.kind === 'finishCopy').map((s) => s.values.d)).toEqual([
      `${toCk}.vmcx`,
      `${toCk}.vmrs`,
      stateSidecars(to)[1],
      stateSidecars(to)[0],
      to,
    ]);
  });

  it('no relay between Hyper-V hosts; reachability is a TCP probe from the source; the target path is guarded', async () => {
    const src = hvHost('hv1', { [SRC]: 'a1' }).answer('tcpReachable', ok({ Reachable: false }));
    const dst = hvHost('hv2', {});
    const t = windowsSshTransport(driver('hv1', src, ['D:\\VMs']), driver('hv2', dst, ['E:\\VMs']), {
      host: '10.0.20.12',
      user: '',
      port: 2222,
    });
    expect(await t.reachable()).toBe(false);
    expect(src.sent.find((s) => s.kind === 'tcpReachable')!.values).toEqual({ h: '10.0.20.12', t: '2222' });
    await expect(t.copy(SRC, DST, { mode: 'relay' })).rejects.toMatchObject({ reason: 'TargetUnreachable' });
    await expect(t.copy(SRC, 'F:\\elsewhere\\x.vhdx')).rejects.toMatchObject({
      reason: 'PathOutsideStorage',
    });
    expect(() => sftpPathOf('\\\\fs\\share\\x')).toThrow(
      expect.objectContaining({ reason: 'NotSupportedByDriver' }),
    );
    expect(sftpPathOf("D:\\My VMs\\it's & 100%\\x.vhdx")).toBe("/D:/My VMs/it's & 100%/x.vhdx");
  });

  it('a source still being written (sourceReady): nothing is sent to either host before it ends; a failed one fails the copy', async () => {
    const src = hvHost('hv1', { [SRC]: 'a1' }).answer('scpToHost', ok({ Copied: true }));
    const dst = hvHost('hv2', {});
    const t = windowsSshTransport(driver('hv1', src, ['D:\\VMs']), driver('hv2', dst, ['E:\\VMs']), {
      host: 'x',
      user: '',
      port: 22,
    });
    let ready!: () => void;
    const copying = t.copy(SRC, DST, { sourceReady: new Promise<void>((r) => (ready = r)) });
    await new Promise((r) => setTimeout(r, 20));
    expect([...src.sent, ...dst.sent]).toEqual([]);
    ready();
    expect(await copying).toEqual({ mode: 'direct', sha256: HASH });
    expect(src.kinds()).toContain('scpToHost');
    const src2 = hvHost('hv1', { [SRC]: 'a1' });
    const dst2 = hvHost('hv2', {});
    const t2 = windowsSshTransport(driver('hv1', src2, ['D:\\VMs']), driver('hv2', dst2, ['E:\\VMs']), {
      host: 'x',
      user: '',
      port: 22,
    });
    await expect(
      t2.copy(SRC, DST, { sourceReady: Promise.reject(new Error('save failed')) }),
    ).rejects.toThrow('save failed');
    expect([...src2.sent, ...dst2.sent]).toEqual([]);
  });

  it('the fence is awaited before every command', async () => {
    const src = hvHost('hv1', { [SRC]: 'a1' }).answer('scpToHost', ok({ Copied: true }));
    const dst = hvHost('hv2', {});
    let fenced = 0;
    const t = windowsSshTransport(driver('hv1', src, ['D:\\VMs']), driver('hv2', dst, ['E:\\VMs']), {
      host: 'x',
      user: '',
      port: 22,
    });
    await t.copy(SRC, DST, { fence: async () => void fenced++ });
    expect(fenced).toBeGreaterThanOrEqual(5);
    await expect(
      t.copy(SRC, `${DST}2`, {
        fence: () => Promise.reject(new Error('lock lost')),
      }),
    ).rejects.toThrow('lock lost');
  });
});

describe('on one Hyper-V host: a .NET stream copy into the part, verified, renamed', () => {
  it('copies, hashes and renames, on the one host', async () => {
    const h = hvHost('hv1', { [SRC]: 'a1' }).answer('copyIntoPart', ok({ Length: '1048576' }));
    const d = driver('hv1', h, ['D:\\VMs', 'E:\\VMs']);
    expect(await windowsLocalTransport(d).copy(SRC, DST)).toEqual({ mode: 'local', sha256: HASH });
    expect(h.sent.find((s) => s.kind === 'copyIntoPart')!.values).toEqual({ s: SRC, d: PART });
    expect(h.sent.find((s) => s.kind === 'finishCopy')!.values).toEqual({ p: PART, d: DST, x: HASH });
    sent.push(...h.sent);
  });
});

describe('the factory', () => {
  const desired = (hosts: Record<string, HostSpec>): DesiredState =>
    ({
      hosts: new Map(Object.entries(hosts).map(([name, spec]) => [name, { metadata: { name }, spec }])),
      clusters: new Map(),
      vms: new Map(),
    }) as unknown as DesiredState;
  const hv = (host: string, extra: Partial<HostSpec> = {}): HostSpec => ({
    driver: 'hyperv',
    uri: `ssh://vmplace@${host}`,
    ssh: { host, user: 'vmplace' },
    storage: [{ name: 'local', path: 'D:\\VMs' }],
    ...extra,
  });

  it('a HyperVDriver for driver: hyperv; windows transports between and on Hyper-V hosts; none across families', async () => {
    const set = createDrivers(
      desired({
        hv1: hv('hv1.example'),
        hv2: hv('hv2.example', { transferAddress: '10.0.20.12' }),
        kvm: {
          driver: 'libvirt',
          uri: 'qemu:///system',
          storage: [{ name: 'a', path: '/var/lib/vmplace/a' }],
        },
      }),
      { stateDir: '/tmp/x', logger: pino({ level: 'silent' }) },
    );
    try {
      expect(set.get('hv1')).toBeInstanceOf(HyperVDriver);
      expect(set.get('hv1')!.paths.style).toBe('windows');
      expect(set.get('kvm')).toBeInstanceOf(LibvirtDriver);
      expect(set.transportFor('hv1', 'hv2')?.name).toBe('windows-ssh');
      expect(set.transportFor('hv1', 'hv1')?.name).toBe('windows-local');
      expect(set.transportFor('hv1', 'kvm')).toBeUndefined();
      expect(set.transportFor('kvm', 'hv1')).toBeUndefined();
    } finally {
      await set.closeAll();
    }
    expect(windowsTargetSshOf(hv('hv2.example', { transferAddress: '10.0.20.12' }))).toEqual({
      host: '10.0.20.12',
      user: 'vmplace',
      port: 22,
    });
    expect(windowsTargetSshOf({ ssh: { host: 'hv3', port: 2222 } })).toEqual({
      host: 'hv3',
      user: '',
      port: 2222,
    });
    expect(windowsTargetSshOf({})).toBeUndefined();
  });
});
