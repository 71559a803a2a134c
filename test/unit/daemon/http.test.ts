import { createHmac } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseListen, readWebhookSecret, startHttpServer, type HttpServer } from '../../../src/daemon/http';
import { DaemonMetrics } from '../../../src/daemon/metrics';
import { memoryLogger } from '../../support/logger';

const SECRET = Buffer.from('It’s a Secret to Everybody');
const PAYLOAD = '{"ref":"refs/heads/main"}';
const sign = (body: string | Buffer, secret = SECRET) =>
  `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;

interface Answer {
  status: number;
  body: string;
  headers: http.IncomingHttpHeaders;
}

/** One real HTTP request. */
function request(
  server: HttpServer,
  method: string,
  path: string,
  opts: { body?: string | Buffer; headers?: Record<string, string> } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port: server.address.port, method, path, headers: opts.headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode!, body: Buffer.concat(chunks).toString(), headers: res.headers }),
        );
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

describe('startHttpServer', () => {
  let server: HttpServer;
  let ready: boolean;
  let hooks: number;
  let lines: string[];

  async function start(webhookSecret?: Buffer, maxBodyBytes?: number) {
    const mem = memoryLogger();
    lines = mem.lines;
    server = await startHttpServer({
      listen: '127.0.0.1:0',
      metrics: new DaemonMetrics({ defaultMetrics: false }),
      onWebhook: () => hooks++,
      webhookSecret,
      isReady: () => ready,
      logger: mem.logger,
      maxBodyBytes,
    });
  }

  beforeEach(() => {
    ready = false;
    hooks = 0;
  });
  afterEach(() => server.close());

  it('answers health, readiness as it flips, and 404/405', async () => {
    await start();
    expect(server.address).toMatchObject({
      host: '127.0.0.1',
      url: `http://127.0.0.1:${server.address.port}`,
    });
    expect(server.address.port).toBeGreaterThan(0);
    expect(await request(server, 'GET', '/healthz')).toMatchObject({ status: 200, body: 'ok\n' });
    expect(await request(server, 'GET', '/readyz')).toMatchObject({ status: 503 });
    ready = true;
    expect(await request(server, 'GET', '/readyz?verbose=1')).toMatchObject({ status: 200, body: 'ready\n' });
    ready = false;
    expect((await request(server, 'GET', '/readyz')).status).toBe(503);
    expect((await request(server, 'GET', '/nope')).status).toBe(404);
    const wrong = await request(server, 'POST', '/healthz');
    expect(wrong).toMatchObject({ status: 405, headers: { allow: 'GET, HEAD' } });
    expect((await request(server, 'GET', '/hooks/git')).status).toBe(405);
    expect(hooks).toBe(0);
  });

  it('serves the vmplace_ metrics as Prometheus text', async () => {
    await start();
    const res = await request(server, 'GET', '/metrics');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    for (const name of ['vmplace_reconcile_duration_seconds', 'vmplace_migrations_total', 'vmplace_vms']) {
      expect(res.body).toContain(`# TYPE ${name} `);
    }
  });

  it('accepts a webhook with a good signature once', async () => {
    await start(SECRET);
    const res = await request(server, 'POST', '/hooks/git', {
      body: PAYLOAD,
      headers: { 'X-Hub-Signature-256': sign(PAYLOAD), 'X-GitHub-Event': 'push' },
    });
    expect(res.status).toBe(202);
    expect(hooks).toBe(1);
  });

  it.each([
    ['a wrong secret', sign(PAYLOAD, Buffer.from('guess'))],
    ['another body', sign(PAYLOAD + ' ')],
    ['no sha256= prefix', sign(PAYLOAD).slice(7)],
    ['a short digest', sign(PAYLOAD).slice(0, 40)],
    ['sha1', `sha1=${createHmac('sha1', SECRET).update(PAYLOAD).digest('hex')}`],
  ])('rejects a signature made with %s (401, no callback, not logged)', async (_what, signature) => {
    await start(SECRET);
    const res = await request(server, 'POST', '/hooks/git', {
      body: PAYLOAD,
      headers: { 'X-Hub-Signature-256': signature },
    });
    expect(res.status).toBe(401);
    expect(hooks).toBe(0);
    const logged = lines.join('\n');
    expect(logged).toContain('webhook rejected');
    expect(logged).not.toContain(signature);
    expect(logged).not.toContain(SECRET.toString());
  });

  it('rejects a missing signature when a secret is configured', async () => {
    await start(SECRET);
    const res = await request(server, 'POST', '/hooks/git', { body: PAYLOAD });
    expect(res.status).toBe(401);
    expect(hooks).toBe(0);
  });

  it('accepts unsigned webhooks when no secret is configured', async () => {
    await start();
    expect((await request(server, 'POST', '/hooks/git', { body: PAYLOAD })).status).toBe(202);
    expect((await request(server, 'POST', '/hooks/git')).status).toBe(202);
    expect(hooks).toBe(2);
  });

  it('answers 413 to an oversized body, declared or streamed, and does nothing', async () => {
    await start(SECRET);
    const big = Buffer.alloc(1024 * 1024 + 1, 'a');
    const declared = await request(server, 'POST', '/hooks/git', {
      body: big,
      headers: { 'X-Hub-Signature-256': sign(big) },
    });
    expect(declared.status).toBe(413);
    // chunked: no Content-Length, the limit applies while reading
    const streamed = await new Promise<number>((resolve, reject) => {
      const req = http.request(
        { host: '127.0.0.1', port: server.address.port, method: 'POST', path: '/hooks/git', agent: false },
        (res) => {
          res.resume();
          resolve(res.statusCode!);
        },
      );
      req.on('error', reject);
      for (let i = 0; i < 5; i++) req.write(Buffer.alloc(300 * 1024, 'b'));
      req.end();
    });
    expect(streamed).toBe(413);
    expect(hooks).toBe(0);
    // exactly at the limit is fine
    const atLimit = Buffer.alloc(1024 * 1024, 'a');
    const ok = await request(server, 'POST', '/hooks/git', {
      body: atLimit,
      headers: { 'X-Hub-Signature-256': sign(atLimit) },
    });
    expect(ok.status).toBe(202);
    expect(hooks).toBe(1);
  });

  it('listens on IPv6 loopback too', async () => {
    const mem = memoryLogger();
    const v6 = await startHttpServer({
      listen: '[::1]:0',
      metrics: new DaemonMetrics({ defaultMetrics: false }),
      onWebhook: () => undefined,
      isReady: () => true,
      logger: mem.logger,
    });
    server = v6;
    expect(v6.address.url).toMatch(/^http:\/\/\[::1\]:\d+$/);
    const status = await new Promise<number>((resolve, reject) => {
      http
        .get({ host: '::1', port: v6.address.port, path: '/healthz', agent: false }, (res) => {
          res.resume();
          resolve(res.statusCode!);
        })
        .on('error', reject);
    });
    expect(status).toBe(200);
  });
});

describe('parseListen', () => {
  it.each([
    ['127.0.0.1:9464', { host: '127.0.0.1', port: 9464 }],
    ['[::1]:9464', { host: '::1', port: 9464 }],
    ['[::]:0', { host: '::', port: 0 }],
    ['localhost:80', { host: 'localhost', port: 80 }],
    ['0.0.0.0:65535', { host: '0.0.0.0', port: 65535 }],
  ])('%s', (text, expected) => {
    expect(parseListen(text)).toEqual(expected);
  });

  it.each([
    [':9464'],
    ['9464'],
    ['127.0.0.1'],
    ['127.0.0.1:65536'],
    ['::1:9464'],
    ['[::1]'],
    ['host:port'],
    ['a b:1'],
  ])('rejects %j', (text) => {
    expect(() => parseListen(text)).toThrow(expect.objectContaining({ reason: 'InvalidListenAddress' }));
  });
});

describe('bounds of the HTTP listener (issue 9 item 10)', () => {
  const base = () => {
    const mem = memoryLogger();
    return {
      mem,
      opts: {
        metrics: new DaemonMetrics({ defaultMetrics: false }),
        onWebhook: () => undefined,
        isReady: () => true,
        logger: mem.logger,
      },
    };
  };

  it('refuses an empty webhook secret, from a file or given', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmplace-secret-'));
    try {
      for (const text of ['', '\n', '  \n\t\n']) {
        fs.writeFileSync(path.join(dir, 's'), text);
        await expect(readWebhookSecret(path.join(dir, 's'))).rejects.toMatchObject({
          reason: 'WebhookSecretEmpty',
        });
      }
      fs.writeFileSync(path.join(dir, 's'), ' s3cret \n');
      expect((await readWebhookSecret(path.join(dir, 's'))).toString()).toBe('s3cret');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    const { opts } = base();
    await expect(
      startHttpServer({ ...opts, listen: '127.0.0.1:0', webhookSecret: Buffer.alloc(0) }),
    ).rejects.toMatchObject({ reason: 'WebhookSecretEmpty' });
  });

  it('warns when listening beyond loopback without a secret, not on loopback or with one', async () => {
    const warned = async (listen: string, webhookSecret?: Buffer) => {
      const { opts, mem } = base();
      const s = await startHttpServer({ ...opts, listen, ...(webhookSecret ? { webhookSecret } : {}) });
      await s.close();
      return mem.lines.some((l) => l.includes('without a webhook secret'));
    };
    expect(await warned('0.0.0.0:0')).toBe(true);
    expect(await warned('127.0.0.1:0')).toBe(false);
    expect(await warned('0.0.0.0:0', SECRET)).toBe(false);
  });

  it('caps open connections', async () => {
    const { opts } = base();
    const s = await startHttpServer({ ...opts, listen: '127.0.0.1:0', maxConnections: 3 });
    const sockets: net.Socket[] = [];
    try {
      const open = () =>
        new Promise<{ sock: net.Socket; closed: Promise<void> }>((resolve) => {
          const sock = net.connect(s.address.port, '127.0.0.1', () => resolve({ sock, closed }));
          const closed = new Promise<void>((r) => sock.on('close', () => r()));
          sock.on('error', () => undefined);
          sockets.push(sock);
        });
      const held = [await open(), await open(), await open()];
      const extra = await open();
      // the fourth is dropped by the server at once; the three held stay open
      await extra.closed;
      const answer = await new Promise<string>((resolve) => {
        let text = '';
        held[0]!.sock.on('data', (c: Buffer) => (text += c.toString()));
        held[0]!.sock.on('end', () => resolve(text));
        held[0]!.sock.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      });
      expect(answer).toMatch(/^HTTP\/1\.1 200/);
    } finally {
      for (const sock of sockets) sock.destroy();
      await s.close();
    }
  });
});
