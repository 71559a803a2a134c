/**
 * Quick Storage Migration on one host, end to end on the real lab: a real guest writes to both
 * of its disks and acknowledges every durable write on its serial console; vmplace moves the
 * disks from storage a to b; afterwards every acknowledged record must be in the images on b.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import {
  ackedSequences,
  buildGuest,
  destroyVm,
  domState,
  dumpXml,
  ensureLab,
  run as labRun,
  verifyRecords,
  virsh,
  waitForAcks,
} from '../../src/lab';
import {
  applyCli,
  exists,
  makeFleet,
  persistedStep,
  readVmStatus,
  run,
  spawnApply,
  writeManifests,
  type Fleet,
} from './support/fleet';
import { parseDomainXml } from '../../src/drivers/libvirt/xml';
import { exitedDrained } from './support/process';

jest.setTimeout(300_000);

const fleets: Fleet[] = [];
const mounts: string[] = [];

beforeAll(async () => {
  await ensureLab();
  await buildGuest();
});

afterAll(async () => {
  for (const f of fleets) {
    await destroyVm(f.vm).catch(() => undefined);
  }
  for (const m of mounts) await labRun('umount', ['-l', m]).catch(() => undefined);
  for (const f of fleets) await fs.rm(f.root, { recursive: true, force: true }).catch(() => undefined);
});

async function newFleet(tag: string, opts: Parameters<typeof makeFleet>[1] = {}): Promise<Fleet> {
  const f = await makeFleet(`vmp-${tag}-${process.pid}`, opts);
  fleets.push(f);
  for (const d of f.disks) await waitForAcks(f.serialLog, { disk: d.target, atLeast: 3, timeoutMs: 60_000 });
  return f;
}

/** Disk sources of the live and the persistent definition. */
async function diskPaths(vm: string): Promise<{ live: string[]; persistent: string[] }> {
  const live = parseDomainXml(await dumpXml(vm)).disks.map((d) => d.path ?? '');
  const persistent = parseDomainXml(await dumpXml(vm, { inactive: true })).disks.map((d) => d.path ?? '');
  return { live, persistent };
}

/** Exactly one QEMU process runs this VM. */
async function qemuProcessesOf(vm: string): Promise<number> {
  const { stdout } = await run('pgrep', ['-f', `guest=${vm},`]);
  return stdout.split('\n').filter(Boolean).length;
}

/** Stop the guest and check that every acknowledged record is in the images at `dir`. */
async function expectNothingLost(f: Fleet, dir: string): Promise<void> {
  // let the guest write on for a moment where it now runs, then stop it so the images are quiescent
  const before = await ackedSequences(f.serialLog);
  for (const d of f.disks) {
    await waitForAcks(f.serialLog, {
      disk: d.target,
      atLeast: (before.get(d.target) ?? 0) + 3,
      timeoutMs: 30_000,
    });
  }
  await virsh(['destroy', f.vm]);
  const acked = await ackedSequences(f.serialLog);
  for (const d of f.disks) {
    const upTo = acked.get(d.target) ?? 0;
    expect(upTo).toBeGreaterThan(5);
    // moved disks live in the VM's own directory on b (see targetDiskPath); on a where they began
    const image =
      dir === f.storage.b
        ? path.join(dir, f.vm, path.basename(d.path))
        : path.join(dir, path.basename(d.path));
    const check = await verifyRecords(image, d.target, upTo);
    expect(check.bad).toEqual([]);
    expect(check.checked).toBe(upTo);
  }
}

describe('quick storage migration on one host (real libvirt, real guest)', () => {
  it('moves a running, writing VM with two disks from a to b and loses no acknowledged write', async () => {
    const f = await newFleet('e2e', { fillBytes: 16 * 1024 * 1024 });
    await writeManifests(f, 'b');
    const res = await applyCli(f);
    expect({ code: res.code, stderr: res.code === 0 ? '' : res.stderr }).toEqual({ code: 0, stderr: '' });

    expect(await domState(f.vm)).toBe('running');
    expect(await qemuProcessesOf(f.vm)).toBe(1);
    const paths = await diskPaths(f.vm);
    const want = f.disks.map((d) => path.join(f.storage.b, f.vm, path.basename(d.path)));
    expect(paths.live).toEqual(want);
    expect(paths.persistent).toEqual(want);
    for (const d of f.disks) expect(await exists(d.path)).toBe(false);
    // nothing of ours left behind on either storage
    expect((await fs.readdir(f.storage.a)).filter((n) => n.includes('vmplace'))).toEqual([]);
    expect(await fs.readdir(f.storage.b)).toEqual([f.vm]);
    expect((await fs.readdir(path.join(f.storage.b, f.vm))).sort()).toEqual(
      want.map((p) => path.basename(p)).sort(),
    );

    const status = await readVmStatus(f);
    expect(status.phase).toBe('Placed');
    expect(status.placement?.disks.map((d) => d.storage)).toEqual(['b', 'b']);
    expect(status.migration?.step).toBe('Completed');
    expect(status.migration?.pauseMs).toBeGreaterThan(0);
    expect(status.migration?.bytesDone).toBe(status.migration?.bytesTotal);

    await expectNothingLost(f, f.storage.b);
  });

  it('rolls back when the target fills up during the migration: VM on a, all data, status Failed', async () => {
    const mnt = await fs.mkdtemp('/tmp/vmplace-small-');
    await labRun('mount', ['-t', 'tmpfs', '-o', 'size=1600m', 'vmplace-test', mnt]);
    mounts.push(mnt);
    const f = await newFleet('full', { storageB: mnt, fillBytes: 64 * 1024 * 1024 });
    await writeManifests(f, 'b', '  strategy: quick\n');
    // vmplace.yaml keeps the plan's margin small enough for this test's target, and slows the
    // copies down (16 MiB/s: ~4 s per base) so that the test fills the target while they run
    await fs.writeFile(
      path.join(f.repo, 'vmplace.yaml'),
      'policy:\n  targetMarginBytes: 1048576\nlimits:\n  bandwidth: 16MiB/s\n',
    );
    // The disk fills up for real once the base copy has begun (a real ENOSPC, test-chosen time).
    const child = spawnApply(f);
    const exited = exitedDrained(child);
    let stderr = '';
    child.stderr!.on('data', (b: Buffer) => {
      stderr += b.toString();
      // detached: a copy of the log for a human after a failure; a lost write is harmless
      void fs.writeFile(path.join(f.root, '..', `${f.vm}.apply.log`), stderr).catch(() => undefined);
    });
    let filled = false;
    for (let i = 0; i < 3000 && !filled; i++) {
      if ((await persistedStep(f)) === 'CopyingBase') {
        // all that is free now but 24 MiB (the copy keeps writing meanwhile); the copies still
        // need ~100 MiB more at 16 MiB/s
        // (the copy goes on while fallocate zeroes its pages: on ENOSPC measure again, leave more)
        for (let attempt = 0; attempt < 4 && !filled; attempt++) {
          const st = await fs.statfs(mnt);
          const free = st.bavail * st.bsize;
          const res = await run('fallocate', [
            '-l',
            String(free - (24 + 16 * attempt) * 1024 * 1024),
            path.join(mnt, 'ballast'),
          ]);
          filled = res.code === 0;
        }
      } else await new Promise((r) => setTimeout(r, 10));
    }
    expect(filled).toBe(true);
    const code = await exited;
    await fs.writeFile(path.join(f.root, 'apply.log'), stderr);
    expect(code).toBe(1);

    expect(await domState(f.vm)).toBe('running');
    expect(await qemuProcessesOf(f.vm)).toBe(1);
    const paths = await diskPaths(f.vm);
    expect(paths.live).toEqual(f.disks.map((d) => d.path));
    expect(paths.persistent).toEqual(f.disks.map((d) => d.path));
    expect((await fs.readdir(mnt)).filter((n) => n !== 'ballast')).toEqual([]);
    const status = await readVmStatus(f);
    expect(status.phase).toBe('Failed');
    expect(status.migration?.step).toBe('RolledBack');
    expect(status.conditions[0]?.message).toMatch(/rolled back/);
    await expectNothingLost(f, f.storage.a);
  });

  it('is blocked (nothing changed) when the target is read-only from the start', async () => {
    const mnt = await fs.mkdtemp('/tmp/vmplace-ro-');
    await labRun('mount', ['-t', 'tmpfs', '-o', 'size=1600m,ro', 'vmplace-test', mnt]);
    mounts.push(mnt);
    const f = await newFleet('ro', { storageB: mnt });
    await writeManifests(f, 'b');
    await fs.writeFile(path.join(f.repo, 'vmplace.yaml'), 'policy:\n  targetMarginBytes: 1048576\n');
    const res = await applyCli(f);
    expect({ code: res.code, stderr: res.code === 1 ? '' : res.stderr }).toEqual({ code: 1, stderr: '' });
    const status = await readVmStatus(f);
    expect(status.phase).toBe('Blocked');
    expect(status.conditions[0]?.reason).toBe('TargetNotWritable');
    expect((await diskPaths(f.vm)).live).toEqual(f.disks.map((d) => d.path));
    await expectNothingLost(f, f.storage.a);
  });

  it.each(['CopyingBase', 'Saving', 'CopyingDelta'])(
    'kill -9 of vmplace apply during %s: the rerun completes with nothing lost, the VM running once',
    async (step) => {
      const f = await newFleet(`kill-${step.toLowerCase()}`, { fillBytes: 128 * 1024 * 1024 });
      await writeManifests(f, 'b');
      const child = spawnApply(f);
      const exited = new Promise<void>((r) => child.on('exit', () => r()));
      let seen: string | undefined;
      for (let i = 0; i < 6000; i++) {
        seen = await persistedStep(f);
        if (seen === step) break;
        await new Promise((r) => setTimeout(r, 5));
      }
      expect(seen).toBe(step);
      process.kill(-child.pid!, 'SIGKILL'); // vmplace and the commands it runs, as a crash would
      await exited;
      expect(await persistedStep(f)).toBe(step);

      const res = await applyCli(f);
      expect({ code: res.code, stderr: res.code === 0 ? '' : res.stderr }).toEqual({ code: 0, stderr: '' });
      expect(await domState(f.vm)).toBe('running');
      expect(await qemuProcessesOf(f.vm)).toBe(1);
      const paths = await diskPaths(f.vm);
      const want = f.disks.map((d) => path.join(f.storage.b, f.vm, path.basename(d.path)));
      expect(paths).toEqual({ live: want, persistent: want });
      for (const d of f.disks) expect(await exists(d.path)).toBe(false);
      expect((await readVmStatus(f)).phase).toBe('Placed');
      await expectNothingLost(f, f.storage.b);
    },
  );
});
