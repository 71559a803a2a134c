/**
 * One HTTP POST to a receiver, on node:http/https: a timeout on connecting and one on the whole
 * request, no redirects followed, no proxy, the answer's body read and dropped (at most 64 KiB).
 * The URL is a secret: errors carry an errno code or an HTTP status, never the URL or the
 * receiver's answer.
 */
import { createHmac } from 'node:crypto';
import * as http from 'node:http';
import * as https from 'node:https';

/** Header of the webhook's signature: `sha256=` and the hex HMAC-SHA256 of the body. */
export const SIGNATURE_HEADER = 'x-vmplace-signature-256';

/** What one attempt gave. */
export type PostResult =
  | { ok: true; status: number }
  /** `retry`: a network error, a timeout, 408, 425, 429 or 5xx; otherwise the message is dropped */
  | { ok: false; retry: boolean; status?: number; code: string; retryAfterMs?: number };

export interface PostOptions {
  /** connecting (TCP and TLS), in ms (default 5 s) */
  connectTimeoutMs?: number;
  /** the whole request, in ms (default 15 s) */
  timeoutMs?: number;
  /** HMAC-SHA256 key: adds {@link SIGNATURE_HEADER} */
  secret?: Buffer;
  headers?: Record<string, string>;
}

/** The signature header's value for `body`. */
export function sign(secret: Buffer, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

/** POST `body` (JSON) to `url`. Never rejects. */
export function postJson(url: URL, body: string, o: PostOptions = {}): Promise<PostResult> {
  const connectMs = o.connectTimeoutMs ?? 5000;
  const totalMs = o.timeoutMs ?? 15_000;
  const mod = url.protocol === 'https:' ? https : http;
  return new Promise<PostResult>((resolve) => {
    let done = false;
    const finish = (r: PostResult): void => {
      if (done) return;
      done = true;
      clearTimeout(total);
      clearTimeout(connect);
      resolve(r);
    };
    const req = mod.request(url, {
      method: 'POST',
      agent: false,
      headers: {
        'content-type': 'application/json',
        'content-length': String(Buffer.byteLength(body)),
        'user-agent': 'vmplace',
        ...o.headers,
        ...(o.secret ? { [SIGNATURE_HEADER]: sign(o.secret, body) } : {}),
      },
    });
    const total = setTimeout(() => {
      finish({ ok: false, retry: true, code: 'TimedOut' });
      req.destroy();
    }, totalMs);
    const connect = setTimeout(() => {
      finish({ ok: false, retry: true, code: 'ConnectTimedOut' });
      req.destroy();
    }, connectMs);
    req.on('socket', (s) => {
      const connected = (): void => clearTimeout(connect);
      if (url.protocol === 'https:') s.once('secureConnect', connected);
      else s.once('connect', connected);
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      finish({ ok: false, retry: true, code: err.code ?? 'NetworkError' });
    });
    req.on('response', (res) => {
      let read = 0;
      res.on('data', (b: Buffer) => {
        read += b.length;
        if (read > 64 * 1024) res.destroy();
      });
      const status = res.statusCode ?? 0;
      const settle = (): void => {
        if (status >= 200 && status < 300) return finish({ ok: true, status });
        const retry = status === 408 || status === 425 || status === 429 || status >= 500;
        const after = Number(res.headers['retry-after']);
        finish({
          ok: false,
          retry,
          status,
          code: `Http${status}`,
          ...(Number.isFinite(after) && after > 0 ? { retryAfterMs: after * 1000 } : {}),
        });
      };
      res.on('end', settle);
      res.on('close', settle);
      res.on('error', settle);
    });
    req.end(body);
  });
}
