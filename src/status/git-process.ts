/**
 * Running one git command in the daemon's clone: the simple-git client (its environment, the
 * trusted variables of the daemon's own environment, errors without secrets) and the stale lock
 * files a killed git leaves behind.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { GitError, simpleGit, type SimpleGit, type SimpleGitOptions } from 'simple-git';
import { CommandError, VmplaceError, WaitingError } from '../errors';
import { credentialEnv, redactGitText, type GitCredentials } from './git-remote';
import { STATUS_DIR } from './render';

/** Git's exit code and output, attached by the `errors` plugin to the error simple-git throws. */
interface GitFailure {
  exitCode?: number;
  stderrText?: string;
}

/** What {@link createGitClient} needs: the bot identity, a timeout, the secrets to keep out of errors. */
export interface GitClientOptions {
  author: { name: string; email: string };
  timeoutMs: number;
  secrets: readonly string[];
  /** for an `http(s)` remote: given to git through {@link credentialEnv} */
  credentials: GitCredentials | undefined;
  remote: string;
}

/**
 * A simple-git client for `baseDir`: one process at a time, killed when silent for `timeoutMs`,
 * never prompting for a password, committing as the bot whatever git's configuration says, its
 * failures as `GitError` with git's exit code and stderr, secrets removed.
 */
export function createGitClient(baseDir: string, opts: GitClientOptions): SimpleGit {
  const secrets = opts.secrets;
  const git = simpleGit({
    baseDir,
    maxConcurrentProcesses: 1,
    timeout: { block: opts.timeoutMs },
    unsafe: {
      ...trustedEnvironmentFlags(process.env),
      ...(opts.credentials ? { allowUnsafeConfigEnvCount: true, allowUnsafeCredentialHelper: true } : {}),
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
    GIT_AUTHOR_NAME: opts.author.name,
    GIT_AUTHOR_EMAIL: opts.author.email,
    GIT_COMMITTER_NAME: opts.author.name,
    GIT_COMMITTER_EMAIL: opts.author.email,
    ...(opts.credentials ? credentialEnv(process.env, opts.credentials, opts.remote) : {}),
  });
  return git;
}

/** Run one git command; failures become CommandError `GitCommandFailed` without secrets. */
export async function runGit(
  git: SimpleGit | undefined,
  args: string[],
  secrets: readonly string[],
): Promise<string> {
  if (!git) throw new VmplaceError('NotSynced', 'no git working directory yet');
  try {
    return await git.raw(args);
  } catch (err) {
    const f = err as Error & GitFailure;
    const command = ['git', ...args].map((a) => redactGitText(a, secrets));
    const stderr = f.stderrText ?? redactGitText(String(f.message ?? err), secrets);
    throw new CommandError('GitCommandFailed', command, f.exitCode ?? null, stderr);
  }
}

/**
 * `git commit` of `status/` only, hooks skipped, signed with `signingKey` or explicitly not signed
 * (whatever `commit.gpgSign` says). The identity comes from the environment (see
 * {@link createGitClient}), which outranks any configuration.
 */
export function statusCommitArgs(
  message: string,
  opts: { signingKey?: string; signingFormat?: 'openpgp' | 'ssh' | 'x509' },
): string[] {
  const args = opts.signingFormat ? ['-c', `gpg.format=${opts.signingFormat}`] : [];
  args.push('commit', '--no-verify', '--quiet', '--message', message);
  args.push(opts.signingKey ? `--gpg-sign=${opts.signingKey}` : '--no-gpg-sign');
  args.push('--', STATUS_DIR);
  return args;
}

/** True for the failure of a git that found another's lock file (`Unable to create '...lock'`). */
export function isStaleLockFailure(err: unknown): boolean {
  return err instanceof CommandError && /Unable to create '[^']*\.lock': File exists/.test(err.stderr ?? '');
}

/**
 * Remove git's lock files in `.git` when no process but this one has its working directory in
 * the clone: the daemon holds the workdir lock (see `daemon/lock.ts`) and runs one git command
 * at a time, so such a lock is the leftover of a killed git. A git process still running there
 * (an orphan of a killed daemon, or an operator's) is waited for, at most `waitMs`.
 *
 * @throws WaitingError `GitBusy` naming the pids still working in the clone.
 */
export async function clearStaleLocks(opts: {
  workdir: string;
  waitMs: number;
  retryAfterMs: number;
  sleep: (ms: number) => Promise<void>;
  log: Logger;
}): Promise<void> {
  const { workdir, log } = opts;
  const locks = findGitLocks(path.join(workdir, '.git'));
  if (locks.length === 0) return;
  const deadline = Date.now() + opts.waitMs;
  let busy = processesIn(workdir);
  while (busy.length > 0 && Date.now() < deadline) {
    await opts.sleep(Math.min(500, Math.max(1, deadline - Date.now())));
    busy = processesIn(workdir);
  }
  if (busy.length > 0) {
    throw new WaitingError(
      'GitBusy',
      `git lock file(s) ${locks.map((l) => path.relative(workdir, l)).join(', ')} held while ` +
        `process(es) ${busy.join(', ')} work in ${workdir}`,
      opts.retryAfterMs,
    );
  }
  for (const lock of findGitLocks(path.join(workdir, '.git'))) {
    fs.rmSync(lock, { force: true });
    log.warn({ lock: path.relative(workdir, lock) }, 'removed a stale git lock file left by a killed git');
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
