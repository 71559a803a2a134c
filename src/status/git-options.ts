/** Options and results of {@link GitSync} (in `git.ts`), and what it asks of its caller. */
import * as path from 'node:path';
import type { Logger } from 'pino';
import { StalledError } from '../errors';
import { normaliseRemote, splitUrlCredentials, urlSecrets, type GitCredentials } from './git-remote';

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

/** Writes status files into the working directory; called again after every rejected push. */
export type StatusWriter = (workdir: string) => Promise<void>;

const BRANCH = /^(?!-)(?!.*\.\.)(?!.*\/\/)(?!.*@\{)(?!.*\.lock(?:\/|$))[A-Za-z0-9._/-]+(?<![./])$/;
/** A revision as {@link GitSync.manifestsChangedBetween} takes it: a hexadecimal object name. */
export const REVISION = /^[0-9a-f]{7,64}$/i;

/** {@link GitSyncOptions} with every default applied, less what {@link ResolvedGitSync} holds apart. */
export type GitSyncSettings = Required<
  Omit<GitSyncOptions, 'signingKey' | 'signingFormat' | 'logger' | 'workdir' | 'repo' | 'credentials'>
> &
  Pick<GitSyncOptions, 'signingKey' | 'signingFormat'>;

/** What {@link GitSync} works with, from its {@link GitSyncOptions}. */
export interface ResolvedGitSync {
  settings: GitSyncSettings;
  /** remote as cloned: URLs as given (without user information), local paths absolute */
  remote: string;
  workdir: string;
  /** to remove from every message: the URL's user information and the password */
  secrets: string[];
  credentials: GitCredentials | undefined;
  /** the credentials came from the repository URL (so they are in the process's arguments) */
  credentialsFromUrl: boolean;
}

/**
 * Check {@link GitSyncOptions} and apply the defaults.
 *
 * @throws StalledError `InvalidBranch` for a branch name git would refuse or read as an option,
 *   `InvalidRepository` for an empty repo or credentials for a remote that is not http(s).
 */
export function resolveGitSyncOptions(opts: GitSyncOptions): ResolvedGitSync {
  if (!BRANCH.test(opts.branch)) {
    throw new StalledError('InvalidBranch', `invalid branch name ${JSON.stringify(opts.branch)}`);
  }
  if (!opts.repo.trim()) throw new StalledError('InvalidRepository', 'the repository location is empty');
  const split = splitUrlCredentials(opts.repo);
  const remote = normaliseRemote(split.url);
  const credentials = opts.credentials ?? split.credentials;
  if (credentials && !/^https?:\/\//i.test(remote))
    throw new StalledError('InvalidRepository', 'git credentials are for http(s) remotes only');
  return {
    settings: {
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
    },
    remote,
    workdir: path.resolve(opts.workdir),
    secrets: [...urlSecrets(opts.repo), ...(credentials?.password ? [credentials.password] : [])],
    credentials,
    credentialsFromUrl: split.credentials !== undefined && !opts.credentials,
  };
}
