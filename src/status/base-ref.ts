/**
 * Status at a base ref, for `vmplace plan --base-ref REF` on a pull request: `status/` is written
 * by the daemon, so a change that edits it (to hide a migration, say) must not decide the plan.
 * The plan reads `status/vms` and `status/hosts` as they are at the merge base with REF, and says
 * which status files the change touches. Git runs with argument arrays only; every ref is resolved
 * to an object name first, and the files are read through the same bounded reader as the
 * working tree's (regular blobs only, size and count caps; links are refused).
 */
import { execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { StalledError } from '../errors';
import { DEFAULT_LIMITS, type ReadLimits } from '../manifests/yaml-source';
import type { Problem } from '../types';
import { STATUS_DIR } from './files';

/** What a change does to `status/` relative to its base. */
export interface BaseRef {
  /** the ref as given */
  ref: string;
  /** the merge base of the ref and `HEAD`: the status the plan uses */
  base: string;
  /** files under `status/` the change adds, edits or removes (committed or not), sorted */
  changed: string[];
}

const MAX_OUTPUT = 64 * 1024 * 1024;

function git(repo: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      'git',
      ['-C', repo, ...args],
      {
        timeout: 60_000,
        maxBuffer: MAX_OUTPUT,
        encoding: 'utf8',
        env: { ...process.env, GIT_TERMINAL_PROMPT: '0' },
      },
      (err: Error | null, stdout, stderr) =>
        err ? reject(Object.assign(err, { stderrText: String(stderr).slice(0, 2000) })) : resolve(stdout),
    );
  });
}

/**
 * Resolve `ref` (a branch, `origin/main`, a revision) in the repository at `repo`, find the
 * merge base with `HEAD` and list the `status/` files the change edits.
 *
 * @throws StalledError `BaseRefNotFound` (not a commit here; `actions/checkout` needs
 *   `fetch-depth: 0` or a fetch of the base branch), `BaseRefUnrelated` (no merge base).
 */
export async function resolveBaseRef(repo: string, ref: string): Promise<BaseRef> {
  if (ref === '' || ref.startsWith('-') || /[\s\0]/.test(ref)) {
    throw new StalledError('BaseRefNotFound', `--base-ref: not a ref: ${JSON.stringify(ref)}`);
  }
  let sha: string;
  try {
    sha = (
      await git(repo, ['rev-parse', '--verify', '--quiet', '--end-of-options', `${ref}^{commit}`])
    ).trim();
  } catch {
    throw new StalledError(
      'BaseRefNotFound',
      `--base-ref ${ref} is not a commit in ${repo} (in CI, fetch the base branch: actions/checkout with fetch-depth: 0)`,
    );
  }
  let base: string;
  try {
    base = (await git(repo, ['merge-base', sha, 'HEAD'])).trim();
  } catch {
    throw new StalledError('BaseRefUnrelated', `--base-ref ${ref} has no common history with HEAD`);
  }
  // against the working tree: committed and uncommitted edits both count
  const tracked = await git(repo, [
    'diff',
    '--relative',
    '--no-renames',
    '--name-only',
    '-z',
    base,
    '--',
    STATUS_DIR,
  ]);
  const untracked = await git(repo, ['ls-files', '--others', '--exclude-standard', '-z', '--', STATUS_DIR]);
  const changed = [...new Set([...tracked.split('\0'), ...untracked.split('\0')].filter(Boolean))].sort();
  return { ref, base, changed };
}

interface TreeEntry {
  mode: string;
  type: string;
  object: string;
  size: number;
  path: string;
}

/**
 * Write the status files of commit `base` (`status/vms/*.yaml`, `status/hosts/*.yaml`, as the
 * status reader reads them) as regular files under `into`, for `loadActualState(into)`.
 * Symbolic links, submodules, nested directories and files over `limits.maxFileBytes` are left
 * out with a problem; at most `limits.maxFiles` files and `limits.maxTotalBytes` bytes are read.
 */
export async function writeStatusAt(
  repo: string,
  base: string,
  into: string,
  problems: Problem[],
  limits: Partial<ReadLimits> = {},
): Promise<void> {
  const lim: ReadLimits = { ...DEFAULT_LIMITS, maxFiles: 100_000, ...limits };
  if (!/^[0-9a-f]{7,64}$/.test(base)) throw new StalledError('InvalidRevision', `not a revision: ${base}`);
  const listing = await git(repo, [
    'ls-tree',
    '-r',
    '-z',
    '-l',
    base,
    '--',
    `${STATUS_DIR}/vms/`,
    `${STATUS_DIR}/hosts/`,
  ]);
  const wanted: TreeEntry[] = [];
  let total = 0;
  for (const line of listing.split('\0')) {
    const m = /^(\d{6}) (\w+) ([0-9a-f]+) +(-|\d+)\t(.+)$/s.exec(line);
    if (!m) continue;
    const e: TreeEntry = {
      mode: m[1]!,
      type: m[2]!,
      object: m[3]!,
      size: m[4] === '-' ? 0 : Number(m[4]),
      path: m[5]!,
    };
    const rel = e.path;
    const at = `${rel} at ${base.slice(0, 12)}`;
    if (!/^status\/(vms|hosts)\/[^/]+\.yaml$/.test(rel)) continue;
    if (e.mode === '120000') {
      problems.push({ file: rel, line: 1, col: 1, message: `${at} is a symbolic link; skipped` });
      continue;
    }
    if (e.type !== 'blob') continue;
    if (e.size > lim.maxFileBytes) {
      problems.push({
        file: rel,
        line: 1,
        col: 1,
        message: `${at}: file is too large: ${e.size} bytes, the limit is ${lim.maxFileBytes}`,
      });
      continue;
    }
    if (wanted.length >= lim.maxFiles || total + e.size > lim.maxTotalBytes) {
      problems.push({
        file: rel,
        line: 1,
        col: 1,
        message: `status at ${base.slice(0, 12)} is larger than the read limits; this and later files skipped`,
      });
      break;
    }
    total += e.size;
    wanted.push(e);
  }
  for (const sub of ['vms', 'hosts']) fs.mkdirSync(path.join(into, STATUS_DIR, sub), { recursive: true });
  if (wanted.length === 0) return;
  const blobs = await catBlobs(
    repo,
    wanted.map((e) => e.object),
    total,
  );
  for (const e of wanted) {
    const content = blobs.get(e.object);
    if (content === undefined) continue;
    // a fresh directory of ours; names come from the regex above (no `/`, no `..` segment)
    fs.writeFileSync(path.join(into, e.path), content, { flag: 'wx', mode: 0o644 });
  }
}

/** Read blobs with one `git cat-file --batch`; refuses more than `expected` bytes of content. */
function catBlobs(repo: string, objects: string[], expected: number): Promise<Map<string, Buffer>> {
  return new Promise((resolve, reject) => {
    const child = spawn('git', ['-C', repo, 'cat-file', '--batch'], { stdio: ['pipe', 'pipe', 'ignore'] });
    const chunks: Buffer[] = [];
    let size = 0;
    const limit = expected + objects.length * 128 + 1024;
    child.stdout.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        child.kill();
        reject(new StalledError('StatusAtBaseTooLarge', 'git cat-file returned more than the listed sizes'));
        return;
      }
      chunks.push(c);
    });
    child.on('error', reject);
    child.on('close', (code) => {
      if (size > limit) return;
      if (code !== 0) return reject(new StalledError('GitCommandFailed', `git cat-file exited ${code}`));
      const out = Buffer.concat(chunks);
      const blobs = new Map<string, Buffer>();
      let pos = 0;
      while (pos < out.length) {
        const nl = out.indexOf(0x0a, pos);
        if (nl < 0) break;
        const [obj, type, len] = out.subarray(pos, nl).toString('utf8').split(' ');
        if (type !== 'blob' || len === undefined) {
          pos = nl + 1;
          continue;
        }
        const n = Number(len);
        blobs.set(obj!, out.subarray(nl + 1, nl + 1 + n));
        pos = nl + 1 + n + 1;
      }
      resolve(blobs);
    });
    child.stdin.end(objects.join('\n') + '\n');
  });
}
