/**
 * Reading a receiver's URL and signing secret. Both are secrets: their content is never put in
 * an error, a log line or a status file; errors name the file and an errno code only.
 */
import * as fs from 'node:fs';
import { StalledError } from '../errors';
import { parseDuration } from '../duration';
import { notificationFileProblem, type TrustContext } from '../manifests/trust';
import type { NotificationReceiver } from '../settings';

/** Largest URL or secret file read. */
export const MAX_SECRET_FILE_BYTES = 4096;

/**
 * The content of `file`, surrounding whitespace removed. The path is checked again here
 * (the settings check ran when `vmplace.yaml` was read; a link may have changed since): its real
 * path must be allowed by {@link notificationFileProblem}; then it is opened without following a
 * link, must be a regular file not writable by others, at most {@link MAX_SECRET_FILE_BYTES}.
 *
 * @throws StalledError `NotificationFileRefused` (the message names the file, never its content).
 */
export function readSecretFile(file: string, trust: TrustContext): Buffer {
  const refuse = (why: string): never => {
    throw new StalledError('NotificationFileRefused', `notification file ${file}: ${why}`);
  };
  const why = notificationFileProblem(file, trust);
  if (why) refuse(why);
  let real: string;
  try {
    real = fs.realpathSync(file);
  } catch (err) {
    return refuse(`cannot resolve (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  let fd: number;
  try {
    fd = fs.openSync(real, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (err) {
    return refuse(`cannot open (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) refuse('not a regular file');
    if (st.mode & 0o002) refuse('writable by others; chmod o-w it');
    if (st.size > MAX_SECRET_FILE_BYTES) refuse(`larger than ${MAX_SECRET_FILE_BYTES} bytes`);
    const buf = Buffer.alloc(MAX_SECRET_FILE_BYTES + 1);
    const n = fs.readSync(fd, buf, 0, buf.length, 0);
    if (n > MAX_SECRET_FILE_BYTES) refuse(`larger than ${MAX_SECRET_FILE_BYTES} bytes`);
    const text = buf.subarray(0, n).toString('utf8').trim();
    buf.fill(0);
    if (!text) refuse('empty');
    return Buffer.from(text);
  } finally {
    fs.closeSync(fd);
  }
}

/** A receiver ready to send to: its URL and key read. */
export interface ResolvedReceiver {
  name: string;
  type: NotificationReceiver['type'];
  events: ReadonlySet<string>;
  matchLabels?: Record<string, string>;
  url: URL;
  secret?: Buffer;
  /** `timeout`, ms: one attempt's bound (the outbox's default when absent) */
  timeoutMs?: number;
}

/**
 * Read a receiver's files and parse its URL (http or https, no user or password in it).
 *
 * @throws StalledError `NotificationFileRefused`, `NotificationUrlInvalid` (no part of the URL in
 *   the message).
 */
export function resolveReceiver(r: NotificationReceiver, trust: TrustContext): ResolvedReceiver {
  const raw = readSecretFile(r.urlFile, trust).toString('utf8');
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new StalledError('NotificationUrlInvalid', `receiver ${r.name}: ${r.urlFile} does not hold a URL`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    throw new StalledError(
      'NotificationUrlInvalid',
      `receiver ${r.name}: the URL in ${r.urlFile} is not http or https`,
    );
  if (url.username || url.password)
    throw new StalledError(
      'NotificationUrlInvalid',
      `receiver ${r.name}: the URL in ${r.urlFile} carries a user or password; put the secret in secretFile`,
    );
  return {
    name: r.name,
    type: r.type,
    events: new Set(r.events),
    ...(r.selector ? { matchLabels: r.selector.matchLabels } : {}),
    url,
    ...(r.secretFile ? { secret: readSecretFile(r.secretFile, trust) } : {}),
    ...(r.timeout !== undefined ? { timeoutMs: parseDuration(r.timeout) } : {}),
  };
}
