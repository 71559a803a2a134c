/**
 * A stand-in for `SshExec.runRaw` and the envelope a script would print, for the runner and
 * parser tests.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import type { RunOptions, RunResult } from '../../../../src/exec/exec';
import type { RawCommandRunner } from '../../../../src/drivers/hyperv/runner';

export const FIXTURES = join(__dirname, '../../../fixtures/hyperv');

/** A recorded envelope as an object (its `_source` and `_note` stay; the runner ignores them). */
export function fixture(name: string): Record<string, unknown> {
  return JSON.parse(readFileSync(join(FIXTURES, name), 'utf8')) as Record<string, unknown>;
}

/** The line psScript prints for `envelope`: compact JSON with every non-ASCII character escaped. */
export function envelopeLine(envelope: unknown): string {
  return JSON.stringify(envelope).replace(
    /[\u007f-\uffff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/** Answers every call with `answer` (or throws it), recording the command lines and options. */
export class FakeRaw implements RawCommandRunner {
  readonly label = 'admin@hv1';
  readonly calls: { line: string; opts: RunOptions | undefined }[] = [];
  constructor(private readonly answer: Partial<RunResult> | Error) {}
  async runRaw(line: string, opts?: RunOptions): Promise<RunResult> {
    this.calls.push({ line, opts });
    if (this.answer instanceof Error) throw this.answer;
    return { stdout: '', stderr: '', exitCode: 0, ...this.answer };
  }
}

/** A fake that prints `envelope` as the script would (exit 0 when ok, 1 when not). */
export function fakeFor(envelope: Record<string, unknown>, extra: Partial<RunResult> = {}): FakeRaw {
  return new FakeRaw({
    stdout: `${envelopeLine(envelope)}\r\n`,
    exitCode: envelope.ok === true ? 0 : 1,
    ...extra,
  });
}
