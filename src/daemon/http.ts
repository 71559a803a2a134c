/**
 * The daemon's HTTP endpoints on node:http: `/healthz`, `/readyz`, `/metrics`, the read-only
 * fleet status `/v1/status` (for `vmplace status --daemon`) and the git webhook `POST /hooks/git` (GitHub-style `X-Hub-Signature-256` when a secret is configured).
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { readFile } from 'node:fs/promises';
import { StalledError } from '../errors';
import type { HostStatus, VirtualMachineStatus } from '../types';

/** Largest webhook body read (GitHub caps payloads at 25 MB; push events are far smaller). */
export const MAX_WEBHOOK_BODY = 1024 * 1024;
/** Beyond this much of an oversized body, stop draining and drop the connection. */
const MAX_DRAIN = 16 * MAX_WEBHOOK_BODY;
/** Open connections at once (health checks, Prometheus, webhooks need a handful); more are dropped. */
export const MAX_CONNECTIONS = 64;

/**
 * The webhook secret in `file`, surrounding whitespace removed.
 *
 * @throws StalledError `WebhookSecretEmpty` when nothing is left (an empty secret would make
 *   every signature trivially computable); the read error as is.
 */
export async function readWebhookSecret(file: string): Promise<Buffer> {
  const secret = Buffer.from((await readFile(file, 'utf8')).trim());
  if (secret.length === 0)
    throw new StalledError('WebhookSecretEmpty', `webhook secret file ${file} is empty`);
  return secret;
}

/** True for addresses only this machine can reach: 127.0.0.0/8, ::1, localhost. */
export function isLoopback(host: string): boolean {
  return (
    host === 'localhost' ||
    host === '::1' ||
    /^127(?:\.\d{1,3}){3}$/.test(host) ||
    host === '::ffff:127.0.0.1'
  );
}

/** Anything that renders Prometheus text: a prom-client `Registry` or `DaemonMetrics`. */
export interface MetricsSource {
  metrics(): Promise<string>;
  readonly contentType: string;
}

/** Options of {@link startHttpServer}. */
export interface HttpServerOptions {
  /** `host:port`, `[v6]:port`; port 0 picks a free one */
  listen: string;
  metrics: MetricsSource;
  /** called once per accepted webhook; must only schedule work (it runs before the reply) */
  onWebhook: () => void;
  /** when set, webhooks need `X-Hub-Signature-256: sha256=<HMAC-SHA256 of the raw body>` */
  webhookSecret?: Buffer;
  /** `/readyz` answers 200 while this is true (the daemon: once the first pass finished) */
  isReady: () => boolean;
  /** why `/readyz` answers 503, when there is more to say than "not ready" (etcd unreachable) */
  notReadyWhy?: () => string | undefined;
  /** the fleet as `GET /v1/status` serves it (read-only; the same content as the status files) */
  fleet?: () => { vms: VirtualMachineStatus[]; hosts: HostStatus[] };
  logger: Logger;
  /** more read-only routes by path (the fleet page, see src/ui/page.ts); they answer themselves */
  routes?: Record<string, { methods: string[]; run: (req: Req, res: Res) => Promise<void> | void }>;
  /** body limit of webhooks in bytes (default {@link MAX_WEBHOOK_BODY}) */
  maxBodyBytes?: number;
  /** open connections at once (default {@link MAX_CONNECTIONS}); more are closed on arrival */
  maxConnections?: number;
}

/** A running server. */
export interface HttpServer {
  /** where it listens; `port` is the real one when 0 was asked */
  readonly address: { host: string; port: number; url: string };
  /** Stop listening and drop open connections. */
  close(): Promise<void>;
}

/**
 * Split `host:port` or `[ipv6]:port`. The host is required (no accidental listening on every
 * interface: write `0.0.0.0:9464` or `[::]:9464` to mean it).
 *
 * @throws StalledError `InvalidListenAddress`.
 */
export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([0-9A-Fa-f:.]+(?:%[\w.-]+)?)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(listen);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw new StalledError(
      'InvalidListenAddress',
      `invalid listen address ${JSON.stringify(listen)}: expected host:port, e.g. 127.0.0.1:9464 or [::1]:9464`,
    );
  }
  return { host: (m[1] ?? m[2])!, port };
}

/**
 * Start the HTTP server and resolve once it listens.
 *
 * - `GET /healthz`: 200 `ok` while the process serves requests.
 * - `GET /readyz`: 200 `ready` when `isReady()`, else 503 `not ready`.
 * - `GET /metrics`: Prometheus text.
 * - `GET /v1/status`: `{"vms": [VirtualMachineStatus...], "hosts": [HostStatus...]}` as JSON, when
 *   `fleet` is given (404 otherwise): what the daemon would write to `status/` now.
 * - `opts.routes`: the fleet page (`/`, `/ui/*`, `/v1/events`), GET and HEAD only.
 * - `POST /hooks/git`: body up to `maxBodyBytes` (else 413); with a secret, a missing or wrong
 *   `X-Hub-Signature-256` gets 401 and does nothing; otherwise 202 and `onWebhook()`.
 * - other paths 404; other methods on known paths 405 with `Allow`. `HEAD` works like `GET`.
 *
 * Neither the secret nor the signature header is ever logged. Bounded: at most
 * `maxConnections` connections, 10 s for the headers (16 KiB at most), 30 s per request, idle
 * keep-alive connections closed after 5 s. Listening beyond loopback without a webhook secret
 * is logged as a warning (anyone who reaches the port can trigger passes).
 *
 * @throws StalledError `InvalidListenAddress`, `WebhookSecretEmpty`; the `listen` error (e.g.
 *   `EADDRINUSE`) as is.
 */
export async function startHttpServer(opts: HttpServerOptions): Promise<HttpServer> {
  const { host, port } = parseListen(opts.listen);
  const log = opts.logger.child({ component: 'http' });
  const limit = opts.maxBodyBytes ?? MAX_WEBHOOK_BODY;
  if (opts.webhookSecret !== undefined && opts.webhookSecret.length === 0)
    throw new StalledError('WebhookSecretEmpty', 'the webhook secret is empty');
  if (!opts.webhookSecret && !isLoopback(host))
    log.warn(
      { listen: opts.listen },
      'listening beyond loopback without a webhook secret: anyone who reaches this port can trigger passes; give --webhook-secret-file',
    );

  const server = http.createServer(
    { requestTimeout: 30_000, headersTimeout: 10_000, keepAliveTimeout: 5_000, maxHeaderSize: 16 * 1024 },
    (req, res) => {
      // detached: node does not wait for a request handler; its failure is logged and answered here
      void handle(req, res).catch((err: unknown) => {
        log.error({ err, path: pathOf(req) }, 'request failed');
        if (!res.headersSent) reply(res, 500, 'internal error\n');
        else res.destroy();
      });
    },
  );

  server.maxConnections = opts.maxConnections ?? MAX_CONNECTIONS;

  const routes: Record<string, { methods: string[]; run: (req: Req, res: Res) => Promise<void> | void }> = {
    '/healthz': { methods: ['GET', 'HEAD'], run: (_q, r) => reply(r, 200, 'ok\n') },
    '/readyz': {
      methods: ['GET', 'HEAD'],
      run: (_q, r) =>
        opts.isReady()
          ? reply(r, 200, 'ready\n')
          : reply(r, 503, `not ready${notReady(opts.notReadyWhy?.())}\n`),
    },
    '/metrics': {
      methods: ['GET', 'HEAD'],
      run: async (_q, r) => reply(r, 200, await opts.metrics.metrics(), opts.metrics.contentType),
    },
    '/hooks/git': { methods: ['POST'], run: (q, r) => webhook(q, r) },
  };
  for (const [p, r] of Object.entries(opts.routes ?? {})) if (!(p in routes)) routes[p] = r;
  const fleet = opts.fleet;
  if (fleet)
    routes['/v1/status'] = {
      methods: ['GET', 'HEAD'],
      run: (_q, r) => reply(r, 200, JSON.stringify(fleet()) + '\n', 'application/json; charset=utf-8'),
    };

  async function handle(req: Req, res: Res): Promise<void> {
    const route = routes[pathOf(req)];
    if (!route) return reply(res, 404, 'not found\n');
    if (!route.methods.includes(req.method ?? '')) {
      res.setHeader('Allow', route.methods.join(', '));
      return reply(res, 405, 'method not allowed\n');
    }
    await route.run(req, res);
  }

  async function webhook(req: Req, res: Res): Promise<void> {
    const remote = req.socket.remoteAddress;
    const body = await readBody(req, limit);
    if (body === 'too large') {
      log.warn({ remote, limit }, 'webhook rejected: body too large');
      res.setHeader('Connection', 'close');
      return reply(res, 413, 'payload too large\n');
    }
    if (opts.webhookSecret) {
      const problem = checkSignature(body, req.headers['x-hub-signature-256'], opts.webhookSecret);
      if (problem) {
        log.warn({ remote, reason: problem }, 'webhook rejected');
        return reply(res, 401, 'invalid signature\n');
      }
    }
    const event = req.headers['x-github-event'];
    log.info(
      { remote, event: typeof event === 'string' ? event.slice(0, 64) : undefined },
      'webhook accepted',
    );
    opts.onWebhook();
    reply(res, 202, 'accepted\n');
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const shown = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const address = { host: addr.address, port: addr.port, url: `http://${shown}:${addr.port}` };
  log.info({ listen: `${shown}:${addr.port}` }, 'http listening');
  return {
    address,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
  };
}

type Req = http.IncomingMessage;
type Res = http.ServerResponse;

function pathOf(req: Req): string {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  return q >= 0 ? url.slice(0, q) : url;
}

function reply(res: Res, status: number, body: string, contentType = 'text/plain; charset=utf-8'): void {
  res.statusCode = status;
  res.setHeader('Content-Type', contentType);
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.setHeader('Cache-Control', 'no-store');
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

/**
 * The raw body, or `'too large'` past `limit` bytes. An oversized body is drained (not kept) so
 * the client reads the 413; past {@link MAX_DRAIN} the connection is dropped instead.
 */
function readBody(req: Req, limit: number): Promise<Buffer | 'too large'> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = Number.isFinite(declared) && declared > limit;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) tooLarge = true;
      if (tooLarge) {
        chunks.length = 0;
        if (size > MAX_DRAIN) req.destroy();
      } else chunks.push(chunk);
    });
    req.on('end', () => resolve(tooLarge ? 'too large' : Buffer.concat(chunks)));
    req.on('error', reject);
    req.on('close', () => {
      if (!req.complete) reject(new Error('request body aborted'));
    });
  });
}

/** Why a webhook signature is not acceptable, or undefined when it is. Never echoes the header. */
function checkSignature(
  body: Buffer,
  header: string | string[] | undefined,
  secret: Buffer,
): string | undefined {
  if (header === undefined) return 'SignatureMissing';
  const m = typeof header === 'string' ? /^sha256=([0-9a-fA-F]{64})$/.exec(header.trim()) : null;
  if (!m) return 'SignatureMalformed';
  const given = Buffer.from(m[1]!, 'hex');
  const expected = createHmac('sha256', secret).update(body).digest();
  return timingSafeEqual(given, expected) ? undefined : 'SignatureMismatch';
}

/** `: why` on one line, without control characters, or nothing. */
function notReady(why: string | undefined): string {
  if (!why) return '';
  const oneLine = [...why]
    .map((c) => (c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f ? ' ' : c))
    .join('');
  return `: ${oneLine.slice(0, 500)}`;
}
