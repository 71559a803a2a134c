/**
 * "Nothing lost" on the real lab (issue 9): the cases a review found where vmplace deleted a
 * file it did not create, or one another domain uses, or rolled back beside a running step.
 * Real libvirtd, QEMU, qemu-img and real writing guests; the daemon where a cancel is needed.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import {
  ackedSequences,
  buildGuest,
  createDisk,
  defineGuestVm,
  destroyVm,
  domState,
  dumpXml,
  ensureLab,
  labTempDir,
  run as labRun,
  verifyRecords,
  virsh,
  waitForAcks,
} from '../../src/lab';
import {
  exists,
  labHostManifest,
  labVmManifest,
  makeFleet,
  persistedStep,
  readVmStatus,
  run,
  spawnApply,
  VMPLACE_BIN,
  type Fleet,
} from './support/fleet';
import { humanClone, newBareRepo, startDaemon, type LogLine, type RunningDaemon } from './support/daemon';
import { parseDomainXml } from '../../src/drivers/libvirt/xml';
import type { VirtualMachineStatus } from '../../src/types';
import { exitedDrained } from './support/process';

jest.setTimeout(420_000);

const pexec = promisify(execFile);
const vms: string[] = [];
const roots: string[] = [];
const daemons: RunningDaemon[] = [];

beforeAll(async () => {
  await ensureLab();
  await buildGuest();
});

afterAll(async () => {
  for (const d of daemons) {
    try {
      process.kill(-d.child.pid!, 'SIGKILL');
    } catch {
      // gone
    }
  }
  for (const vm of vms) await destroyVm(vm).catch(() => undefined);
  for (const r of roots) await fs.rm(r, { recursive: true, force: true }).catch(() => undefined);
});

const MiB = 1024 * 1024;

async function sha256(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of (await fs.open(file)).createReadStream()) h.update(chunk as Buffer);
  return h.digest('hex');
}

const hostManifest = (a: string, b: string): string => labHostManifest({ a, b });
const vmManifest = labVmManifest;

async function apply(repo: string, stateDir: string): Promise<{ code: number; stderr: string }> {
  return run(process.execPath, [
    VMPLACE_BIN,
    'apply',
    repo,
    '--yes',
    '--state-dir',
    stateDir,
    '--log-format',
    'json',
  ]);
}

async function vmStatus(repo: string, vm: string): Promise<VirtualMachineStatus> {
  return parse(
    await fs.readFile(path.join(repo, 'status', 'vms', `${vm}.yaml`), 'utf8'),
  ) as VirtualMachineStatus;
}

/** Stop the guest and check every acknowledged record in `files` (by disk, in order). */
async function expectAllAckedWrites(
  vm: string,
  serialLog: string,
  files: { target: string; path: string }[],
) {
  const before = await ackedSequences(serialLog);
  for (const d of files)
    await waitForAcks(serialLog, {
      disk: d.target,
      atLeast: (before.get(d.target) ?? 0) + 2,
      timeoutMs: 60_000,
    });
  await virsh(['destroy', vm]);
  const acked = await ackedSequences(serialLog);
  for (const d of files) {
    const upTo = acked.get(d.target) ?? 0;
    expect(upTo).toBeGreaterThan(3);
    const check = await verifyRecords(d.path, d.target, upTo);
    expect({ file: d.path, bad: check.bad }).toEqual({ file: d.path, bad: [] });
    expect(check.checked).toBe(upTo);
  }
}

describe('target paths that cannot collide (real libvirt)', () => {
  it('two running VMs whose disks share file names move to one storage in one pass: each keeps its own data', async () => {
    const root = await labTempDir('vmp-same-');
    roots.push(root);
    const a = path.join(root, 'a');
    const b = path.join(root, 'b');
    await fs.mkdir(b, { recursive: true });
    const names = [`vmp-sa-${process.pid}`, `vmp-sb-${process.pid}`];
    const guests = names.map((name) => ({
      name,
      serialLog: path.join(root, `${name}.serial.log`),
      // the same two file names in each VM's own directory
      disks: [
        { target: 'vda', path: path.join(a, name, 'disk.qcow2') },
        { target: 'vdb', path: path.join(a, name, 'data.qcow2') },
      ],
    }));
    for (const g of guests) {
      for (const d of g.disks) await createDisk(d.path, 48 * MiB);
      vms.push(g.name);
      await defineGuestVm({
        name: g.name,
        disks: g.disks,
        serialLog: g.serialLog,
        memoryMiB: 128,
        rateHz: 20,
      });
    }
    for (const g of guests)
      for (const d of g.disks)
        await waitForAcks(g.serialLog, { disk: d.target, atLeast: 3, timeoutMs: 90_000 });
    const repo = path.join(root, 'repo');
    await fs.mkdir(path.join(repo, 'manifests'), { recursive: true });
    await fs.writeFile(
      path.join(repo, 'manifests', 'fleet.yaml'),
      hostManifest(a, b) + names.map((n) => vmManifest(n, 'b')).join(''),
    );
    const res = await apply(repo, path.join(root, 'state'));
    expect({ code: res.code, stderr: res.code === 0 ? '' : res.stderr.slice(-4000) }).toEqual({
      code: 0,
      stderr: '',
    });
    for (const g of guests) {
      const want = g.disks.map((d) => path.join(b, g.name, path.basename(d.path)));
      expect(parseDomainXml(await dumpXml(g.name)).disks.map((d) => d.path)).toEqual(want);
      expect(parseDomainXml(await dumpXml(g.name, { inactive: true })).disks.map((d) => d.path)).toEqual(
        want,
      );
      expect((await vmStatus(repo, g.name)).phase).toBe('Placed');
    }
    for (const g of guests)
      await expectAllAckedWrites(
        g.name,
        g.serialLog,
        g.disks.map((d) => ({ target: d.target, path: path.join(b, g.name, path.basename(d.path)) })),
      );
  });

  it('a file that appears at the target path during the copy is neither replaced nor deleted by the rollback', async () => {
    const f = await makeFleet(`vmp-plant-${process.pid}`, { fillBytes: 96 * MiB });
    vms.push(f.vm);
    roots.push(f.root);
    for (const d of f.disks)
      await waitForAcks(f.serialLog, { disk: d.target, atLeast: 3, timeoutMs: 90_000 });
    await fs.writeFile(
      path.join(f.repo, 'manifests', 'fleet.yaml'),
      hostManifest(f.storage.a, f.storage.b) + vmManifest(f.vm, 'b', '  strategy: quick\n'),
    );
    // slow copies (16 MiB/s: the first base takes ~6 s), so the test can act during the copy
    await fs.writeFile(
      path.join(f.repo, 'vmplace.yaml'),
      'policy:\n  targetMarginBytes: 1048576\nlimits:\n  bandwidth: 16MiB/s\n',
    );
    const child = spawnApply(f);
    let stderr = '';
    child.stderr!.on('data', (x: Buffer) => (stderr += x.toString()));
    const exited = exitedDrained(child);
    const vmDir = path.join(f.storage.b, f.vm);
    const planted = path.join(vmDir, path.basename(f.disks[0]!.path));
    let done = false;
    for (let i = 0; i < 3000 && !done; i++) {
      if ((await persistedStep(f)) === 'CopyingBase' && (await exists(vmDir))) {
        // someone else's file, with the name the copy will give its result
        await fs.writeFile(planted, 'not vmplace data\n');
        done = true;
      } else await new Promise((r) => setTimeout(r, 10));
    }
    expect(done).toBe(true);
    const code = await exited;
    expect(code).toBe(1);
    expect(await fs.readFile(planted, 'utf8')).toBe('not vmplace data\n');
    expect(stderr).toMatch(/DestinationExists/);
    // the VM runs on a, from its own files, with all its data; nothing else of ours left on b
    expect(await domState(f.vm)).toBe('running');
    expect(parseDomainXml(await dumpXml(f.vm)).disks.map((d) => d.path)).toEqual(f.disks.map((d) => d.path));
    expect((await fs.readdir(vmDir)).filter((n) => n !== path.basename(planted))).toEqual([]);
    expect((await readVmStatus(f)).migration?.step).toBe('RolledBack');
    await expectAllAckedWrites(f.vm, f.serialLog, f.disks);
  });
});

describe('files other domains use are never moved or deleted (real libvirt)', () => {
  async function coldDomain(
    name: string,
    disks: { target: string; path: string; format: string; shareable?: boolean }[],
  ) {
    const xml = `<domain type='qemu'><name>${name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>
${disks
  .map(
    (d) =>
      `<disk type='file' device='disk'><driver name='qemu' type='${d.format}'${d.shareable ? " cache='none'" : ''}/><source file='${d.path}'/><target dev='${d.target}' bus='virtio'/>${d.shareable ? '<shareable/>' : ''}</disk>`,
  )
  .join('\n')}
</devices></domain>`;
    const file = path.join(path.dirname(disks[0]!.path), `${name}.xml`);
    await fs.writeFile(file, xml);
    vms.push(name);
    await virsh(['define', file]);
    await fs.rm(file);
  }

  it("blocks moving a VM whose disk is a shut-off linked clone's base, and a shareable disk; nothing is deleted", async () => {
    const root = await labTempDir('vmp-use-');
    roots.push(root);
    const a = path.join(root, 'a');
    const b = path.join(root, 'b');
    await fs.mkdir(b, { recursive: true });
    const base = `vmp-base-${process.pid}`;
    const clone = `vmp-clone-${process.pid}`;
    const shared = `vmp-shr-${process.pid}`;
    const baseDisk = path.join(a, base, 'disk.qcow2');
    const cloneDisk = path.join(a, clone, 'disk.qcow2');
    const sharedDisk = path.join(a, shared, 'disk.raw');
    await createDisk(baseDisk, 16 * MiB);
    await labRun('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x42 0 1M', baseDisk]);
    await fs.mkdir(path.dirname(cloneDisk), { recursive: true });
    await labRun('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', baseDisk, cloneDisk]);
    await createDisk(sharedDisk, 16 * MiB, 'raw');
    await coldDomain(base, [{ target: 'vda', path: baseDisk, format: 'qcow2' }]);
    await coldDomain(clone, [{ target: 'vda', path: cloneDisk, format: 'qcow2' }]);
    await coldDomain(shared, [{ target: 'vda', path: sharedDisk, format: 'raw', shareable: true }]);
    const sums = { base: await sha256(baseDisk), shared: await sha256(sharedDisk) };
    const repo = path.join(root, 'repo');
    await fs.mkdir(path.join(repo, 'manifests'), { recursive: true });
    await fs.writeFile(
      path.join(repo, 'manifests', 'fleet.yaml'),
      hostManifest(a, b) + vmManifest(base, 'b') + vmManifest(shared, 'b'),
    );
    const res = await apply(repo, path.join(root, 'state'));
    expect(res.code).toBe(1);
    const sBase = await vmStatus(repo, base);
    expect(sBase.phase).toBe('Blocked');
    expect(sBase.conditions[0]?.reason).toBe('DiskUsedByOtherDomain');
    expect(sBase.conditions[0]?.message).toContain(clone);
    const sShared = await vmStatus(repo, shared);
    expect(sShared.phase).toBe('Blocked');
    expect(sShared.conditions[0]?.reason).toBe('DiskShareable');
    // every file where it was, unchanged; the clone still reads its base
    expect(await sha256(baseDisk)).toBe(sums.base);
    expect(await sha256(sharedDisk)).toBe(sums.shared);
    const { stdout } = await pexec('qemu-img', [
      'info',
      '-U',
      '-f',
      'qcow2',
      '--backing-chain',
      '--output=json',
      cloneDisk,
    ]);
    expect((JSON.parse(stdout) as { filename: string }[]).map((x) => x.filename)).toEqual([
      cloneDisk,
      baseDisk,
    ]);
    expect(parseDomainXml(await dumpXml(base, { inactive: true })).disks.map((d) => d.path)).toEqual([
      baseDisk,
    ]);
    expect(await fs.readdir(b)).toEqual([]);
  });
});

describe('a cancel waits for the running step, then rolls back with nothing deleted (daemon, real libvirt)', () => {
  async function cancelCase(
    tag: string,
    strategy: string,
    opts: { bulkMiBps?: number },
    atLog: (l: LogLine) => boolean,
  ): Promise<void> {
    // a bulk writer adds unacknowledged filler from 32 MiB on: deltas for the rounds
    const f: Fleet = await makeFleet(`vmp-${tag}-${process.pid}`, {
      fillBytes: 192 * MiB,
      ...(opts.bulkMiBps ? { bulkMiBps: opts.bulkMiBps } : {}),
    });
    vms.push(f.vm);
    roots.push(f.root);
    for (const d of f.disks)
      await waitForAcks(f.serialLog, { disk: d.target, atLeast: 3, timeoutMs: 90_000 });
    const bare = await newBareRepo(f.root);
    const human = path.join(f.root, 'human');
    const git = await humanClone(bare, human);
    const push = async (storage: string, message: string): Promise<void> => {
      await fs.mkdir(path.join(human, 'manifests'), { recursive: true });
      await fs.writeFile(
        path.join(human, 'manifests', 'fleet.yaml'),
        hostManifest(f.storage.a, f.storage.b) +
          vmManifest(f.vm, storage, `  strategy: ${strategy}\n  maxPause: 50ms\n`),
      );
      await fs.writeFile(
        path.join(human, 'vmplace.yaml'),
        'policy:\n  targetMarginBytes: 1048576\n  maxDeltaRounds: 8\nlimits:\n  bandwidth: 24MiB/s\n',
      );
      await git('add', '-A');
      await git('commit', '-q', '-m', message);
      for (let attempt = 1; ; attempt++) {
        try {
          await git('push', '-q', 'origin', 'HEAD:main');
          return;
        } catch (err) {
          if (attempt >= 5) throw err;
          await git('pull', '-q', '--rebase', 'origin', 'main');
        }
      }
    };
    await push('a', 'fleet');
    const d = await startDaemon({
      repo: bare,
      workdir: path.join(f.root, 'work', 'repo'),
      stateDir: f.stateDir,
      interval: '500ms',
    });
    daemons.push(d);
    await push('b', 'move to b');
    await d.waitFor(atLog, 240_000);
    // the desired placement goes back while the step runs
    await push('a', 'back to a');
    const finished = await d.waitFor((l) => l.msg === 'migration finished' && l.vm === f.vm, 240_000);
    // on a mismatch, say which step failed and why
    const failed = d.logs
      .filter((l) => l.vm === f.vm && l.msg === 'step failed')
      .map((l) => `${String(l.step)}: ${JSON.stringify(l.err).slice(0, 600)}`);
    expect({
      step: finished.step,
      reason: finished.reason,
      failed: finished.reason === 'Cancelled' ? [] : failed,
    }).toEqual({
      step: 'RolledBack',
      reason: 'Cancelled',
      failed: [],
    });
    // the step had settled before the rollback began
    const steps = d.logs.filter((l) => l.vm === f.vm && l.msg === 'migration step').map((l) => l.step);
    expect(steps.slice(-3)).toEqual(['Cancelling', 'RollingBack', 'RolledBack']);
    // the VM runs on a from its own files, no job and no overlay left
    expect(await domState(f.vm)).toBe('running');
    const live = parseDomainXml(await dumpXml(f.vm));
    expect(live.disks.map((x) => x.path)).toEqual(f.disks.map((x) => x.path));
    expect(live.disks.every((x) => !x.hasBackingStore && x.mirrorPath === undefined)).toBe(true);
    expect(parseDomainXml(await dumpXml(f.vm, { inactive: true })).disks.map((x) => x.path)).toEqual(
      f.disks.map((x) => x.path),
    );
    for (const x of f.disks) expect(await exists(x.path)).toBe(true);
    expect((await fs.readdir(f.storage.a)).filter((n) => n.includes('vmplace'))).toEqual([]);
    process.kill(-d.child.pid!, 'SIGTERM');
    await d.exited;
    await expectAllAckedWrites(f.vm, f.serialLog, f.disks);
  }

  it('during a same-host live mirror (blockcopy): the block job is aborted first, the VM stays on a', async () => {
    await cancelCase('cnl', 'live', {}, (l) => l.msg === 'migration step' && l.step === 'LiveMigrating');
  });

  it('during quick delta rounds: the rounds stop, every overlay is merged back into the source', async () => {
    await cancelCase('cnq', 'quick', { bulkMiBps: 8 }, (l) => l.msg === 'delta round');
  });
});
