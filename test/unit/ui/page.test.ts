/**
 * The fleet page's routes on the daemon's real HTTP server: read-only (GET/HEAD only), the token
 * rule, the event stream (snapshot, then coalesced patches).
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { startHttpServer, type HttpServer } from '../../../src/daemon/http';
import { DaemonMetrics } from '../../../src/daemon/metrics';
import { FleetEvents } from '../../../src/ui/events';
import { pageAssets, pageRoutes, readUiToken } from '../../../src/ui/page';
import type { FleetView } from '../../../src/ui/view';
import { syntheticView } from '../../support/fleet-view';
import { memoryLogger } from '../../support/logger';

const TOKEN = Buffer.from('0123456789abcdef-token');
const PAGE_PATHS = [
  '/',
  '/ui/app.js',
  '/ui/app.css',
  '/ui/vendor/preact.js',
  '/ui/vendor/htm.js',
  '/v1/events',
];

interface Answer {
  status: number;
  body: Buffer;
  headers: http.IncomingHttpHeaders;
}

function request(
  server: HttpServer,
  method: string,
  p: string,
  headers: Record<string, string> = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port: server.address.port, method, path: p, headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        // an event stream stays open: its first chunk is enough
        if (res.headers['content-type']?.startsWith('text/event-stream')) {
          res.once('data', (c: Buffer) => {
            resolve({ status: res.statusCode!, body: c, headers: res.headers });
            res.destroy();
          });
          return;
        }
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode!, body: Buffer.concat(chunks), headers: res.headers }),
        );
      },
    );
    req.on('error', reject);
    req.end();
  });
}

let view: FleetView;
let events: FleetEvents;
const servers: HttpServer[] = [];

async function serve(opts: { token?: Buffer; exposed?: boolean } = {}): Promise<HttpServer> {
  view = syntheticView(20);
  events = new FleetEvents(() => view, { minIntervalMs: 100 });
  const s = await startHttpServer({
    listen: '127.0.0.1:0',
    metrics: new DaemonMetrics(),
    onWebhook: () => undefined,
    isReady: () => true,
    logger: memoryLogger().logger,
    routes: pageRoutes({
      events,
      exposed: opts.exposed ?? false,
      ...(opts.token ? { token: opts.token } : {}),
    }),
  });
  servers.push(s);
  return s;
}

afterEach(async () => {
  events?.close();
  for (const s of servers.splice(0)) await s.close();
});

describe('the fleet page is read-only', () => {
  it.each(['POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'])(
    '%s on every page route is refused with 405',
    async (m) => {
      const s = await serve();
      for (const p of PAGE_PATHS) {
        const a = await request(s, m, p);
        expect([p, a.status, a.headers.allow]).toEqual([p, 405, 'GET, HEAD']);
      }
    },
  );

  it('serves the shell, its script, style and both libraries from the package with GET and HEAD', async () => {
    const s = await serve();
    for (const p of PAGE_PATHS.slice(0, 5)) {
      const a = await request(s, 'GET', p, { 'accept-encoding': 'gzip' });
      expect([p, a.status]).toEqual([p, 200]);
      expect(a.headers['content-encoding']).toBe('gzip');
      expect(gunzipSync(a.body).length).toBeGreaterThan(100);
      expect(a.headers['content-security-policy']).toContain("default-src 'none'");
      const head = await request(s, 'HEAD', p);
      expect([p, head.status, head.body.length]).toEqual([p, 200, 0]);
    }
    const shell = (await request(s, 'GET', '/')).body.toString();
    // nothing from elsewhere: every src/href is a path of this server (or data:)
    for (const [, url] of shell.matchAll(/(?:src|href)="([^"]*)"/g)) expect(url).toMatch(/^(\/|#|data:)/);
  });

  it('weighs little (the numbers for the report)', () => {
    const assets = Object.entries(pageAssets());
    const raw = assets.reduce((n, [, a]) => n + a.body.length, 0);
    const gz = assets.reduce((n, [, a]) => n + a.gzip.length, 0);
    console.log(
      `page weight: ${raw} bytes, ${gz} gzipped; ` +
        assets.map(([p, a]) => `${p} ${a.body.length}/${a.gzip.length}`).join(', '),
    );
    expect(gz).toBeLessThan(20_000);
  });
});

describe('the token', () => {
  it('is needed by every page route when configured: bearer, or the cookie one visit to /?token= sets', async () => {
    const s = await serve({ token: TOKEN });
    for (const p of PAGE_PATHS) expect([p, (await request(s, 'GET', p)).status]).toEqual([p, 401]);
    expect((await request(s, 'GET', '/?token=wrong-token-of-any-length')).status).toBe(401);
    expect((await request(s, 'GET', '/', { authorization: 'Bearer wrong' })).status).toBe(401);

    const visit = await request(s, 'GET', `/?token=${TOKEN.toString()}`);
    expect(visit.status).toBe(303);
    expect(visit.headers.location).toBe('/');
    const cookie = visit.headers['set-cookie']![0]!;
    expect(cookie).toMatch(/HttpOnly/);
    expect(cookie).toMatch(/SameSite=Strict/);
    expect(cookie).not.toContain(TOKEN.toString());
    const jar = cookie.split(';')[0]!;
    for (const p of PAGE_PATHS) {
      expect([p, (await request(s, 'GET', p, { cookie: `other=1; ${jar}` })).status]).toEqual([p, 200]);
      expect([
        p,
        (await request(s, 'GET', p, { authorization: `Bearer ${TOKEN.toString()}` })).status,
      ]).toEqual([p, 200]);
    }
    expect((await request(s, 'GET', '/', { cookie: `${jar}x` })).status).toBe(401);
    // the health routes stay open
    expect((await request(s, 'GET', '/healthz')).status).toBe(200);
  });

  it('beyond loopback without a token, the page is off (403), health and metrics still answer', async () => {
    const s = await serve({ exposed: true });
    for (const p of PAGE_PATHS) expect([p, (await request(s, 'GET', p)).status]).toEqual([p, 403]);
    expect((await request(s, 'GET', '/healthz')).status).toBe(200);
  });

  it('is read from a file and refused when shorter than 16 characters', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmplace-ui-'));
    fs.writeFileSync(path.join(dir, 'ok'), `${TOKEN.toString()}\n`);
    fs.writeFileSync(path.join(dir, 'short'), 'short\n');
    expect((await readUiToken(path.join(dir, 'ok'))).equals(TOKEN)).toBe(true);
    await expect(readUiToken(path.join(dir, 'short'))).rejects.toMatchObject({ reason: 'UiTokenTooShort' });
    fs.rmSync(dir, { recursive: true });
  });
});

describe('the event stream', () => {
  it('sends a snapshot, then coalesced patches with only what changed', async () => {
    const s = await serve();
    const got: { event: string; data: unknown }[] = [];
    const res = await new Promise<http.IncomingMessage>((resolve) =>
      http.get({ host: '127.0.0.1', port: s.address.port, path: '/v1/events', agent: false }, resolve),
    );
    let buf = '';
    res.on('data', (c: Buffer) => {
      buf += c.toString();
      let i: number;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const event = /^event: (.*)$/m.exec(block)?.[1];
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (event && data) got.push({ event, data: JSON.parse(data) });
      }
    });
    await until(() => got.length === 1);
    expect(got[0]!.event).toBe('snapshot');
    expect((got[0]!.data as FleetView).vms).toHaveLength(20);
    const built = events.counts.built;
    // 200 changes within ~200 ms (a copy's progress lines): a handful of views, not 200
    for (let i = 0; i < 200; i++) {
      view = {
        ...view,
        vms: view.vms.map((v) =>
          v.migration ? { ...v, migration: { ...v.migration, bytesDone: v.migration.bytesDone + 1 } } : v,
        ),
      };
      events.changed();
      if (i % 20 === 0) await new Promise((r) => setTimeout(r, 20));
    }
    await new Promise((r) => setTimeout(r, 300));
    const patches = got.slice(1);
    expect(patches.length).toBeGreaterThanOrEqual(1);
    expect(events.counts.built - built).toBeLessThanOrEqual(5);
    for (const p of patches) {
      expect(p.event).toBe('patch');
      expect((p.data as { vms: { name: string }[] }).vms.map((v) => v.name)).toEqual(['vm-005']);
    }
    res.destroy();
  });
});

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}
