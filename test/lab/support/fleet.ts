/**
 * A throwaway GitOps repository and a writing guest for end-to-end tests of vmplace on the
 * local lab: one Host `lab` (qemu:///system) with storage locations `a` and `b` in a fresh
 * directory, and one VirtualMachine whose desired storage the test chooses.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { parse } from 'yaml';
import { createDisk, defineGuestVm, labTempDir, REPO_ROOT } from '../../../src/lab';
import type { VirtualMachineStatus } from '../../../src/types';

export const VMPLACE_BIN = path.join(REPO_ROOT, 'bin', 'vmplace.js');

export interface Fleet {
  root: string;
  repo: string;
  stateDir: string;
  storage: { a: string; b: string };
  vm: string;
  serialLog: string;
  disks: { target: string; path: string }[];
}

/** The Host `lab` (qemu:///system) with storage locations `a` and `b`, as manifest text. */
export function labHostManifest(storage: { a: string; b: string }): string {
  return `apiVersion: vmplace.dev/v1alpha1
kind: Host
metadata:
  name: lab
spec:
  driver: libvirt
  uri: qemu:///system
  storage:
    - name: a
      path: ${storage.a}
    - name: b
      path: ${storage.b}
`;
}

/** A VirtualMachine on host `lab` desiring `storage`, as a manifest document (with `---`). */
export function labVmManifest(name: string, storage: string, extra = ''): string {
  return `---
apiVersion: vmplace.dev/v1alpha1
kind: VirtualMachine
metadata:
  name: ${name}
spec:
  host: lab
  storage: ${storage}
${extra}`;
}

/** Write the manifests for `vm` desiring `storage` on host `lab`. */
export async function writeManifests(f: Fleet, desiredStorage: 'a' | 'b', extra = ''): Promise<void> {
  await fs.mkdir(path.join(f.repo, 'manifests'), { recursive: true });
  const text = labHostManifest(f.storage) + labVmManifest(f.vm, desiredStorage, extra);
  await fs.writeFile(path.join(f.repo, 'manifests', 'fleet.yaml'), text);
}

/**
 * A fleet whose VM runs a real writing guest with two qcow2 disks on storage `a`.
 * `storageB` lets a test put `b` on a small or read-only mount.
 */
export async function makeFleet(
  name: string,
  opts: {
    diskBytes?: number;
    fillBytes?: number;
    storageB?: string;
    rateHz?: number;
    bulkMiBps?: number;
  } = {},
): Promise<Fleet> {
  const root = await labTempDir(`${name}-`);
  const f: Fleet = {
    root,
    repo: path.join(root, 'repo'),
    stateDir: path.join(root, 'state'),
    storage: { a: path.join(root, 'a'), b: opts.storageB ?? path.join(root, 'b') },
    vm: name,
    serialLog: path.join(root, 'serial.log'),
    disks: [],
  };
  await fs.mkdir(f.storage.a, { recursive: true });
  await fs.mkdir(f.storage.b, { recursive: true });
  f.disks = ['vda', 'vdb'].map((target) => ({
    target,
    path: path.join(f.storage.a, `${name}-${target}.qcow2`),
  }));
  for (const d of f.disks) {
    // the guest's records use the first 16 MiB; host-written fill goes from 32 MiB on
    await createDisk(d.path, opts.diskBytes ?? 48 * 1024 * 1024 + (opts.fillBytes ?? 0));
    if (opts.fillBytes) await fillImage(d.path, opts.fillBytes);
  }
  await writeManifests(f, 'a');
  await defineGuestVm({
    name,
    disks: f.disks,
    serialLog: f.serialLog,
    memoryMiB: 128,
    rateHz: opts.rateHz ?? 20,
    ...(opts.bulkMiBps ? { bulkMiBps: opts.bulkMiBps } : {}),
  });
  return f;
}

/** Put data into a disk image from the host before the guest starts (beyond the guest's record region). */
async function fillImage(image: string, bytes: number): Promise<void> {
  const offset = 32 * 1024 * 1024;
  const res = await run('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x5a ${offset} ${bytes}`, image]);
  if (res.code !== 0 || /error|fail/i.test(res.stdout + res.stderr))
    throw new Error(`qemu-io fill of ${image}: ${res.stdout}${res.stderr}`);
}

export function run(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env: { ...process.env, ...env }, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err
        ? typeof (err as { code?: unknown }).code === 'number'
          ? (err as { code: number }).code
          : 1
        : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Run the real CLI: `vmplace apply REPO --yes --state-dir DIR --log-format json`. */
export function applyCli(f: Fleet): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(process.execPath, [
    VMPLACE_BIN,
    'apply',
    f.repo,
    '--yes',
    '--state-dir',
    f.stateDir,
    '--log-format',
    'json',
  ]);
}

/** Start the CLI in its own process group, so that a test can kill it and its children at once. */
export function spawnApply(f: Fleet): ChildProcess {
  return spawn(
    process.execPath,
    [VMPLACE_BIN, 'apply', f.repo, '--yes', '--state-dir', f.stateDir, '--log-format', 'json'],
    {
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
}

/** The step of the migration in flight, as persisted in the state dir. */
export async function persistedStep(f: Fleet): Promise<string | undefined> {
  const dir = path.join(f.stateDir, 'migrations');
  const names = await fs.readdir(dir).catch(() => [] as string[]);
  for (const n of names) {
    if (!n.endsWith('.json')) continue;
    try {
      const rec = JSON.parse(await fs.readFile(path.join(dir, n), 'utf8')) as { snapshot: { value: string } };
      return rec.snapshot.value;
    } catch {
      // being replaced right now
    }
  }
  return undefined;
}

export async function readVmStatus(f: Fleet): Promise<VirtualMachineStatus> {
  return parse(
    await fs.readFile(path.join(f.repo, 'status', 'vms', `${f.vm}.yaml`), 'utf8'),
  ) as VirtualMachineStatus;
}

export async function exists(p: string): Promise<boolean> {
  return fs.access(p).then(
    () => true,
    () => false,
  );
}
