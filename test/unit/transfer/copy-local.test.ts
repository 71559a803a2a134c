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

import { execFileSync } from 'node:child_process';

import { LocalExec } from '../../../src/exec/exec';
import type { HostExec } from '../../../src/exec/types';
import { PART_SUFFIX, copyLocal } from '../../../src/transfer/copy-local';
import { VmplaceError } from '../../../src/errors';

const exec = new LocalExec();
const hasQemuImg = ((): boolean => {
  try {
    execFileSync('qemu-img', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

/** `exec`, but `damage(part)` runs right after the copy command wrote the part file */
function damagingExec(damage: (part: string) => void): HostExec {
  return {
    label: 'local',
    async run(argv, opts) {
      const r = await exec.run(argv, opts);
      if (argv.includes('--sparse=always')) damage(argv[argv.length - 1]!); // the copy (cp)
      return r;
    },
    close: () => Promise.resolve(),
  };
}
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
  it('with hash: false verifies by qemu-img compare where the host has it (else sha256)', async () => {
    const src = join(dir, 'src-fast.img');
    const dst = join(dir, 'dst-fast.img');
    sparseFile(src);
    const r = await copyLocal(exec, src, dst, { hash: false });
    expect(r.verifiedBy).toBe(hasQemuImg ? 'compare' : 'sha256');
    expect(sha(dst)).toBe(sha(src));
  });

  it('copies sparse, verified, via a part file, with progress ending at total', async () => {
    const src = join(dir, 'src.img');
    const dst = join(dir, 'dst.img');
    sparseFile(src);
    const events: [number, number][] = [];
    const r = await copyLocal(exec, src, dst, { onProgress: (d, t) => events.push([d, t]), pollMs: 10 });
    expect(r.alreadyDone).toBe(false);
    expect(r.bytes).toBe(16 * 1024 * 1024);
    // sha256 of both by default (independent of the filesystem's hole map)
    expect(r.verifiedBy).toBe('sha256');
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

  it('verifies with sha256 of both files when asked (hash: true)', async () => {
    const src = join(dir, 'src.img');
    const dst = join(dir, 'dst.img');
    sparseFile(src);
    const r = await copyLocal(exec, src, dst, { hash: true });
    expect(r).toMatchObject({ verifiedBy: 'sha256', sha256: sha(src) });
    expect(sha(dst)).toBe(sha(src));
  });

  it.each([
    ['one byte changed in the data', false],
    ['one byte changed in a hole', false],
    ['zeros appended (a comparison pads the shorter file with zeros)', false],
    ['one byte changed in the data', true],
    ['one byte changed in a hole', true],
    ['zeros appended (a comparison pads the shorter file with zeros)', true],
  ])(
    'a copy that differs from its source (%s; hash %s) fails and its part file is removed',
    async (what, hash) => {
      const src = join(dir, 'src.img');
      const dst = join(dir, 'dst.img');
      sparseFile(src);
      const broken = damagingExec((part) => {
        const fd = openSync(part, 'r+');
        if (what.startsWith('zeros')) ftruncateSync(fd, 16 * 1024 * 1024 + 4096);
        else
          writeSync(
            fd,
            Buffer.from([0x01]),
            0,
            1,
            what.includes('hole') ? 12 * 1024 * 1024 : 8 * 1024 * 1024 + 5,
          );
        closeSync(fd);
      });
      const err = (await copyLocal(broken, src, dst, { hash }).catch((e: unknown) => e)) as VmplaceError;
      expect(err).toBeInstanceOf(VmplaceError);
      expect(err.reason).toBe('CopyVerifyFailed');
      expect(existsSync(dst)).toBe(false);
      expect(existsSync(dst + PART_SUFFIX)).toBe(false);
    },
  );

  it('hash: true reads the source through read() and the fresh part without its holes (they stay out of the page cache)', async () => {
    // on a filesystem whose holes cost page cache when read (not tmpfs)
    const disk = mkdtempSync(join('/var/tmp', 'vmp-copy-holes-'));
    try {
      const src = join(disk, 'src.img');
      const dst = join(disk, 'dst.img');
      const fd = openSync(src, 'w');
      ftruncateSync(fd, 72 * 1024 * 1024);
      writeSync(fd, Buffer.alloc(4 * 1024 * 1024, 0x5a), 0, 4 * 1024 * 1024, 0);
      writeSync(fd, Buffer.alloc(4 * 1024 * 1024, 0xa5), 0, 4 * 1024 * 1024, 68 * 1024 * 1024);
      closeSync(fd);
      const r = await copyLocal(exec, src, dst, { hash: true });
      const resident = (f: string): number =>
        Number(
          execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', '--', f]).toString().trim(),
        );
      const [srcRes, dstRes] = [resident(src), resident(dst)];
      expect(r).toMatchObject({ verifiedBy: 'sha256', sha256: sha(src) });
      expect(srcRes).toBeGreaterThanOrEqual(64 * 1024 * 1024); // its hole was read
      expect(dstRes).toBeLessThan(24 * 1024 * 1024); // the part's was not
    } finally {
      rmSync(disk, { recursive: true, force: true });
    }
  });

  it('without verification a damaged copy is not caught (the check above is what catches it)', async () => {
    const src = join(dir, 'src.img');
    const dst = join(dir, 'dst.img');
    sparseFile(src);
    const broken = damagingExec((part) => {
      const fd = openSync(part, 'r+');
      writeSync(fd, Buffer.from([0x01]), 0, 1, 5);
      closeSync(fd);
    });
    const r = await copyLocal(broken, src, dst, { verify: false });
    expect(r.verifiedBy).toBeUndefined();
    expect(sha(dst)).not.toBe(sha(src));
  });

  it('fails with SourceMissing for a missing source', async () => {
    const err = (await copyLocal(exec, join(dir, 'nope'), join(dir, 'd')).catch(
      (e: unknown) => e,
    )) as VmplaceError;
    expect(err.reason).toBe('SourceMissing');
  });
});
