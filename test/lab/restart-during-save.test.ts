/**
 * A restart inside the pause (issue 9, item 13), on the real lab with a real writing guest:
 * `vmplace apply` is killed (-9, with the commands it runs) while Saving, after the save was
 * issued, and run again. The guest must go on from its saved memory (its record counter on the
 * serial console never goes back and it never boots again), the pause reported in status must
 * be the whole pause as libvirt's own lifecycle events show it, and a VM whose saved state is
 * gone is never booted afresh: the migration stops with SavedStateLost.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import {
  buildGuest,
  destroyVm,
  domState,
  ensureLab,
  LAB_URI,
  serialLogSize,
  serialSince,
  waitForAcks,
} from '../../src/lab';
import {
  applyCli,
  exists,
  makeFleet,
  persistedStep,
  readVmStatus,
  spawnApply,
  writeManifests,
  type Fleet,
} from './support/fleet';

jest.setTimeout(300_000);

const fleets: Fleet[] = [];
const watchers: ChildProcess[] = [];

beforeAll(async () => {
  await ensureLab();
  await buildGuest();
});

afterAll(async () => {
  for (const w of watchers) w.kill('SIGKILL');
  for (const f of fleets) await destroyVm(f.vm).catch(() => undefined);
  for (const f of fleets) await fs.rm(f.root, { recursive: true, force: true }).catch(() => undefined);
});

async function newFleet(tag: string): Promise<Fleet> {
  const f = await makeFleet(`vmp-${tag}-${process.pid}`);
  fleets.push(f);
  for (const d of f.disks) await waitForAcks(f.serialLog, { disk: d.target, atLeast: 3, timeoutMs: 60_000 });
  return f;
}

/** `virsh event --loop --all --timestamp` on one domain: libvirt's own account of the pause. */
function watchEvents(vm: string): { lines: () => string[]; stop: () => void } {
  const child = spawn('virsh', ['-c', LAB_URI, 'event', '--domain', vm, '--loop', '--all', '--timestamp'], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  watchers.push(child);
  let out = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  return { lines: () => out.split('\n'), stop: () => child.kill('SIGKILL') };
}

/**
 * The pause as libvirt saw it: from the `Suspended` that began the save (the last one before
 * `Stopped Saved`) to `Started Restored`, in ms.
 */
function pauseFromEvents(lines: string[]): number {
  const at = (l: string): number => Date.parse(l.slice(0, 23).replace(' ', 'T') + 'Z');
  const lifecycle = lines.filter((l) => l.includes("event 'lifecycle'"));
  const saved = lifecycle.findIndex((l) => l.endsWith('Stopped Saved'));
  const suspended = lifecycle
    .slice(0, saved)
    .reverse()
    .find((l) => / Suspended /.test(l));
  const restored = lifecycle.slice(saved).find((l) => l.endsWith('Started Restored'));
  if (saved < 0 || !suspended || !restored)
    throw new Error(`no save and restore in the events:\n${lines.join('\n')}`);
  return at(restored) - at(suspended);
}

/** Start `vmplace apply` and kill it (-9, its whole process group) in Saving, once the save was issued. */
async function killInsideSave(f: Fleet): Promise<number> {
  const child = spawnApply(f);
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  let step: string | undefined;
  let state: string | undefined;
  for (let i = 0; i < 20_000; i++) {
    step = await persistedStep(f);
    // the domain stops running only when the save begins: kill then, inside the pause
    if (step === 'Saving' && (state = await domState(f.vm)) !== 'running') break;
    if (
      step !== undefined &&
      !['Preflight', 'Snapshotting', 'CopyingBase', 'DeltaRound', 'Saving'].includes(step)
    )
      break;
    await new Promise((r) => setTimeout(r, 3));
  }
  process.kill(-child.pid!, 'SIGKILL');
  const killedAt = Date.now();
  await exited;
  expect({ step, state }).toEqual({ step: 'Saving', state: expect.stringMatching(/^(paused|shut off)$/) });
  expect(await persistedStep(f)).toBe('Saving');
  return killedAt;
}

describe('a restart during Saving (real libvirt, real guest)', () => {
  it('kill -9 of vmplace apply inside the save, rerun: the guest goes on from its saved memory, pauseMs is the whole pause', async () => {
    const f = await newFleet('rsave');
    const events = watchEvents(f.vm);
    await new Promise((r) => setTimeout(r, 500)); // the watcher is registered
    const offset = await serialLogSize(f.serialLog);
    const before = await serialSince(f.serialLog, 0);
    await writeManifests(f, 'b');
    const killedAt = await killInsideSave(f);
    // an operator notices and runs it again a few seconds later: the VM stays paused meanwhile
    await new Promise((r) => setTimeout(r, 3000));
    const res = await applyCli(f);
    const rerunDone = Date.now();
    expect({ code: res.code, stderr: res.code === 0 ? '' : res.stderr }).toEqual({ code: 0, stderr: '' });
    expect(await domState(f.vm)).toBe('running');
    const status = await readVmStatus(f);
    expect(status.phase).toBe('Placed');

    // the guest goes on: a few more records, never a boot, never a sequence going back
    for (const d of f.disks)
      await waitForAcks(f.serialLog, {
        disk: d.target,
        atLeast: (before.last.get(d.target) ?? 0) + 5,
        timeoutMs: 60_000,
      });
    const after = await serialSince(f.serialLog, offset);
    expect(after.boots).toBe(0);
    expect(after.wentBack).toEqual([]);
    for (const d of f.disks)
      expect(after.last.get(d.target)).toBeGreaterThan(before.last.get(d.target) ?? Infinity);

    // the whole pause: libvirt's events say from Suspended to Started Restored
    await new Promise((r) => setTimeout(r, 500));
    events.stop();
    const libvirtPause = pauseFromEvents(events.lines());
    const pauseMs = status.migration?.pauseMs ?? 0;
    console.log(
      `restart inside the pause: pauseMs ${pauseMs} in status, ${libvirtPause} ms by libvirt's events (killed ${rerunDone - killedAt} ms before the rerun finished)`,
    );
    expect(libvirtPause).toBeGreaterThan(3000); // the pause spans the restart
    expect(pauseMs).toBeGreaterThanOrEqual(libvirtPause - 100);
    // and no more than the time from well before the kill to the end of the rerun
    expect(pauseMs).toBeLessThan(rerunDone - killedAt + 60_000);
  });

  it('kill -9 inside the save and the saved state is gone: Failed SavedStateLost, the VM is never booted afresh', async () => {
    const f = await newFleet('rlost');
    const offset = await serialLogSize(f.serialLog);
    await writeManifests(f, 'b');
    await killInsideSave(f);
    // libvirt finishes the save that the killed virsh asked for
    for (let i = 0; i < 600 && (await domState(f.vm)) !== 'shut off'; i++)
      await new Promise((r) => setTimeout(r, 100));
    expect(await domState(f.vm)).toBe('shut off');
    const states = (await fs.readdir(f.storage.b)).filter((n) => n.startsWith(`${f.vm}.state.vmplace-`));
    expect(states).toHaveLength(1);
    // the saved memory is lost (a disk failed, someone cleaned up): the guest's memory is gone
    await fs.rm(path.join(f.storage.b, states[0]!));

    const res = await applyCli(f);
    // never booted afresh, never went back, left shut off with its disks on the source
    await new Promise((r) => setTimeout(r, 5000));
    const after = await serialSince(f.serialLog, offset);
    expect({ boots: after.boots, wentBack: after.wentBack }).toEqual({ boots: 0, wentBack: [] });
    expect(await domState(f.vm)).toBe('shut off');
    for (const d of f.disks) expect(await exists(d.path)).toBe(true);
    // and the migration says why
    expect(res.code).not.toBe(0);
    const status = await readVmStatus(f);
    expect({ phase: status.phase, condition: status.conditions[0] }).toEqual({
      phase: 'Failed',
      condition: expect.objectContaining({ reason: 'SavedStateLost' }),
    });
    expect(status.migration?.step).toBe('Failed');
  });
});
