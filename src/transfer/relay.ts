/**
 * The relay copy between hosts, for hosts that cannot reach each other: `dd` on the source
 * (from an offset on) -> this process (progress, bandwidth limit) -> `dd conv=sparse` on the
 * target (all-zero 64 KiB blocks become holes).
 */
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { CommandError, VmplaceError } from '../errors';
import type { HostExec, ProgressFn } from '../exec/types';
import { displayArgv, localArgv, spawnArgv } from './spawn-stream';

/**
 * Stream `src` from `offset` on through this process into `part` on the target; resolves with
 * the bytes streamed. Needs `SshExec` or `LocalExec` on both hosts.
 */
export async function copyRelay(
  srcHost: HostExec,
  dstHost: HostExec,
  src: string,
  part: string,
  offset: number,
  total: number,
  opts: { onProgress?: ProgressFn; bwlimitKiBps?: number; signal?: AbortSignal },
): Promise<number> {
  const readArgv = ['dd', `if=${src}`, 'bs=1M', 'iflag=skip_bytes', `skip=${offset}`, 'status=none'];
  const writeArgv = [
    'dd',
    `of=${part}`,
    'bs=64K',
    'iflag=fullblock',
    'oflag=seek_bytes',
    `seek=${offset}`,
    'conv=sparse,notrunc',
    'status=none',
  ];
  const readLocal = localArgv(srcHost, readArgv);
  const writeLocal = localArgv(dstHost, writeArgv);
  if (!readLocal || !writeLocal)
    throw new TypeError('copyBetweenHosts: mode relay needs SshExec or LocalExec on both hosts');
  const reader = spawnArgv(readLocal, ['ignore', 'pipe', 'pipe']);
  const writer = spawnArgv(writeLocal, ['pipe', 'ignore', 'pipe']);
  const kill = (): void => {
    reader.child.kill('SIGTERM');
    writer.child.kill('SIGTERM');
  };
  opts.signal?.addEventListener('abort', kill, { once: true });
  const rate = opts.bwlimitKiBps !== undefined ? Math.max(1, opts.bwlimitKiBps) * 1024 : undefined;
  const t0 = Date.now();
  let sent = 0;
  let lastReport = 0;
  const meter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      sent += chunk.length;
      const now = Date.now();
      if (now - lastReport >= 200) {
        lastReport = now;
        opts.onProgress?.(Math.min(offset + sent, total), total);
      }
      const wait = rate !== undefined ? t0 + (sent / rate) * 1000 - now : 0;
      if (wait > 0) setTimeout(() => cb(null, chunk), wait);
      else cb(null, chunk);
    },
  });
  try {
    const [, r, w] = await Promise.all([
      pipeline(reader.child.stdout!, meter, writer.child.stdin!).catch((e: unknown) => {
        kill();
        throw e;
      }),
      reader.done,
      writer.done,
    ]);
    for (const [res, argv, exec] of [
      [r, readArgv, srcHost],
      [w, writeArgv, dstHost],
    ] as const) {
      if (res.exitCode !== 0)
        throw new CommandError('CommandFailed', displayArgv(exec, argv), res.exitCode, res.stderr);
    }
  } catch (err) {
    kill();
    throw new VmplaceError(
      'TransferFailed',
      `relay of ${src} from ${srcHost.label} to ${dstHost.label} failed`,
      {
        cause: err,
      },
    );
  } finally {
    opts.signal?.removeEventListener('abort', kill);
  }
  return sent;
}
