/**
 * The streamer and the writer of stream-growing.ts, run here with the real perl and a plain
 * pipe between them in place of ssh (the two-host lab runs them through ssh:
 * test/lab/hosts/copy-between-hosts.test.ts). A file is written while it is streamed; what is
 * proven is what arrives in the part and what the digests say.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
  writeSync,
  closeSync,
  truncateSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { LocalExec } from '../../../src/exec/exec';
import { SHA256_SCRIPT } from '../../../src/transfer/copy-local';
import { STREAM_PERL, WRITE_PERL, streamGrowing } from '../../../src/transfer/stream-growing';

const MiB = 1024 * 1024;
let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'vmplace-stream-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

interface Piped {
  finish(): void;
  close(): void;
  ended: Promise<{ code: number | null; out: string }>;
}

/** `perl STREAMER src | perl WRITER part`, as on the hosts but without ssh between them. */
function pipeline(src: string, part: string): Piped {
  const child = spawn(
    'sh',
    [
      '-c',
      'perl -e "$1" -- "$3" "$4" 0.002 | perl -e "$2" -- "$5" "$4"',
      'vmplace-stream-test',
      STREAM_PERL,
      WRITE_PERL,
      src,
      SHA256_SCRIPT,
      part,
    ],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (s: string) => (out += s));
  child.stdin.on('error', () => undefined);
  const ended = new Promise<{ code: number | null; out: string }>((resolve) =>
    child.on('close', (code) => resolve({ code, out })),
  );
  return { finish: () => child.stdin.end('F\n'), close: () => child.stdin.end(), ended };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i + 4 <= n; i += 4) b.writeUInt32LE((Math.imul(i, 2654435761) + seed) >>> 0, i);
  for (let i = n - (n % 4); i < n; i++) b[i] = seed & 0xff;
  return b;
}

/** Write `data` into `path` in `pieces` appends, pausing between them (a save in progress). */
async function writeSlowly(path: string, data: Buffer, pieces: number, flags = 'a'): Promise<void> {
  const fd = openSync(path, flags);
  try {
    const step = Math.ceil(data.length / pieces);
    for (let o = 0; o < data.length; o += step) {
      writeSync(fd, data, o, Math.min(step, data.length - o));
      await sleep(5);
    }
  } finally {
    closeSync(fd);
  }
}

/** The digests line (the writer's last): source, part, size. */
function parse(out: string): { source: string; part: string; bytes: number } {
  const m = /^([0-9a-f]{64}) ([0-9a-f]{64}) ([0-9]+)\n$/.exec(out.split(/(?<=\n)/).pop() ?? '');
  if (!m) throw new Error(`unexpected output ${JSON.stringify(out)}`);
  return { source: m[1]!, part: m[2]!, bytes: Number(m[3]) };
}

describe('stream-growing (streamer | writer)', () => {
  test('a file written while it is streamed, its header rewritten at the end, arrives whole', async () => {
    const src = join(dir, 'state');
    const part = join(dir, 'state.part');
    const body = pattern(6 * MiB + 123, 1);
    writeFileSync(src, Buffer.from('PartialHeader---'));
    const p = pipeline(src, part);
    await writeSlowly(src, body, 24);
    // the writer marks the file complete in its header, as libvirt does with its magic
    const fd = openSync(src, 'r+');
    writeSync(fd, Buffer.from('CompleteHeader--'), 0, 16, 0);
    closeSync(fd);
    p.finish();
    const r = await p.ended;
    expect(r.code).toBe(0);
    const d = parse(r.out);
    const want = readFileSync(src);
    expect(d).toEqual({ source: sha(want), part: sha(want), bytes: want.length });
    expect(readFileSync(part).equals(want)).toBe(true);
  });

  test('a source that appears only after the stream started is followed from its start', async () => {
    const src = join(dir, 'late');
    const part = join(dir, 'late.part');
    const p = pipeline(src, part);
    await sleep(50);
    writeFileSync(src, '');
    await writeSlowly(src, pattern(2 * MiB, 2), 8);
    p.finish();
    const r = await p.ended;
    expect(r.code).toBe(0);
    expect(readFileSync(part).equals(readFileSync(src))).toBe(true);
  });

  test('a stale longer file truncated and written anew: the part is the new file, not the old tail', async () => {
    const src = join(dir, 'stale');
    const part = join(dir, 'stale.part');
    writeFileSync(src, pattern(5 * MiB, 3));
    const p = pipeline(src, part);
    await sleep(100); // the stale content is streamed
    truncateSync(src, 0);
    await writeSlowly(src, pattern(3 * MiB, 4), 12);
    p.finish();
    const r = await p.ended;
    expect(r.code).toBe(0);
    const d = parse(r.out);
    expect(d.bytes).toBe(3 * MiB);
    expect(d.part).toBe(d.source);
    expect(readFileSync(part).equals(readFileSync(src))).toBe(true);
  });

  test('bytes changed in the middle after they were sent: the digests say so (no false match)', async () => {
    const src = join(dir, 'middle');
    const part = join(dir, 'middle.part');
    const p = pipeline(src, part);
    writeFileSync(src, '');
    await writeSlowly(src, pattern(8 * MiB, 5), 16);
    await sleep(100); // everything sent
    // outside the first 64 KiB and the last 1 MiB, which are sent again at the end
    const fd = openSync(src, 'r+');
    writeSync(fd, Buffer.from('rewritten'), 0, 9, 3 * MiB);
    closeSync(fd);
    p.finish();
    const r = await p.ended;
    expect(r.code).toBe(0);
    const d = parse(r.out);
    expect(d.source).toBe(sha(readFileSync(src)));
    expect(d.part).toBe(sha(readFileSync(part)));
    expect(d.part).not.toBe(d.source);
  });

  test('input ending without the finish aborts the stream: non-zero, no digests', async () => {
    const src = join(dir, 'cut');
    const part = join(dir, 'cut.part');
    writeFileSync(src, pattern(MiB, 6));
    const p = pipeline(src, part);
    await sleep(50);
    p.close();
    const r = await p.ended;
    expect(r.code).not.toBe(0);
    expect(r.out).not.toMatch(/[0-9a-f]{64}/);
  });

  test('a source gone when it should be complete fails the stream', async () => {
    const src = join(dir, 'gone');
    const part = join(dir, 'gone.part');
    writeFileSync(src, pattern(MiB, 7));
    const p = pipeline(src, part);
    await sleep(50);
    rmSync(src);
    p.finish();
    const r = await p.ended;
    expect(r.code).not.toBe(0);
    expect(r.out).not.toMatch(/[0-9a-f]{64}/);
  });

  test('the part is never written through a symlink', async () => {
    const src = join(dir, 'src');
    const victim = join(dir, 'victim');
    const part = join(dir, 'link.part');
    writeFileSync(src, pattern(MiB, 8));
    writeFileSync(victim, 'keep me');
    symlinkSync(victim, part);
    const p = pipeline(src, part);
    p.finish();
    const r = await p.ended;
    expect(r.code).not.toBe(0);
    expect(readFileSync(victim, 'utf8')).toBe('keep me');
    expect(lstatSync(part).isSymbolicLink()).toBe(true);
  });

  test('the writer says how it gets on: P every 16 MiB written, T with the size before it hashes', async () => {
    const src = join(dir, 'big');
    const part = join(dir, 'big.part');
    writeFileSync(src, pattern(40 * MiB, 10));
    const p = pipeline(src, part);
    p.finish();
    const r = await p.ended;
    expect(r.code).toBe(0);
    const lines = r.out.trimEnd().split('\n');
    expect(lines.filter((l) => l === 'P').length).toBeGreaterThanOrEqual(2);
    expect(lines.at(-2)).toBe(`T ${40 * MiB}`);
    expect(parse(r.out).bytes).toBe(40 * MiB);
  });

  test("the part gets the source's permission bits (no set-id bits)", async () => {
    const src = join(dir, 'mode');
    const part = join(dir, 'mode.part');
    writeFileSync(src, pattern(MiB, 9));
    chmodSync(src, 0o6640);
    const p = pipeline(src, part);
    p.finish();
    const r = await p.ended;
    expect(r.code).toBe(0);
    expect(statSync(part).mode & 0o7777).toBe(0o640);
    expect(existsSync(part)).toBe(true);
  });
});

/**
 * streamGrowing itself, on this machine: LocalExec for the source host and a FAKE `ssh` first on
 * PATH that runs the remote command here (the real ssh between two hosts is proven on the lab).
 */
describe('streamGrowing', () => {
  let fakeBin: string;
  const savedPath = process.env.PATH;
  beforeAll(() => {
    fakeBin = mkdtempSync(join(tmpdir(), 'vmplace-fake-ssh-'));
    writeFileSync(
      join(fakeBin, 'ssh'),
      [
        '#!/bin/sh',
        '# FAKE ssh for unit tests: skips the options and the host, runs the remote command here',
        'while [ $# -gt 0 ]; do case "$1" in --) shift; break ;; -[BbcDEeFIiJLlmOopQRSWw]) shift 2 ;; -*) shift ;; *) break ;; esac; done',
        'shift',
        'if [ -n "$VMPLACE_TEST_TARGET_HANGS" ]; then exec sleep 10; fi',
        'exec sh -c "$*"',
        '',
      ].join('\n'),
      { mode: 0o755 },
    );
    process.env.PATH = `${fakeBin}:${savedPath}`;
  });
  afterAll(() => {
    process.env.PATH = savedPath;
    delete process.env.VMPLACE_TEST_TARGET_HANGS;
    rmSync(fakeBin, { recursive: true, force: true });
  });

  const target = { host: 'target.invalid', user: 'root' };

  test('streams a file written meanwhile; both digests equal and the part is the file', async () => {
    const src = join(dir, 'state');
    const part = join(dir, 'state.part');
    const s = streamGrowing(new LocalExec(), src, part, target)!;
    writeFileSync(src, '');
    await writeSlowly(src, pattern(3 * MiB, 11), 6);
    s.finish();
    const r = await s.ended;
    expect(s.why()).toBeUndefined();
    expect(r).toEqual({ source: sha(readFileSync(src)), part: sha(readFileSync(src)), bytes: 3 * MiB });
    expect(readFileSync(part).equals(readFileSync(src))).toBe(true);
  });

  test('a target that takes no data: given up once it made no progress for the idle time', async () => {
    process.env.VMPLACE_TEST_TARGET_HANGS = '1';
    try {
      const src = join(dir, 'stuck');
      writeFileSync(src, pattern(MiB, 12));
      const s = streamGrowing(new LocalExec(), src, join(dir, 'stuck.part'), target, { idleTimeoutMs: 300 })!;
      const t0 = Date.now();
      s.finish();
      expect(await s.ended).toBeUndefined();
      expect(Date.now() - t0).toBeLessThan(5_000); // the hanging target sleeps 10 s
      expect(s.why()).toMatch(/no progress for 300 ms/);
    } finally {
      delete process.env.VMPLACE_TEST_TARGET_HANGS;
    }
  });
});
