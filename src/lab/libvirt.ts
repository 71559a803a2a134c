/**
 * The local libvirt lab (qemu:///system on this machine, started by scripts/lab/up.sh): bring it
 * up, run virsh, create disk images, and remove a test's domain with the files it names.
 *
 * Every external command runs through execFile with an argument array; nothing goes through a
 * shell. Needs root (qemu:///system).
 */
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { XMLParser } from 'fast-xml-parser';
import { run, type RunOptions } from './run';

/** The connection URI of the lab's libvirt. */
export const LAB_URI = 'qemu:///system';
/** Repository root (this file is src/lab/libvirt.ts, or dist/lab/libvirt.js once built). */
export const REPO_ROOT = path.resolve(__dirname, '..', '..');
export const LAB_SCRIPTS_DIR = path.join(REPO_ROOT, 'scripts', 'lab');

/** `virsh -c qemu:///system ARGS...`, returning stdout. */
export async function virsh(args: readonly string[], opts: RunOptions = {}): Promise<string> {
  return (await run('virsh', ['-c', LAB_URI, ...args], opts)).stdout;
}

/** True when libvirt answers on the lab URI (`virsh version` and `virsh list` both work). */
export async function virshOk(): Promise<boolean> {
  try {
    await virsh(['version'], { timeoutMs: 5_000 });
    await virsh(['list'], { timeoutMs: 5_000 });
    return true;
  } catch {
    return false;
  }
}

let labUp: Promise<string> | undefined;

/**
 * Make sure the lab's libvirt is running and return its connection URI. Always runs
 * scripts/lab/up.sh, which is idempotent and cheap when libvirt already answers, so this
 * process holds a lease and a parallel `down.sh` leaves libvirt up until this process exits;
 * when libvirt does not answer, scripts/lab/install.sh runs first (needs root).
 */
export function ensureLab(): Promise<string> {
  labUp ??= (async () => {
    const up = () => run('bash', [path.join(LAB_SCRIPTS_DIR, 'up.sh')], { timeoutMs: 120_000 });
    if (await virshOk()) {
      await up().catch(() => undefined); // only the lease is at stake here
      return LAB_URI;
    }
    await run('bash', [path.join(LAB_SCRIPTS_DIR, 'install.sh')], { timeoutMs: 900_000 });
    await up();
    if (!(await virshOk())) throw new Error(`libvirt does not answer on ${LAB_URI} after scripts/lab/up.sh`);
    return LAB_URI;
  })().catch((err: unknown) => {
    labUp = undefined;
    throw err;
  });
  return labUp;
}

export type DiskFormat = 'qcow2' | 'raw';

/** Create a disk image with `qemu-img create` (parent directory is created). */
export async function createDisk(
  file: string,
  sizeBytes: number,
  format: DiskFormat = 'qcow2',
): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  await run('qemu-img', ['create', '-q', '-f', format, file, String(sizeBytes)]);
}

/** `virsh domstate NAME` (e.g. `running`, `shut off`, `paused`), or undefined if no such domain. */
export async function domState(name: string): Promise<string | undefined> {
  try {
    return (await virsh(['domstate', name])).trim();
  } catch {
    return undefined;
  }
}

/** `virsh dumpxml [--inactive] NAME`. */
export async function dumpXml(name: string, opts: { inactive?: boolean } = {}): Promise<string> {
  return virsh(['dumpxml', ...(opts.inactive ? ['--inactive'] : []), name]);
}

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  isArray: (tagName) => ['disk', 'serial', 'console', 'backingStore'].includes(tagName),
});

interface XmlNode {
  [key: string]: unknown;
}

function asNode(v: unknown): XmlNode | undefined {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as XmlNode) : undefined;
}

/** Host files a domain XML refers to: disk sources (with backing chains) and file consoles. */
export function domainFiles(xml: string): { disks: string[]; logs: string[] } {
  const doc = asNode(parser.parse(xml));
  const devices = asNode(asNode(doc?.domain)?.devices);
  const disks: string[] = [];
  const logs: string[] = [];
  const walk = (d: XmlNode | undefined): void => {
    if (!d) return;
    const src = asNode(d.source);
    const file = src?.['@_file'];
    if (typeof file === 'string') disks.push(file);
    for (const b of (d.backingStore as unknown[] | undefined) ?? []) walk(asNode(b));
  };
  for (const disk of (devices?.disk as unknown[] | undefined) ?? []) {
    const d = asNode(disk);
    if (d?.['@_device'] === 'cdrom') continue;
    walk(d);
  }
  for (const kind of ['serial', 'console']) {
    for (const s of (devices?.[kind] as unknown[] | undefined) ?? []) {
      const p = asNode(asNode(s)?.source)?.['@_path'];
      if (asNode(s)?.['@_type'] === 'file' && typeof p === 'string') logs.push(p);
    }
  }
  return { disks: [...new Set(disks)], logs: [...new Set(logs)] };
}

/**
 * Destroy (if running) and undefine a domain, then remove the regular files its live and
 * persistent XML name as disks (with backing chains) and file consoles, plus `extraFiles`.
 * Idempotent: a missing domain or file is fine.
 */
export async function destroyVm(
  name: string,
  opts: { removeFiles?: boolean; extraFiles?: string[] } = {},
): Promise<void> {
  const files = new Set<string>(opts.extraFiles ?? []);
  if (opts.removeFiles ?? true) {
    for (const inactive of [false, true]) {
      try {
        const f = domainFiles(await dumpXml(name, { inactive }));
        for (const p of [...f.disks, ...f.logs]) files.add(p);
      } catch {
        // no such domain (or not running): nothing to collect
      }
    }
  }
  const state = await domState(name);
  if (state !== undefined && state !== 'shut off') {
    await virsh(['destroy', name]).catch(() => undefined);
  }
  if (state !== undefined) {
    await virsh(['undefine', name, '--managed-save', '--snapshots-metadata', '--checkpoints-metadata']).catch(
      async (err: unknown) => {
        if ((await domState(name)) !== undefined) throw err;
      },
    );
  }
  for (const f of files) {
    try {
      const st = await fs.lstat(f);
      if (st.isFile()) await fs.rm(f, { force: true });
    } catch {
      // already gone
    }
  }
}

/** A fresh scratch directory for one test (remove it with fs.rm when done). */
export function labTempDir(prefix = 'vmplace-lab-'): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), prefix));
}
