/**
 * One daemon per working directory and per state directory: an exclusive lock file holding the
 * owner's pid, process start time and host name. A lock whose owner is gone is taken over.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { StalledError } from '../errors';

/** What a lock file holds (JSON, one line). */
export interface LockOwner {
  pid: number;
  /** start time of `pid` in clock ticks since boot (`/proc/<pid>/stat` field 22); null without /proc */
  startTime: number | null;
  hostname: string;
  /** when the lock was taken, ISO 8601 (for humans) */
  acquiredAt: string;
}

/** A held lock. */
export interface Lock {
  /** the lock file */
  readonly path: string;
  /** Remove the lock file if it is still ours; idempotent. */
  release(): Promise<void>;
}

/**
 * Where to lock a git working directory: next to it (`<parent>/.<name>.vmplace.lock`), not
 * inside, because the directory must be empty to clone into and `sync` removes untracked files.
 */
export function workdirLockLocation(workdir: string): { dir: string; name: string } {
  const abs = path.resolve(workdir);
  return { dir: path.dirname(abs), name: `.${path.basename(abs)}.vmplace` };
}

/**
 * Take `<dir>/<name>.lock` (creating `dir`), created with `open(..., 'wx')` so exactly one
 * process wins. A lock left by a process that is gone (pid not alive, a zombie, or a pid reused
 * by a process with another start time) is taken over; a lock of another host is never judged
 * stale (its pids mean nothing here).
 *
 * @throws StalledError `AlreadyRunning` naming the pid (and host) of the live holder.
 */
export async function acquireLock(dir: string, name: string): Promise<Lock> {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${name}.lock`);
  const me: LockOwner = {
    pid: process.pid,
    startTime: processStartTime(process.pid),
    hostname: os.hostname(),
    acquiredAt: new Date().toISOString(),
  };
  const content = `${JSON.stringify(me)}\n`;
  for (let round = 0; round < 20; round++) {
    try {
      const fd = fs.openSync(file, 'wx', 0o644);
      try {
        fs.writeSync(fd, content);
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      return { path: file, release: () => release(file, content) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const seen = readLock(file);
    if (seen === undefined) continue; // removed meanwhile: try again
    const owner = parseOwner(seen.text);
    if (!owner) {
      // being written right now (created, not yet filled), or garbage left by a crash
      if (Date.now() - seen.mtimeMs < 2000) {
        await new Promise((r) => setTimeout(r, 50));
        continue;
      }
    } else if (isAlive(owner)) {
      const where = owner.hostname === me.hostname ? '' : ` on host ${owner.hostname}`;
      throw new StalledError(
        'AlreadyRunning',
        `another vmplace daemon (pid ${owner.pid}${where}, since ${owner.acquiredAt}) holds ${file}; ` +
          `stop it first, or remove the file if that process is gone`,
      );
    }
    takeOver(file, seen.text);
  }
  throw new StalledError('AlreadyRunning', `could not take ${file}: other processes keep competing for it`);
}

/**
 * Remove a stale lock without ever removing a fresh one: move it aside atomically, and put it
 * back if what was moved is not the stale content judged (someone replaced it meanwhile).
 */
function takeOver(file: string, staleText: string): void {
  const aside = `${file}.stale-${process.pid}-${Date.now()}`;
  try {
    fs.renameSync(file, aside);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  let moved = '';
  try {
    moved = fs.readFileSync(aside, 'utf8');
  } catch {
    // unreadable: treat as not ours to remove
  }
  if (moved !== staleText) {
    try {
      fs.linkSync(aside, file); // back in place unless a newer lock exists already
    } catch {
      // a newer lock exists: it wins
    }
  }
  fs.rmSync(aside, { force: true });
}

async function release(file: string, content: string): Promise<void> {
  const seen = readLock(file);
  if (seen?.text === content) fs.rmSync(file, { force: true });
}

function readLock(file: string): { text: string; mtimeMs: number } | undefined {
  try {
    const st = fs.statSync(file);
    return { text: fs.readFileSync(file, 'utf8'), mtimeMs: st.mtimeMs };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

function parseOwner(text: string): LockOwner | undefined {
  try {
    const o = JSON.parse(text) as Partial<LockOwner>;
    if (!Number.isSafeInteger(o.pid) || (o.pid as number) <= 0 || typeof o.hostname !== 'string') {
      return undefined;
    }
    return {
      pid: o.pid as number,
      startTime: typeof o.startTime === 'number' ? o.startTime : null,
      hostname: o.hostname,
      acquiredAt: typeof o.acquiredAt === 'string' ? o.acquiredAt : 'unknown',
    };
  } catch {
    return undefined;
  }
}

/** Whether the owner of a lock still runs (always true for another host: cannot tell). */
function isAlive(owner: LockOwner): boolean {
  if (owner.hostname !== os.hostname()) return true;
  try {
    process.kill(owner.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    // EPERM: exists, owned by someone else
  }
  const stat = readProcStat(owner.pid);
  if (stat === undefined) return true; // no /proc: the pid check is all there is
  if (stat.state === 'Z' || stat.state === 'X') return false;
  return owner.startTime === null || stat.startTime === owner.startTime;
}

/** Start time in clock ticks since boot, or null where /proc is not available. */
export function processStartTime(pid: number): number | null {
  return readProcStat(pid)?.startTime ?? null;
}

function readProcStat(pid: number): { state: string; startTime: number } | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state); starttime is field 22
  const startTime = Number(fields[19]);
  if (!fields[0] || !Number.isSafeInteger(startTime)) return undefined;
  return { state: fields[0], startTime };
}
