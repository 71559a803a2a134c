/**
 * Which etcd members the lab started, so none outlives the test process that owns it.
 *
 * Every member the lab starts gets a file `<stateDir>/etcd/<pid>` (stateDir: the lab's state
 * directory, `$VMPLACE_LAB_STATE_DIR` or `/run/vmplace-lab`, as for scripts/lab/up.sh). Line 1:
 * `<member start time> <owner pid> <owner start time>` (start times in clock ticks since boot,
 * field 22 of /proc/PID/stat, so a reused pid is never mistaken for ours); line 2: the member's
 * data directory. A member whose owner process is gone is stale: `reapStaleEtcd()` and
 * `scripts/lab/down.sh` kill it (SIGKILL) and remove its data directory. Members of a live owner
 * (another test run, another helper) are never touched.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

/** The lab's state directory (shared with scripts/lab/up.sh and down.sh). */
export function labStateDir(): string {
  return process.env.VMPLACE_LAB_STATE_DIR ?? '/run/vmplace-lab';
}

/** Where the lab records the etcd members it started. */
export function etcdRegistryDir(stateDir: string = labStateDir()): string {
  return path.join(stateDir, 'etcd');
}

/** A process's start time in clock ticks since boot, or undefined when it is gone (or a zombie). */
export async function processStartTime(pid: number): Promise<string | undefined> {
  let stat: string;
  try {
    stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // the command name (field 2) may contain spaces and parentheses: count after the last ')'
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  if (fields[0] === 'Z') return undefined;
  return fields[19]; // field 22 overall; fields[0] is field 3
}

async function isAlive(pid: number, start: string): Promise<boolean> {
  return (await processStartTime(pid)) === start;
}

/** Record a member this process started (call right after spawning it). */
export async function registerEtcdMember(pid: number, dataDir: string): Promise<void> {
  const [start, ownerStart] = await Promise.all([processStartTime(pid), processStartTime(process.pid)]);
  if (start === undefined || ownerStart === undefined) return; // already gone: nothing to reap later
  const dir = etcdRegistryDir();
  await fs.mkdir(dir, { recursive: true });
  await fs.writeFile(path.join(dir, String(pid)), `${start} ${process.pid} ${ownerStart}\n${dataDir}\n`);
}

/** Forget a member (after it exited). */
export async function unregisterEtcdMember(pid: number): Promise<void> {
  await fs.rm(path.join(etcdRegistryDir(), String(pid)), { force: true });
}

/** What `reapStaleEtcd` did. */
export interface ReapResult {
  /** pids of stale members that were killed */
  killed: number[];
  /** registry entries dropped because their member was already gone (data dir removed if the owner is gone too) */
  forgotten: number[];
}

/**
 * Kill (SIGKILL) every lab etcd member whose owner process is gone, remove its data directory,
 * and drop registry entries of members that are gone. Safe to call while other test processes
 * run their own clusters: their members have a live owner and are left alone.
 */
export async function reapStaleEtcd(stateDir: string = labStateDir()): Promise<ReapResult> {
  const dir = etcdRegistryDir(stateDir);
  const result: ReapResult = { killed: [], forgotten: [] };
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch {
    return result;
  }
  for (const name of names) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    const file = path.join(dir, name);
    const text = await fs.readFile(file, 'utf8').catch(() => '');
    const [head = '', dataDir = ''] = text.split('\n');
    const [start = '', owner = '', ownerStart = ''] = head.split(' ');
    const ownerAlive = await isAlive(Number(owner), ownerStart);
    if (!(await isAlive(pid, start))) {
      // a dead member of a live owner may be restarted on its data: keep that
      if (!ownerAlive && dataDir.endsWith('.etcd')) await fs.rm(dataDir, { recursive: true, force: true });
      await fs.rm(file, { force: true });
      result.forgotten.push(pid);
      continue;
    }
    if (ownerAlive) continue; // its test is still running
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // exited between the check and the kill
    }
    for (let i = 0; i < 50 && (await isAlive(pid, start)); i++) await sleep(100);
    // stop members before removing their data (a member whose data dir vanished may hang)
    if (dataDir.endsWith('.etcd')) await fs.rm(dataDir, { recursive: true, force: true });
    await fs.rm(file, { force: true });
    result.killed.push(pid);
  }
  return result;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
