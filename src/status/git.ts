/**
 * The only git caller: clone/fetch the followed branch into a working directory the daemon owns,
 * and commit + push status files back. One git operation at a time (an internal promise queue);
 * every command is an argument array run by simple-git (no shell); credentials in URLs never
 * reach an error message or a log line.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { GitError, simpleGit, type SimpleGit, type SimpleGitOptions } from 'simple-git';
import { CommandError, redact, StalledError, VmplaceError, WaitingError } from '../errors';
import { STATUS_DIR } from './files';
import { backoffDelay } from '../backoff';

/** Options of {@link GitSync}. */
export interface GitSyncOptions {
  /** Remote to follow: a URL (`https://`, `ssh://`, `git@host:path`, `file://`) or a local path. */
  repo: string;
  /** Branch to follow and to push status commits to. */
  branch: string;
  /** Working directory owned by the daemon: created and cloned into when missing or empty. */
  workdir: string;
  /** Author and committer of status commits. */
  author: { name: string; email: string };
  /**
   * Credentials for an `http(s)` remote. Default: the user information of `repo`, which is
   * taken out of it. Either way git gets them from a credential helper through its
   * environment: never in an argv (`ps`), never in `.git/config`, never stored by a helper the
   * daemon's user configured.
   */
  credentials?: GitCredentials;
  /**
   * Sign status commits with `git commit -S<signingKey>`: a GnuPG key id or fingerprint, or with
   * `signingFormat: 'ssh'` a public key file (or `key::ssh-ed25519 AAAA...`). Unset: commits are
   * explicitly not signed (`--no-gpg-sign`), whatever `commit.gpgSign` says.
   */
  signingKey?: string;
  /** `gpg.format` for signing; unset: the git configuration of the daemon's user decides. */
  signingFormat?: 'openpgp' | 'ssh' | 'x509';
  logger: Logger;
  /** Push attempts of one {@link GitSync.commitStatus} before it gives up (default 5). */
  maxPushAttempts?: number;
  /** First backoff delay between push attempts; doubles each time, jittered (default 250 ms). */
  backoffBaseMs?: number;
  /** Longest backoff delay (default 10 s). */
  backoffMaxMs?: number;
  /** A git process silent for this long is killed (default 120 s). */
  timeoutMs?: number;
  /** `retryAfterMs` of the `StatusPushFailed` error (default 30 s). */
  retryAfterMs?: number;
  /**
   * How long to wait for a git process left running in the working directory (by a daemon that
   * was killed) before giving up on a stale `*.lock` file for this round (default 30 s).
   */
  staleLockWaitMs?: number;
}

/** What {@link GitSync.commitStatus} did. */
export interface CommitStatusResult {
  /** a status commit was made (and, with `pushed`, is on the remote) */
  committed: boolean;
  /** `HEAD` afterwards: the pushed status commit, or the tip it found nothing to add to */
  revision: string;
  pushed: boolean;
  /** write/commit rounds run: 1 when the first push went through, more after rejections */
  attempts: number;
}

/** A user name and password (or token) for an `http(s)` remote. */
export interface GitCredentials {
  username: string;
  password: string;
}

/**
 * Read `USER:TOKEN` (the first line of `file`).
 *
 * @throws StalledError `GitCredentialsInvalid` when the line has no user or no token; the read
 *   error as is.
 */
export async function readGitCredentials(file: string): Promise<GitCredentials> {
  const line = (await fs.promises.readFile(file, 'utf8')).split('\n')[0]!.trim();
  const i = line.indexOf(':');
  if (i <= 0 || i === line.length - 1)
    throw new StalledError(
      'GitCredentialsInvalid',
      `git credentials file ${file}: expected one line USER:TOKEN`,
    );
  return { username: line.slice(0, i), password: line.slice(i + 1) };
}

/**
 * An `http(s)` URL without its user information, and the credentials that were in it (decoded).
 * Other remotes (ssh, scp-like, paths) are returned as they are.
 */
export function splitUrlCredentials(repo: string): { url: string; credentials?: GitCredentials } {
  const m = /^(https?:\/\/)([^/@\s]+)@(.*)$/i.exec(repo);
  if (!m) return { url: repo };
  const userinfo = m[2]!;
  const colon = userinfo.indexOf(':');
  const username = safeDecode(colon >= 0 ? userinfo.slice(0, colon) : userinfo);
  const password = colon >= 0 ? safeDecode(userinfo.slice(colon + 1)) : '';
  return { url: `${m[1]}${m[3]}`, credentials: { username, password } };
}

/**
 * The credential helper git runs for `get` (a shell snippet; the secret stays in the
 * environment and printf is a shell builtin, so it is in no argv): it answers only for the
 * remote's protocol and host, so a redirect elsewhere gets nothing. `store`/`erase` do nothing.
 */
const CREDENTIAL_HELPER =
  '!f() { test "$1" = get || exit 0; h=; p=; ' +
  'while IFS= read -r l; do case "$l" in host=*) h=${l#host=};; protocol=*) p=${l#protocol=};; esac; done; ' +
  'test "$h" = "$VMPLACE_GIT_HOST" && test "$p" = "$VMPLACE_GIT_PROTOCOL" || exit 0; ' +
  'printf "username=%s\\npassword=%s\\n" "$VMPLACE_GIT_USERNAME" "$VMPLACE_GIT_PASSWORD"; }; f';

/**
 * Environment that makes git take `credentials` from {@link CREDENTIAL_HELPER} only: the
 * configured helpers are reset first (an empty `credential.helper`), so no helper of the
 * daemon's user (`store`, a keychain) is asked or told to store the token.
 */
export function credentialEnv(
  env: NodeJS.ProcessEnv,
  credentials: GitCredentials,
  remote: string,
): Record<string, string> {
  const url = new URL(remote);
  const n = /^\d{1,3}$/.test(env.GIT_CONFIG_COUNT ?? '') ? Number(env.GIT_CONFIG_COUNT) : 0;
  return {
    GIT_CONFIG_COUNT: String(n + 2),
    [`GIT_CONFIG_KEY_${n}`]: 'credential.helper',
    [`GIT_CONFIG_VALUE_${n}`]: '',
    [`GIT_CONFIG_KEY_${n + 1}`]: 'credential.helper',
    [`GIT_CONFIG_VALUE_${n + 1}`]: CREDENTIAL_HELPER,
    VMPLACE_GIT_PROTOCOL: url.protocol.replace(/:$/, ''),
    VMPLACE_GIT_HOST: url.host,
    VMPLACE_GIT_USERNAME: credentials.username,
    VMPLACE_GIT_PASSWORD: credentials.password,
  };
}

/** Writes status files into the working directory; called again after every rejected push. */
export type StatusWriter = (workdir: string) => Promise<void>;

const URL_USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)([^/@\s'"]+)@/gi;

/**
 * Text with the user information of every URL (`https://user:token@host`, `https://token@host`;
 * a bare login name of an `ssh://` URL stays) and `password=`-style values replaced by
 * `[REDACTED]`; each of `secrets` (and its URL-decoded form) too. Use on anything from git meant
 * for logs, status or errors.
 */
export function redactGitText(text: string, secrets: readonly string[] = []): string {
  let out = text;
  for (const s of secrets) {
    for (const form of new Set([s, safeDecode(s)])) {
      if (form.length >= 3) out = out.split(form).join('[REDACTED]');
    }
  }
  out = out.replace(URL_USERINFO, (all, scheme: string, userinfo: string) =>
    isLoginOnly(scheme, userinfo) ? all : `${scheme}[REDACTED]@`,
  );
  return redact(out);
}

function isLoginOnly(scheme: string, userinfo: string): boolean {
  return /^(ssh|git\+ssh|ssh\+git):\/\/$/i.test(scheme) && !userinfo.includes(':');
}

/** A repository location fit for logs: the URL without its user information. */
export function redactRepoUrl(repo: string): string {
  return redactGitText(repo);
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** Secrets in a remote URL: its user information and the password part alone. */
function urlSecrets(repo: string): string[] {
  const m = /^([a-z][a-z0-9+.-]*:\/\/)([^/@\s]+)@/i.exec(repo);
  if (!m || isLoginOnly(m[1]!, m[2]!)) return [];
  const userinfo = m[2]!;
  const colon = userinfo.indexOf(':');
  return colon >= 0 ? [userinfo, userinfo.slice(colon + 1)] : [userinfo];
}

/** A remote without user information, to compare clones across credential rotation. */
function withoutUserinfo(remote: string): string {
  return remote.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/@\s]+@/i, '$1');
}

function isRemoteUrl(repo: string): boolean {
  // scheme://... or scp-like user@host:path (a colon before the first slash), as git decides
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(repo) || /^[^/]*:/.test(repo);
}

/** The remote as stored in `remote.origin.url`: URLs as given, local paths absolute. */
function normaliseRemote(repo: string): string {
  if (isRemoteUrl(repo)) return repo.replace(/\/+$/, '');
  const abs = path.resolve(repo);
  try {
    return fs.realpathSync(abs);
  } catch {
    return abs;
  }
}

const BRANCH = /^(?!-)(?!.*\.\.)(?!.*\/\/)(?!.*@\{)(?!.*\.lock(?:\/|$))[A-Za-z0-9._/-]+(?<![./])$/;
const REVISION = /^[0-9a-f]{7,64}$/i;

/** Git's exit code and output, attached by the `errors` plugin to the error simple-git throws. */
interface GitFailure {
  exitCode?: number;
  stderrText?: string;
}

/**
 * Clones, fetches and pushes one branch of one remote in a working directory the daemon owns.
 *
 * Every public method queues behind the previous one, so a webhook-triggered `sync` can never
 * interleave with a `commitStatus`. A `StatusWriter` must not call back into the same instance
 * (it would wait for itself).
 */
export class GitSync {
  private readonly opts: Required<
    Omit<GitSyncOptions, 'signingKey' | 'signingFormat' | 'logger' | 'workdir' | 'repo' | 'credentials'>
  > &
    Pick<GitSyncOptions, 'signingKey' | 'signingFormat'>;
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

  /**
   * @throws StalledError `InvalidBranch` for a branch name git would refuse or read as an option,
   *   `InvalidRepository` for an empty repo.
   */
  constructor(opts: GitSyncOptions, internals: { sleep?: (ms: number) => Promise<void> } = {}) {
    if (!BRANCH.test(opts.branch)) {
      throw new StalledError('InvalidBranch', `invalid branch name ${JSON.stringify(opts.branch)}`);
    }
    if (!opts.repo.trim()) throw new StalledError('InvalidRepository', 'the repository location is empty');
    const split = splitUrlCredentials(opts.repo);
    this.remote = normaliseRemote(split.url);
    this.credentials = opts.credentials ?? split.credentials;
    if (this.credentials && !/^https?:\/\//i.test(this.remote))
      throw new StalledError('InvalidRepository', 'git credentials are for http(s) remotes only');
    this.workdir = path.resolve(opts.workdir);
    this.secrets = [
      ...urlSecrets(opts.repo),
      ...(this.credentials?.password ? [this.credentials.password] : []),
    ];
    this.opts = {
      branch: opts.branch,
      author: opts.author,
      signingKey: opts.signingKey,
      signingFormat: opts.signingFormat,
      maxPushAttempts: Math.max(1, opts.maxPushAttempts ?? 5),
      backoffBaseMs: opts.backoffBaseMs ?? 250,
      backoffMaxMs: opts.backoffMaxMs ?? 10_000,
      timeoutMs: opts.timeoutMs ?? 120_000,
      retryAfterMs: opts.retryAfterMs ?? 30_000,
      staleLockWaitMs: opts.staleLockWaitMs ?? 30_000,
    };
    this.log = opts.logger.child({ component: 'git', repo: redactRepoUrl(opts.repo), branch: opts.branch });
    if (split.credentials && !opts.credentials)
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
        await this.run(this.commitArgs(message));
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
    const git = this.createGit(this.workdir);
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

  private commitArgs(message: string): string[] {
    // the identity comes from the environment (see createGit), which outranks any configuration
    const args = this.opts.signingFormat ? ['-c', `gpg.format=${this.opts.signingFormat}`] : [];
    args.push('commit', '--no-verify', '--quiet', '--message', message);
    args.push(this.opts.signingKey ? `--gpg-sign=${this.opts.signingKey}` : '--no-gpg-sign');
    args.push('--', STATUS_DIR);
    return args;
  }

  private backoff(n: number): number {
    return backoffDelay(n, this.opts.backoffBaseMs, this.opts.backoffMaxMs);
  }

  private createGit(baseDir: string): SimpleGit {
    const secrets = this.secrets;
    const git = simpleGit({
      baseDir,
      maxConcurrentProcesses: 1,
      timeout: { block: this.opts.timeoutMs },
      unsafe: {
        ...trustedEnvironmentFlags(process.env),
        ...(this.credentials ? { allowUnsafeConfigEnvCount: true, allowUnsafeCredentialHelper: true } : {}),
      },
      errors(error, result) {
        if (result.exitCode === 0 && !error) return undefined;
        const stderr = Buffer.concat([...result.stdErr]).toString('utf8');
        const text = redactGitText(stderr || (error ? String(error) : ''), secrets);
        return Object.assign(new GitError(undefined, text), {
          exitCode: result.exitCode,
          stderrText: text,
        } satisfies GitFailure);
      },
    });
    // never wait for a password on a terminal: fail and retry later instead. Author and
    // committer are the bot whatever git's configuration or the environment say.
    git.env({
      ...process.env,
      GIT_TERMINAL_PROMPT: '0',
      GIT_AUTHOR_NAME: this.opts.author.name,
      GIT_AUTHOR_EMAIL: this.opts.author.email,
      GIT_COMMITTER_NAME: this.opts.author.name,
      GIT_COMMITTER_EMAIL: this.opts.author.email,
      ...(this.credentials ? credentialEnv(process.env, this.credentials, this.remote) : {}),
    });
    return git;
  }

  /**
   * Remove git's lock files in `.git` when no process but this one has its working directory in
   * the clone: the daemon holds the workdir lock (see `daemon/lock.ts`) and runs one git command
   * at a time, so such a lock is the leftover of a killed git. A git process still running there
   * (an orphan of a killed daemon, or an operator's) is waited for, at most `staleLockWaitMs`.
   *
   * @throws WaitingError `GitBusy` naming the pids still working in the clone.
   */
  private async clearStaleLocks(): Promise<void> {
    const locks = findGitLocks(path.join(this.workdir, '.git'));
    if (locks.length === 0) return;
    const deadline = Date.now() + this.opts.staleLockWaitMs;
    let busy = processesIn(this.workdir);
    while (busy.length > 0 && Date.now() < deadline) {
      await this.sleep(Math.min(500, Math.max(1, deadline - Date.now())));
      busy = processesIn(this.workdir);
    }
    if (busy.length > 0) {
      throw new WaitingError(
        'GitBusy',
        `git lock file(s) ${locks.map((l) => path.relative(this.workdir, l)).join(', ')} held while ` +
          `process(es) ${busy.join(', ')} work in ${this.workdir}`,
        this.opts.retryAfterMs,
      );
    }
    for (const lock of findGitLocks(path.join(this.workdir, '.git'))) {
      fs.rmSync(lock, { force: true });
      this.log.warn(
        { lock: path.relative(this.workdir, lock) },
        'removed a stale git lock file left by a killed git',
      );
    }
  }

  /** Run one git command; failures become CommandError `GitCommandFailed` without secrets. */
  private async run(args: string[]): Promise<string> {
    try {
      return await this.runOnce(args);
    } catch (err) {
      // our own git killed by its timeout leaves its lock behind: clear and try once more
      if (
        err instanceof CommandError &&
        /Unable to create '[^']*\.lock': File exists/.test(err.stderr ?? '')
      ) {
        await this.clearStaleLocks();
        return this.runOnce(args);
      }
      throw err;
    }
  }

  private async runOnce(args: string[]): Promise<string> {
    const git = this.git;
    if (!git) throw new VmplaceError('NotSynced', 'no git working directory yet');
    try {
      return await git.raw(args);
    } catch (err) {
      const f = err as Error & GitFailure;
      const command = ['git', ...args].map((a) => redactGitText(a, this.secrets));
      const stderr = f.stderrText ?? redactGitText(String(f.message ?? err), this.secrets);
      throw new CommandError('GitCommandFailed', command, f.exitCode ?? null, stderr);
    }
  }
}

/** Git's lock files: `*.lock` directly in `.git` and anywhere under `.git/refs` and `.git/logs`. */
function findGitLocks(gitDir: string): string[] {
  const found: string[] = [];
  const walk = (dir: string, deep: boolean): void => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = path.join(dir, e.name);
      if (e.isFile() && e.name.endsWith('.lock')) found.push(p);
      else if (e.isDirectory() && (deep || e.name === 'refs' || e.name === 'logs')) walk(p, true);
    }
  };
  walk(gitDir, false);
  return found;
}

/**
 * Pids (other than this process) whose current directory is `dir` or below it, from /proc;
 * processes whose directory cannot be read (other users) are not counted.
 */
function processesIn(dir: string): number[] {
  let real: string;
  try {
    real = fs.realpathSync(dir);
  } catch {
    return [];
  }
  let pids: string[];
  try {
    pids = fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return [];
  }
  const out: number[] = [];
  for (const pid of pids) {
    if (Number(pid) === process.pid) continue;
    try {
      const cwd = fs.readlinkSync(`/proc/${pid}/cwd`);
      if (cwd === real || cwd.startsWith(`${real}/`)) out.push(Number(pid));
    } catch {
      // gone or not ours to read
    }
  }
  return out;
}

function isStatusPath(p: string): boolean {
  return p.startsWith(`${STATUS_DIR}/`);
}

/**
 * simple-git refuses environment variables that can run programs (`GIT_SSH_COMMAND`, `EDITOR`,
 * ...) when an environment is given, to protect callers that pass untrusted input. The daemon's
 * own environment is trusted (the operator set it, e.g. `GIT_SSH_COMMAND` for a deploy key), so
 * allow exactly the categories it uses; command arguments stay checked.
 */
function trustedEnvironmentFlags(env: NodeJS.ProcessEnv): SimpleGitOptions['unsafe'] {
  const byVar: Record<string, keyof NonNullable<SimpleGitOptions['unsafe']>> = {
    editor: 'allowUnsafeEditor',
    git_editor: 'allowUnsafeEditor',
    git_sequence_editor: 'allowUnsafeEditor',
    git_askpass: 'allowUnsafeAskPass',
    ssh_askpass: 'allowUnsafeAskPass',
    git_config_global: 'allowUnsafeConfigPaths',
    git_config_system: 'allowUnsafeConfigPaths',
    git_config: 'allowUnsafeConfigPaths',
    git_exec_path: 'allowUnsafeConfigPaths',
    prefix: 'allowUnsafeConfigPaths',
    git_config_count: 'allowUnsafeConfigEnvCount',
    git_external_diff: 'allowUnsafeDiffExternal',
    git_pager: 'allowUnsafePager',
    pager: 'allowUnsafePager',
    git_proxy_command: 'allowUnsafeGitProxy',
    git_template_dir: 'allowUnsafeTemplateDir',
    git_ssh: 'allowUnsafeSshCommand',
    git_ssh_command: 'allowUnsafeSshCommand',
  };
  const flags: NonNullable<SimpleGitOptions['unsafe']> = {};
  for (const key of Object.keys(env)) {
    const flag = byVar[key.toLowerCase().trim()];
    if (flag) flags[flag] = true;
  }
  return flags;
}
