/**
 * The notification outbox against real HTTP receivers on loopback (node:http servers started by
 * the test): de-duplication across a restart, retries with backoff, order per receiver, a
 * hanging receiver that delays nobody else, the HMAC signature, the label selector, and no
 * secret (URL or signing key) in any log line.
 */
import { createHmac } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { REDACT_PATHS } from '../../../src/log';
import { bodyFor, type Notification } from '../../../src/notify/message';
import { Notifier } from '../../../src/notify/notifier';
import { Outbox } from '../../../src/notify/outbox';
import { SIGNATURE_HEADER } from '../../../src/notify/post';
import type { ResolvedReceiver } from '../../../src/notify/secret-file';
import type { NotificationReceiver } from '../../../src/settings';

jest.setTimeout(30_000);

interface Received {
  at: number;
  path: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A receiver on 127.0.0.1: `answer` decides each request's fate (a status, or 'hang'). */
async function receiver(answer: (n: number, r: Received) => number | 'hang' = () => 200): Promise<{
  url: (p?: string) => URL;
  got: Received[];
  close: () => Promise<void>;
}> {
  const got: Received[] = [];
  let n = 0;
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (b: Buffer) => (body += b.toString()));
    req.on('end', () => {
      const r = { at: Date.now(), path: req.url ?? '', headers: req.headers, body };
      const a = answer(++n, r);
      if (a === 'hang') return; // never answers
      if (a >= 200 && a < 300) got.push(r);
      res.writeHead(a).end('ok');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: (p = '/hook') => new URL(`http://127.0.0.1:${port}${p}`),
    got,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** A pino logger like the daemon's (same redaction) whose lines the test reads. */
function capturingLogger(): { logger: pino.Logger; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      cb();
    },
  });
  return {
    logger: pino({ level: 'debug', redact: { paths: REDACT_PATHS, censor: '[REDACTED]' } }, stream),
    lines,
  };
}

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vmplace-notify-'));
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

function note(id: string, vm = 'web-01', event: Notification['event'] = 'migration.started'): Notification {
  return {
    apiVersion: 'vmplace.dev/v1alpha1',
    kind: 'Notification',
    id,
    event,
    time: '2025-01-01T00:00:00.000Z',
    replica: 'solo',
    vm,
    migration: id,
  };
}

function rcv(name: string, url: URL, extra: Partial<ResolvedReceiver> = {}): ResolvedReceiver {
  return {
    name,
    type: 'webhook',
    events: new Set(['migration.started', 'migration.completed']),
    url,
    ...extra,
  };
}

const fast = { retryBaseMs: 40, retryMaxMs: 400, connectTimeoutMs: 300, timeoutMs: 500 };

async function until(what: string, pred: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('outbox', () => {
  it('sends one message per id, also when emitted on every pass and after a restart', async () => {
    const srv = await receiver();
    const { logger } = capturingLogger();
    const file = path.join(tmp, 'outbox.json');
    const a = new Outbox({ file, logger, ...fast });
    await a.load();
    a.configure([rcv('hook', srv.url())]);
    for (let pass = 0; pass < 5; pass++) a.emit(note('m1'));
    await until('delivered', () => srv.got.length === 1);
    await a.close();
    // a new process on the same state dir: the key survived
    const b = new Outbox({ file, logger, ...fast });
    await b.load();
    b.configure([rcv('hook', srv.url())]);
    expect(b.emit(note('m1'))).toEqual([]);
    expect(b.emit(note('m2'))).toEqual(['hook']);
    await until('second delivered', () => srv.got.length === 2);
    await b.close();
    expect(srv.got.map((r) => (JSON.parse(r.body) as Notification).id)).toEqual(['m1', 'm2']);
    expect(srv.got[0]!.headers['x-vmplace-delivery']).toBe('m1');
    await srv.close();
  });

  it('keeps the dedup keys bounded (the oldest are forgotten)', async () => {
    const srv = await receiver();
    const { logger } = capturingLogger();
    const o = new Outbox({ file: path.join(tmp, 'o.json'), logger, ...fast, maxSeen: 3 });
    o.configure([rcv('hook', srv.url())]);
    for (const id of ['a', 'b', 'c', 'd']) o.emit(note(id));
    expect(o.emit(note('d'))).toEqual([]);
    expect(o.emit(note('a'))).toEqual(['hook']); // forgotten: the bound holds
    await o.close();
    const saved = JSON.parse(fs.readFileSync(path.join(tmp, 'o.json'), 'utf8')) as { seen: string[] };
    expect(saved.seen).toHaveLength(3);
    await srv.close();
  });

  it('a message still queued at a restart is sent by the next process', async () => {
    const { logger } = capturingLogger();
    const file = path.join(tmp, 'outbox.json');
    const dead = await receiver(() => 503);
    const a = new Outbox({ file, logger, ...fast, retryBaseMs: 10_000, retryMaxMs: 10_000 });
    a.configure([rcv('hook', dead.url())]);
    a.emit(note('m1'));
    await until('first attempt', () => a.pending().hook === 1 && fs.existsSync(file));
    await new Promise((r) => setTimeout(r, 100));
    await a.close();
    await dead.close();
    const srv = await receiver();
    const b = new Outbox({ file, logger, ...fast });
    await b.load();
    b.configure([rcv('hook', srv.url())]);
    await until('delivered after restart', () => srv.got.length === 1);
    await b.close();
    await srv.close();
  });

  it('a receiver that fails twice gets the message on the third try, after growing delays, and in order', async () => {
    const srv = await receiver((n) => (n <= 2 ? 500 : 200));
    const attempts: number[] = [];
    const { logger } = capturingLogger();
    const o = new Outbox({ file: path.join(tmp, 'o.json'), logger, ...fast, random: () => 1 });
    const seen = await receiver(); // a second receiver, healthy
    o.configure([
      rcv('flaky', srv.url()),
      rcv('healthy', seen.url(), { events: new Set(['migration.started', 'migration.completed']) }),
    ]);
    const t0 = Date.now();
    o.emit(note('m1'));
    o.emit(note('m1-completed', 'web-01', 'migration.completed'));
    o.emit(note('m2'));
    await until('flaky got all three', () => srv.got.length === 3);
    attempts.push(srv.got[0]!.at - t0);
    // random 1: the delays are the ceilings, 40 ms then 80 ms
    expect(attempts[0]).toBeGreaterThanOrEqual(120);
    expect(srv.got.map((r) => (JSON.parse(r.body) as Notification).event)).toEqual([
      'migration.started',
      'migration.completed',
      'migration.started',
    ]);
    // the healthy receiver did not wait for the flaky one
    expect(seen.got[0]!.at - t0).toBeLessThan(100);
    await o.close();
    await srv.close();
    await seen.close();
  });

  it('a hanging receiver delays neither emit nor the other receivers; its attempt times out and is retried', async () => {
    const hang = await receiver(() => 'hang');
    const ok = await receiver();
    const { logger, lines } = capturingLogger();
    const o = new Outbox({ file: path.join(tmp, 'o.json'), logger, ...fast });
    o.configure([rcv('hangs', hang.url()), rcv('ok', ok.url())]);
    const t0 = performance.now();
    for (let i = 0; i < 20; i++) o.emit(note(`m${i}`));
    const emitMs = performance.now() - t0;
    expect(emitMs).toBeLessThan(50);
    await until('ok got all', () => ok.got.length === 20, 5000);
    await until('a timeout was logged', () => lines.some((l) => l.includes('"code":"TimedOut"')), 5000);
    expect(o.pending()).toEqual({ hangs: 20 });
    await o.close();
    await hang.close();
    await ok.close();
  });

  it("a receiver's own timeout bounds its attempts instead of the default", async () => {
    let shortTries = 0;
    let longTries = 0;
    const short = await receiver(() => (shortTries++, 'hang'));
    const long = await receiver(() => (longTries++, 'hang'));
    const { logger, lines } = capturingLogger();
    const o = new Outbox({ file: path.join(tmp, 'o.json'), logger, ...fast });
    o.configure([rcv('short', short.url()), rcv('long', long.url(), { timeoutMs: 20_000 })]);
    o.emit(note('m1'));
    const timedOut = (name: string): boolean =>
      lines.some((l) => l.includes('"code":"TimedOut"') && l.includes(`"receiver":"${name}"`));
    // the default (500 ms here) ends the short one's attempts again and again ...
    await until('short retried after timeouts', () => shortTries >= 3, 10_000);
    expect(timedOut('short')).toBe(true);
    // ... while the long one's first attempt is still open
    expect(longTries).toBe(1);
    expect(timedOut('long')).toBe(false);
    await o.close();
    await short.close();
    await long.close();
  });

  it('a receiver that refuses to connect is retried; a 4xx is dropped (not retried forever)', async () => {
    const closed = await receiver();
    const url = closed.url();
    await closed.close(); // nothing listens there now
    const refuses = await receiver(() => 404);
    const { logger, lines } = capturingLogger();
    const o = new Outbox({ file: path.join(tmp, 'o.json'), logger, ...fast });
    o.configure([rcv('down', url), rcv('gone', refuses.url())]);
    o.emit(note('m1'));
    await until('dropped', () => lines.some((l) => l.includes('refused by its receiver')));
    await until(
      'retried',
      () => lines.filter((l) => l.includes('"receiver":"down"') && l.includes('retrying')).length >= 2,
    );
    expect(o.pending()).toEqual({ down: 1 });
    await o.close();
    await refuses.close();
  });

  it('signs the webhook body with HMAC-SHA256 (X-Vmplace-Signature-256)', async () => {
    const srv = await receiver();
    const { logger } = capturingLogger();
    const secret = Buffer.from('s3cr3t-signing-key');
    const o = new Outbox({ file: path.join(tmp, 'o.json'), logger, ...fast });
    o.configure([rcv('hook', srv.url(), { secret })]);
    o.emit(note('m1'));
    await until('delivered', () => srv.got.length === 1);
    const r = srv.got[0]!;
    const want = `sha256=${createHmac('sha256', secret).update(r.body).digest('hex')}`;
    expect(r.headers[SIGNATURE_HEADER]).toBe(want);
    expect(r.headers['content-type']).toBe('application/json');
    expect(r.headers['x-vmplace-event']).toBe('migration.started');
    await o.close();
    await srv.close();
  });

  it('a selector picks VMs by label; host events go to every receiver that wants them', async () => {
    const srv = await receiver();
    const { logger } = capturingLogger();
    const o = new Outbox({ file: path.join(tmp, 'o.json'), logger, ...fast });
    o.configure([
      rcv('prod', srv.url(), {
        events: new Set(['migration.started', 'host.unreachable']),
        matchLabels: { env: 'prod', team: 'db' },
      }),
    ]);
    expect(o.emit(note('m1', 'a'), { env: 'prod', team: 'db', x: 'y' })).toEqual(['prod']);
    expect(o.emit(note('m2', 'b'), { env: 'prod' })).toEqual([]);
    expect(o.emit(note('m3', 'c'))).toEqual([]);
    expect(o.emit(note('m4', 'a', 'migration.completed'), { env: 'prod', team: 'db' })).toEqual([]);
    const host: Notification = { ...note('h1'), event: 'host.unreachable', host: 'hv-a' };
    delete host.vm;
    expect(o.emit(host)).toEqual(['prod']);
    await until('delivered', () => srv.got.length === 2);
    await o.close();
    await srv.close();
  });
});

describe('notifier across a restart', () => {
  it('remembers its receivers: a daemon restarted while git fails still says so; a git failure is told once per episode', async () => {
    const srv = await receiver();
    const dir = path.join(tmp, 'secrets');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'hook.url'), srv.url().href + '\n', { mode: 0o600 });
    const trust = {
      repoDir: path.join(tmp, 'repo'),
      stateDir: path.join(tmp, 'state'),
      policy: { file: 'trust.yaml', notificationFiles: [dir] },
    };
    const config: NotificationReceiver[] = [
      { name: 'hook', type: 'webhook', urlFile: path.join(dir, 'hook.url'), events: ['git.syncFailed'] },
    ];
    const { logger } = capturingLogger();
    const first = new Notifier({ stateDir: trust.stateDir, replica: 'solo', logger, ...fast });
    await first.start(trust);
    first.configure(config, trust);
    await until('receivers remembered', () =>
      fs.existsSync(path.join(trust.stateDir, 'notifications', 'receivers.json')),
    );
    await first.close();
    // restarted: git fails before any vmplace.yaml could be read
    let t = Date.parse('2025-01-01T00:00:00Z');
    const second = new Notifier({ stateDir: trust.stateDir, replica: 'solo', logger, ...fast, now: () => t });
    await second.start(trust);
    for (let pass = 0; pass < 3; pass++) second.gitSync(new Error('unreachable'));
    second.gitSync();
    t += 60_000;
    second.gitSync(new Error('unreachable again'));
    await until('two episodes told', () => srv.got.length === 2);
    await second.close();
    expect(srv.got.map((r) => (JSON.parse(r.body) as Notification).id)).toEqual([
      'git.syncFailed/solo/2025-01-01T00:00:00.000Z',
      'git.syncFailed/solo/2025-01-01T00:01:00.000Z',
    ]);
    await srv.close();
  });

  it('configured again on every pass with the same URL, a failing receiver keeps its backoff', async () => {
    const down = await receiver(() => 503);
    let attempts = 0;
    const { logger } = capturingLogger();
    const o = new Outbox({
      file: path.join(tmp, 'o.json'),
      logger,
      ...fast,
      retryBaseMs: 2000,
      retryMaxMs: 2000,
      random: () => 1,
      post: async (r, body, headers) => {
        attempts++;
        const { postJson } = await import('../../../src/notify/post');
        return postJson(r.url, body, { headers });
      },
    });
    o.configure([rcv('hook', down.url())]);
    o.emit(note('m1'));
    for (let i = 0; i < 50; i++) {
      o.configure([rcv('hook', down.url())]); // a fresh object each pass, as the daemon does
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(attempts).toBe(1);
    await o.close();
    await down.close();
  });

  it('keeps the queue of a receiver missing from the configuration (a broken vmplace.yaml loses nothing)', async () => {
    const srv = await receiver();
    const { logger } = capturingLogger();
    const o = new Outbox({
      file: path.join(tmp, 'o.json'),
      logger,
      ...fast,
      retryBaseMs: 60_000,
      retryMaxMs: 60_000,
    });
    const down = await receiver(() => 503);
    o.configure([rcv('hook', down.url())]);
    o.emit(note('m1'));
    await until('first attempt failed', () => down.got.length === 0 && o.pending().hook === 1);
    o.configure([]);
    expect(o.pending()).toEqual({ hook: 1 });
    o.configure([rcv('hook', srv.url())]);
    await until('delivered once configured again', () => srv.got.length === 1);
    await o.close();
    await srv.close();
    await down.close();
  });
});

describe('message bodies', () => {
  const n: Notification = {
    ...note('migration.completed/web-01/20250101-abc'),
    event: 'migration.completed',
    from: { host: 'hv-a', storage: ['fast'] },
    to: { host: 'hv-b', storage: ['slow'] },
    strategy: 'quick',
    pauseMs: 812,
  };
  it('slack: text and blocks; <@channel> in a name is neutralised', () => {
    const b = JSON.parse(bodyFor('slack', { ...n, vm: '<!channel>' })) as {
      text: string;
      blocks: { text: { text: string } }[];
    };
    expect(b.text).toBe(
      'vmplace: migration of <!channel> completed (hv-a/fast → hv-b/slow, quick, pause 812 ms)',
    );
    expect(b.blocks[0]!.text.text).toContain('&lt;!channel&gt;');
  });
  it('teams: an Adaptive Card message', () => {
    const b = JSON.parse(bodyFor('teams', n)) as {
      type: string;
      attachments: { contentType: string; content: { body: { text: string }[] } }[];
    };
    expect(b.type).toBe('message');
    expect(b.attachments[0]!.contentType).toBe('application/vnd.microsoft.card.adaptive');
    expect(b.attachments[0]!.content.body[0]!.text).toContain('pause 812 ms');
  });
  it('webhook: the Notification itself', () => {
    expect(JSON.parse(bodyFor('webhook', n))).toEqual(n);
  });
});

describe('secrets', () => {
  it('neither the URL nor the signing key reaches a log line, whatever fails', async () => {
    const dir = path.join(tmp, 'secrets');
    fs.mkdirSync(dir);
    const TOKEN = 'T0KEN-in-the-url-path-9f8e7d';
    const KEY = 'signing-key-5a4b3c2d1e';
    const hang = await receiver(() => 'hang');
    const fails = await receiver(() => 500);
    const closed = await receiver();
    const closedUrl = closed.url(`/x/${TOKEN}`);
    await closed.close();
    const files: Record<string, string> = {
      'hang.url': hang.url(`/hooks/${TOKEN}`).href,
      'fails.url': fails.url(`/hooks/${TOKEN}?token=${TOKEN}`).href,
      'closed.url': closedUrl.href,
      'creds.url': `https://user:${TOKEN}@example.invalid/`,
      'ftp.url': `ftp://example.invalid/${TOKEN}`,
      'garbage.url': `not a url ${TOKEN}`,
      key: KEY,
    };
    for (const [f, text] of Object.entries(files))
      fs.writeFileSync(path.join(dir, f), text + '\n', { mode: 0o600 });
    const trust = {
      repoDir: path.join(tmp, 'repo'),
      stateDir: path.join(tmp, 'state'),
      workdir: path.join(tmp, 'repo'),
      policy: { file: 'trust.yaml', notificationFiles: [dir] },
    };
    const { logger, lines } = capturingLogger();
    const notifier = new Notifier({ stateDir: path.join(tmp, 'state'), replica: 'solo', logger, ...fast });
    await notifier.start({ ...trust });
    const receivers: NotificationReceiver[] = ['hang', 'fails', 'closed', 'creds', 'ftp', 'garbage'].map(
      (name) => ({
        name,
        type: 'webhook',
        urlFile: path.join(dir, `${name}.url`),
        secretFile: path.join(dir, 'key'),
        events: ['migration.started', 'git.syncFailed'],
      }),
    );
    receivers.push({
      name: 'missing',
      type: 'slack',
      urlFile: path.join(dir, 'nope'),
      events: ['migration.started'],
    });
    notifier.configure(receivers, trust);
    notifier.migrationStarted(
      {
        vm: 'web-01',
        kind: 'same-host',
        strategy: 'quick',
        from: { host: 'hv-a' },
        to: { host: 'hv-a' },
        disks: [{ target: 'vda', from: 'a', to: 'b', bytes: 1 }],
        stateOnly: false,
        blocked: false,
        findings: [],
        order: 1,
      },
      '20250101-m1',
    );
    notifier.gitSync(new Error(`fetch from https://x:${TOKEN}@git.example/ failed`));
    await until('retries and timeouts happened', () =>
      ['hang', 'fails', 'closed'].every(
        (r) => lines.filter((l) => l.includes(`"receiver":"${r}"`) && l.includes('retrying')).length >= 2,
      ),
    );
    await notifier.close();
    await hang.close();
    await fails.close();
    const all = lines.join('\n');
    expect(all).toContain('notification receiver left out'); // creds, ftp, garbage, missing
    expect(lines.filter((l) => l.includes('notification receiver left out'))).toHaveLength(4);
    expect(all).not.toContain(TOKEN);
    expect(all).not.toContain(KEY);
    // the outbox file holds no URL and no key either
    const state = fs.readFileSync(path.join(tmp, 'state', 'notifications', 'outbox.json'), 'utf8');
    expect(state).not.toContain('/hooks/');
    expect(state).not.toContain(KEY);
  });
});
