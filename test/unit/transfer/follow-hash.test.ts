import { createHash } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  ftruncateSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { LocalExec } from '../../../src/exec/exec';
import type { HostExec } from '../../../src/exec/types';
import { followHash as follow } from '../../../src/transfer/follow-hash';

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

describe.each([
  ['perl, holes skipped', 'auto'],
  ['the shell loop with dd', 'dd'],
] as const)('followHash (%s)', (_name, reader) => {
  const followHash = (host: HostExec, part: string, total: number, idleSec: number) =>
    follow(host, part, total, idleSec, { reader });

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

  it('hashes a trailing hole that only the final truncate makes (rsync --sparse ends so)', async () => {
    const part = join(dir, 'tail');
    const f = followHash(exec, part, 3 * MiB, 30)!;
    await writeInOrder(part, [[0, 0x42, MiB]]);
    const fd = openSync(part, 'r+');
    ftruncateSync(fd, 3 * MiB);
    closeSync(fd);
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

  it('never gives the digest of a part replaced by another file under it', async () => {
    const part = join(dir, 'replaced');
    const f = followHash(exec, part, 4 * MiB, 30)!;
    await writeInOrder(part, [[0, 1, MiB]]);
    await sleep(300); // it has read the first MiB of the first file
    rmSync(part);
    await writeInOrder(part, [
      [0, 7, MiB],
      [MiB, 2, 3 * MiB],
    ]);
    const d = await f.digest(500);
    expect(d).not.toBe(sha(part));
    // perl stops at the other file: what it hashed is the first file's MiB alone
    if (reader === 'auto') expect(d).toBe(createHash('sha256').update(Buffer.alloc(MiB, 1)).digest('hex'));
  });

  it('is not offered for a host that cannot stream', () => {
    const other: HostExec = { label: 'x', run: () => Promise.reject(new Error('no')), close: async () => {} };
    expect(followHash(other, '/p', 1, 1)).toBeUndefined();
  });
});

/** Bytes of `file` in the page cache (util-linux `fincore`). */
async function resident(file: string): Promise<number> {
  const r = await exec.run(['fincore', '--bytes', '--noheadings', '--output', 'RES', '--', file]);
  return Number(r.stdout.trim());
}

describe('followHash and holes', () => {
  // on a filesystem whose holes cost page cache when read (ext4 and the like; not tmpfs)
  let disk: string;
  beforeEach(() => {
    disk = mkdtempSync(join('/var/tmp', 'vmp-follow-holes-'));
  });
  afterEach(() => rmSync(disk, { recursive: true, force: true }));

  /** follow a 72 MiB part: 4 MiB of data, 64 MiB sought over, 4 MiB of data, written in order as rsync --sparse does */
  async function followSparse(reader: 'auto' | 'dd'): Promise<{ digest?: string; res: number; sha: string }> {
    const part = join(disk, `p-${reader}`);
    const f = follow(exec, part, 72 * MiB, 30, { reader })!;
    await writeInOrder(part, [
      [0, 0x5a, 4 * MiB],
      [68 * MiB, 0xa5, 4 * MiB],
    ]);
    const digest = await f.digest();
    const res = await resident(part); // before anything else reads the file
    return { ...(digest ? { digest } : {}), res, sha: sha(part) };
  }

  it('perl reads only the data of a sparse part (the hole stays out of the page cache), the dd loop reads the hole too; both digests cover it as zeros', async () => {
    const perl = await followSparse('auto');
    const dd = await followSparse('dd');
    expect(perl.digest).toBe(perl.sha);
    expect(dd.digest).toBe(dd.sha);
    // the 8 MiB written are cached by the writer; readahead may add a little around them
    expect(perl.res).toBeLessThan(24 * MiB);
    expect(dd.res).toBeGreaterThanOrEqual(64 * MiB);
  });

  it('falls back to the dd loop where perl cannot load its modules (a perl without POSIX)', async () => {
    const bin = mkdtempSync(join(tmpdir(), 'vmp-noperl-'));
    const path = process.env.PATH;
    try {
      // a perl that starts but fails to load any module, as a split-package distribution's
      writeFileSync(join(bin, 'perl'), '#!/bin/sh\necho "Can\'t locate POSIX.pm" >&2\nexit 2\n');
      chmodSync(join(bin, 'perl'), 0o755);
      process.env.PATH = `${bin}:${path ?? ''}`;
      const r = await followSparse('auto');
      expect(r.digest).toBe(r.sha);
      expect(r.res).toBeGreaterThanOrEqual(64 * MiB); // read by dd, hole and all
    } finally {
      process.env.PATH = path;
      rmSync(bin, { recursive: true, force: true });
    }
  });
});
