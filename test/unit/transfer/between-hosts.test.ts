import { createHash } from 'node:crypto';
import {
  closeSync,
  ftruncateSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { LocalExec } from '../../../src/exec/exec';
import { StalledError } from '../../../src/errors';
import { copyBetweenHosts, hopSshOptions, rsyncArgv } from '../../../src/transfer/between-hosts';
import { PART_SUFFIX } from '../../../src/transfer/copy-local';
import {
  RsyncProgressParser,
  parseProgressLine,
  parseRsyncStats,
  type RsyncProgress,
} from '../../../src/transfer/rsync-progress';

/** Recorded: rsync 3.5.0, hv1 -> hv2 over ssh, 64 MiB fresh copy, --bwlimit=20000 --stats --info=progress2 */
const FRESH =
  '\r         32,768   0%    0.00kB/s    0:00:00  \r     21,561,344  32%   19.19MB/s    0:00:02  \r     43,417,600  64%   19.36MB/s    0:00:01  \r     64,716,800  96%   19.42MB/s    0:00:00  \r     67,108,864 100%   19.50MB/s    0:00:03 (xfr#1, to-chk=0/1)\r     67,108,864 100%   19.50MB/s    0:00:03 (xfr#1, to-chk=0/1)\r     67,108,864 100%   19.50MB/s    0:00:03 (xfr#1, to-chk=0/1)\r     67,108,864 100%   19.50MB/s    0:00:03 (xfr#1, to-chk=0/1)\n\nNumber of files: 1 (reg: 1)\nNumber of created files: 1 (reg: 1)\nNumber of deleted files: 0\nNumber of regular files transferred: 1\nTotal file size: 67,108,864 bytes\nTotal transferred file size: 67,108,864 bytes\nLiteral data: 67,108,864 bytes\nMatched data: 0 bytes\nFile list size: 0\nFile list generation time: 0.001 seconds\nFile list transfer time: 0.000 seconds\nTotal bytes sent: 67,125,323\nTotal bytes received: 35\n\nsent 67,125,323 bytes  received 35 bytes  14,916,746.22 bytes/sec\ntotal size is 67,108,864  speedup is 1.00\n';

/** Recorded: the same file resumed with --inplace onto a 15 MiB part file (delta transfer). */
const RESUMED =
  '\r          3,960   0%    0.00kB/s    0:00:00  \r     67,108,864 100%  397.49MB/s    0:00:00 (xfr#1, to-chk=0/1)\r     67,108,864 100%  397.49MB/s    0:00:00 (xfr#1, to-chk=0/1)\r     67,108,864 100%  383.21MB/s    0:00:00 (xfr#1, to-chk=0/1)\r     67,108,864 100%  383.21MB/s    0:00:00 (xfr#1, to-chk=0/1)\n\nNumber of files: 1 (reg: 1)\nNumber of created files: 0\nNumber of deleted files: 0\nNumber of regular files transferred: 1\nTotal file size: 67,108,864 bytes\nTotal transferred file size: 67,108,864 bytes\nLiteral data: 11,542,144 bytes\nMatched data: 55,566,720 bytes\nFile list size: 0\nFile list generation time: 0.001 seconds\nFile list transfer time: 0.000 seconds\nTotal bytes sent: 11,601,175\nTotal bytes received: 23,867\n\nsent 11,601,175 bytes  received 23,867 bytes  7,750,028.00 bytes/sec\ntotal size is 67,108,864  speedup is 5.77\n';

describe('parseProgressLine', () => {
  it.each([
    [
      '     21,561,344  32%   19.19MB/s    0:00:02  ',
      { bytes: 21561344, percent: 32, rate: '19.19MB/s', seconds: 2 },
    ],
    [
      '     67,108,864 100%   19.50MB/s    0:00:03 (xfr#1, to-chk=0/1)',
      { bytes: 67108864, percent: 100, rate: '19.50MB/s', seconds: 3 },
    ],
    [
      '         32,768   0%    0.00kB/s    0:00:00  ',
      { bytes: 32768, percent: 0, rate: '0.00kB/s', seconds: 0 },
    ],
    [
      '  1,073,741,824 100%  928.35MB/s    1:02:03',
      { bytes: 1073741824, percent: 100, rate: '928.35MB/s', seconds: 3723 },
    ],
  ])('parses %j', (line, want) => {
    expect(parseProgressLine(line)).toEqual(want);
  });

  it.each([
    '',
    'Number of files: 1 (reg: 1)',
    'Literal data: 67,108,864 bytes',
    'rsync error: timeout (code 30)',
  ])('ignores %j', (line) => expect(parseProgressLine(line)).toBeUndefined());
});

describe('RsyncProgressParser', () => {
  it('reports each progress line of a recorded fresh copy, whatever the chunking', () => {
    for (const size of [1, 7, 64, FRESH.length]) {
      const seen: RsyncProgress[] = [];
      const p = new RsyncProgressParser((x) => seen.push(x));
      for (let i = 0; i < FRESH.length; i += size) p.push(FRESH.slice(i, i + size));
      p.end();
      expect(seen.map((x) => x.bytes)).toEqual([
        32768, 21561344, 43417600, 64716800, 67108864, 67108864, 67108864, 67108864,
      ]);
      expect(p.last?.percent).toBe(100);
      expect(parseRsyncStats(p.rest)).toEqual({
        totalFileSize: 67108864,
        literalBytes: 67108864,
        matchedBytes: 0,
        bytesSent: 67125323,
        bytesReceived: 35,
      });
    }
  });

  it('a resumed copy: progress jumps to the end, and stats show what was matched', () => {
    const seen: number[] = [];
    const p = new RsyncProgressParser((x) => seen.push(x.bytes));
    p.push(RESUMED);
    p.end();
    expect(seen[0]).toBe(3960);
    expect(seen[1]).toBe(67108864);
    expect(parseRsyncStats(p.rest)).toMatchObject({ literalBytes: 11542144, matchedBytes: 55566720 });
  });

  it('keeps stderr-like text and does not grow without bound on junk', () => {
    const p = new RsyncProgressParser();
    p.push('x'.repeat(200_000));
    p.push('\nrsync: something\n');
    p.end();
    expect(p.rest).toContain('rsync: something');
    expect(p.rest.length).toBeLessThan(10_000);
  });
});

describe('rsyncArgv', () => {
  const target = {
    host: '10.231.0.12',
    user: 'root',
    port: 2222,
    identityFile: '/root/.ssh/id ed25519',
    knownHostsFile: '/root/.ssh/known_hosts',
  };

  it('builds one argv, with -e quoted for rsync and host keys always checked', () => {
    const argv = rsyncArgv('/srv/a b.img', '/srv/c.img.vmplace-part', target, {
      bwlimitKiBps: 1000.7,
      ioTimeoutSec: 5,
    });
    expect(argv.slice(0, 3)).toEqual(['env', 'LC_ALL=C', 'rsync']);
    for (const f of [
      '--inplace',
      '--sparse',
      '--ignore-times',
      '-s',
      '--stats',
      '--info=progress2',
      '--timeout=5',
      '--bwlimit=1000',
    ])
      expect(argv).toContain(f);
    expect(argv.slice(-3)).toEqual(['--', '/srv/a b.img', '10.231.0.12:/srv/c.img.vmplace-part']);
    const e = argv[argv.indexOf('-e') + 1]!;
    expect(e).toContain("'StrictHostKeyChecking=yes'");
    expect(e).toContain("'BatchMode=yes'");
    expect(e).toContain("'UserKnownHostsFile=/root/.ssh/known_hosts'");
    expect(e).toContain("'-i' '/root/.ssh/id ed25519'");
    expect(e).toContain("'-p' '2222'");
    expect(e).toContain("'-l' 'root'");
    // the bulk data prefers AES-GCM, from OpenSSH's default set only
    expect(e).toContain(
      "'-o' 'Ciphers=aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,",
    );
    expect(/Ciphers=([^']*)/.exec(e)![1]).not.toMatch(/cbc|arcfour|none/);
  });

  it('brackets IPv6 addresses and refuses hostile values', () => {
    expect(rsyncArgv('/a', '/b', { host: 'fd00::12' }).at(-1)).toBe('[fd00::12]:/b');
    expect(() => rsyncArgv('/a', '/b', { host: '-oProxyCommand=x' })).toThrow(TypeError);
    expect(() => rsyncArgv('/a', '/b', { host: 'a b' })).toThrow(TypeError);
    expect(() => rsyncArgv('/a', '/b', { host: 'h', identityFile: "/k'ey" })).toThrow(TypeError);
  });

  it('compresses (zstd, fast) only when asked: for sparse files, whose holes rsync sends as zeros', () => {
    expect(rsyncArgv('/a', '/b', { host: 'h' })).not.toContain('--compress');
    const argv = rsyncArgv('/a', '/b', { host: 'h' }, { compress: true });
    expect(argv).toEqual(
      expect.arrayContaining(['--compress', '--compress-choice=zstd', '--compress-level=1']),
    );
    expect(argv.indexOf('--compress')).toBeLessThan(argv.indexOf('--'));
  });

  it('hopSshOptions never turns host key checking off', () => {
    expect(hopSshOptions({ host: 'h' }).join(' ')).toContain('StrictHostKeyChecking=yes');
  });
});

describe('copyBetweenHosts relay with LocalExec on both ends', () => {
  const exec = new LocalExec();
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'vmp-bh-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const sha = (p: string): string => createHash('sha256').update(readFileSync(p)).digest('hex');

  function sparseFile(path: string): void {
    const fd = openSync(path, 'w');
    ftruncateSync(fd, 16 * 1024 * 1024);
    writeSync(fd, Buffer.alloc(1024 * 1024, 0xab), 0, 1024 * 1024, 0);
    writeSync(fd, Buffer.alloc(1024 * 1024, 0xcd), 0, 1024 * 1024, 8 * 1024 * 1024);
    closeSync(fd);
  }

  it('copies sparse and verified, resumes from a part file, and is idempotent', async () => {
    const src = join(dir, 'src.img');
    const dst = join(dir, 'dst.img');
    sparseFile(src);
    writeFileSync(dst + PART_SUFFIX, readFileSync(src).subarray(0, 9 * 1024 * 1024));
    const events: number[] = [];
    const r = await copyBetweenHosts(exec, exec, src, dst, {
      mode: 'relay',
      onProgress: (d) => events.push(d),
    });
    expect(r).toMatchObject({ mode: 'relay', resumedFromBytes: 9 * 1024 * 1024, bytesSent: 7 * 1024 * 1024 });
    expect(sha(dst)).toBe(sha(src));
    expect(statSync(dst).blocks * 512).toBeLessThan(12 * 1024 * 1024);
    expect(events[0]).toBe(9 * 1024 * 1024);
    expect(events.at(-1)).toBe(16 * 1024 * 1024);
    expect(await copyBetweenHosts(exec, exec, src, dst, { mode: 'relay' })).toMatchObject({
      alreadyDone: true,
    });
  });

  it('a fresh copy of 256 MiB (read back on the target while it is written) ends verified and sparse', async () => {
    const src = join(dir, 'src.img');
    const dst = join(dir, 'dst.img');
    const fd = openSync(src, 'w');
    ftruncateSync(fd, 256 * 1024 * 1024);
    writeSync(fd, Buffer.alloc(1024 * 1024, 0xab), 0, 1024 * 1024, 100 * 1024 * 1024);
    writeSync(fd, Buffer.alloc(1024 * 1024, 0xcd), 0, 1024 * 1024, 255 * 1024 * 1024);
    closeSync(fd);
    const r = await copyBetweenHosts(exec, exec, src, dst, { mode: 'relay' });
    expect(r).toMatchObject({ mode: 'relay', resumedFromBytes: 0, sha256: sha(src) });
    expect(sha(dst)).toBe(sha(src));
    expect(statSync(dst).blocks * 512).toBeLessThan(8 * 1024 * 1024);
  }, 30_000);

  it('refuses to overwrite a different destination, and reports a missing source', async () => {
    const src = join(dir, 'src.img');
    const dst = join(dir, 'dst.img');
    sparseFile(src);
    writeFileSync(dst, 'other');
    await expect(copyBetweenHosts(exec, exec, src, dst, { mode: 'relay' })).rejects.toMatchObject({
      reason: 'DestinationDiffers',
    });
    await expect(
      copyBetweenHosts(exec, exec, join(dir, 'nope'), dst, { mode: 'relay' }),
    ).rejects.toBeInstanceOf(StalledError);
  });

  it('a part file that is not a prefix is caught by the checksum and removed', async () => {
    const src = join(dir, 'src.img');
    const dst = join(dir, 'dst.img');
    sparseFile(src);
    writeFileSync(dst + PART_SUFFIX, Buffer.alloc(1024 * 1024, 0x11));
    await expect(copyBetweenHosts(exec, exec, src, dst, { mode: 'relay' })).rejects.toMatchObject({
      reason: 'CopyVerifyFailed',
    });
    // the next attempt starts over and succeeds
    const r = await copyBetweenHosts(exec, exec, src, dst, { mode: 'relay' });
    expect(r.resumedFromBytes).toBe(0);
    expect(sha(dst)).toBe(sha(src));
  });
});
