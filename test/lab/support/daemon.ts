/**
 * Run the real `vmplace daemon` as a child process against a real bare git repository, and
 * read what it logs.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { run, VMPLACE_BIN } from './fleet';
import { exitedDrained } from './process';

export interface LogLine {
  level: number;
  time: number;
  msg: string;
  [k: string]: unknown;
}

export interface RunningDaemon {
  child: ChildProcess;
  url: string;
  logs: LogLine[];
  exited: Promise<number | null>;
  waitFor(pred: (l: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
}

export async function startDaemon(opts: {
  repo: string;
  workdir: string;
  stateDir: string;
  secretFile?: string;
  interval?: string;
  extra?: string[];
  /** spawn with this group id (to cut the daemon off from etcd, see src/lab/partition.ts) */
  gid?: number;
}): Promise<RunningDaemon> {
  const args = [
    VMPLACE_BIN,
    'daemon',
    '--repo',
    opts.repo,
    '--workdir',
    opts.workdir,
    '--state-dir',
    opts.stateDir,
    '--interval',
    opts.interval ?? '2s',
    '--listen',
    '127.0.0.1:0',
    '--author-name',
    'vmplace-bot',
    '--author-email',
    'bot@vmplace.test',
    '--shutdown-timeout',
    '60s',
    ...(opts.secretFile ? ['--webhook-secret-file', opts.secretFile] : []),
    ...(opts.extra ?? []),
  ];
  const child = spawn(process.execPath, args, {
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
  });
  const logs: LogLine[] = [];
  const waiters: { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];
  let buf = '';
  child.stderr.on('data', (b: Buffer) => {
    buf += b.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      let parsed: LogLine;
      try {
        parsed = JSON.parse(line) as LogLine;
      } catch {
        parsed = { level: 50, time: Date.now(), msg: line };
      }
      logs.push(parsed);
      for (const w of [...waiters]) {
        if (w.pred(parsed)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(parsed);
        }
      }
    }
  });
  const exited = exitedDrained(child);
  const waitFor = (pred: (l: LogLine) => boolean, timeoutMs = 120_000): Promise<LogLine> => {
    const found = logs.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        reject(
          new Error(
            `timed out waiting for a daemon log line; last lines:\n${logs
              .slice(-15)
              .map((l) => JSON.stringify(l))
              .join('\n')}`,
          ),
        );
      }, timeoutMs);
      waiters.push({
        pred,
        resolve: (l) => {
          clearTimeout(t);
          resolve(l);
        },
      });
    });
  };
  const serving = await waitFor((l) => l.msg === 'serving health, readiness, metrics and webhooks', 60_000);
  return { child, url: String(serving.listen), logs, exited, waitFor };
}

/** A human's clone of the remote, to push commits from. */
export async function humanClone(
  remote: string,
  dir: string,
): Promise<(...args: string[]) => Promise<string>> {
  await run('git', ['clone', '-q', remote, dir]);
  return async (...args: string[]) => {
    const r = await run('git', [
      '-C',
      dir,
      '-c',
      'user.name=Human',
      '-c',
      'user.email=human@example.test',
      ...args,
    ]);
    if (r.code !== 0) throw new Error(`git ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
}

/** Sign a webhook body as GitHub does. */
export function signature(secret: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

export async function readRemoteFile(remote: string, file: string): Promise<string | undefined> {
  const r = await run('git', ['--git-dir', remote, 'show', `main:${file}`]);
  return r.code === 0 ? r.stdout : undefined;
}

export async function newBareRepo(root: string): Promise<string> {
  const bare = path.join(root, 'remote.git');
  await fs.mkdir(bare, { recursive: true });
  await run('git', ['init', '-q', '--bare', '-b', 'main', bare]);
  return bare;
}
