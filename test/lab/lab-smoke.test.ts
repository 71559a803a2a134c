import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import {
  ackedSequences,
  buildGuest,
  createDisk,
  defineGuestVm,
  destroyVm,
  domState,
  ensureLab,
  labTempDir,
  verifyRecords,
  virsh,
  waitForAcks,
} from '../../src/lab';

jest.setTimeout(120_000);

describe('local libvirt lab', () => {
  const name = `vmplace-smoke-${process.pid}`;
  let dir: string;
  let serialLog: string;
  let disks: { target: string; path: string }[];

  beforeAll(async () => {
    await ensureLab();
    await buildGuest();
    dir = await labTempDir('vmplace-smoke-');
    serialLog = path.join(dir, 'serial.log');
    disks = ['vda', 'vdb'].map((target) => ({ target, path: path.join(dir, `${target}.qcow2`) }));
  });

  afterAll(async () => {
    await destroyVm(name);
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  it('boots a writing guest, keeps writing across save/restore, and loses no acked record', async () => {
    for (const d of disks) await createDisk(d.path, 32 * 1024 * 1024);
    const t0 = Date.now();
    await defineGuestVm({ name, disks, serialLog, memoryMiB: 128, rateHz: 20 });
    for (const d of disks) await waitForAcks(serialLog, { disk: d.target, atLeast: 5, timeoutMs: 30_000 });
    const bootMs = Date.now() - t0;

    const beforeSave = await ackedSequences(serialLog);
    const state = path.join(dir, 'state.sav');
    const s0 = Date.now();
    await virsh(['save', name, state]);
    expect(await domState(name)).toBe('shut off');
    await virsh(['restore', state]);
    const pauseMs = Date.now() - s0;
    expect(await domState(name)).toBe('running');

    for (const d of disks) {
      const before = beforeSave.get(d.target) ?? 0;
      await waitForAcks(serialLog, { disk: d.target, atLeast: before + 5, timeoutMs: 20_000 });
    }

    await virsh(['destroy', name]);
    const acked = await ackedSequences(serialLog);
    for (const d of disks) {
      const upTo = acked.get(d.target) ?? 0;
      expect(upTo).toBeGreaterThan(beforeSave.get(d.target) ?? 0);
      const check = await verifyRecords(d.path, d.target, upTo);
      expect(check.bad).toEqual([]);
      expect(check.checked).toBe(upTo);
    }
    // a record the guest never acked must not verify: the check can fail
    const vda = acked.get('vda') ?? 0;
    const beyond = await verifyRecords(disks[0]!.path, 'vda', vda + 200, { fromSeq: vda + 100 });
    expect(beyond.bad.length).toBeGreaterThan(0);
    console.log(`boot-to-ack ${bootMs} ms, save+restore ${pauseMs} ms, acked ${JSON.stringify([...acked])}`);
  });
});
