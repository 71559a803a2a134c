/**
 * `notifications:` in vmplace.yaml: validation with FILE:LINE:COL, and the files a pull request
 * may name. A pull request decides vmplace.yaml; it must not make vmplace read /etc/shadow or a
 * private key, nor send anything to a URL it chose (a URL file inside the checkout).
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import { parseTrustPolicy, DEFAULT_NOTIFICATION_DIR } from '../../../src/manifests/trust';
import { Notifier } from '../../../src/notify/notifier';
import { readSecretFile } from '../../../src/notify/secret-file';
import { loadSettings, type NotificationReceiver } from '../../../src/settings';

let tmp: string;
let repo: string;
let allowed: string;
let trust: { stateDir: string; workdir: string; policy: { file: string; notificationFiles: string[] } };

beforeEach(() => {
  tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'vmplace-notify-settings-')));
  repo = path.join(tmp, 'repo');
  allowed = path.join(tmp, 'etc-vmplace-notifications');
  fs.mkdirSync(repo);
  fs.mkdirSync(allowed);
  fs.writeFileSync(path.join(allowed, 'slack.url'), 'https://hooks.slack.invalid/services/T/B/X\n', {
    mode: 0o600,
  });
  fs.writeFileSync(path.join(allowed, 'hook.key'), 'key\n', { mode: 0o600 });
  trust = {
    stateDir: path.join(tmp, 'state'),
    workdir: repo,
    policy: { file: '/etc/vmplace/trust.yaml', notificationFiles: [allowed] },
  };
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function load(yaml: string): Promise<Awaited<ReturnType<typeof loadSettings>>> {
  fs.writeFileSync(path.join(repo, 'vmplace.yaml'), yaml);
  return loadSettings(repo, trust);
}

const at = (p: { file: string; line: number; col: number; message: string }): string =>
  `${p.file}:${p.line}:${p.col}: ${p.message}`;

describe('vmplace.yaml notifications', () => {
  it('reads receivers', async () => {
    const r = await load(`notifications:
  - name: chat
    type: slack
    urlFile: ${allowed}/slack.url
    events: [migration.completed, migration.failed]
    selector: {matchLabels: {env: prod}}
  - name: hook
    type: webhook
    urlFile: ${allowed}/slack.url
    secretFile: ${allowed}/hook.key
    events: [host.unreachable]
`);
    expect(r.problems).toEqual([]);
    expect(r.settings?.notifications).toEqual([
      {
        name: 'chat',
        type: 'slack',
        urlFile: `${allowed}/slack.url`,
        events: ['migration.completed', 'migration.failed'],
        selector: { matchLabels: { env: 'prod' } },
      },
      {
        name: 'hook',
        type: 'webhook',
        urlFile: `${allowed}/slack.url`,
        secretFile: `${allowed}/hook.key`,
        events: ['host.unreachable'],
      },
    ]);
  });

  it('reports bad receivers at FILE:LINE:COL', async () => {
    const r = await load(`notifications:
  - name: a
    type: email
    urlFile: relative/path
    events: [migration.exploded]
  - name: b
    type: slack
    urlFile: ${allowed}/slack.url
    secretFile: ${allowed}/hook.key
    events: [migration.started]
  - name: b
    type: webhook
    urlFile: ${allowed}/slack.url
    events: [migration.started]
    url: https://example.invalid/
`);
    expect(r.settings).toBeUndefined();
    const lines = r.problems.map(at);
    expect(lines).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^vmplace\.yaml:3:11: notifications\.0\.type: /),
        expect.stringMatching(/^vmplace\.yaml:4:14: notifications\.0\.urlFile: /),
        expect.stringMatching(/^vmplace\.yaml:5:14: notifications\.0\.events\.0: /),
        expect.stringMatching(/^vmplace\.yaml:15:5: notifications\.2\.url: unknown field/),
      ]),
    );
    // the schema passes once fixed; then the cross-field checks
    const r2 = await load(`notifications:
  - name: b
    type: slack
    urlFile: ${allowed}/slack.url
    secretFile: ${allowed}/hook.key
    events: [migration.started]
  - name: b
    type: webhook
    urlFile: ${allowed}/slack.url
    events: [migration.started]
`);
    expect(r2.problems.map(at)).toEqual([
      'vmplace.yaml:5:17: notifications.0.secretFile: only a webhook receiver signs its messages (this one is slack)',
      'vmplace.yaml:7:11: notifications.1.name: receiver b is named twice',
    ]);
  });

  it('a receiver may set its own attempt timeout, within 1s to 10m', async () => {
    // receivers named a, b, c ... with these timeouts, 5 lines each
    const withTimeouts = (...timeouts: string[]): string =>
      'notifications:\n' +
      timeouts
        .map(
          (t, i) =>
            `  - name: ${'abc'[i]}\n    type: webhook\n    urlFile: ${allowed}/slack.url\n` +
            `    events: [migration.started]\n    timeout: ${t}\n`,
        )
        .join('');
    const r = await load(withTimeouts('2m'));
    expect(r.problems).toEqual([]);
    expect(r.settings?.notifications[0]?.timeout).toBe('2m');
    // the form first (the schema) ...
    const bad = await load(withTimeouts('30m', '500ms', '1.5s'));
    expect(bad.settings).toBeUndefined();
    expect(bad.problems.map(at)).toEqual([
      expect.stringMatching(/^vmplace\.yaml:16:14: notifications\.2\.timeout: must match pattern/),
    ]);
    // ... then the range
    const bad2 = await load(withTimeouts('30m', '500ms'));
    expect(bad2.problems.map(at)).toEqual([
      'vmplace.yaml:6:14: notifications.0.timeout: 30m is outside 1s to 10m',
      'vmplace.yaml:11:14: notifications.1.timeout: 500ms is outside 1s to 10m',
    ]);
  });

  it.each([
    ['/etc/shadow', 'is outside the directories allowed'],
    ['/root/.ssh/id_ed25519', 'is outside the directories allowed'],
    ['REPO/url.txt', 'is inside the repository'],
    ['STATE/migrations/x.json', "is inside vmplace's state directory"],
    ['ALLOWED/../../etc/passwd', 'must be an absolute, normalised path'],
    ['ALLOWED/link-to-shadow', '(really "/etc/shadow") is outside the directories allowed'],
  ])('a pull request cannot name %s', async (file, why) => {
    fs.symlinkSync('/etc/shadow', path.join(allowed, 'link-to-shadow'));
    const f = file.replace('REPO', repo).replace('STATE', trust.stateDir).replace('ALLOWED', allowed);
    for (const key of ['urlFile', 'secretFile']) {
      const r = await load(`notifications:
  - name: evil
    type: webhook
    urlFile: ${key === 'urlFile' ? f : `${allowed}/slack.url`}
    ${key === 'secretFile' ? `secretFile: ${f}` : ''}
    events: [migration.started]
`);
      expect(r.settings).toBeUndefined();
      expect(r.problems.map(at)).toEqual([
        expect.stringMatching(
          new RegExp(
            `^vmplace\\.yaml:${key === 'urlFile' ? 4 : 5}:\\d+: notifications\\.0\\.${key}: .*${escape(why)}`,
          ),
        ),
      ]);
    }
  });

  it('without notificationFiles in the trust file only the default directory is allowed', async () => {
    delete (trust as { policy?: unknown }).policy;
    const r = await load(`notifications:
  - {name: chat, type: slack, urlFile: ${allowed}/slack.url, events: [migration.started]}
`);
    expect(r.problems.map(at)).toEqual([
      expect.stringContaining(
        `is outside the directories allowed by the default ${DEFAULT_NOTIFICATION_DIR}`,
      ),
    ]);
    const ok = await load(`notifications:
  - {name: chat, type: slack, urlFile: ${DEFAULT_NOTIFICATION_DIR}/chat.url, events: [migration.started]}
`);
    expect(ok.problems).toEqual([]);
  });

  it('the sample examples/daemon/vmplace.yaml is valid under the sample trust file', async () => {
    const ex = path.resolve(__dirname, '../../../examples/daemon');
    const policy = parseTrustPolicy(fs.readFileSync(path.join(ex, 'trust.yaml'), 'utf8'), 'trust.yaml');
    fs.copyFileSync(path.join(ex, 'vmplace.yaml'), path.join(repo, 'vmplace.yaml'));
    const r = await loadSettings(repo, { policy });
    expect(r.problems).toEqual([]);
    expect(r.settings?.notifications.map((n) => n.name)).toEqual(['ops-chat', 'cmdb']);
  });

  it('the trust file takes notificationFiles (absolute paths only)', () => {
    const p = parseTrustPolicy(
      'apiVersion: vmplace.dev/v1alpha1\nkind: TrustPolicy\nnotificationFiles: [/etc/vmplace/hooks]\n',
      't.yaml',
    );
    expect(p.notificationFiles).toEqual(['/etc/vmplace/hooks']);
    expect(() =>
      parseTrustPolicy(
        'apiVersion: vmplace.dev/v1alpha1\nkind: TrustPolicy\nnotificationFiles: [hooks]\n',
        't.yaml',
      ),
    ).toThrow(/notificationFiles\[0\]/);
  });
});

describe('reading the files (checked again, whatever vmplace.yaml passed)', () => {
  it('refuses /etc/shadow, a link out of the allowed directory, a repo file, a world-writable file; never quotes content', () => {
    fs.symlinkSync('/etc/shadow', path.join(allowed, 'link'));
    fs.writeFileSync(path.join(allowed, 'open'), 'https://x.invalid/SECRET\n', { mode: 0o666 });
    fs.chmodSync(path.join(allowed, 'open'), 0o666);
    fs.writeFileSync(path.join(repo, 'url'), 'http://127.0.0.1:1/\n');
    const ctx = { ...trust, repoDir: repo };
    for (const f of ['/etc/shadow', path.join(allowed, 'link'), path.join(repo, 'url')])
      expect(() => readSecretFile(f, ctx)).toThrow(
        expect.objectContaining({ reason: 'NotificationFileRefused' }) as Error,
      );
    expect(() => readSecretFile(path.join(allowed, 'open'), ctx)).toThrow(/writable by others/);
    try {
      readSecretFile(path.join(allowed, 'open'), ctx);
    } catch (err) {
      expect((err as Error).message).not.toContain('SECRET');
    }
    expect(readSecretFile(path.join(allowed, 'hook.key'), ctx).toString()).toBe('key');
  });

  it('a URL file in the checkout sends nothing to the URL it holds, and /etc/shadow is never sent anywhere', async () => {
    const got: string[] = [];
    const server = http.createServer((req, res) => {
      let b = '';
      req.on('data', (c: Buffer) => (b += c.toString()));
      req.on('end', () => {
        got.push(`${req.url ?? ''} ${b}`);
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const attacker = `http://127.0.0.1:${(server.address() as AddressInfo).port}/steal`;
    fs.writeFileSync(path.join(repo, 'url'), attacker + '\n');
    fs.writeFileSync(path.join(allowed, 'attacker.url'), attacker + '\n', { mode: 0o600 });
    const receivers: NotificationReceiver[] = [
      // the URL chosen by the pull request
      { name: 'a', type: 'webhook', urlFile: path.join(repo, 'url'), events: ['migration.started'] },
      // an allowed URL, a private key or /etc/shadow as the signing key
      {
        name: 'b',
        type: 'webhook',
        urlFile: path.join(allowed, 'attacker.url'),
        secretFile: '/etc/shadow',
        events: ['migration.started'],
      },
      {
        name: 'c',
        type: 'webhook',
        urlFile: path.join(allowed, 'attacker.url'),
        secretFile: '/root/.ssh/id_ed25519',
        events: ['migration.started'],
      },
      // /etc/shadow as the URL
      { name: 'd', type: 'webhook', urlFile: '/etc/shadow', events: ['migration.started'] },
    ];
    const n = new Notifier({
      stateDir: trust.stateDir,
      replica: 'solo',
      logger: pino({ level: 'silent' }),
      retryBaseMs: 10,
    });
    await n.start({ ...trust, repoDir: repo });
    n.configure(receivers, { ...trust, repoDir: repo });
    n.migrationStarted(
      {
        vm: 'web-01',
        kind: 'same-host',
        strategy: 'quick',
        from: { host: 'h' },
        to: { host: 'h' },
        disks: [],
        stateOnly: false,
        blocked: false,
        findings: [],
        order: 1,
      },
      'm1',
    );
    await new Promise((r) => setTimeout(r, 300));
    await n.close();
    server.close();
    expect(got).toEqual([]);
    expect(n.outbox.pending()).toEqual({});
  });
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
