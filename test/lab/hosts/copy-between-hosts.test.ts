/**
 * copyBetweenHosts on the two-host lab: hv1 and hv2 in their own network namespaces, reached
 * over ssh only. Run with `npx jest test/lab/hosts --runInBand` (root).
 */
import { readFile } from 'node:fs/promises';
import { SshExec } from '../../../src/exec/exec';
import { StalledError } from '../../../src/errors';
import { PART_SUFFIX } from '../../../src/transfer/copy-local';
import { copyBetweenHosts, targetReachable } from '../../../src/transfer/between-hosts';
import {
  blockRoute,
  ensureHosts,
  hostProcesses,
  hostsUpMs,
  setLink,
  transferSsh,
  type HostsEnv,
  type LabHost,
} from '../../../src/lab';

jest.setTimeout(300_000);

const MiB = 1024 * 1024;
let env: HostsEnv;
let hv1: LabHost;
let hv2: LabHost;
let x1: SshExec;
let x2: SshExec;
const dir = `/srv/vmplace/local/copy-test-${process.pid}`;

beforeAll(async () => {
  env = await ensureHosts();
  hv1 = env.hosts.hv1;
  hv2 = env.hosts.hv2;
  x1 = new SshExec(hv1.ssh);
  x2 = new SshExec(hv2.ssh);
  await Promise.all([x1.run(['mkdir', '-p', dir]), x2.run(['mkdir', '-p', dir])]);
});

afterAll(async () => {
  await setLink(hv2, 'up').catch(() => undefined);
  await blockRoute(hv1, hv2, false).catch(() => undefined);
  await Promise.all([x1?.run(['rm', '-rf', '--', dir]), x2?.run(['rm', '-rf', '--', dir])]).catch(
    () => undefined,
  );
  await Promise.all([x1?.close(), x2?.close()]);
});

/**
 * A file of `sizeMiB` on hv1 with random data in every other 8 MiB chunk (`half`) or in every
 * chunk (`all`); holes elsewhere.
 */
async function makeFile(path: string, sizeMiB: number, fill: 'half' | 'all' = 'half'): Promise<void> {
  await x1.run(['truncate', '-s', `${sizeMiB}M`, '--', path]);
  for (let chunk = 0; chunk * 8 < sizeMiB; chunk++) {
    if (fill === 'half' && chunk % 2 === 1) continue;
    await x1.run([
      'dd',
      'if=/dev/urandom',
      `of=${path}`,
      'bs=8M',
      'count=1',
      `seek=${chunk}`,
      'conv=notrunc',
      'status=none',
    ]);
  }
}

async function sha(exec: SshExec, path: string): Promise<string> {
  return (await exec.run(['sha256sum', '--', path])).stdout.split(' ')[0]!;
}

async function allocatedBytes(exec: SshExec, path: string): Promise<number> {
  const [blocks, unit] = (await exec.run(['stat', '-c', '%b %B', '--', path])).stdout.trim().split(' ');
  return Number(blocks) * Number(unit);
}

async function fileSize(exec: SshExec, path: string): Promise<number | undefined> {
  const r = await exec.run(['stat', '-c', '%s', '--', path], { allowExitCodes: [1] });
  return r.exitCode === 0 ? Number(r.stdout.trim()) : undefined;
}

async function until(cond: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

it('brings the lab up: both hosts answer over ssh and hv1 reaches hv2', async () => {
  console.log(`hosts-up.sh took ${hostsUpMs ?? '(cached)'} ms`);
  expect((await x1.run(['hostname'])).stdout.trim()).toBe('hv1');
  expect((await x2.run(['hostname'])).stdout.trim()).toBe('hv2');
  expect(await targetReachable(x1, transferSsh(hv1, hv2))).toBe(true);
  // the cluster shared storage is one directory in both hosts
  const f = `${env.csvPath}/probe-${process.pid}`;
  await x1.run(['sh', '-c', 'echo shared > "$1"', 'sh', f]);
  expect((await x2.run(['cat', '--', f])).stdout).toBe('shared\n');
  await x2.run(['rm', '-f', '--', f]);
});

it('copies a 256 MiB half-allocated file hv1 -> hv2: progress, equal checksums, sparse on the target', async () => {
  const src = `${dir}/half.img`;
  const dst = `${dir}/half-copy.img`;
  await makeFile(src, 256);
  const events: [number, number][] = [];
  const r = await copyBetweenHosts(x1, x2, src, dst, {
    targetSsh: transferSsh(hv1, hv2),
    onProgress: (d, t) => events.push([d, t]),
  });
  expect(r).toMatchObject({ bytes: 256 * MiB, alreadyDone: false, mode: 'direct', resumedFromBytes: 0 });
  expect(r.sha256).toBe(await sha(x1, src));
  expect(await sha(x2, dst)).toBe(r.sha256);
  expect(await fileSize(x2, dst + PART_SUFFIX)).toBeUndefined();
  const alloc = await allocatedBytes(x2, dst);
  expect(alloc).toBeLessThan(150 * MiB);
  expect(alloc).toBeGreaterThanOrEqual(128 * MiB);
  expect(events[0]).toEqual([0, 256 * MiB]);
  expect(events[events.length - 1]).toEqual([256 * MiB, 256 * MiB]);
  expect(events.length).toBeGreaterThan(2);
  for (let i = 1; i < events.length; i++) expect(events[i]![0]).toBeGreaterThanOrEqual(events[i - 1]![0]);
  console.log(`256 MiB half-allocated hv1->hv2: ${r.durationMs} ms, ${r.bytesSent} bytes of file data sent`);

  // idempotent: a second run finds the identical copy
  const again = await copyBetweenHosts(x1, x2, src, dst, { targetSsh: transferSsh(hv1, hv2) });
  expect(again).toMatchObject({ alreadyDone: true, bytesSent: 0 });
});

it('resumes a copy cut off by a link going down, without starting over', async () => {
  const src = `${dir}/resume.img`;
  const dst = `${dir}/resume-copy.img`;
  const part = dst + PART_SUFFIX;
  const total = 256 * MiB;
  await makeFile(src, 256, 'all');
  const targetSsh = transferSsh(hv1, hv2);

  // slow enough to cut it in the middle: 32 MiB/s -> ~8 s
  const first = copyBetweenHosts(x1, x2, src, dst, { targetSsh, bwlimitKiBps: 32 * 1024, ioTimeoutSec: 3 });
  const firstOutcome = first.then(
    () => 'finished',
    (e: unknown) => e,
  );
  await until(async () => ((await fileSize(x2, part)) ?? 0) > 64 * MiB, 60_000, 'part file > 64 MiB');
  await setLink(hv2, 'down');
  const t0 = Date.now();
  const err = await firstOutcome;
  console.log(`link down: copy failed after ${Date.now() - t0} ms: ${(err as Error).message}`);
  expect(err).toBeInstanceOf(Error);
  await setLink(hv2, 'up');
  // the receiving rsync on hv2 ends by its own --timeout; wait for it before resuming
  await until(
    async () => !(await hostProcesses(hv2)).some((p) => p.comm === 'rsync'),
    30_000,
    'hv2 rsync to end',
  );
  const partBytes = (await fileSize(x2, part)) ?? 0;
  expect(partBytes).toBeGreaterThan(64 * MiB);
  expect(partBytes).toBeLessThan(total);

  const events: number[] = [];
  const r = await copyBetweenHosts(x1, x2, src, dst, { targetSsh, onProgress: (d) => events.push(d) });
  console.log(
    `resume: part had ${partBytes} of ${total} bytes; second run sent ${r.bytesSent} bytes of file data in ${r.durationMs} ms`,
  );
  expect(r.resumedFromBytes).toBe(partBytes);
  expect(r.bytesSent).toBeLessThan(total - partBytes + 8 * MiB);
  expect(r.bytesSent).toBeLessThan(total);
  expect(await sha(x2, dst)).toBe(await sha(x1, src));
  expect(events[0]).toBe(partBytes);
});

it('honours the bandwidth limit (loosely)', async () => {
  const src = `${dir}/bw.img`;
  const dst = `${dir}/bw-copy.img`;
  await makeFile(src, 64, 'all');
  const limitKiBps = 16 * 1024;
  const t0 = Date.now();
  const r = await copyBetweenHosts(x1, x2, src, dst, {
    targetSsh: transferSsh(hv1, hv2),
    bwlimitKiBps: limitKiBps,
  });
  const copyMs = Date.now() - t0;
  const rate = (64 * MiB) / (copyMs / 1000) / 1024;
  console.log(
    `bwlimit ${limitKiBps} KiB/s: 64 MiB in ${copyMs} ms (${rate.toFixed(0)} KiB/s incl. checksums)`,
  );
  expect(r.sha256).toBe(await sha(x1, src));
  expect(rate).toBeLessThan(limitKiBps * 1.3);
  expect(rate).toBeGreaterThan(limitKiBps * 0.3);
});

it('fails when hv1 has a wrong host key for hv2 (host keys are checked)', async () => {
  const src = `${dir}/hk.img`;
  const dst = `${dir}/hk-copy.img`;
  await makeFile(src, 8, 'all');
  // a known_hosts on hv1 that lists hv2's address with hv1's own host key
  const wrongKh = `/root/.ssh/known_hosts-wrong-${process.pid}`;
  const hv1Key = (await x1.run(['cat', '/etc/ssh/ssh_host_ed25519_key.pub'])).stdout
    .split(' ')
    .slice(0, 2)
    .join(' ');
  await x1.run(['sh', '-c', 'printf "%s %s\\n" "$1" "$2" > "$3"', 'sh', hv2.addr, hv1Key, wrongKh]);
  try {
    const err = await copyBetweenHosts(x1, x2, src, dst, {
      targetSsh: { ...transferSsh(hv1, hv2), knownHostsFile: wrongKh },
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(StalledError);
    expect((err as StalledError).reason).toBe('TargetHostKeyMismatch');
    expect(await fileSize(x2, dst + PART_SUFFIX)).toBeUndefined();
    expect(await fileSize(x2, dst)).toBeUndefined();
  } finally {
    await x1.run(['rm', '-f', '--', wrongKh]);
  }
});

it('relays through the management box when hv1 cannot reach hv2 (mode auto)', async () => {
  const src = `${dir}/relay.img`;
  const dst = `${dir}/relay-copy.img`;
  await makeFile(src, 64);
  await blockRoute(hv1, hv2, true);
  try {
    expect(await targetReachable(x1, transferSsh(hv1, hv2))).toBe(false);
    const events: number[] = [];
    const r = await copyBetweenHosts(x1, x2, src, dst, {
      targetSsh: transferSsh(hv1, hv2),
      mode: 'auto',
      onProgress: (d) => events.push(d),
    });
    expect(r).toMatchObject({ mode: 'relay', bytes: 64 * MiB, alreadyDone: false, bytesSent: 64 * MiB });
    expect(await sha(x2, dst)).toBe(await sha(x1, src));
    expect(await allocatedBytes(x2, dst)).toBeLessThan(40 * MiB);
    expect(events[events.length - 1]).toBe(64 * MiB);
  } finally {
    await blockRoute(hv1, hv2, false);
  }
});

it('sends a file up to relayBelowBytes through the management box even when the hosts reach each other', async () => {
  const src = `${dir}/small.img`;
  const dst = `${dir}/small-copy.img`;
  await makeFile(src, 16);
  expect(await targetReachable(x1, transferSsh(hv1, hv2))).toBe(true);
  const r = await copyBetweenHosts(x1, x2, src, dst, {
    targetSsh: transferSsh(hv1, hv2),
    mode: 'direct',
    relayBelowBytes: 16 * MiB,
  });
  expect(r).toMatchObject({ mode: 'relay', bytes: 16 * MiB, alreadyDone: false, bytesSent: 16 * MiB });
  expect(r.sha256).toBe(await sha(x1, src));
  expect(await sha(x2, dst)).toBe(await sha(x1, src));
  // one byte over: rsync from host to host as usual
  const big = `${dir}/small-copy-2.img`;
  const r2 = await copyBetweenHosts(x1, x2, src, big, {
    targetSsh: transferSsh(hv1, hv2),
    mode: 'direct',
    relayBelowBytes: 16 * MiB - 1,
  });
  expect(r2.mode).toBe('direct');
  expect(await sha(x2, big)).toBe(await sha(x1, src));
});

it('sends a sparse raw file compressed: the wire carries about its data, not its holes', async () => {
  const src = `${dir}/sparse.raw`;
  const dst = `${dir}/sparse-copy.raw`;
  await x1.run(['truncate', '-s', '512M', '--', src]);
  for (const at of [0, 200, 400])
    await x1.run([
      'dd',
      'if=/dev/urandom',
      `of=${src}`,
      'bs=1M',
      'count=8',
      `seek=${at}`,
      'conv=notrunc',
      'status=none',
    ]);
  const r = await copyBetweenHosts(x1, x2, src, dst, { targetSsh: transferSsh(hv1, hv2), mode: 'direct' });
  expect(r.mode).toBe('direct');
  expect(await sha(x2, dst)).toBe(await sha(x1, src));
  expect(r.wireBytes).toBeLessThan(1.1 * 24 * MiB);
  expect(await allocatedBytes(x2, dst)).toBeLessThan(40 * MiB);
  console.log(`sparse 512 MiB raw, 24 MiB of data: ${r.wireBytes} bytes on the wire in ${r.durationMs} ms`);
});

it('relay resumes from the part file', async () => {
  const src = `${dir}/relay2.img`;
  const dst = `${dir}/relay2-copy.img`;
  await makeFile(src, 32, 'all');
  // a prefix of the source, as an interrupted relay leaves it
  const prefix = await x1.run(['sh', '-c', 'head -c 20971520 -- "$1" | base64 -w0', 'sh', src]);
  await x2.run(['sh', '-c', 'base64 -d > "$1"', 'sh', dst + PART_SUFFIX], { input: prefix.stdout });
  const r = await copyBetweenHosts(x1, x2, src, dst, { mode: 'relay' });
  expect(r).toMatchObject({ mode: 'relay', resumedFromBytes: 20 * MiB, bytesSent: 12 * MiB });
  expect(await sha(x2, dst)).toBe(await sha(x1, src));
});

/** rsync's exit codes of failure (a refused or half-done transfer is what some cases expect) */
const RSYNC_FAILURES = Array.from({ length: 35 }, (_, i) => i + 1);

/** The command lines (arguments split) of the processes named `comms` running on a lab host. */
async function cmdlinesOn(h: LabHost, comms: string[]): Promise<string[][]> {
  const out: string[][] = [];
  for (const p of await hostProcesses(h)) {
    if (!comms.includes(p.comm)) continue;
    const cmd = await readFile(`/proc/${p.pid}/cmdline`, 'utf8').catch(() => '');
    if (cmd) out.push(cmd.split('\0'));
  }
  return out;
}

/** Command lines of the rsync daemons running on a lab host. */
async function daemonsOn(h: LabHost): Promise<string[]> {
  return (await cmdlinesOn(h, ['rsync', 'timeout']))
    .map((a) => a.join(' '))
    .filter((c) => c.includes('--daemon'));
}

/** Whether a daemon for the part file named `part` runs on `h` within ~15 s. */
async function daemonForPart(h: LabHost, part: string): Promise<boolean> {
  for (let i = 0; i < 300; i++) {
    if ((await daemonsOn(h)).some((c) => c.includes(`${part}.rsyncd.conf`))) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

/** The ssh masters of vmplace's copies running on a lab host (their command lines). */
async function mastersOn(h: LabHost): Promise<string[]> {
  return (await cmdlinesOn(h, ['ssh']))
    .filter((a) => a.includes('-M'))
    .map((a) => a.join(' '))
    .filter((c) => c.includes('ControlPath=') && c.includes('.vmplace-ssh-'));
}

describe('through ssh while the source is still being written (sourceReady)', () => {
  it('opens the connection hv1 -> hv2 before the file exists, copies over it, verified, and leaves no connection or socket behind', async () => {
    const src = `${dir}/state-ssh-early.img`;
    const dst = `${dir}/state-ssh-early-copy.img`;
    let ready!: () => void;
    const sourceReady = new Promise<void>((r) => (ready = r));
    const copying = copyBetweenHosts(x1, x2, src, dst, { targetSsh: transferSsh(hv1, hv2), sourceReady });
    // an authenticated master on hv1, its socket next to the (not yet written) source
    let socket: string | undefined;
    for (let i = 0; i < 300 && !socket; i++) {
      const names = (await x1.run(['ls', '-A', '--', dir])).stdout.split('\n');
      socket = names.find((n) => n.startsWith('.vmplace-ssh-'));
      if (!socket) await new Promise((r) => setTimeout(r, 50));
    }
    expect(socket).toBeDefined();
    const check = await x1.run(
      ['ssh', '-F', '/dev/null', '-o', `ControlPath=${dir}/${socket!}`, '-O', 'check', '--', hv2.addr],
      {
        allowExitCodes: [255],
      },
    );
    expect(check.exitCode).toBe(0); // the master answers: authenticated to hv2
    expect((await mastersOn(hv1)).length).toBeGreaterThan(0);
    await makeFile(src, 24, 'all'); // "the save ends"
    ready();
    const r = await copying;
    expect(r).toMatchObject({ mode: 'direct', channel: 'ssh', alreadyDone: false, bytes: 24 * MiB });
    expect(r.sha256).toBe(await sha(x1, src));
    expect(await sha(x2, dst)).toBe(r.sha256);
    expect(
      (await x1.run(['ls', '-A', '--', dir])).stdout.split('\n').filter((n) => n.startsWith('.vmplace-ssh-')),
    ).toEqual([]);
    expect(await mastersOn(hv1)).toEqual([]);
  });

  it('a source that never comes: the copy fails with its reason; no connection, socket or file left', async () => {
    const src = `${dir}/state-ssh-never.img`;
    const dst = `${dir}/state-ssh-never-copy.img`;
    let fail!: (e: Error) => void;
    const sourceReady = new Promise<void>((_r, j) => (fail = j));
    const copying = copyBetweenHosts(x1, x2, src, dst, { targetSsh: transferSsh(hv1, hv2), sourceReady });
    copying.catch(() => undefined);
    for (let i = 0; i < 300 && (await mastersOn(hv1)).length === 0; i++)
      await new Promise((r) => setTimeout(r, 50));
    fail(new Error('the save failed'));
    await expect(copying).rejects.toThrow('the save failed');
    expect(
      (await x1.run(['ls', '-A', '--', dir])).stdout.split('\n').filter((n) => n.startsWith('.vmplace-ssh-')),
    ).toEqual([]);
    expect(await mastersOn(hv1)).toEqual([]);
    const left = (await x2.run(['ls', '-A', '--', dir])).stdout.split('\n').filter(Boolean);
    expect(left.filter((n) => n.startsWith('state-ssh-never'))).toEqual([]);
  });
});

/** The stream's processes (perl streamer and writer, its ssh) running on a lab host. */
async function streamsOn(h: LabHost): Promise<string[]> {
  return (await cmdlinesOn(h, ['perl', 'ssh', 'sh']))
    .map((a) => a.join(' '))
    .filter(
      (c) =>
        c.includes('vmplace-stream') || c.includes('$src, $hashsh, $poll') || c.includes('$part, $hashsh'),
    )
    .map((c) => c.slice(0, 200));
}

/**
 * Start writing `sizeMiB` of random data into `path` on hv1 in 1 MiB pieces, ~`ms` between
 * them, behind a 16-byte header `LibvirtQemudPart` that is rewritten to `LibvirtQemudSave` at
 * the end (as libvirt marks a save image complete). Resolves when the file is complete.
 */
function saveLike(path: string, sizeMiB: number, ms = 5): Promise<unknown> {
  return x1.run([
    'sh',
    '-c',
    'printf LibvirtQemudPart > "$1"; i=0; while [ $i -lt "$2" ]; do head -c 1048576 /dev/urandom >> "$1"; sleep "$3"; i=$((i+1)); done; printf LibvirtQemudSave | dd of="$1" conv=notrunc status=none',
    'sh',
    path,
    String(sizeMiB),
    String(ms / 1000),
  ]);
}

describe('a source streamed while it is written (sourceGrows: the memory state being saved)', () => {
  it('crosses hv1 -> hv2 while it is written, its rewritten header included, verified; nothing left running', async () => {
    const src = `${dir}/state-stream.img`;
    const dst = `${dir}/state-stream-copy.img`;
    const saving = saveLike(src, 40);
    const copying = copyBetweenHosts(x1, x2, src, dst, {
      targetSsh: transferSsh(hv1, hv2),
      sourceReady: saving,
      sourceGrows: true,
    });
    // data arrives on hv2 before the source is complete
    let early = 0;
    for (let i = 0; i < 400 && early === 0; i++) {
      early = (await fileSize(x2, `${dst}${PART_SUFFIX}`)) ?? 0;
      if (early === 0) await new Promise((r) => setTimeout(r, 10));
    }
    const srcWhenSeen = (await fileSize(x1, src)) ?? 0;
    await saving;
    const complete = (await fileSize(x1, src))!;
    expect(early).toBeGreaterThan(0);
    expect(srcWhenSeen).toBeLessThan(complete);
    const r = await copying;
    expect(r).toMatchObject({ streamed: true, mode: 'direct', channel: 'ssh', bytes: complete });
    expect(r.streamFallback).toBeUndefined();
    expect(r.sha256).toBe(await sha(x1, src));
    expect(await sha(x2, dst)).toBe(r.sha256);
    expect((await x2.run(['head', '-c', '16', '--', dst])).stdout).toBe('LibvirtQemudSave');
    expect(await fileSize(x2, `${dst}${PART_SUFFIX}`)).toBeUndefined();
    expect([...(await streamsOn(hv1)), ...(await streamsOn(hv2))]).toEqual([]);
  });

  it('a middle rewritten after it crossed: the digests differ, rsync mends the part, the copy is right', async () => {
    const src = `${dir}/state-rewrite.img`;
    const dst = `${dir}/state-rewrite-copy.img`;
    const saving = (async () => {
      await saveLike(src, 24, 2);
      // after the stream has sent it: 9 bytes at 8 MiB (outside the head and tail it sends again)
      await new Promise((r) => setTimeout(r, 500));
      await x1.run([
        'sh',
        '-c',
        'printf rewritten | dd of="$1" bs=1 seek=8388608 conv=notrunc status=none',
        'sh',
        src,
      ]);
    })();
    const r = await copyBetweenHosts(x1, x2, src, dst, {
      targetSsh: transferSsh(hv1, hv2),
      sourceReady: saving,
      sourceGrows: true,
    });
    expect(r.streamed).toBeUndefined();
    expect(r.streamFallback).toMatch(/digests differ/);
    expect(r.resumedFromBytes).toBe(24 * MiB + 16);
    expect(r.sha256).toBe(await sha(x1, src));
    expect(await sha(x2, dst)).toBe(r.sha256);
    expect((await x2.run(['dd', `if=${dst}`, 'bs=1', 'skip=8388608', 'count=9', 'status=none'])).stdout).toBe(
      'rewritten',
    );
  });

  it('a save that fails: the copy fails with its reason; the part and the stream are gone', async () => {
    const src = `${dir}/state-stream-never.img`;
    const dst = `${dir}/state-stream-never-copy.img`;
    let fail!: (e: Error) => void;
    const sourceReady = new Promise<void>((_r, j) => (fail = j));
    const writing = saveLike(src, 8);
    const copying = copyBetweenHosts(x1, x2, src, dst, {
      targetSsh: transferSsh(hv1, hv2),
      sourceReady,
      sourceGrows: true,
    });
    copying.catch(() => undefined);
    await until(async () => ((await fileSize(x2, `${dst}${PART_SUFFIX}`)) ?? 0) > 0, 20_000, 'the part');
    await writing;
    fail(new Error('the save failed'));
    await expect(copying).rejects.toThrow('the save failed');
    const left = (await x2.run(['ls', '-A', '--', dir])).stdout.split('\n').filter(Boolean);
    expect(left.filter((n) => n.startsWith('state-stream-never'))).toEqual([]);
    await until(
      async () => [...(await streamsOn(hv1)), ...(await streamsOn(hv2))].length === 0,
      10_000,
      'the stream to end',
    );
  });
});

describe('channel tcp: a one-shot rsync daemon on the target (policy.pauseTransfer: tcp)', () => {
  it('copies through the daemon, verified, and leaves neither the daemon nor its files behind', async () => {
    const src = `${dir}/state-tcp.img`;
    const dst = `${dir}/state-tcp-copy.img`;
    await makeFile(src, 48, 'all');
    const r = await copyBetweenHosts(x1, x2, src, dst, { targetSsh: transferSsh(hv1, hv2), channel: 'tcp' });
    expect(r).toMatchObject({ mode: 'direct', channel: 'tcp', alreadyDone: false, bytes: 48 * MiB });
    expect(r.channelFallback).toBeUndefined();
    expect(r.sha256).toBe(await sha(x1, src));
    expect(await sha(x2, dst)).toBe(r.sha256);
    const left = (await x2.run(['ls', '-A', '--', dir])).stdout.split('\n').filter(Boolean);
    expect(left.filter((n) => n.includes('rsyncd') || n.endsWith(PART_SUFFIX))).toEqual([]);
    expect(await daemonsOn(hv2)).toEqual([]);
    console.log(`48 MiB through the daemon hv1->hv2: ${r.durationMs} ms`);
  });

  it('opened while the source is still being written (sourceReady): the daemon listens before the file exists; copied, verified, nothing left', async () => {
    const src = `${dir}/state-early.img`;
    const dst = `${dir}/state-early-copy.img`;
    let ready!: () => void;
    const sourceReady = new Promise<void>((r) => (ready = r));
    const copying = copyBetweenHosts(x1, x2, src, dst, {
      targetSsh: transferSsh(hv1, hv2),
      channel: 'tcp',
      sourceReady,
    });
    // the daemon for this part runs on the target while the source does not exist yet
    expect(await daemonForPart(hv2, `state-early-copy.img${PART_SUFFIX}`)).toBe(true);
    expect((await x1.run(['ls', '-A', '--', dir])).stdout.split('\n')).not.toContain('state-early.img');
    await makeFile(src, 48, 'all'); // "the save ends"
    ready();
    const r = await copying;
    expect(r).toMatchObject({ mode: 'direct', channel: 'tcp', alreadyDone: false, bytes: 48 * MiB });
    expect(r.channelFallback).toBeUndefined();
    expect(r.sha256).toBe(await sha(x1, src));
    expect(await sha(x2, dst)).toBe(r.sha256);
    const left = (await x2.run(['ls', '-A', '--', dir])).stdout.split('\n').filter(Boolean);
    expect(left.filter((n) => n.includes('rsyncd') || n.endsWith(PART_SUFFIX))).toEqual([]);
    expect(await daemonsOn(hv2)).toEqual([]);
  });

  it('opened early for a source that never comes (a failed save): the copy fails with its reason; no daemon, no file left', async () => {
    const src = `${dir}/state-never.img`;
    const dst = `${dir}/state-never-copy.img`;
    let fail!: (e: Error) => void;
    const sourceReady = new Promise<void>((_r, j) => (fail = j));
    const copying = copyBetweenHosts(x1, x2, src, dst, {
      targetSsh: transferSsh(hv1, hv2),
      channel: 'tcp',
      sourceReady,
    });
    copying.catch(() => undefined);
    expect(await daemonForPart(hv2, `state-never-copy.img${PART_SUFFIX}`)).toBe(true);
    fail(new Error('the save failed'));
    await expect(copying).rejects.toThrow('the save failed');
    const left = (await x2.run(['ls', '-A', '--', dir])).stdout.split('\n').filter(Boolean);
    expect(left.filter((n) => n.startsWith('state-never'))).toEqual([]);
    expect(await daemonsOn(hv2)).toEqual([]);
  });

  it('falls back to ssh for a path it does not write into a daemon configuration, and says why', async () => {
    const src = `${dir}/state-fallback.img`;
    const dst = `${dir}/state fallback %HOME% copy.img`;
    await makeFile(src, 8, 'all');
    const r = await copyBetweenHosts(x1, x2, src, dst, { targetSsh: transferSsh(hv1, hv2), channel: 'tcp' });
    expect(r).toMatchObject({ channel: 'ssh', mode: 'direct' });
    expect(r.channelFallback).toMatch(/not a path the tcp channel takes/);
    expect(await sha(x2, dst)).toBe(await sha(x1, src));
  });

  it('does not take a port someone else listens on first (the file would go to them): stopped, files removed', async () => {
    const { daemonConfig, START_DAEMON_SCRIPT } = await import('../../../src/transfer/rsync-daemon');
    const part = `${dir}/squatted.img${PART_SUFFIX}`;
    await x2.run(['sh', '-c', ': > "$1"', 'sh', part]);
    const address = transferSsh(hv1, hv2).host;
    for (const [i, bindTo] of [address, '0.0.0.0'].entries()) {
      const port = 30_000 + (process.pid % 900) + i;
      // any user's process: a listener on the port before the daemon starts
      await x2.run([
        'sh',
        '-c',
        'setsid timeout 20 python3 -c "import socket,sys,time; s=socket.socket(); s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(); time.sleep(20)" "$1" "$2" </dev/null >/dev/null 2>&1 & sleep 0.5',
        'sh',
        bindTo,
        String(port),
      ]);
      const started = await x2.run(
        ['bash', '-c', START_DAEMON_SCRIPT, 'vmplace-rsyncd', part, address, String(port), '60'],
        { input: `${'c'.repeat(48)}\n${daemonConfig(part)!}`, allowExitCodes: [4] },
      );
      expect(started.exitCode).toBe(4);
      expect(started.stdout).toBe('');
      expect(await fileSize(x2, `${part}.rsyncd.secret`)).toBeUndefined();
      expect(await fileSize(x2, `${part}.rsyncd.conf`)).toBeUndefined();
      expect((await daemonsOn(hv2)).filter((c) => c.includes(`--port=${port}`))).toEqual([]);
    }
  });

  it('lets in only a client with the secret, only into the one part file, and never reads', async () => {
    const { daemonConfig, START_DAEMON_SCRIPT, STOP_DAEMON_SCRIPT, daemonPushArgv } =
      await import('../../../src/transfer/rsync-daemon');
    const part = `${dir}/victim.img${PART_SUFFIX}`;
    const other = `${dir}/other-vm.img`;
    await x2.run(['sh', '-c', 'printf keep > "$1"; : > "$2"', 'sh', other, part]);
    const src = `${dir}/evil.img`;
    await makeFile(src, 1, 'all');
    const address = transferSsh(hv1, hv2).host;
    const port = 31_000 + (process.pid % 900);
    const secret = 'a'.repeat(48);
    const started = await x2.run(
      ['bash', '-c', START_DAEMON_SCRIPT, 'vmplace-rsyncd', part, address, String(port), '60'],
      { input: `${secret}\n${daemonConfig(part)!}` },
    );
    const pid = started.stdout.trim();
    expect(pid).toMatch(/^\d+$/);
    try {
      // the files beside the part are the owner's only
      const modes = (
        await x2.run(['stat', '-c', '%a %n', '--', `${part}.rsyncd.conf`, `${part}.rsyncd.secret`])
      ).stdout;
      expect(modes).toMatch(/^600 .*conf\n600 .*secret\n$/);
      const push = (file: string, name: string, key: string) =>
        x1.run(daemonPushArgv(file, `${dir}/${name}`, address, port), {
          input: `${key}\n`,
          allowExitCodes: RSYNC_FAILURES,
        });
      // a wrong secret: refused
      expect((await push(src, `victim.img${PART_SUFFIX}`, 'b'.repeat(48))).exitCode).toBe(5);
      // the right secret, another name (another VM's disk, the secret file itself): not written
      await push(src, 'other-vm.img', secret);
      await push(src, `victim.img${PART_SUFFIX}.rsyncd.secret`, secret);
      expect((await x2.run(['cat', '--', other])).stdout).toBe('keep');
      expect((await x2.run(['cat', '--', `${part}.rsyncd.secret`])).stdout).toBe(`vmplace:${secret}\n`);
      // nothing can be read from it
      const pull = await x1.run(
        [
          'env',
          'LC_ALL=C',
          'rsync',
          '--password-file=-',
          '--',
          `rsync://vmplace@${address}:${port}/m/other-vm.img`,
          '/tmp/',
        ],
        { input: `${secret}\n`, allowExitCodes: RSYNC_FAILURES },
      );
      expect(pull.exitCode).not.toBe(0);
      expect(pull.stderr).toMatch(/module is write only/);
      // the one name it takes
      expect((await push(src, `victim.img${PART_SUFFIX}`, secret)).exitCode).toBe(0);
      expect(await sha(x2, part)).toBe(await sha(x1, src));
    } finally {
      await x2.run(['bash', '-c', STOP_DAEMON_SCRIPT, 'stop', pid, part]);
    }
    expect((await daemonsOn(hv2)).filter((c) => c.includes(`--port=${port}`))).toEqual([]);
    expect(await fileSize(x2, `${part}.rsyncd.secret`)).toBeUndefined();
    expect(await fileSize(x2, `${part}.rsyncd.conf`)).toBeUndefined();
  });
});
