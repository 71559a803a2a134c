/**
 * Quick Storage Migration across hosts on the two-host lab: two libvirt hosts in their own
 * network namespaces, reached only over ssh with checked host keys; copies go host to host.
 * A real guest writes to its disks and acknowledges each durable write on its serial console
 * (kept on the cluster's shared storage, so both hosts append to one log).
 */
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { parse } from 'yaml';
import { LibvirtDriver } from '../../src/drivers/libvirt/driver';
import type { VirtualMachineStatus } from '../../src/types';
import { run, VMPLACE_BIN } from './support/fleet';
import {
  ackedSequences,
  buildGuest,
  ensureHosts,
  guestDomainXml,
  hostProcesses,
  labHostDrivers,
  labTempDir,
  labVmCleanupArgv,
  REPO_ROOT,
  setLink,
  twoHostManifests,
  verifyRecords,
  waitForAcks,
  type HostsEnv,
  type LabHostName,
} from '../../src/lab';
import { exitedDrained } from './support/process';

jest.setTimeout(600_000);

const MiB = 1024 * 1024;
const ARTIFACTS = path.join(REPO_ROOT, 'test-artifacts', 'cross-host');
let env: HostsEnv;
let d: Record<LabHostName, LibvirtDriver>;
let root: string;
const vms: string[] = [];

interface Vm {
  name: string;
  repo: string;
  stateDir: string;
  disks: { target: string; file: string }[];
  serialLog: string;
}

beforeAll(async () => {
  env = await ensureHosts();
  await buildGuest();
  d = labHostDrivers(env);
  root = await labTempDir('vmplace-xhost-');
});

afterAll(async () => {
  // the guests' serial consoles (acks, and a kernel's last words when a guest died) outlive the run
  await fs.mkdir(ARTIFACTS, { recursive: true });
  for (const vm of vms)
    await fs
      .copyFile(path.join(env.csvMgmtPath, `${vm}.serial.log`), path.join(ARTIFACTS, `${vm}.serial.log`))
      .catch(() => undefined);
  for (const h of ['hv1', 'hv2'] as const) {
    for (const vm of vms) {
      await d[h].destroy(vm).catch(() => undefined);
      await d[h].undefine(vm).catch(() => undefined);
    }
    // this run's guests only (their names carry this process's pid): the disks made for them and
    // the folders a move made for them on the target (`<storage>/<vm>/`), which the lab's hosts
    // share with every later run (a leak here filled the disk of the machine CI runs on)
    for (const vm of vms)
      await d[h].exec.run(labVmCleanupArgv([env.hosts[h].storage, env.csvPath], vm)).catch(() => undefined);
    await d[h].close();
  }
  await fs.rm(root, { recursive: true, force: true });
});

function manifests(vm: string, host: LabHostName, storage: 'local' | 'csv'): string {
  return twoHostManifests(env, [{ name: vm, host, storage }]);
}

async function writeDesired(v: Vm, host: LabHostName, storage: 'local' | 'csv'): Promise<void> {
  await fs.mkdir(path.join(v.repo, 'manifests'), { recursive: true });
  await fs.writeFile(path.join(v.repo, 'manifests', 'fleet.yaml'), manifests(v.name, host, storage));
}

/** A writing guest on `host` with its disks on `storage` (file contents made on the host itself). */
async function guestOn(
  tag: string,
  host: LabHostName,
  storage: 'local' | 'csv',
  disks: { target: string; size: number; fill?: number }[],
  opts: { bulkMiBps?: number } = {},
): Promise<Vm> {
  const name = `vmpx-${tag}-${process.pid}`;
  vms.push(name);
  const dir = storage === 'csv' ? env.csvPath : env.hosts[host].storage;
  const v: Vm = {
    name,
    repo: path.join(root, name, 'repo'),
    stateDir: path.join(root, name, 'state'),
    disks: disks.map((x) => ({ target: x.target, file: path.posix.join(dir, `${name}-${x.target}.qcow2`) })),
    serialLog: path.posix.join(env.csvPath, `${name}.serial.log`),
  };
  const drv = d[host];
  for (const [i, x] of disks.entries()) {
    const file = v.disks[i]!.file;
    await drv.exec.run(['qemu-img', 'create', '-q', '-f', 'qcow2', file, String(x.size)]);
    if (x.fill)
      await drv.exec.run(['qemu-io', '-f', 'qcow2', '-c', `write -P 0x5a ${32 * MiB} ${x.fill}`, file]);
  }
  const guest = await buildGuest();
  await drv.define(
    guestDomainXml({
      name,
      disks: v.disks.map((x) => ({ target: x.target, path: x.file })),
      serialLog: v.serialLog,
      memoryMiB: 128,
      rateHz: 20,
      ...(opts.bulkMiBps ? { bulkMiBps: opts.bulkMiBps } : {}),
      guest,
    }),
  );
  await drv.start(name);
  for (const x of v.disks) await waitForAcks(mgmtLog(v), { disk: x.target, atLeast: 3, timeoutMs: 90_000 });
  return v;
}

const mgmtLog = (v: Vm): string => path.join(env.csvMgmtPath, path.basename(v.serialLog));
/** where a host-side file of `host` is seen from the management box */
const mgmtPath = (host: LabHostName, file: string): string =>
  file.startsWith(env.csvPath)
    ? path.join(env.csvMgmtPath, path.relative(env.csvPath, file))
    : path.join(env.hosts[host].storageMgmtPath, path.relative(env.hosts[host].storage, file));

function apply(v: Vm): {
  child: ReturnType<typeof spawn>;
  exited: Promise<{ code: number | null; stderr: string }>;
} {
  const child = spawn(
    process.execPath,
    [VMPLACE_BIN, 'apply', v.repo, '--yes', '--state-dir', v.stateDir, '--log-format', 'json'],
    { detached: true, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  child.stdout.resume();
  const exited = exitedDrained(child).then((code) => ({ code, stderr }));
  return { child, exited };
}

async function status(v: Vm): Promise<VirtualMachineStatus> {
  return parse(
    await fs.readFile(path.join(v.repo, 'status', 'vms', `${v.name}.yaml`), 'utf8'),
  ) as VirtualMachineStatus;
}

async function persistedStep(v: Vm): Promise<string | undefined> {
  const dir = path.join(v.stateDir, 'migrations');
  for (const n of await fs.readdir(dir).catch(() => [] as string[])) {
    try {
      return (JSON.parse(await fs.readFile(path.join(dir, n), 'utf8')) as { snapshot: { value: string } })
        .snapshot.value;
    } catch {
      // replaced while reading
    }
  }
  return undefined;
}

/** Which hosts run (or hold saved) the VM right now: libvirt of both hosts asked. */
async function where(vm: string): Promise<Record<LabHostName, string | undefined>> {
  // a domain can vanish between libvirt's list and its lookup (a restore or undefine in flight): ask again
  const state = async (h: LabHostName): Promise<string | undefined> => {
    for (let i = 0; ; i++) {
      try {
        return (await d[h].getDomain(vm))?.state;
      } catch (err) {
        if (i >= 20) throw err;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  };
  const [a, b] = await Promise.all([state('hv1'), state('hv2')]);
  return { hv1: a, hv2: b };
}

/** Stop the guest where it runs and check every acknowledged record in its images there. */
async function expectNothingLost(v: Vm, host: LabHostName, files: string[]): Promise<void> {
  const before = await ackedSequences(mgmtLog(v));
  for (const x of v.disks)
    await waitForAcks(mgmtLog(v), {
      disk: x.target,
      atLeast: (before.get(x.target) ?? 0) + 2,
      timeoutMs: 60_000,
    });
  await d[host].destroy(v.name);
  const acked = await ackedSequences(mgmtLog(v));
  for (const [i, x] of v.disks.entries()) {
    const upTo = acked.get(x.target) ?? 0;
    expect(upTo).toBeGreaterThan(3);
    const check = await verifyRecords(mgmtPath(host, files[i]!), x.target, upTo);
    expect(check.bad).toEqual([]);
    expect(check.checked).toBe(upTo);
  }
}

/** Where a moved disk lands on `host`'s local storage: the VM's own directory there (see targetDiskPath). */
const movedTo = (v: Vm, host: LabHostName): string[] =>
  v.disks.map((x) => path.posix.join(env.hosts[host].storage, v.name, path.posix.basename(x.file)));

async function exists(p: string): Promise<boolean> {
  return fs.access(p).then(
    () => true,
    () => false,
  );
}

describe('quick storage migration across hosts (two-host lab over ssh)', () => {
  // The migrating ways are experimental: in 2 of 12 lab moves on 5bb9da4..HEAD the target's
  // libvirtd stopped the VM right after a live migration onto the layers that had succeeded
  // (not yet understood; see README, policy.quickMemory). They run with VMPLACE_LAB_EXPERIMENTAL=1.
  it.each([
    ['by a saved state file (the default)', 'stateFile'],
    ['by a saved state file through a one-shot rsync daemon (policy.pauseTransfer: tcp)', 'stateFile+tcp'],
    ...(process.env.VMPLACE_LAB_EXPERIMENTAL === '1'
      ? ([
          ['by live migration onto the copied layers (policy.quickMemory: live)', 'live'],
          ['by migration while paused (policy.quickMemory: paused)', 'paused'],
        ] as const)
      : []),
  ] as const)(
    'moves a running, writing VM with a 1 GiB disk from hv1 to hv2, its memory %s: never on both hosts, nothing lost',
    async (_how, memory) => {
      const tcp = memory === 'stateFile+tcp';
      const v = await guestOn(`big${memory.slice(0, 2)}${tcp ? 't' : ''}`, 'hv1', 'local', [
        { target: 'vda', size: 1024 * MiB, fill: 512 * MiB },
        { target: 'vdb', size: 64 * MiB },
      ]);
      await writeDesired(v, 'hv2', 'local');
      // the tcp channel carries what crosses in the pause: hosts without shared storage, so the
      // state file (83 MB) is saved on hv1 and copied to hv2
      if (tcp)
        await fs.writeFile(
          path.join(v.repo, 'manifests', 'fleet.yaml'),
          twoHostManifests(env, [{ name: v.name, host: 'hv2', storage: 'local' }], { cluster: false }),
        );
      // the lab's guests are emulated (TCG): a live memory migration needs policy.liveEmulated
      const opt = memory === 'live' ? ', liveEmulated: true' : tcp ? ', pauseTransfer: tcp' : '';
      const way = tcp ? 'stateFile' : memory;
      await fs.writeFile(path.join(v.repo, 'vmplace.yaml'), `policy: {quickMemory: ${way}${opt}}\n`);
      const t0 = Date.now();
      const { exited } = apply(v);
      let both = 0;
      let samples = 0;
      let done = false;
      // detached: `exited` never rejects; it only ends the sampling loop below
      void exited.then(() => (done = true));
      while (!done) {
        const w = await where(v.name);
        samples++;
        if (w.hv1 === 'running' && w.hv2 === 'running') both++;
        if (w.hv1 !== 'running' && w.hv2 !== 'running' && w.hv1 !== 'shutoff' && w.hv1 !== 'paused') {
          // saved on hv1 and not yet restored on hv2: fine, but never missing everywhere afterwards
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      const res = await exited;
      const wall = Date.now() - t0;
      expect({ code: res.code, stderr: res.code === 0 ? '' : res.stderr.slice(-3000) }).toEqual({
        code: 0,
        stderr: '',
      });
      expect(both).toBe(0);
      expect(samples).toBeGreaterThan(5);
      if (way === 'stateFile') {
        // the overlays crossed while the memory state was being written (and were verified after)
        expect(res.stderr).toContain('delta copied while the memory state was being saved');
        expect(res.stderr).not.toContain('by migration');
        expect(res.stderr).not.toContain('live-migrated onto');
        // the state file (83 MB) through the daemon when asked, through ssh otherwise
        if (tcp) expect(res.stderr).toContain('state file crossed through the tcp channel');
        else expect(res.stderr).not.toContain('tcp channel');
        expect(res.stderr).not.toContain('not the tcp channel');
      } else if (memory === 'paused') {
        // no state file: QEMU's migration stream moved the paused VM onto the copied layers
        expect(res.stderr).toContain('paused VM moved to the target by migration (no state file)');
        expect(res.stderr).not.toContain('memory state was being saved');
      } else {
        // no state file, no pause but the switch-over: the top layer mirrored onto the copies
        expect(res.stderr).toContain('VM live-migrated onto the copied layers');
        expect(res.stderr).not.toContain('memory state was being saved');
        expect(res.stderr).not.toContain('paused VM moved');
      }
      expect(await where(v.name)).toEqual({ hv1: undefined, hv2: 'running' });
      const onHv2 = await d.hv2.getDomain(v.name);
      expect(onHv2?.persistent).toBe(true);
      expect(onHv2?.disks.map((x) => x.path)).toEqual(movedTo(v, 'hv2'));
      for (const x of v.disks) expect(await exists(mgmtPath('hv1', x.file))).toBe(false);
      const s = await status(v);
      expect(s.phase).toBe('Placed');
      expect(s.placement?.host).toBe('hv2');
      expect(s.migration?.step).toBe('Completed');
      expect(s.migration?.from.host).toBe('hv1');
      expect(s.migration?.to.host).toBe('hv2');
      const total = Date.parse(s.migration!.finishedAt!) - Date.parse(s.migration!.startedAt!);
      console.log(
        `cross-host move of a VM with a 1 GiB disk (512 MiB allocated) + 64 MiB disk, memory ${memory}: pause ${s.migration?.pauseMs} ms, ` +
          `migration ${total} ms, apply ${wall} ms, ${samples} samples of both hosts, never on both`,
      );
      await expectNothingLost(v, 'hv2', movedTo(v, 'hv2'));
    },
  );

  it('under ~10 MiB/s of guest writes, iterative delta rounds shrink the delta before the pause; nothing lost', async () => {
    const v = await guestOn(
      'rounds',
      'hv1',
      'local',
      [{ target: 'vda', size: 1024 * MiB, fill: 512 * MiB }],
      {
        bulkMiBps: 10,
      },
    );
    await writeDesired(v, 'hv2', 'local');
    // a tight budget, so that the first delta cannot fit it
    const file = path.join(v.repo, 'manifests', 'fleet.yaml');
    const text = await fs.readFile(file, 'utf8');
    await fs.writeFile(
      file,
      text.replace('spec: {host: hv2, storage: local}', 'spec: {host: hv2, storage: local, maxPause: 100ms}'),
    );
    const res = await apply(v).exited;
    await fs.writeFile(path.join(root, '..', `${v.name}.apply.log`), res.stderr).catch(() => undefined);
    expect({ code: res.code, stderr: res.code === 0 ? '' : res.stderr.slice(-3000) }).toEqual({
      code: 0,
      stderr: '',
    });
    const rounds = res.stderr
      .split('\n')
      .filter((l) => l.includes('"delta round"'))
      .map((l) => JSON.parse(l) as { round: number; deltaBytes: number; predictedMs: number });
    expect(rounds.length).toBeGreaterThanOrEqual(2);
    expect(Math.max(...rounds.map((r) => r.round))).toBeGreaterThanOrEqual(2);
    // each round's delta is smaller than the first one
    expect(rounds.at(-1)!.deltaBytes).toBeLessThan(rounds[0]!.deltaBytes);
    const s = await status(v);
    expect(s.phase).toBe('Placed');
    console.log(
      `delta rounds under load: ${rounds.map((r) => `#${r.round} ${(r.deltaBytes / MiB).toFixed(1)} MiB`).join(', ')}; pause ${s.migration?.pauseMs} ms`,
    );
    expect(await where(v.name)).toEqual({ hv1: undefined, hv2: 'running' });
    await expectNothingLost(v, 'hv2', movedTo(v, 'hv2'));
  });

  it('strategy live across hosts of an emulated (TCG) guest, without policy.liveEmulated: Blocked in Preflight (StrategyUnsupported), nothing changed', async () => {
    const v = await guestOn('nolv', 'hv1', 'local', [{ target: 'vda', size: 64 * MiB, fill: 16 * MiB }]);
    await writeDesired(v, 'hv2', 'local');
    const text = await fs.readFile(path.join(v.repo, 'manifests', 'fleet.yaml'), 'utf8');
    await fs.writeFile(
      path.join(v.repo, 'manifests', 'fleet.yaml'),
      text.replace(`spec: {host: hv2, storage: local}`, `spec: {host: hv2, storage: local, strategy: live}`),
    );
    const before = (await d.hv1.getDomain(v.name))!;
    expect(before.domainType).toBe('qemu');
    const res = await apply(v).exited;
    expect(res.code).toBe(1);
    expect(await where(v.name)).toEqual({ hv1: 'running', hv2: undefined });
    expect((await d.hv1.getDomain(v.name))?.disks.map((x) => x.path)).toEqual(
      before.disks.map((x) => x.path),
    );
    const s = await status(v);
    expect(s.phase).toBe('Blocked');
    expect(JSON.stringify(s)).toContain('StrategyUnsupported');
    for (const p of movedTo(v, 'hv2')) expect(await exists(mgmtPath('hv2', p))).toBe(false);
  });

  // QEMU's live migration damaged emulated guests' memory in lab moves (README, policy.liveEmulated):
  // the opt-in runs with VMPLACE_LAB_EXPERIMENTAL=1, and its failures are counted there
  (process.env.VMPLACE_LAB_EXPERIMENTAL === '1' ? it : it.skip)(
    'strategy live across hosts with policy.liveEmulated: a live migration with storage, the VM never paused for long; nothing lost',
    async () => {
      const v = await guestOn('live', 'hv1', 'local', [{ target: 'vda', size: 256 * MiB, fill: 64 * MiB }]);
      await writeDesired(v, 'hv2', 'local');
      await fs.appendFile(path.join(v.repo, 'manifests', 'fleet.yaml'), '');
      const text = await fs.readFile(path.join(v.repo, 'manifests', 'fleet.yaml'), 'utf8');
      await fs.writeFile(
        path.join(v.repo, 'manifests', 'fleet.yaml'),
        text.replace(
          `spec: {host: hv2, storage: local}`,
          `spec: {host: hv2, storage: local, strategy: live}`,
        ),
      );
      await fs.writeFile(path.join(v.repo, 'vmplace.yaml'), 'policy: {liveEmulated: true}\n');
      const res = await apply(v).exited;
      expect({ code: res.code, stderr: res.code === 0 ? '' : res.stderr.slice(-3000) }).toEqual({
        code: 0,
        stderr: '',
      });
      expect(await where(v.name)).toEqual({ hv1: undefined, hv2: 'running' });
      const s = await status(v);
      expect(s.phase).toBe('Placed');
      expect(s.migration?.strategy).toBe('live');
      expect(s.migration?.pauseMs).toBeLessThan(1000);
      console.log(`live migration across hosts: QEMU downtime ${s.migration?.pauseMs} ms`);
      for (const x of v.disks) expect(await exists(mgmtPath('hv1', x.file))).toBe(false);
      await expectNothingLost(v, 'hv2', movedTo(v, 'hv2'));
    },
  );

  it('moves only the state and the definition between hosts of one cluster when the disks stay on shared storage', async () => {
    const v = await guestOn('csv', 'hv2', 'csv', [{ target: 'vda', size: 64 * MiB, fill: 16 * MiB }]);
    await writeDesired(v, 'hv1', 'csv');
    const res = await apply(v).exited;
    expect({ code: res.code, stderr: res.code === 0 ? '' : res.stderr.slice(-3000) }).toEqual({
      code: 0,
      stderr: '',
    });
    expect(await where(v.name)).toEqual({ hv1: 'running', hv2: undefined });
    expect((await d.hv1.getDomain(v.name))?.disks.map((x) => x.path)).toEqual([v.disks[0]!.file]);
    const s = await status(v);
    expect(s.phase).toBe('Placed');
    expect(s.migration?.bytesTotal).toBe(0);
    expect(s.migration?.pauseMs).toBeGreaterThan(0);
    await expectNothingLost(v, 'hv1', [v.disks[0]!.file]);
  });

  it('rolls back when the target libvirtd stops before the restore: VM running on hv1, nothing lost', async () => {
    const v = await guestOn('rb', 'hv1', 'local', [{ target: 'vda', size: 256 * MiB, fill: 128 * MiB }]);
    await writeDesired(v, 'hv2', 'local');
    const { exited } = apply(v);
    for (let i = 0; i < 6000 && (await persistedStep(v)) !== 'CopyingBase'; i++)
      await new Promise((r) => setTimeout(r, 5));
    const libvirtd = (await hostProcesses(env.hosts.hv2)).filter((p) => p.comm === 'libvirtd');
    expect(libvirtd.length).toBeGreaterThan(0);
    for (const p of libvirtd) process.kill(p.pid, 'SIGKILL');
    try {
      const res = await exited;
      expect(res.code).toBe(1);
      const s = await status(v);
      expect(s.phase).toBe('Failed');
      // on a failure, say why (the rollback's own error)
      expect({
        step: s.migration?.step,
        error: s.migration?.step === 'RolledBack' ? undefined : s.migration?.lastError,
      }).toEqual({ step: 'RolledBack', error: undefined });
      expect((await d.hv1.getDomain(v.name))?.state).toBe('running');
      expect((await d.hv1.getDomain(v.name))?.disks.map((x) => x.path)).toEqual([v.disks[0]!.file]);
    } finally {
      await restartLibvirtd('hv2');
    }
    expect((await where(v.name)).hv2).toBeUndefined();
    await expectNothingLost(v, 'hv1', [v.disks[0]!.file]);
  });

  it('a link cut during the base copy: the copy resumes and the migration completes', async () => {
    const v = await guestOn('cut', 'hv1', 'local', [{ target: 'vda', size: 512 * MiB, fill: 384 * MiB }]);
    await writeDesired(v, 'hv2', 'local');
    const { exited } = apply(v);
    for (let i = 0; i < 6000 && (await persistedStep(v)) !== 'CopyingBase'; i++)
      await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 300));
    await setLink(env.hosts.hv2, 'down');
    await new Promise((r) => setTimeout(r, 3000));
    await setLink(env.hosts.hv2, 'up');
    const res = await exited;
    expect({ code: res.code, stderr: res.code === 0 ? '' : res.stderr.slice(-3000) }).toEqual({
      code: 0,
      stderr: '',
    });
    expect(await where(v.name)).toEqual({ hv1: undefined, hv2: 'running' });
    await expectNothingLost(v, 'hv2', movedTo(v, 'hv2'));
  });

  it.each(['CopyingBase', 'Saving', 'Restoring', 'Finalizing'])(
    'kill -9 of vmplace apply during %s: the rerun converges, nothing lost, the VM on exactly one host',
    async (step) => {
      const v = await guestOn(`k${step.toLowerCase().slice(0, 5)}`, 'hv1', 'local', [
        { target: 'vda', size: 256 * MiB, fill: 128 * MiB },
      ]);
      await writeDesired(v, 'hv2', 'local');
      const { child, exited } = apply(v);
      let seen: string | undefined;
      for (let i = 0; i < 20000 && seen !== step; i++) {
        seen = await persistedStep(v);
        if (seen !== step) await new Promise((r) => setTimeout(r, 2));
      }
      expect(seen).toBe(step);
      process.kill(-child.pid!, 'SIGKILL');
      await exited;
      const w = await where(v.name);
      expect(w.hv1 === 'running' && w.hv2 === 'running').toBe(false);
      const res = await apply(v).exited;
      expect({ code: res.code, stderr: res.code === 0 ? '' : res.stderr.slice(-3000) }).toEqual({
        code: 0,
        stderr: '',
      });
      expect(await where(v.name)).toEqual({ hv1: undefined, hv2: 'running' });
      expect((await status(v)).phase).toBe('Placed');
      await expectNothingLost(v, 'hv2', movedTo(v, 'hv2'));
    },
  );
});

/** Start a host's libvirtd again inside its namespaces (after a test killed it). */
async function restartLibvirtd(h: LabHostName): Promise<void> {
  const sshd = (await hostProcesses(env.hosts[h])).find((p) => p.comm === 'sshd');
  if (!sshd) throw new Error(`no sshd in ${h}`);
  await run('nsenter', ['-t', String(sshd.pid), '-m', '-u', '-n', '--', 'libvirtd', '-d']);
  for (let i = 0; i < 100; i++) {
    if (
      await d[h].listDomains().then(
        () => true,
        () => false,
      )
    )
      return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`libvirtd on ${h} did not come back`);
}
