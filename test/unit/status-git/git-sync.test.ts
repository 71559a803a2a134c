import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { StalledError, VmplaceError, WaitingError } from '../../../src/errors';
import { writeStatusFiles } from '../../../src/status/files';
import {
  GitSync,
  credentialEnv,
  readGitCredentials,
  redactGitText,
  redactRepoUrl,
  type GitSyncOptions,
} from '../../../src/status/git';
import { startHttpRemote } from './http-remote';
import type { VirtualMachineStatus } from '../../../src/types';
import { BOT, git, humanCommit, humanPull, makeRemote, vmStatus, writeFile } from '../../support/git';
import { memoryLogger } from '../../support/logger';
import { cleanupTmp, tmpDir } from '../../support/tmp';

afterAll(cleanupTmp);

function newSync(remote: string, over: Partial<GitSyncOptions> = {}) {
  const { logger, lines } = memoryLogger();
  const sleeps: number[] = [];
  const sync = new GitSync(
    {
      repo: remote,
      branch: 'main',
      workdir: path.join(tmpDir('vmplace-workdir-'), 'work'),
      author: BOT,
      logger,
      ...over,
    },
    {
      sleep: async (ms) => {
        sleeps.push(ms);
      },
    },
  );
  return { sync, lines, sleeps };
}

/** A writer of the given VM statuses that counts its calls. */
function writer(vms: () => VirtualMachineStatus[]) {
  const w = async (dir: string) => {
    w.calls++;
    await writeStatusFiles(dir, { vms: vms() });
  };
  w.calls = 0;
  return w;
}

function processCwd(pid: number): string | undefined {
  try {
    return fs.readlinkSync(`/proc/${pid}/cwd`);
  } catch {
    return undefined;
  }
}

async function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 20));
  }
}

const remoteTip = (remote: string) => git(remote, 'rev-parse', 'refs/heads/main');
const filesOf = (repo: string, rev: string) =>
  git(repo, 'show', '--no-renames', '--name-only', '--format=', rev).split('\n').filter(Boolean);

describe('GitSync.sync', () => {
  it('clones on first use and follows the remote tip', async () => {
    const r = makeRemote();
    const { sync } = newSync(r.remote);
    const first = await sync.sync();
    expect(first).toEqual({ revision: r.initial, changed: true });
    expect(fs.readFileSync(path.join(sync.workdir, 'manifests/vms.yaml'), 'utf8')).toBe(
      'kind: VirtualMachine\n',
    );
    expect(await sync.sync()).toEqual({ revision: r.initial, changed: false });

    const next = humanCommit(r.human, { 'manifests/vms.yaml': 'kind: VirtualMachine # v2\n' });
    expect(await sync.sync()).toEqual({ revision: next, changed: true });
    expect(fs.readFileSync(path.join(sync.workdir, 'manifests/vms.yaml'), 'utf8')).toContain('v2');
  });

  it('reuses an existing clone of the same remote and resets whatever was local', async () => {
    const r = makeRemote();
    const { sync } = newSync(r.remote);
    await sync.sync();
    // local damage: an edited tracked file, an untracked file, a local commit
    writeFile(sync.workdir, 'manifests/vms.yaml', 'edited locally\n');
    writeFile(sync.workdir, 'manifests/stray.yaml', 'x: 1\n');
    writeFile(sync.workdir, 'status/vms/old.yaml', 'stale\n');
    git(sync.workdir, 'commit', '--quiet', '--no-gpg-sign', '-am', 'local commit');

    const again = new GitSync({
      repo: r.remote,
      branch: 'main',
      workdir: sync.workdir,
      author: BOT,
      logger: memoryLogger().logger,
    });
    expect(await again.sync()).toEqual({ revision: r.initial, changed: true });
    expect(git(sync.workdir, 'status', '--porcelain', '--untracked-files=all')).toBe('');
    expect(fs.readFileSync(path.join(sync.workdir, 'manifests/vms.yaml'), 'utf8')).toBe(
      'kind: VirtualMachine\n',
    );
    expect(fs.existsSync(path.join(sync.workdir, 'manifests/stray.yaml'))).toBe(false);
  });

  it('refuses a workdir that is a clone of another remote, or not a clone', async () => {
    const a = makeRemote();
    const b = makeRemote();
    const { sync } = newSync(a.remote);
    await sync.sync();
    const other = new GitSync({
      repo: b.remote,
      branch: 'main',
      workdir: sync.workdir,
      author: BOT,
      logger: memoryLogger().logger,
    });
    await expect(other.sync()).rejects.toMatchObject({ reason: 'WorkdirRemoteMismatch', kind: 'stalled' });

    const notAClone = tmpDir('vmplace-notclone-');
    writeFile(notAClone, 'precious.txt', 'keep me');
    const { sync: s2 } = newSync(a.remote, { workdir: notAClone });
    await expect(s2.sync()).rejects.toBeInstanceOf(StalledError);
    await expect(s2.sync()).rejects.toMatchObject({ reason: 'WorkdirNotARepository' });
    expect(fs.readFileSync(path.join(notAClone, 'precious.txt'), 'utf8')).toBe('keep me');
  });

  it('removes git lock files left by a killed daemon, but waits for a git still working there', async () => {
    const r = makeRemote();
    const { sync } = newSync(r.remote);
    await sync.sync();
    const later = humanCommit(r.human, { 'manifests/more.yaml': 'kind: Host\n' });
    // what kill -9 of the daemon's process group in the middle of `git checkout` leaves
    const gitDir = path.join(sync.workdir, '.git');
    fs.writeFileSync(path.join(gitDir, 'index.lock'), '');
    fs.writeFileSync(path.join(gitDir, 'refs', 'heads', 'main.lock'), '');
    // without recovery, git refuses
    expect(() => git(sync.workdir, 'checkout', '--force', '-B', 'main', 'HEAD')).toThrow(/index\.lock/);

    // a process still working in the clone (an orphaned git): the lock is not touched
    const busy = spawn('sleep', ['30'], { cwd: path.join(sync.workdir, 'manifests'), stdio: 'ignore' });
    try {
      await waitFor(() => processCwd(busy.pid!) !== undefined);
      const { logger, lines } = memoryLogger();
      const waiting = new GitSync(
        { repo: r.remote, branch: 'main', workdir: sync.workdir, author: BOT, logger, staleLockWaitMs: 300 },
        { sleep: (ms) => new Promise((res) => setTimeout(res, ms)) },
      );
      const err = await waiting.sync().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(WaitingError);
      expect(err).toMatchObject({ reason: 'GitBusy' });
      expect(String((err as Error).message)).toContain(String(busy.pid));
      expect(fs.existsSync(path.join(gitDir, 'index.lock'))).toBe(true);
      expect(lines.join('\n')).not.toMatch(/removed a stale git lock/);
    } finally {
      busy.kill('SIGKILL');
    }
    await waitFor(() => processCwd(busy.pid!) === undefined);

    // nobody there any more: the daemon (re)started on this workdir clears the locks and syncs
    const { logger, lines } = memoryLogger();
    const restarted = new GitSync({
      repo: r.remote,
      branch: 'main',
      workdir: sync.workdir,
      author: BOT,
      logger,
    });
    expect(await restarted.sync()).toEqual({ revision: later, changed: true });
    expect(fs.existsSync(path.join(gitDir, 'index.lock'))).toBe(false);
    expect(fs.existsSync(path.join(gitDir, 'refs', 'heads', 'main.lock'))).toBe(false);
    expect(lines.filter((l) => l.includes('removed a stale git lock'))).toHaveLength(2);

    // a lock appearing while running (our own git killed by its timeout): cleared and retried
    fs.writeFileSync(path.join(gitDir, 'index.lock'), '');
    const newer = humanCommit(r.human, { 'manifests/third.yaml': 'kind: Host\n' });
    expect(await restarted.sync()).toEqual({ revision: newer, changed: true });
  });

  it('clones again on the next sync after a failed clone', async () => {
    const r = makeRemote();
    const later = path.join(r.root, 'later.git');
    const { sync } = newSync(later);
    await expect(sync.sync()).rejects.toMatchObject({ reason: 'GitCommandFailed', kind: 'transient' });
    expect(fs.readdirSync(sync.workdir)).toEqual([]);
    fs.renameSync(r.remote, later);
    expect(await sync.sync()).toEqual({ revision: r.initial, changed: true });
  });

  it('rejects branch names git would read as options', () => {
    expect(() => newSync('/nowhere', { branch: '--upload-pack=evil' })).toThrow(
      expect.objectContaining({ reason: 'InvalidBranch' }),
    );
    expect(() => newSync('/nowhere', { branch: 'a..b' })).toThrow(StalledError);
  });
});

describe('GitSync.commitStatus', () => {
  it('commits only status/ as the bot and pushes', async () => {
    const r = makeRemote();
    const { sync } = newSync(r.remote);
    await sync.sync();
    const w = writer(() => [vmStatus('demo'), vmStatus('web')]);
    const res = await sync.commitStatus(w, 'status: 2 VMs');

    expect(res).toEqual({ committed: true, pushed: true, attempts: 1, revision: remoteTip(r.remote) });
    expect(w.calls).toBe(1);
    const who = git(r.remote, 'log', '-1', '--format=%an <%ae>|%cn <%ce>|%s|%P', 'main');
    expect(who).toBe(`${BOT.name} <${BOT.email}>|${BOT.name} <${BOT.email}>|status: 2 VMs|${r.initial}`);
    expect(filesOf(r.remote, 'main').sort()).toEqual(['status/vms/demo.yaml', 'status/vms/web.yaml']);
    // the working tree is clean afterwards
    expect(git(sync.workdir, 'status', '--porcelain', '--untracked-files=all')).toBe('');
  });

  it('makes no commit when the files are byte-identical', async () => {
    const r = makeRemote();
    const { sync } = newSync(r.remote);
    await sync.sync();
    const w = writer(() => [vmStatus('demo')]);
    const first = await sync.commitStatus(w, 'status');
    expect(first.committed).toBe(true);

    await sync.sync();
    const second = await sync.commitStatus(w, 'status');
    expect(second).toEqual({ committed: false, pushed: false, attempts: 1, revision: first.revision });
    expect(remoteTip(r.remote)).toBe(first.revision);

    // a real change makes a second commit
    const third = await sync.commitStatus(
      writer(() => [vmStatus('demo', { phase: 'Pending' })]),
      'status',
    );
    expect(third.committed).toBe(true);
    expect(git(r.remote, 'rev-parse', 'main~1')).toBe(first.revision);
  });

  it('keeps a human commit pushed between sync and commitStatus (rejected push path)', async () => {
    const r = makeRemote();
    const { sync, sleeps, lines } = newSync(r.remote, { backoffBaseMs: 100 });
    await sync.sync();
    const human = humanCommit(r.human, {
      'manifests/vms.yaml': 'kind: VirtualMachine # human edit\n',
      'README.md': 'hello\n',
    });
    const w = writer(() => [vmStatus('demo')]);
    const res = await sync.commitStatus(w, 'status');

    expect(res.attempts).toBeGreaterThanOrEqual(2);
    expect(res).toMatchObject({ committed: true, pushed: true, revision: remoteTip(r.remote) });
    expect(w.calls).toBe(res.attempts);
    // jittered backoff: between half and all of the base delay before the second attempt
    expect(sleeps[0]).toBeGreaterThanOrEqual(50);
    expect(sleeps[0]).toBeLessThanOrEqual(100);
    // both commits on the remote: the status commit sits on top of the human one
    expect(git(r.remote, 'rev-parse', 'main~1')).toBe(human);
    expect(filesOf(r.remote, 'main')).toEqual(['status/vms/demo.yaml']);
    humanPull(r.human);
    expect(fs.readFileSync(path.join(r.human, 'manifests/vms.yaml'), 'utf8')).toBe(
      'kind: VirtualMachine # human edit\n',
    );
    expect(fs.readFileSync(path.join(r.human, 'README.md'), 'utf8')).toBe('hello\n');
    expect(fs.existsSync(path.join(r.human, 'status/vms/demo.yaml'))).toBe(true);
    expect(lines.some((l) => l.includes('status push rejected') && l.includes('"remoteMoved":true'))).toBe(
      true,
    );
  });

  it('writes its latest state over status files a human changed on the new tip', async () => {
    const r = makeRemote();
    const { sync } = newSync(r.remote, { backoffBaseMs: 1 });
    await sync.sync();
    humanCommit(r.human, { 'status/vms/demo.yaml': 'hand-edited\n' });
    const res = await sync.commitStatus(
      writer(() => [vmStatus('demo')]),
      'status',
    );
    expect(res.attempts).toBe(2);
    expect(git(r.remote, 'show', 'main:status/vms/demo.yaml')).toContain('kind: VirtualMachineStatus');
  });

  it('refuses to commit when anything outside status/ is dirty', async () => {
    const r = makeRemote();
    const { sync } = newSync(r.remote);
    await sync.sync();
    const sneaky = async (dir: string) => {
      await writeStatusFiles(dir, { vms: [vmStatus('demo')] });
      writeFile(dir, 'manifests/vms.yaml', 'changed by the daemon?!\n');
    };
    const err = await sync.commitStatus(sneaky, 'status').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StalledError);
    expect(err).toMatchObject({
      reason: 'WriteOutsideStatus',
      message: expect.stringContaining('manifests/vms.yaml'),
    });
    expect(remoteTip(r.remote)).toBe(r.initial);

    // an untracked file outside status/ left before the call is refused too
    await sync.sync();
    writeFile(sync.workdir, 'notes.txt', 'x');
    await expect(
      sync.commitStatus(
        writer(() => [vmStatus('demo')]),
        'status',
      ),
    ).rejects.toMatchObject({
      reason: 'WriteOutsideStatus',
    });
    expect(git(sync.workdir, 'rev-parse', 'HEAD')).toBe(r.initial);
  });

  it('gives up after bounded attempts with a waiting StatusPushFailed error', async () => {
    const r = makeRemote();
    const hook = path.join(r.remote, 'hooks', 'pre-receive');
    fs.writeFileSync(hook, '#!/bin/sh\necho "protected branch" >&2\nexit 1\n', { mode: 0o755 });
    const { sync, sleeps } = newSync(r.remote, { maxPushAttempts: 3, backoffBaseMs: 100, backoffMaxMs: 150 });
    await sync.sync();
    const w = writer(() => [vmStatus('demo')]);
    const err = await sync.commitStatus(w, 'status').catch((e: unknown) => e);

    expect(err).toBeInstanceOf(WaitingError);
    expect(err).toMatchObject({ reason: 'StatusPushFailed', kind: 'waiting', retryAfterMs: 30_000 });
    expect((err as VmplaceError).cause).toMatchObject({ reason: 'GitCommandFailed' });
    expect(String(((err as VmplaceError).cause as Error).message)).toContain('protected branch');
    expect(w.calls).toBe(3);
    expect(sleeps).toHaveLength(2);
    expect(sleeps[0]).toBeGreaterThanOrEqual(50);
    expect(sleeps[0]).toBeLessThanOrEqual(100);
    expect(sleeps[1]).toBeGreaterThanOrEqual(75); // capped at 150, jittered down to half
    expect(sleeps[1]).toBeLessThanOrEqual(150);
    expect(remoteTip(r.remote)).toBe(r.initial);
    // the unpushed commit is dropped: the local branch is back at the remote tip
    expect(git(sync.workdir, 'rev-parse', 'HEAD')).toBe(r.initial);
  });

  it('refuses to commit before the first sync', async () => {
    const r = makeRemote();
    const { sync } = newSync(r.remote);
    await expect(
      sync.commitStatus(
        writer(() => []),
        'status',
      ),
    ).rejects.toMatchObject({ reason: 'NotSynced' });
  });

  it('runs one operation at a time', async () => {
    const r = makeRemote();
    const { sync } = newSync(r.remote);
    await sync.sync();
    const order: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((res) => (release = res));
    const commit = sync.commitStatus(async (dir) => {
      order.push('write start');
      await gate;
      await writeStatusFiles(dir, { vms: [vmStatus('demo')] });
      order.push('write end');
    }, 'status');
    const pulled = sync.sync().then((s) => {
      order.push('sync done');
      return s;
    });
    await new Promise((res) => setTimeout(res, 200));
    expect(order).toEqual(['write start']);
    release();
    const [c, s] = await Promise.all([commit, pulled]);
    expect(order).toEqual(['write start', 'write end', 'sync done']);
    // its own pushed commit does not count as a change
    expect(s).toEqual({ revision: c.revision, changed: false });
  });

  it('signs status commits with an SSH key when configured', async () => {
    const r = makeRemote();
    const keyDir = tmpDir('vmplace-key-');
    const key = path.join(keyDir, 'bot');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'bot', '-f', key]);
    const { sync } = newSync(r.remote, { signingKey: key, signingFormat: 'ssh' });
    await sync.sync();
    const res = await sync.commitStatus(
      writer(() => [vmStatus('demo')]),
      'signed status',
    );
    expect(res.pushed).toBe(true);

    expect(git(r.remote, 'cat-file', 'commit', res.revision)).toContain('-----BEGIN SSH SIGNATURE-----');
    const allowed = path.join(keyDir, 'allowed_signers');
    fs.writeFileSync(allowed, `${BOT.email} ${fs.readFileSync(`${key}.pub`, 'utf8')}`);
    const verified = execFileSync(
      'git',
      ['-c', `gpg.ssh.allowedSignersFile=${allowed}`, 'verify-commit', '--raw', res.revision],
      { cwd: r.remote, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
    );
    expect(verified).toBe('');

    // without a key, commits are not signed even when the user's configuration asks for it
    const { sync: plain } = newSync(r.remote);
    await plain.sync();
    git(plain.workdir, 'config', 'commit.gpgSign', 'true');
    const unsigned = await plain.commitStatus(
      writer(() => [vmStatus('web')]),
      'unsigned',
    );
    expect(git(r.remote, 'cat-file', 'commit', unsigned.revision)).not.toContain('SIGNATURE');
  });
});

describe('GitSync.manifestsChangedBetween', () => {
  it('is false for status-only commits and true for anything else', async () => {
    const r = makeRemote();
    const { sync } = newSync(r.remote);
    const { revision: a } = await sync.sync();
    const own = await sync.commitStatus(
      writer(() => [vmStatus('demo')]),
      'status',
    );
    expect(await sync.manifestsChangedBetween(a, own.revision)).toBe(false);
    expect(await sync.manifestsChangedBetween(a, a)).toBe(false);

    humanPull(r.human);
    const humanStatus = humanCommit(r.human, { 'status/hosts/lab.yaml': 'x: 1\n' });
    const manifest = humanCommit(r.human, { 'manifests/more.yaml': 'kind: Host\n' });
    await sync.sync();
    expect(await sync.manifestsChangedBetween(own.revision, humanStatus)).toBe(false);
    expect(await sync.manifestsChangedBetween(humanStatus, manifest)).toBe(true);
    expect(await sync.manifestsChangedBetween(a, manifest)).toBe(true);
    // a file merely named like the directory is not in it
    const lookalike = humanCommit(r.human, { 'statusx/a.yaml': 'x\n' });
    await sync.sync();
    expect(await sync.manifestsChangedBetween(manifest, lookalike)).toBe(true);
  });

  it('lastManifestRevision is the newest commit outside status/', async () => {
    const r = makeRemote();
    const { sync } = newSync(r.remote);
    await expect(sync.lastManifestRevision()).rejects.toMatchObject({ reason: 'NotSynced' });
    await sync.sync();
    expect(await sync.lastManifestRevision()).toBe(r.initial);
    const own = await sync.commitStatus(
      writer(() => [vmStatus('demo')]),
      'status',
    );
    expect(own.revision).not.toBe(r.initial);
    expect(await sync.lastManifestRevision()).toBe(r.initial);

    humanPull(r.human);
    const manifest = humanCommit(r.human, { 'manifests/more.yaml': 'kind: Host\n' });
    humanCommit(r.human, { 'status/hosts/lab.yaml': 'x: 1\n' });
    await sync.sync();
    expect(await sync.lastManifestRevision()).toBe(manifest);
    const lookalike = humanCommit(r.human, { 'statusx/a.yaml': 'x\n' });
    await sync.sync();
    expect(await sync.lastManifestRevision()).toBe(lookalike);
    // a deletion outside status/ counts too
    git(r.human, 'rm', '--quiet', 'manifests/more.yaml');
    git(r.human, 'commit', '--quiet', '--no-gpg-sign', '-m', 'remove');
    git(r.human, 'push', '--quiet', 'origin', 'HEAD:refs/heads/main');
    await sync.sync();
    expect(await sync.lastManifestRevision()).toBe(git(r.human, 'rev-parse', 'HEAD'));
  });

  it('rejects anything but object names', async () => {
    const r = makeRemote();
    const { sync } = newSync(r.remote);
    await sync.sync();
    await expect(sync.manifestsChangedBetween('--output=/tmp/x', r.initial)).rejects.toMatchObject({
      reason: 'InvalidRevision',
    });
  });
});

describe('credentials never reach errors or logs', () => {
  it.each([
    ['https://user:secret@git.example.com/x.git', 'https://[REDACTED]@git.example.com/x.git'],
    ['https://ghp_secret@github.com/o/r.git', 'https://[REDACTED]@github.com/o/r.git'],
    [
      "fatal: unable to access 'https://u:secret@h/x.git/': 403",
      "fatal: unable to access 'https://[REDACTED]@h/x.git/': 403",
    ],
    ['ssh://git@github.com/o/r.git', 'ssh://git@github.com/o/r.git'],
    ['ssh://git:secret@github.com/o/r.git', 'ssh://[REDACTED]@github.com/o/r.git'],
    ['git@github.com:o/r.git', 'git@github.com:o/r.git'],
    ['/srv/repos/fleet', '/srv/repos/fleet'],
  ])('redactGitText(%s)', (input, expected) => {
    expect(redactGitText(input)).toBe(expected);
    expect(redactRepoUrl(input)).toBe(expected);
  });

  it('removes given secrets and their URL-decoded forms anywhere', () => {
    expect(redactGitText('token p%40ss and p@ss', ['p%40ss'])).toBe('token [REDACTED] and [REDACTED]');
  });

  it.each([
    ['http://user:s3cr3t-t0ken@127.0.0.1:1/fleet.git'],
    ['http://s3cr3t-t0ken@127.0.0.1:1/fleet.git'],
  ])('keeps the credentials of %s out of a failed clone, its error and its logs', async (repo) => {
    // nothing listens on port 1 of the loopback: git fails at once, no network involved
    const { sync, lines } = newSync(repo);
    const err = await sync.sync().catch((e: unknown) => e);
    expect(err).toMatchObject({ reason: 'GitCommandFailed' });
    const seen = [
      (err as Error).message,
      JSON.stringify(err),
      ((err as { command: string[] }).command ?? []).join(' '),
      ...lines,
    ].join('\n');
    expect(seen).toContain('127.0.0.1');
    expect(seen).not.toContain('s3cr3t');
  });
});

describe('credentials of an http(s) remote', () => {
  const USER = 'vmplace-bot';
  const TOKEN = 'tok3n-s3cr3t-4711';

  /** A bare remote served over HTTP with Basic auth, a human clone of it, and the server. */
  async function httpRemote() {
    const { root, remote, human } = makeRemote();
    const server = await startHttpRemote(root, USER, TOKEN);
    return { server, remote, human, url: server.url(path.basename(remote)) };
  }

  /** A `git` on PATH that records its argv (one line per process), then runs the real git. */
  function recordingGit(): { log: string; restore: () => void } {
    const dir = tmpDir('vmplace-gitwrap-');
    const log = path.join(dir, 'argv.log');
    const real = execFileSync('sh', ['-c', 'command -v git'], { encoding: 'utf8' }).trim();
    fs.writeFileSync(
      path.join(dir, 'git'),
      `#!/bin/sh\nprintf '%s\\n' "$*" >> '${log}'\nexec '${real}' "$@"\n`,
      { mode: 0o755 },
    );
    const saved = process.env.PATH;
    process.env.PATH = `${dir}:${saved}`;
    return { log, restore: () => (process.env.PATH = saved) };
  }

  it.each([
    ['in the URL', (url: string) => ({ repo: url.replace('http://', `http://${USER}:${TOKEN}@`) })],
    [
      'in a credentials file',
      (url: string) => ({ repo: url, credentials: { username: USER, password: TOKEN } }),
    ],
  ])(
    'given %s: clones, fetches and pushes, with the token in no argv, not in .git/config, and the workdir 0700',
    async (_how, opts) => {
      const { server, remote, url } = await httpRemote();
      const rec = recordingGit();
      try {
        const { sync, lines } = newSync(url, opts(url));
        const workdir = sync.workdir;
        await sync.sync();
        const res = await sync.commitStatus(
          writer(() => [vmStatus('web-01')]),
          'status',
        );
        expect(res.pushed).toBe(true);
        expect(remoteTip(remote)).toBe(res.revision);
        await sync.sync(); // a fetch on the existing clone
        // the server saw the right credentials, so they did reach git
        expect(server.seen).toContain(`${USER}:${TOKEN}`);
        const config = fs.readFileSync(path.join(workdir, '.git', 'config'), 'utf8');
        expect(config).toContain(url);
        expect(config).not.toContain(TOKEN);
        const argv = fs.readFileSync(rec.log, 'utf8');
        expect(argv).toContain('clone');
        expect(argv).toContain('push');
        expect(argv).toContain('fetch');
        expect(argv).not.toContain(TOKEN);
        expect(lines.join('\n')).not.toContain(TOKEN);
        expect(fs.statSync(workdir).mode & 0o777).toBe(0o700);
      } finally {
        rec.restore();
        await server.close();
      }
    },
  );

  it('gives the token to no other host, and stores it with no helper of the user', async () => {
    const { server, url } = await httpRemote();
    const home = tmpDir('vmplace-home-');
    const store = path.join(home, 'stored-credentials');
    // the daemon user's own configuration would store any credential git approves
    fs.writeFileSync(path.join(home, '.gitconfig'), `[credential]\n\thelper = store --file=${store}\n`);
    const savedHome = process.env.HOME;
    process.env.HOME = home;
    try {
      const { sync } = newSync(url, { credentials: { username: USER, password: TOKEN } });
      await sync.sync();
      expect(fs.existsSync(store)).toBe(false);
      const env = credentialEnv({}, { username: USER, password: TOKEN }, url);
      const ask = (host: string) =>
        execFileSync('git', ['credential', 'fill'], {
          input: `protocol=http\nhost=${host}\n\n`,
          encoding: 'utf8',
          env: { ...process.env, ...env, GIT_TERMINAL_PROMPT: '0' },
        });
      expect(ask(new URL(url).host)).toContain(`password=${TOKEN}`);
      expect(() => ask('evil.example.net')).toThrow();
    } finally {
      process.env.HOME = savedHome;
      await server.close();
    }
  });

  it('reads USER:TOKEN from a credentials file and refuses anything else', async () => {
    const dir = tmpDir('vmplace-cred-');
    const good = path.join(dir, 'good');
    fs.writeFileSync(good, `${USER}:${TOKEN}\n`);
    await expect(readGitCredentials(good)).resolves.toEqual({ username: USER, password: TOKEN });
    for (const text of ['', '\n', 'token-only\n', ':x\n', 'user:\n']) {
      const f = path.join(dir, 'bad');
      fs.writeFileSync(f, text);
      await expect(readGitCredentials(f)).rejects.toMatchObject({ reason: 'GitCredentialsInvalid' });
    }
  });
});
