/**
 * The only git caller: clone/fetch the followed branch into a working directory the daemon owns,
 * and commit + push status files back. One git operation at a time (an internal promise queue);
 * every command is an argument array run by simple-git (no shell); credentials in URLs never
 * reach an error message or a log line. Remotes and secrets are in `git-remote.ts`, running one
 * git command in `git-process.ts`, the options in `git-options.ts`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import type { SimpleGit } from 'simple-git';
import { StalledError, VmplaceError, WaitingError } from '../errors';
import { STATUS_DIR } from './render';
import { backoffDelay } from '../backoff';
import {
  resolveGitSyncOptions,
  REVISION,
  type CommitStatusResult,
  type GitSyncOptions,
  type GitSyncSettings,
  type StatusWriter,
} from './git-options';
import {
  clearStaleLocks,
  createGitClient,
  isStaleLockFailure,
  runGit,
  statusCommitArgs,
} from './git-process';
import {
  normaliseRemote,
  redactGitText,
  redactRepoUrl,
  withoutUserinfo,
  type GitCredentials,
} from './git-remote';

export type { CommitStatusResult, GitSyncOptions, StatusWriter } from './git-options';
export {
  credentialEnv,
  readGitCredentials,
  redactGitText,
  redactRepoUrl,
  splitUrlCredentials,
  type GitCredentials,
} from './git-remote';

/**
 * Clones, fetches and pushes one branch of one remote in a working directory the daemon owns.
 *
 * Every public method queues behind the previous one, so a webhook-triggered `sync` can never
 * interleave with a `commitStatus`. A `StatusWriter` must not call back into the same instance
 * (it would wait for itself).
 */
export class GitSync {
  private readonly opts: GitSyncSettings;
  /** remote as cloned: URLs as given, local paths absolute */
  private readonly remote: string;
  readonly workdir: string;
  private readonly log: Logger;
  private readonly secrets: string[];
  private readonly credentials: GitCredentials | undefined;
  private git: SimpleGit | undefined;
  private tail: Promise<unknown> = Promise.resolve();
  private lastRevision: string | undefined;
  private readonly sleep: (ms: number) => Promise<void>;

  /** @throws StalledError `InvalidBranch`, `InvalidRepository` (see {@link resolveGitSyncOptions}). */
  constructor(opts: GitSyncOptions, internals: { sleep?: (ms: number) => Promise<void> } = {}) {
    const resolved = resolveGitSyncOptions(opts);
    this.opts = resolved.settings;
    this.remote = resolved.remote;
    this.credentials = resolved.credentials;
    this.workdir = resolved.workdir;
    this.secrets = resolved.secrets;
    this.log = opts.logger.child({ component: 'git', repo: redactRepoUrl(opts.repo), branch: opts.branch });
    if (resolved.credentialsFromUrl)
      this.log.warn(
        "credentials in the repository URL: git gets them from a helper, but they are in this process's own arguments; prefer --git-credentials-file",
      );
    this.sleep = internals.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
  }

  /**
   * Bring the working directory to the tip of `origin/<branch>`: clone on first use (into a
   * missing or empty `workdir`), reuse an existing clone of the same remote, then fetch and
   * force the working tree to exactly that commit (`checkout -f -B`, `clean -ffdx`): nothing local
   * survives, including uncommitted status files, which the caller rewrites every pass.
   *
   * `changed` is true when the revision differs from the previous `sync` (always on the first);
   * a status commit this instance pushed counts as synced, so the daemon's own commit does not
   * show up as a change.
   *
   * @throws StalledError `WorkdirNotARepository` (a non-empty directory that is not a clone),
   *   `WorkdirRemoteMismatch` (a clone of another remote); CommandError `GitCommandFailed`
   *   (transient: network, authentication, missing branch) with secrets removed.
   */
  sync(): Promise<{ revision: string; changed: boolean }> {
    return this.exclusive(async () => {
      const started = Date.now();
      const cloned = await this.ensureClone();
      if (!cloned) await this.fetch();
      await this.resetToRemote();
      const revision = await this.head();
      const changed = revision !== this.lastRevision;
      this.lastRevision = revision;
      this.log.debug({ revision, changed, cloned, ms: Date.now() - started }, 'git sync');
      return { revision, changed };
    });
  }

  /**
   * True when any path outside `status/` differs between revisions `a` and `b` (renames count
   * as both paths), so a status-only commit, such as the daemon's own, causes no work.
   *
   * @throws StalledError `InvalidRevision` unless both are hexadecimal object names.
   */
  manifestsChangedBetween(a: string, b: string): Promise<boolean> {
    return this.exclusive(async () => {
      for (const r of [a, b]) {
        if (!REVISION.test(r))
          throw new StalledError('InvalidRevision', `not a revision: ${JSON.stringify(r)}`);
      }
      if (a === b) return false;
      const out = await this.run(['diff', '--no-renames', '--name-only', '-z', a, b, '--']);
      return out.split('\0').some((p) => p !== '' && !isStatusPath(p));
    });
  }

  /**
   * The newest commit on the synced `HEAD` that changed anything outside `status/`: the
   * revision the manifests are at. Status commits (the daemon's own or anyone's) do not move it,
   * so status that records it stays byte-identical across the daemon's own commits. `HEAD` when
   * no commit ever touched anything else.
   *
   * @throws VmplaceError `NotSynced` before the first {@link sync}.
   */
  lastManifestRevision(): Promise<string> {
    return this.exclusive(async () => {
      this.requireSynced();
      const found = (
        await this.run(['rev-list', '--max-count=1', 'HEAD', '--', ':(top)', `:(top,exclude)${STATUS_DIR}`])
      ).trim();
      return found || this.head();
    });
  }

  /**
   * Commit and push status files: call `write`, then commit `status/` (and nothing else) with
   * the bot identity unless it left no change, then push. A rejected push (the remote moved) is
   * retried on the new tip: fetch, reset, call `write` again (so the caller's latest state is
   * written over whatever the new tip holds, and human commits are kept), commit, push; at most
   * `maxPushAttempts` rounds with jittered exponential backoff. Call after {@link sync}.
   *
   * @throws StalledError `WriteOutsideStatus` (nothing committed) when any path outside
   *   `status/` is modified or untracked before committing; WaitingError `StatusPushFailed`
   *   when every push failed (the local branch is reset to the remote's tip); errors of `write`
   *   and of local git commands as they are.
   */
  commitStatus(write: StatusWriter, message: string): Promise<CommitStatusResult> {
    return this.exclusive(async () => {
      const git = this.requireSynced();
      const max = this.opts.maxPushAttempts;
      let lastError: unknown;
      for (let attempt = 1; attempt <= max; attempt++) {
        const log = this.log.child({ attempt });
        if (attempt > 1) {
          const delay = this.backoff(attempt - 1);
          log.debug({ delayMs: Math.round(delay) }, 'status push: retrying on the new tip');
          await this.sleep(delay);
          try {
            await this.fetch();
            await this.resetToRemote();
          } catch (err) {
            lastError = err;
            log.warn({ err }, 'status push: fetch failed');
            continue;
          }
        }
        await write(this.workdir);
        const dirty = await this.dirtyPaths();
        const outside = dirty.filter((p) => !isStatusPath(p));
        if (outside.length) {
          throw new StalledError(
            'WriteOutsideStatus',
            `refusing to commit: ${outside.length} path(s) outside ${STATUS_DIR}/ changed in ${this.workdir}: ` +
              outside.slice(0, 10).join(', '),
          );
        }
        if (dirty.length === 0) {
          const revision = await this.head();
          log.debug({ revision }, 'status unchanged: no commit');
          return { committed: false, revision, pushed: false, attempts: attempt };
        }
        await this.run(['add', '--all', '--', STATUS_DIR]);
        await this.run(statusCommitArgs(message, this.opts));
        const revision = await this.head();
        const pushStarted = Date.now();
        try {
          await this.run([
            'push',
            '--no-verify',
            '--porcelain',
            'origin',
            `HEAD:refs/heads/${this.opts.branch}`,
          ]);
        } catch (err) {
          lastError = err;
          const moved = await this.remoteMoved(git);
          log.warn({ err, remoteMoved: moved, revision }, 'status push rejected');
          continue;
        }
        this.lastRevision = revision;
        log.info({ revision, files: dirty.length, pushMs: Date.now() - pushStarted }, 'status pushed');
        return { committed: true, revision, pushed: true, attempts: attempt };
      }
      try {
        await this.resetToRemote();
      } catch (err) {
        this.log.warn({ err }, 'status push: could not reset to the remote tip');
      }
      throw new WaitingError(
        'StatusPushFailed',
        `could not push status to ${redactRepoUrl(this.remote)} ${this.opts.branch} after ${max} attempt(s)`,
        this.opts.retryAfterMs,
        { cause: lastError },
      );
    });
  }

  // ---------------------------------------------------------------- steps

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.tail.then(fn, fn);
    this.tail = next.catch(() => undefined);
    return next;
  }

  private requireSynced(): SimpleGit {
    if (!this.git || this.lastRevision === undefined) {
      throw new VmplaceError('NotSynced', 'commitStatus called before the first sync');
    }
    return this.git;
  }

  /** @returns true when it cloned (the tree is then fresh). */
  private async ensureClone(): Promise<boolean> {
    if (this.git) return false;
    let entries: string[];
    try {
      entries = fs.readdirSync(this.workdir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      fs.mkdirSync(this.workdir, { recursive: true, mode: 0o700 });
      entries = [];
    }
    // the clone (manifests, status, .git/config) is the daemon's own: no other user reads it
    fs.chmodSync(this.workdir, 0o700);
    const git = createGitClient(this.workdir, {
      ...this.opts,
      secrets: this.secrets,
      credentials: this.credentials,
      remote: this.remote,
    });
    if (entries.length === 0) {
      this.git = git;
      const started = Date.now();
      try {
        await this.run([
          'clone',
          '--no-tags',
          '--single-branch',
          '--branch',
          this.opts.branch,
          '--',
          this.remote,
          '.',
        ]);
      } catch (err) {
        // not a clone yet: the next sync clones again (git removed what it had written)
        this.git = undefined;
        throw err;
      }
      this.log.info({ workdir: this.workdir, ms: Date.now() - started }, 'cloned');
      return true;
    }
    if (!fs.existsSync(path.join(this.workdir, '.git'))) {
      throw new StalledError(
        'WorkdirNotARepository',
        `${this.workdir} is neither empty nor a git clone; give an empty or new directory as the workdir`,
      );
    }
    this.git = git;
    // a daemon killed in the middle of a git command (kill -9 of its process group, OOM, power
    // loss) leaves git's lock files behind, and every later command would fail on them
    await this.clearStaleLocks();
    try {
      const top = (await this.run(['rev-parse', '--show-toplevel'])).trim();
      if (fs.realpathSync(top) !== fs.realpathSync(this.workdir)) throw new Error(`top level is ${top}`);
    } catch (err) {
      this.git = undefined;
      throw new StalledError('WorkdirNotARepository', `${this.workdir} is not the top of a git clone`, {
        cause: new Error(redactGitText(String((err as Error).message ?? err), this.secrets)),
      });
    }
    let origin = '';
    try {
      origin = (await this.run(['remote', 'get-url', 'origin'])).trim();
    } catch {
      // no origin: a mismatch below
    }
    const current = normaliseRemote(origin);
    if (withoutUserinfo(current) !== withoutUserinfo(this.remote)) {
      this.git = undefined;
      throw new StalledError(
        'WorkdirRemoteMismatch',
        `${this.workdir} is a clone of ${redactGitText(origin || '(no origin)', this.secrets)}, ` +
          `not of ${redactRepoUrl(this.remote)}; give another workdir`,
      );
    }
    if (current !== this.remote) {
      // same remote, other credentials (rotated): follow the ones given now
      await this.run(['remote', 'set-url', 'origin', this.remote]);
    }
    this.log.debug({ workdir: this.workdir }, 'reusing clone');
    return false;
  }

  private async fetch(): Promise<void> {
    const b = this.opts.branch;
    await this.run(['fetch', '--prune', '--no-tags', 'origin', `+refs/heads/${b}:refs/remotes/origin/${b}`]);
  }

  private async resetToRemote(): Promise<void> {
    const b = this.opts.branch;
    await this.run(['checkout', '--force', '--no-track', '-B', b, `refs/remotes/origin/${b}`]);
    await this.run(['clean', '-ffdxq']);
  }

  private async head(): Promise<string> {
    return (await this.run(['rev-parse', '--verify', 'HEAD^{commit}'])).trim();
  }

  /** After a failed push: true when the remote's tip is no longer an ancestor of our commit. */
  private async remoteMoved(git: SimpleGit): Promise<boolean | undefined> {
    try {
      await this.fetch();
      const b = this.opts.branch;
      const base = await git.raw(['merge-base', '--is-ancestor', `refs/remotes/origin/${b}`, 'HEAD']).then(
        () => true,
        () => false,
      );
      return !base;
    } catch {
      return undefined;
    }
  }

  /** Paths (repository-relative, `/`-separated) modified, staged, deleted or untracked. */
  private async dirtyPaths(): Promise<string[]> {
    const out = await this.run(['status', '--porcelain=v1', '-z', '--untracked-files=all', '--no-renames']);
    const paths: string[] = [];
    for (const entry of out.split('\0')) {
      if (entry.length > 3) paths.push(entry.slice(3));
    }
    return paths;
  }

  private backoff(n: number): number {
    return backoffDelay(n, this.opts.backoffBaseMs, this.opts.backoffMaxMs);
  }

  private clearStaleLocks(): Promise<void> {
    const { staleLockWaitMs: waitMs, retryAfterMs } = this.opts;
    return clearStaleLocks({ workdir: this.workdir, waitMs, retryAfterMs, sleep: this.sleep, log: this.log });
  }

  private async run(args: string[]): Promise<string> {
    try {
      return await this.runOnce(args);
    } catch (err) {
      // our own git killed by its timeout leaves its lock behind: clear and try once more
      if (isStaleLockFailure(err)) {
        await this.clearStaleLocks();
        return this.runOnce(args);
      }
      throw err;
    }
  }

  private runOnce(args: string[]): Promise<string> {
    return runGit(this.git, args, this.secrets);
  }
}

function isStatusPath(p: string): boolean {
  return p.startsWith(`${STATUS_DIR}/`);
}
