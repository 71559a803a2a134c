/**
 * Remotes and their secrets: credentials from a file or a URL, the credential helper that hands
 * them to git through its environment, and the redaction that keeps them out of every message.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { redact, StalledError } from '../errors';

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
export function urlSecrets(repo: string): string[] {
  const m = /^([a-z][a-z0-9+.-]*:\/\/)([^/@\s]+)@/i.exec(repo);
  if (!m || isLoginOnly(m[1]!, m[2]!)) return [];
  const userinfo = m[2]!;
  const colon = userinfo.indexOf(':');
  return colon >= 0 ? [userinfo, userinfo.slice(colon + 1)] : [userinfo];
}

/** A remote without user information, to compare clones across credential rotation. */
export function withoutUserinfo(remote: string): string {
  return remote.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/@\s]+@/i, '$1');
}

function isRemoteUrl(repo: string): boolean {
  // scheme://... or scp-like user@host:path (a colon before the first slash), as git decides
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(repo) || /^[^/]*:/.test(repo);
}

/** The remote as stored in `remote.origin.url`: URLs as given, local paths absolute. */
export function normaliseRemote(repo: string): string {
  if (isRemoteUrl(repo)) return repo.replace(/\/+$/, '');
  const abs = path.resolve(repo);
  try {
    return fs.realpathSync(abs);
  } catch {
    return abs;
  }
}
