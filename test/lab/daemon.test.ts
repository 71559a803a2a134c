/**
 * `vmplace daemon` end to end: a real bare git repository as the remote, a human clone that
 * pushes commits, the real daemon binary, real libvirt with writing guests.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { parse } from 'yaml';
import {
  ackedSequences,
  buildGuest,
  destroyVm,
  domState,
  dumpXml,
  ensureLab,
  labTempDir,
  serialLogSize,
  serialSince,
  verifyRecords,
  virsh,
  waitForAcks,
} from '../../src/lab';
import { makeFleet, run, type Fleet } from './support/fleet';
import {
  humanClone,
  newBareRepo,
  readRemoteFile,
  signature,
  startDaemon,
  type RunningDaemon,
} from './support/daemon';
import { parseDomainXml } from '../../src/drivers/libvirt/xml';
import type { VirtualMachineStatus } from '../../src/types';

jest.setTimeout(600_000);

const SECRET = 'not-a-real-secret-0123456789';
let root: string;
let bare: string;
let git: (...args: string[]) => Promise<string>;
let humanDir: string;
let workdir: string;
let stateDir: string;
let secretFile: string;
const fleets = new Map<string, Fleet>();
const storage = new Map<string, string>(); // VM -> desired storage name
let daemon: RunningDaemon | undefined;

function manifests(): string {
  const locs = [...fleets.entries()].flatMap(([k, f]) => [
    `    - {name: ${k}-a, path: ${f.storage.a}}`,
    `    - {name: ${k}-b, path: ${f.storage.b}}`,
  ]);
  const vms = [...fleets.entries()].map(
    ([k, f]) =>
      `---\napiVersion: vmplace.dev/v1alpha1\nkind: VirtualMachine\nmetadata: {name: ${f.vm}}\nspec: {host: lab, storage: ${storage.get(k)}}\n`,
  );
  return `apiVersion: vmplace.dev/v1alpha1
kind: Host
metadata: {name: lab}
spec:
  driver: libvirt
  uri: qemu:///system
  storage:
${locs.join('\n')}
${vms.join('')}`;
}

async function pushManifests(message: string, extra: Record<string, string> = {}): Promise<void> {
  await git('pull', '-q', '--rebase');
  await fs.writeFile(path.join(humanDir, 'manifests', 'fleet.yaml'), manifests());
  for (const [file, text] of Object.entries(extra)) await fs.writeFile(path.join(humanDir, file), text);
  await git('add', '-A');
  await git('commit', '-q', '-m', message);
  await pushAsAHuman();
}

/** The daemon may push a status commit between our pull and our push: do as a human would. */
async function pushAsAHuman(): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await git('push', '-q', 'origin', 'main');
      return;
    } catch (err) {
      if (attempt >= 5) throw err;
      await git('pull', '-q', '--rebase');
    }
  }
}

async function webhook(body: string, sig?: string): Promise<number> {
  const res = await fetch(`${daemon!.url}/hooks/git`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(sig ? { 'x-hub-signature-256': sig } : {}) },
    body,
  });
  return res.status;
}

async function remoteStatus(f: Fleet): Promise<VirtualMachineStatus | undefined> {
  const text = await readRemoteFile(bare, `status/vms/${f.vm}.yaml`);
  return text ? (parse(text) as VirtualMachineStatus) : undefined;
}

async function until<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  timeoutMs = 180_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function placedOn(f: Fleet, key: string): Promise<VirtualMachineStatus> {
  return until(`${f.vm} placed on ${key} in the remote's status`, async () => {
    const s = await remoteStatus(f);
    return s?.phase === 'Placed' && s.placement?.disks.every((d) => d.storage === key) ? s : undefined;
  });
}

/** Serial log offset at the guest's latest boot by this test (its acks restart from 1 there). */
const bootOffset = new Map<string, number>();

/**
 * Running once from `dir` with every acknowledged record there. With `since` (a serial log
 * offset before the migration): the guest went on from its memory meanwhile, no boot and no
 * sequence going back. Ends by booting the guest again (destroy, start).
 */
async function expectRunningOnceWithAllData(f: Fleet, dir: string, since?: number): Promise<void> {
  expect(await domState(f.vm)).toBe('running');
  const procs = (await run('pgrep', ['-f', `guest=${f.vm},`])).stdout.split('\n').filter(Boolean);
  expect(procs).toHaveLength(1);
  // a moved disk lives in its VM's directory of the storage (see targetDiskPath)
  const want = f.disks.map((d) => path.join(dir, f.vm, path.basename(d.path)));
  expect(parseDomainXml(await dumpXml(f.vm)).disks.map((d) => d.path)).toEqual(want);
  expect(parseDomainXml(await dumpXml(f.vm, { inactive: true })).disks.map((d) => d.path)).toEqual(want);
  // acks of the current boot only: an earlier boot's higher numbers are not this guest's
  const before = (await serialSince(f.serialLog, bootOffset.get(f.vm) ?? 0)).last;
  for (const d of f.disks)
    await waitForAcks(f.serialLog, {
      disk: d.target,
      atLeast: (before.get(d.target) ?? 0) + 2,
      timeoutMs: 30_000,
    });
  if (since !== undefined) {
    const seen = await serialSince(f.serialLog, since);
    expect({ boots: seen.boots, wentBack: seen.wentBack }).toEqual({ boots: 0, wentBack: [] });
  }
  await virsh(['suspend', f.vm]);
  await virsh(['qemu-monitor-command', f.vm, '--hmp', 'info status']); // let QEMU settle
  const acked = await ackedSequences(f.serialLog);
  await virsh(['destroy', f.vm]);
  for (const d of f.disks) {
    const check = await verifyRecords(
      path.join(dir, f.vm, path.basename(d.path)),
      d.target,
      acked.get(d.target) ?? 0,
    );
    expect(check.bad).toEqual([]);
  }
  const offset = await serialLogSize(f.serialLog);
  bootOffset.set(f.vm, offset);
  await virsh(['start', f.vm]);
  // the next case counts boots from a point after this boot: wait until the guest is up
  // (under TCG on a busy machine its READY line can come seconds later, inside the next case)
  for (let i = 0; i < 900 && (await serialSince(f.serialLog, offset)).boots < 1; i++)
    await new Promise((r) => setTimeout(r, 100));
}

beforeAll(async () => {
  await ensureLab();
  await buildGuest();
  root = await labTempDir('vmplace-daemon-');
  bare = await newBareRepo(root);
  humanDir = path.join(root, 'human');
  workdir = path.join(root, 'work', 'repo');
  stateDir = path.join(root, 'state');
  secretFile = path.join(root, 'secret');
  await fs.writeFile(secretFile, SECRET + '\n');
  // the remote starts with a README and the fleet
  git = await humanClone(bare, humanDir);
  await fs.mkdir(path.join(humanDir, 'manifests'), { recursive: true });
  await fs.writeFile(path.join(humanDir, 'README.md'), '# fleet\n');
  for (const k of ['v1', 'v2', 'v3']) {
    const f = await makeFleet(`vmp-d${k}-${process.pid}`, { fillBytes: 128 * 1024 * 1024 });
    fleets.set(k, f);
    storage.set(k, `${k}-a`);
  }
  await fs.writeFile(path.join(humanDir, 'manifests', 'fleet.yaml'), manifests());
  await git('add', '-A');
  await git('commit', '-q', '-m', 'fleet');
  await git('push', '-q', 'origin', 'HEAD:main');
  for (const f of fleets.values())
    for (const d of f.disks)
      await waitForAcks(f.serialLog, { disk: d.target, atLeast: 3, timeoutMs: 60_000 });
});

afterAll(async () => {
  if (daemon) {
    process.kill(-daemon.child.pid!, 'SIGKILL');
    await daemon.exited;
  }
  for (const f of fleets.values()) await destroyVm(f.vm).catch(() => undefined);
  await fs.rm(root, { recursive: true, force: true }).catch(() => undefined);
});

describe('vmplace daemon (real git, real libvirt, real guests)', () => {
  it('migrates a VM after a commit and a signed webhook, and pushes the status commit', async () => {
    daemon = await startDaemon({ repo: bare, workdir, stateDir, secretFile, interval: '30s' });
    await until('ready', async () => (await fetch(`${daemon!.url}/readyz`)).status === 200);
    const v1 = fleets.get('v1')!;
    await placedOn(v1, 'v1-a');
    expect(
      (await run('git', ['--git-dir', bare, 'log', '-1', '--format=%an <%ae>', 'main'])).stdout.trim(),
    ).toBe('vmplace-bot <bot@vmplace.test>');

    storage.set('v1', 'v1-b');
    await pushManifests('move v1 to b');
    const body = JSON.stringify({ ref: 'refs/heads/main' });
    const sent = Date.now();
    expect(await webhook(body, signature(SECRET, body))).toBe(202);
    const started = await daemon.waitFor(
      (l) => l.msg === 'migrations started' && JSON.stringify(l.vms).includes(v1.vm),
    );
    const reactionMs = started.time - sent;
    const done = await daemon.waitFor(
      (l) => l.msg === 'status commit pushed after migration finished' && l.vm === v1.vm,
    );
    const status = await placedOn(v1, 'v1-b');
    expect(status.migration?.step).toBe('Completed');
    expect(status.migration?.pauseMs).toBeGreaterThan(0);
    // the metrics saw it
    const metrics = await (await fetch(`${daemon.url}/metrics`)).text();
    expect(metrics).toMatch(/vmplace_migrations_total\{result="completed",strategy="quick"\} 1/);
    console.log(
      `daemon timings: webhook -> migration start ${reactionMs} ms; completion -> status commit pushed ${String(done.ms)} ms`,
    );
    await expectRunningOnceWithAllData(v1, v1.storage.b);
  });

  it('refuses a webhook with a wrong or missing signature (401) and does nothing', async () => {
    const body = JSON.stringify({ ref: 'refs/heads/main' });
    const passesBefore = daemon!.logs.filter((l) => l.msg === 'status committed').length;
    expect(await webhook(body, signature('wrong', body))).toBe(401);
    expect(await webhook(body)).toBe(401);
    expect(daemon!.logs.filter((l) => l.msg === 'status committed').length).toBe(passesBefore);
  });

  it('keeps a human commit pushed while it works, and serves every valid VM despite an invalid file', async () => {
    const v2 = fleets.get('v2')!;
    storage.set('v2', 'v2-b');
    await pushManifests('move v2 to b; add a broken file', {
      'manifests/broken.yaml': 'kind: Host\nmetadata: {name: [\n',
    });
    const body = '{}';
    expect(await webhook(body, signature(SECRET, body))).toBe(202);
    await daemon!.waitFor((l) => l.msg === 'migrations started' && JSON.stringify(l.vms).includes(v2.vm));
    // a human pushes while the migration runs
    await git('pull', '-q', '--rebase');
    await fs.writeFile(path.join(humanDir, 'README.md'), '# fleet\n\nedited by a human during a migration\n');
    await git('commit', '-q', '-am', 'human edit');
    await pushAsAHuman();
    await placedOn(v2, 'v2-b');
    expect(await readRemoteFile(bare, 'README.md')).toContain('edited by a human during a migration');
    const summary = parse((await readRemoteFile(bare, 'status/summary.yaml')) ?? '') as {
      problems: string[];
    };
    expect(summary.problems.some((p) => /^manifests\/broken\.yaml:\d+:\d+: /.test(p))).toBe(true);
    // no commit of the daemon ever touched anything outside status/
    const touched = (
      await run('git', ['--git-dir', bare, 'log', '--author=vmplace-bot', '--name-only', '--format=', 'main'])
    ).stdout
      .split('\n')
      .filter(Boolean);
    expect(touched.every((f) => f.startsWith('status/'))).toBe(true);
    await git('pull', '-q', '--rebase');
    await git('rm', '-q', 'manifests/broken.yaml');
    await git('commit', '-q', '-m', 'remove broken file');
    await pushAsAHuman();
  });

  it('a second daemon on the same workdir or state dir refuses to start', async () => {
    const r = await run(process.execPath, [
      path.join(__dirname, '..', '..', 'bin', 'vmplace.js'),
      'daemon',
      '--repo',
      bare,
      '--workdir',
      workdir,
      '--state-dir',
      path.join(root, 'other-state'),
      '--listen',
      '127.0.0.1:0',
    ]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/another vmplace daemon \(pid \d+.*\) holds .*\.repo\.vmplace\.lock/);
    const r2 = await run(process.execPath, [
      path.join(__dirname, '..', '..', 'bin', 'vmplace.js'),
      'daemon',
      '--repo',
      bare,
      '--workdir',
      path.join(root, 'other-work', 'repo'),
      '--state-dir',
      stateDir,
      '--listen',
      '127.0.0.1:0',
    ]);
    expect(r2.code).not.toBe(0);
    expect(r2.stderr).toMatch(/another vmplace daemon \(pid \d+.*\) holds .*daemon\.lock/);
  });

  it.each(['CopyingBase', 'Saving', 'Restoring'])(
    'kill -9 of the daemon during %s: the restarted daemon completes, nothing lost, the VM running once',
    async (step) => {
      const v3 = fleets.get('v3')!;
      const to = storage.get('v3') === 'v3-a' ? 'v3-b' : 'v3-a';
      storage.set('v3', to);
      await pushManifests(`move v3 to ${to}`);
      const since = await serialLogSize(v3.serialLog);
      const body = '{}';
      expect(await webhook(body, signature(SECRET, body))).toBe(202);
      const migrations = path.join(stateDir, 'migrations');
      let seen: string | undefined;
      for (let i = 0; i < 20000 && seen !== step; i++) {
        for (const n of await fs.readdir(migrations).catch(() => [] as string[])) {
          if (!n.startsWith(v3.vm)) continue;
          try {
            seen = (
              JSON.parse(await fs.readFile(path.join(migrations, n), 'utf8')) as {
                snapshot: { value: string };
              }
            ).snapshot.value;
          } catch {
            // replaced while reading
          }
        }
        if (seen !== step) await new Promise((r) => setTimeout(r, 3));
      }
      expect(seen).toBe(step);
      process.kill(-daemon!.child.pid!, 'SIGKILL');
      await daemon!.exited;
      daemon = await startDaemon({ repo: bare, workdir, stateDir, secretFile, interval: '2s' });
      await daemon.waitFor((l) => l.msg === 'resuming interrupted migration' && l.vm === v3.vm);
      await placedOn(v3, to);
      await expectRunningOnceWithAllData(v3, to === 'v3-b' ? v3.storage.b : v3.storage.a, since);
    },
  );

  it('SIGTERM lets the migration reach a checkpoint and exits in bounded time; a restart completes it', async () => {
    const v3 = fleets.get('v3')!;
    const to = storage.get('v3') === 'v3-a' ? 'v3-b' : 'v3-a';
    storage.set('v3', to);
    await pushManifests(`move v3 to ${to}`);
    const body = '{}';
    expect(await webhook(body, signature(SECRET, body))).toBe(202);
    await daemon!.waitFor((l) => l.msg === 'migration step' && l.vm === v3.vm && l.step === 'CopyingBase');
    const t0 = Date.now();
    process.kill(daemon!.child.pid!, 'SIGTERM');
    const code = await daemon!.exited;
    const stopMs = Date.now() - t0;
    expect(code).toBe(0);
    expect(stopMs).toBeLessThan(60_000);
    expect(await domState(v3.vm)).toBe('running');
    console.log(`daemon stopped ${stopMs} ms after SIGTERM`);
    daemon = await startDaemon({ repo: bare, workdir, stateDir, secretFile, interval: '2s' });
    await placedOn(v3, to);
    await expectRunningOnceWithAllData(v3, to === 'v3-b' ? v3.storage.b : v3.storage.a);
  });
});
