import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
  openSync,
  writeSync,
  closeSync,
  ftruncateSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { LocalExec } from '../../../src/exec/exec';
import { PART_SUFFIX, copyLocal } from '../../../src/transfer/copy-local';
import { VmplaceError } from '../../../src/errors';

const exec = new LocalExec();
let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'vmp-copy-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** 16 MiB file with 1 MiB of data at 0 and at 8 MiB, holes elsewhere */
function sparseFile(path: string): void {
  const fd = openSync(path, 'w');
  ftruncateSync(fd, 16 * 1024 * 1024);
  writeSync(fd, Buffer.alloc(1024 * 1024, 0xab), 0, 1024 * 1024, 0);
  writeSync(fd, Buffer.alloc(1024 * 1024, 0xcd), 0, 1024 * 1024, 8 * 1024 * 1024);
  closeSync(fd);
}
const sha = (p: string): string => createHash('sha256').update(readFileSync(p)).digest('hex');

describe('copyLocal', () => {
  it('copies sparse, verified, via a part file, with progress ending at total', async () => {
    const src = join(dir, 'src.img');
    const dst = join(dir, 'dst.img');
    sparseFile(src);
    const events: [number, number][] = [];
    const r = await copyLocal(exec, src, dst, { onProgress: (d, t) => events.push([d, t]), pollMs: 10 });
    expect(r.alreadyDone).toBe(false);
    expect(r.bytes).toBe(16 * 1024 * 1024);
    expect(r.sha256).toBe(sha(src));
    expect(sha(dst)).toBe(sha(src));
    expect(existsSync(dst + PART_SUFFIX)).toBe(false);
    // holes kept: far fewer blocks than the apparent size
    expect(statSync(dst).blocks * 512).toBeLessThan(4 * 1024 * 1024);
    expect(events[0]).toEqual([0, 16 * 1024 * 1024]);
    expect(events[events.length - 1]).toEqual([16 * 1024 * 1024, 16 * 1024 * 1024]);
    for (let i = 1; i < events.length; i++) expect(events[i]![0]).toBeLessThanOrEqual(events[i]![1]);
  });

  it('is idempotent: an identical destination is left alone', async () => {
    const src = join(dir, 'src.img');
    const dst = join(dir, 'dst.img');
    sparseFile(src);
    await copyLocal(exec, src, dst);
    const mtime = statSync(dst).mtimeMs;
    const r = await copyLocal(exec, src, dst);
    expect(r.alreadyDone).toBe(true);
    expect(statSync(dst).mtimeMs).toBe(mtime);
  });

  it('refuses to overwrite a different destination', async () => {
    const src = join(dir, 'src.img');
    const dst = join(dir, 'dst.img');
    writeFileSync(src, 'a');
    writeFileSync(dst, 'b');
    const err = (await copyLocal(exec, src, dst).catch((e: unknown) => e)) as VmplaceError;
    expect(err.reason).toBe('DestinationDiffers');
    expect(err.kind).toBe('stalled');
    expect(readFileSync(dst, 'utf8')).toBe('b');
  });

  it('replaces a leftover part file from an interrupted copy', async () => {
    const src = join(dir, 'src.img');
    const dst = join(dir, 'dst.img');
    writeFileSync(src, 'the real content');
    writeFileSync(dst + PART_SUFFIX, 'garbage from a crash that is longer than the source');
    await copyLocal(exec, src, dst);
    expect(readFileSync(dst, 'utf8')).toBe('the real content');
    expect(existsSync(dst + PART_SUFFIX)).toBe(false);
  });

  it('uses rsync with a bandwidth limit', async () => {
    const src = join(dir, 'src.img');
    const dst = join(dir, 'dst.img');
    sparseFile(src);
    await copyLocal(exec, src, dst, { bwlimitKiBps: 1024 * 1024 });
    expect(sha(dst)).toBe(sha(src));
  });

  it('fails with SourceMissing for a missing source', async () => {
    const err = (await copyLocal(exec, join(dir, 'nope'), join(dir, 'd')).catch(
      (e: unknown) => e,
    )) as VmplaceError;
    expect(err.reason).toBe('SourceMissing');
  });
});
