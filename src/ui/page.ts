/**
 * The fleet page's routes on the daemon's listener: `GET /` (the HTML shell), `/ui/*` (its
 * script, style and the two vendored libraries, preact and htm, read from the installed
 * packages: no CDN) and `GET /v1/events` (the live feed, see {@link FleetEvents}). Read-only:
 * every route answers GET and HEAD only; nothing here changes the fleet.
 *
 * Access: on a loopback listener the page is open unless a token is configured; with a token
 * (`--ui-token-file`) every page route needs it, as `Authorization: Bearer TOKEN` or as the
 * cookie set by one visit to `/?token=TOKEN` (HttpOnly, SameSite=Strict; the visit is redirected
 * to `/` so the token leaves the address bar and history). On a listener beyond loopback without
 * a token the page routes answer 403: the fleet's layout is not shown to whoever reaches the port.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import * as path from 'node:path';
import { gzipSync } from 'node:zlib';
import { StalledError } from '../errors';
import type { FleetEvents } from './events';

/** The page's client files (`web/` of the package). */
export const WEB_DIR = path.resolve(__dirname, '../../web');

/** Shortest token accepted from `--ui-token-file`. */
export const MIN_TOKEN_LENGTH = 16;

const COOKIE = 'vmplace_ui';

/** A route as the daemon's HTTP server takes it. */
export interface PageRoute {
  methods: string[];
  run: (req: IncomingMessage, res: ServerResponse) => void | Promise<void>;
}

/**
 * The token in `file`, surrounding whitespace removed.
 *
 * @throws StalledError `UiTokenTooShort` under {@link MIN_TOKEN_LENGTH} characters; the read error as is.
 */
export async function readUiToken(file: string): Promise<Buffer> {
  const token = Buffer.from((await readFile(file, 'utf8')).trim());
  if (token.length < MIN_TOKEN_LENGTH)
    throw new StalledError(
      'UiTokenTooShort',
      `ui token file ${file} holds fewer than ${MIN_TOKEN_LENGTH} characters`,
    );
  return token;
}

export interface PageOptions {
  events: FleetEvents;
  /** the page's token, when configured */
  token?: Buffer;
  /** the listener reaches beyond loopback */
  exposed: boolean;
}

interface Asset {
  type: string;
  body: Buffer;
  gzip: Buffer;
  etag: string;
}

function asset(type: string, body: Buffer | string): Asset {
  const b = Buffer.isBuffer(body) ? body : Buffer.from(body);
  return {
    type,
    body: b,
    gzip: gzipSync(b, { level: 9 }),
    etag: `"${createHash('sha256').update(b).digest('base64url').slice(0, 22)}"`,
  };
}

/** A vendored library's ES module from its installed package, without its source-map comment. */
function vendor(pkg: string, file: string): Asset {
  const dir = path.dirname(require.resolve(pkg));
  const text = readFileSync(path.join(dir, file), 'utf8').replace(/\n?\/\/# sourceMappingURL=\S+\s*$/, '\n');
  return asset('text/javascript; charset=utf-8', text);
}

const SHELL = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>vmplace fleet</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/ui/app.css">
<script type="module" src="/ui/app.js"></script>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<div id="app"><main id="main"><h1>vmplace fleet</h1><p>Loading the fleet… (this page needs JavaScript)</p></main></div>
</body>
</html>
`;

/** Every file the page loads, by path: what `npm pack` must ship (see `web/`). */
export function pageAssets(): Record<string, Asset> {
  return {
    '/': asset('text/html; charset=utf-8', SHELL),
    '/ui/app.js': asset('text/javascript; charset=utf-8', readFileSync(path.join(WEB_DIR, 'app.js'))),
    '/ui/app.css': asset('text/css; charset=utf-8', readFileSync(path.join(WEB_DIR, 'app.css'))),
    '/ui/vendor/preact.js': vendor('preact', 'preact.mjs'),
    '/ui/vendor/htm.js': vendor('htm', 'htm.mjs'),
  };
}

const HEADERS = {
  'Content-Security-Policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'X-Frame-Options': 'DENY',
};

/** The page's routes, to be served next to `/healthz` and the others. */
export function pageRoutes(opts: PageOptions): Record<string, PageRoute> {
  const assets = pageAssets();
  const cookieValue = opts.token ? derive(opts.token) : undefined;
  const routes: Record<string, PageRoute> = {};
  const guard =
    (serve: (req: IncomingMessage, res: ServerResponse) => void) =>
    (req: IncomingMessage, res: ServerResponse): void => {
      for (const [k, v] of Object.entries(HEADERS)) res.setHeader(k, v);
      if (!opts.token) {
        if (opts.exposed)
          return deny(
            res,
            403,
            'the fleet page is off: this daemon listens beyond loopback and has no --ui-token-file\n',
          );
        return serve(req, res);
      }
      const url = new URL(req.url ?? '/', 'http://x');
      const given = url.searchParams.get('token');
      if (given !== null && url.pathname === '/') {
        if (!equal(Buffer.from(given), opts.token)) return deny(res, 401, 'wrong token\n');
        res.setHeader(
          'Set-Cookie',
          `${COOKIE}=${cookieValue}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${30 * 24 * 3600}`,
        );
        res.setHeader('Location', '/');
        res.setHeader('Cache-Control', 'no-store');
        res.statusCode = 303;
        res.end();
        return;
      }
      if (authorized(req, opts.token, cookieValue!)) return serve(req, res);
      deny(
        res,
        401,
        'this page needs the token of --ui-token-file: open /?token=TOKEN once, or send Authorization: Bearer TOKEN\n',
      );
    };
  for (const [p, a] of Object.entries(assets))
    routes[p] = { methods: ['GET', 'HEAD'], run: guard((req, res) => sendAsset(req, res, a)) };
  routes['/v1/events'] = { methods: ['GET', 'HEAD'], run: guard((req, res) => opts.events.attach(req, res)) };
  return routes;
}

/** The cookie's value: a digest of the token, so the cookie jar never holds the token itself. */
function derive(token: Buffer): string {
  return createHash('sha256').update('vmplace-ui-cookie\0').update(token).digest('base64url');
}

/** Constant-time comparison of two secrets of any length (their digests are compared). */
function equal(a: Buffer, b: Buffer): boolean {
  const da = createHash('sha256').update(a).digest();
  const db = createHash('sha256').update(b).digest();
  return timingSafeEqual(da, db);
}

function authorized(req: IncomingMessage, token: Buffer, cookieValue: string): boolean {
  const auth = req.headers.authorization;
  const bearer = typeof auth === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(auth) : null;
  if (bearer && equal(Buffer.from(bearer[1]!), token)) return true;
  const cookies = req.headers.cookie ?? '';
  for (const part of cookies.split(';')) {
    const i = part.indexOf('=');
    if (i < 0 || part.slice(0, i).trim() !== COOKIE) continue;
    if (equal(Buffer.from(part.slice(i + 1).trim()), Buffer.from(cookieValue))) return true;
  }
  return false;
}

function deny(res: ServerResponse, status: number, text: string): void {
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/plain; charset=utf-8');
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Content-Length', Buffer.byteLength(text));
  res.end(res.req.method === 'HEAD' ? undefined : text);
}

function sendAsset(req: IncomingMessage, res: ServerResponse, a: Asset): void {
  res.setHeader('Content-Type', a.type);
  res.setHeader('Cache-Control', 'no-cache');
  res.setHeader('ETag', a.etag);
  res.setHeader('Vary', 'Accept-Encoding');
  if (req.headers['if-none-match'] === a.etag) {
    res.statusCode = 304;
    res.end();
    return;
  }
  const gz = /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''));
  const body = gz ? a.gzip : a.body;
  if (gz) res.setHeader('Content-Encoding', 'gzip');
  res.setHeader('Content-Length', body.length);
  res.statusCode = 200;
  res.end(req.method === 'HEAD' ? undefined : body);
}
