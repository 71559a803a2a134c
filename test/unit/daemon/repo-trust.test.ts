/**
 * The daemon's clone holds whatever a merged pull request committed: symbolic links in
 * `status/` and a hostile `vmplace.yaml` must never make it write outside the clone, read
 * outside it, or lift a `suspend: true`. Real temporary git repositories, the real Daemon (no
 * hosts, so no hypervisor is touched) and the real status writing.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createDaemon } from '../../../src/app/compose';
import { Daemon } from '../../../src/daemon/daemon';
import { Reconciler } from '../../../src/reconciler/reconciler';
import { writeStatusFiles } from '../../../src/status/files';
import { GitSync } from '../../../src/status/git';
import type { Settings } from '../../../src/settings';
import { parse } from 'yaml';
import { BOT, git, vmStatus } from '../../support/git';
import { memoryLogger } from '../../support/logger';
import { cleanupTmp, tmpDir } from '../../support/tmp';

jest.setTimeout(60_000);

const running: Daemon[] = [];

afterEach(async () => {
  for (const d of running.splice(0)) await d.stop();
  jest.restoreAllMocks();
  cleanupTmp();
});

/** A bare remote on `main` whose first commit is made by `setup` in a human clone. */
function remoteWith(setup: (human: string) => void): { root: string; remote: string; human: string } {
  const root = tmpDir('vmplace-trust-');
  const remote = path.join(root, 'remote.git');
  git(root, 'init', '--quiet', '--bare', '--initial-branch=main', remote);
  const human = path.join(root, 'human');
  git(root, 'init', '--quiet', '--initial-branch=main', human);
  git(human, 'remote', 'add', 'origin', remote);
  fs.mkdirSync(path.join(human, 'manifests'));
  fs.writeFileSync(path.join(human, 'manifests', '.keep'), '');
  setup(human);
  pushAll(human, 'initial');
  return { root, remote, human };
}

function pushAll(human: string, message: string): void {
  git(human, 'add', '--all');
  git(human, 'commit', '--quiet', '--no-gpg-sign', '-m', message);
  if (message !== 'initial') git(human, 'pull', '--quiet', '--rebase', 'origin', 'main');
  git(human, 'push', '--quiet', 'origin', 'HEAD:refs/heads/main');
}

/** Every file under `dir` with its content (links as `-> target`), for "nothing changed" checks. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isSymbolicLink()) out[path.relative(dir, p)] = `-> ${fs.readlinkSync(p)}`;
      else out[path.relative(dir, p)] = fs.readFileSync(p, 'utf8');
    }
  };
  walk(dir);
  return out;
}

interface Run {
  daemon: Daemon;
  workdir: string;
  lines: string[];
  /** settings given to the reconciler, one per pass */
  settings: Settings[];
  /** wait until `n` passes have finished */
  passes(n: number): Promise<void>;
}

async function startDaemon(root: string, remote: string): Promise<Run> {
  const { logger, lines } = memoryLogger();
  const settings: Settings[] = [];
  const reconcile = Reconciler.prototype.pass;
  jest.spyOn(Reconciler.prototype, 'pass').mockImplementation(function (this: Reconciler, input) {
    settings.push(input.settings);
    return reconcile.call(this, input);
  });
  const pass = jest.spyOn(Daemon.prototype, 'pass');
  const workdir = path.join(root, 'workdir');
  const daemon = createDaemon({
    repo: remote,
    branch: 'main',
    workdir,
    stateDir: path.join(root, 'state'),
    intervalMs: 3_600_000,
    listen: '127.0.0.1:0',
    author: BOT,
    shutdownTimeoutMs: 1000,
    logger,
  });
  running.push(daemon);
  await daemon.start();
  const passes = async (n: number): Promise<void> => {
    const deadline = Date.now() + 30_000;
    while (pass.mock.results.length < n) {
      if (Date.now() > deadline) throw new Error(`only ${pass.mock.results.length} pass(es) ran`);
      await new Promise((r) => setTimeout(r, 20));
    }
    await pass.mock.results[n - 1]!.value;
  };
  return { daemon, workdir, lines, settings, passes };
}

/** `status/summary.yaml` as pushed to the remote, or undefined. */
function pushedSummary(remote: string): string | undefined {
  try {
    return git(remote, 'show', 'main:status/summary.yaml');
  } catch {
    return undefined;
  }
}

/** The problems listed in the pushed summary. */
function pushedProblems(remote: string): string[] {
  return (parse(pushedSummary(remote) ?? '{}') as { problems?: string[] }).problems ?? [];
}

describe('committed symbolic links in status/', () => {
  it('status/summary.yaml.tmp -> a file outside: the file is untouched, the summary is pushed', async () => {
    const outsideFile = path.join(tmpDir('vmplace-outside-'), 'outside.txt');
    fs.writeFileSync(outsideFile, 'root-owned file\n');
    const { root, remote } = remoteWith((human) => {
      fs.mkdirSync(path.join(human, 'status'));
      fs.symlinkSync(outsideFile, path.join(human, 'status', 'summary.yaml.tmp'));
    });
    const run = await startDaemon(root, remote);
    await run.passes(1);
    await run.daemon.stop();
    expect(fs.readFileSync(outsideFile, 'utf8')).toBe('root-owned file\n');
    expect(pushedSummary(remote)).toContain('kind: Summary');
    expect(fs.lstatSync(path.join(run.workdir, 'status', 'summary.yaml')).isFile()).toBe(true);
  });

  it('status -> a directory outside: nothing is written there, the pass fails with SymlinkInStatusPath', async () => {
    const outside = path.join(tmpDir('vmplace-outside-'), 'dir');
    fs.mkdirSync(outside);
    fs.writeFileSync(path.join(outside, 'keep.txt'), 'keep\n');
    const { root, remote } = remoteWith((human) => fs.symlinkSync(outside, path.join(human, 'status')));
    const before = snapshot(outside);
    const run = await startDaemon(root, remote);
    await run.passes(1);
    await run.daemon.stop();
    expect(snapshot(outside)).toEqual(before);
    expect(run.lines.join('\n')).toContain('SymlinkInStatusPath');
    expect(pushedSummary(remote)).toBeUndefined();
  });

  it('status/vms -> a directory outside: the status writer refuses, nothing lands there', async () => {
    const outside = tmpDir('vmplace-outside-');
    const { root, remote } = remoteWith((human) => {
      fs.mkdirSync(path.join(human, 'status'));
      fs.symlinkSync(outside, path.join(human, 'status', 'vms'));
      fs.symlinkSync(outside, path.join(human, 'status', 'hosts'));
    });
    const { logger } = memoryLogger();
    const sync = new GitSync({
      repo: remote,
      branch: 'main',
      workdir: path.join(root, 'wd'),
      author: BOT,
      logger,
    });
    await sync.sync();
    await expect(
      sync.commitStatus(async (wd) => {
        await writeStatusFiles(wd, { vms: [vmStatus('web-01')] });
      }, 'status'),
    ).rejects.toMatchObject({ reason: 'SymlinkInStatusPath' });
    expect(fs.readdirSync(outside)).toEqual([]);
  });
});

describe('vmplace.yaml in the clone', () => {
  const secret = 'SECRET-LINE: [not yaml';

  it.each([
    [
      'a link to a file outside the repository',
      (human: string, root: string) => {
        fs.writeFileSync(path.join(root, 'secret.txt'), `${secret}\n`);
        fs.symlinkSync(path.join(root, 'secret.txt'), path.join(human, 'vmplace.yaml'));
      },
    ],
    ['invalid YAML', (human: string) => fs.writeFileSync(path.join(human, 'vmplace.yaml'), 'suspend: [\n')],
    ['a schema error', (human: string) => fs.writeFileSync(path.join(human, 'vmplace.yaml'), 'suspend: 1\n')],
    [
      'a directory',
      (human: string) => {
        fs.mkdirSync(path.join(human, 'vmplace.yaml'));
        fs.writeFileSync(path.join(human, 'vmplace.yaml', 'x'), 'x\n');
      },
    ],
  ])('a good suspend: true stays in force when vmplace.yaml becomes %s', async (_t, breakIt) => {
    const { root, remote, human } = remoteWith((h) =>
      fs.writeFileSync(path.join(h, 'vmplace.yaml'), 'suspend: true\n'),
    );
    const run = await startDaemon(root, remote);
    await run.passes(1);
    expect(run.settings[0]!.suspend).toBe(true);
    fs.rmSync(path.join(human, 'vmplace.yaml'), { force: true });
    breakIt(human, root);
    pushAll(human, 'break vmplace.yaml');
    run.daemon.trigger('test');
    await run.passes(2);
    await run.daemon.stop();
    expect(run.settings[1]!.suspend).toBe(true);
    const problems = pushedProblems(remote);
    expect(problems.every((p) => p.startsWith('vmplace.yaml:'))).toBe(true);
    expect(problems.join('\n')).toContain('keeping the last good settings (suspend: true)');
    expect(pushedSummary(remote)).not.toContain('SECRET');
    expect(run.lines.join('\n')).not.toContain('SECRET');
  });

  it('an unreadable vmplace.yaml before any good read starts nothing (suspend: true)', async () => {
    const { root, remote } = remoteWith((h) =>
      fs.writeFileSync(path.join(h, 'vmplace.yaml'), 'suspend: [\n'),
    );
    const run = await startDaemon(root, remote);
    await run.passes(1);
    await run.daemon.stop();
    expect(run.settings[0]!.suspend).toBe(true);
    expect(pushedProblems(remote).join('\n')).toContain('no good settings read yet');
  });
});
