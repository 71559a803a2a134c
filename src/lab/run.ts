/**
 * Running the lab's commands: execFile with an argument array, never a shell string.
 */
import { execFile } from 'node:child_process';

/** A failed external command, with what is needed to understand it. */
export class LabCommandError extends Error {
  constructor(
    readonly command: string,
    readonly args: readonly string[],
    readonly exitCode: number | string | null,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(
      `${command} ${args.join(' ')} failed (exit ${String(exitCode)}): ${stderr.trim() || stdout.trim()}`,
    );
    this.name = 'LabCommandError';
  }
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Kill the command after this long (default 60 s). */
  timeoutMs?: number;
  /** The whole environment of the command (default: this process's, with `LC_ALL=C`). */
  env?: NodeJS.ProcessEnv;
}

/** Run a command (no shell) and return its output; throws LabCommandError on failure. */
export function run(command: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(
      command,
      args as string[],
      {
        timeout: opts.timeoutMs ?? 60_000,
        maxBuffer: 64 * 1024 * 1024,
        env: opts.env ?? { ...process.env, LC_ALL: 'C' },
        encoding: 'utf8',
      },
      (err, stdout, stderr) => {
        if (err) {
          const code = (err as NodeJS.ErrnoException & { code?: number | string }).code ?? null;
          const signal = (err as { signal?: string | null }).signal;
          reject(new LabCommandError(command, args, signal ? `signal ${signal}` : code, stdout, stderr));
        } else {
          resolve({ stdout, stderr });
        }
      },
    );
  });
}
