/**
 * Scratch directories for tests: every directory {@link tmpDir} makes is removed by the next
 * {@link cleanupTmp} (call it from `afterAll` or `afterEach`), so a test file does not write its
 * own mkdtemp-and-remove bookkeeping.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const made: string[] = [];

/** A fresh directory under the OS temp dir, removed by {@link cleanupTmp}. */
export function tmpDir(prefix = 'vmplace-test-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  made.push(dir);
  return dir;
}

/** Remove every directory {@link tmpDir} made since the last call. */
export function cleanupTmp(): void {
  for (const d of made.splice(0)) fs.rmSync(d, { recursive: true, force: true });
}
