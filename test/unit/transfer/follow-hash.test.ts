import { createHash } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { LocalExec } from '../../../src/exec/exec';
import type { HostExec } from '../../../src/exec/types';
import { followHash } from '../../../src/transfer/follow-hash';

const exec = new LocalExec();
const MiB = 1024 * 1024;
let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'vmp-follow-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const sha = (p: string): string => createHash('sha256').update(readFileSync(p)).digest('hex');

/** write `pieces` ([offset, byte, length]) in order, pausing between them, as a copy would */
async function writeInOrder(path: string, pieces: [number, number, number][]): Promise<void> {
  const fd = openSync(path, 'w');
  try {
    for (const [off, byte, len] of pieces) {
      writeSync(fd, Buffer.alloc(len, byte), 0, len, off);
      await sleep(30);
    }
  } finally {
    closeSync(fd);
  }
}

describe('followHash', () => {
  it('hashes a file as it is written in order, holes skipped by seeking included', async () => {
    const part = join(dir, 'p');
    // data, a 3 MiB hole (sought over, then data after it), data up to the end
    const pieces: [number, number, number][] = [
      [0, 0xab, MiB],
      [MiB, 0xcd, MiB / 2],
      [5 * MiB, 0xef, MiB],
      [6 * MiB, 0x11, 2 * MiB],
    ];
    const f = followHash(exec, part, 8 * MiB, 30)!;
    await writeInOrder(part, pieces);
    expect(await f.digest()).toBe(sha(part));
  });

  it('starts before the file exists', async () => {
    const part = join(dir, 'later');
    const f = followHash(exec, part, 2 * MiB, 30)!;
    await sleep(100);
    await writeInOrder(part, [
      [0, 1, MiB],
      [MiB, 2, MiB],
    ]);
    expect(await f.digest()).toBe(sha(part));
  });

  it('gives no digest when the file stops short of its size once the copy is done (stall)', async () => {
    const part = join(dir, 'short');
    const f = followHash(exec, part, 4 * MiB, 30)!;
    await writeInOrder(part, [[0, 1, MiB]]);
    const t0 = Date.now();
    expect(await f.digest(300)).toBeUndefined();
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it('differs from the final content when bytes it read are rewritten afterwards (the full hash decides then)', async () => {
    const part = join(dir, 'rewritten');
    const f = followHash(exec, part, 2 * MiB, 30)!;
    await writeInOrder(part, [
      [0, 1, MiB],
      [MiB, 2, MiB],
    ]);
    const d = await f.digest();
    const fd = openSync(part, 'r+');
    writeSync(fd, Buffer.from([9]), 0, 1, 10);
    closeSync(fd);
    expect(d).toBeDefined();
    expect(d).not.toBe(sha(part));
  });

  it('stop() ends it without a digest', async () => {
    const f = followHash(exec, join(dir, 'never'), MiB, 30)!;
    f.stop();
    expect(await f.digest()).toBeUndefined();
  });

  it('is not offered for a host that cannot stream', () => {
    const other: HostExec = { label: 'x', run: () => Promise.reject(new Error('no')), close: async () => {} };
    expect(followHash(other, '/p', 1, 1)).toBeUndefined();
  });
});
