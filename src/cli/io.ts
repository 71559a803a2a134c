/** What every command prints through, and the helpers the commands share. */
import { DEFAULT_TRUST_FILE } from '../app/commands';
import { formatProblemsCapped } from '../manifests/format';
import type { Problem } from '../types';

export interface Io {
  out: (s: string) => void;
  err: (s: string) => void;
  isTTY: boolean;
  /** `status --watch` stops when this settles (default: SIGINT or SIGTERM); for tests */
  until?: Promise<unknown>;
}

export const defaultIo: Io = {
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s),
  isTTY: Boolean(process.stdin.isTTY && process.stdout.isTTY),
};

export function printProblems(io: Io, problems: Problem[]): void {
  for (const line of formatProblemsCapped(problems)) io.err(line + '\n');
}

export function printWarnings(io: Io, warnings: Problem[]): void {
  for (const line of formatProblemsCapped(warnings.map((w) => ({ ...w, message: `warning: ${w.message}` }))))
    io.err(line + '\n');
}

export const TRUST_FILE_HELP = `operator's bounds on what manifests may name (default ${DEFAULT_TRUST_FILE} when present)`;
