/**
 * Running a command on a host (through its `HostExec`) as a local child process whose output
 * streams: rsync's progress as it comes (direct copies), `dd` into and out of this process
 * (relay copies). Works for `SshExec` (the ssh argv) and `LocalExec` (the argv itself).
 */
import { type ChildProcess, spawn } from 'node:child_process';

import { CommandError } from '../errors';
import type { HostExec } from '../exec/types';
import { LocalExec, SshExec, childEnv } from '../exec/exec';

/** The argv to spawn locally for running `argv` through `exec`, when it can be streamed. */
export function localArgv(exec: HostExec, argv: readonly string[]): string[] | undefined {
  if (exec instanceof SshExec) return exec.sshArgv(argv);
  if (exec instanceof LocalExec) return [...argv];
  return undefined;
}

/** `argv` as errors show it: prefixed with the host for a command that ran over ssh. */
export function displayArgv(exec: HostExec, argv: readonly string[]): string[] {
  return exec instanceof SshExec ? [`ssh:${exec.label}`, ...argv] : [...argv];
}

export interface Spawned {
  child: ChildProcess;
  done: Promise<{ exitCode: number | null; signal: NodeJS.Signals | null; stderr: string }>;
}

/** Spawn `argv` locally; `done` resolves on close with the exit and (up to 256 KiB of) stderr. */
export function spawnArgv(argv: readonly string[], stdio: ('pipe' | 'ignore')[]): Spawned {
  const [file, ...args] = argv;
  if (file === undefined) throw new TypeError('empty argv');
  const child = spawn(file, args, { stdio: stdio as ['pipe', 'pipe', 'pipe'], env: childEnv() });
  const err: Buffer[] = [];
  let errLen = 0;
  child.stderr?.on('data', (b: Buffer) => {
    errLen += b.length;
    if (errLen <= 256 * 1024) err.push(b);
  });
  const done = new Promise<{ exitCode: number | null; signal: NodeJS.Signals | null; stderr: string }>(
    (resolve, reject) => {
      child.on('error', reject);
      child.on('close', (exitCode, signal) =>
        resolve({ exitCode, signal, stderr: Buffer.concat(err).toString('utf8') }),
      );
    },
  );
  return { child, done };
}

/**
 * Run `argv` on `exec`, passing stdout to `onStdout` as it arrives. Streams for `SshExec` and
 * `LocalExec`; any other `HostExec` runs it with `run()` and hands over stdout at the end.
 */
export async function runStreaming(
  exec: HostExec,
  argv: readonly string[],
  onStdout: (chunk: string) => void,
  signal?: AbortSignal,
): Promise<{ exitCode: number; stderr: string }> {
  const local = localArgv(exec, argv);
  if (!local) {
    const r = await exec.run(argv);
    onStdout(r.stdout);
    return { exitCode: r.exitCode, stderr: r.stderr };
  }
  const p = spawnArgv(local, ['ignore', 'pipe', 'pipe']);
  p.child.stdout?.setEncoding('utf8');
  p.child.stdout?.on('data', onStdout);
  const abort = (): void => {
    p.child.kill('SIGTERM');
    // and stop reading: a command's own children that still hold its output (a script's
    // pipeline) get EPIPE on their next write instead of keeping the command "running"
    p.child.stdout?.destroy();
    p.child.stderr?.destroy();
  };
  signal?.addEventListener('abort', abort, { once: true });
  try {
    const r = await p.done.catch((e: NodeJS.ErrnoException) => {
      throw new CommandError('CommandSpawnFailed', displayArgv(exec, argv), null, e.message, { cause: e });
    });
    if (r.exitCode === null)
      throw new CommandError(
        'CommandKilled',
        displayArgv(exec, argv),
        null,
        `killed by ${r.signal}; ${r.stderr}`,
      );
    if (r.exitCode !== 0)
      throw new CommandError('CommandFailed', displayArgv(exec, argv), r.exitCode, r.stderr);
    return { exitCode: r.exitCode, stderr: r.stderr };
  } finally {
    signal?.removeEventListener('abort', abort);
  }
}
