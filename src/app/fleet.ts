/**
 * Where `vmplace status` gets the fleet from: the status files of a repository (read and checked
 * by the status reader), or a running daemon's `GET /v1/status`; and, for `--watch`, when to read
 * again: on a change under `status/` (chokidar) or, from a daemon, every interval.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { watch } from 'chokidar';
import { StalledError } from '../errors';
import { loadActualState, STATUS_DIR } from '../status/files';
import type { HostStatus, Problem, VirtualMachineStatus } from '../types';

/** What `vmplace status` shows. */
export interface Fleet {
  vms: VirtualMachineStatus[];
  hosts: HostStatus[];
  problems: Problem[];
  /** the repository has no `status/` (nothing observed yet) */
  noStatusDir?: boolean;
}

/** The fleet from `REPO/status/`. @throws StalledError `RepositoryNotFound`. */
export async function readFleet(repo: string): Promise<Fleet> {
  const { state, problems } = await loadActualState(repo);
  const noStatusDir = !fs.existsSync(path.join(repo, STATUS_DIR));
  return {
    vms: [...state.vms.values()],
    hosts: [...state.hosts.values()],
    problems,
    ...(noStatusDir ? { noStatusDir } : {}),
  };
}

/** Largest `/v1/status` answer read (a fleet of thousands of VMs is a few MiB). */
const MAX_DAEMON_ANSWER = 64 * 1024 * 1024;

/**
 * The fleet as a running daemon sees it now: `GET URL/v1/status`.
 *
 * @throws StalledError `DaemonUnreachable` (not http(s), no answer within `timeoutMs`, not 200,
 *   too large), `InvalidStatus` (not the expected JSON).
 */
export async function fetchFleet(url: string, timeoutMs = 10_000): Promise<Fleet> {
  let endpoint: URL;
  try {
    endpoint = new URL('v1/status', url.endsWith('/') ? url : url + '/');
  } catch {
    throw new StalledError('DaemonUnreachable', `--daemon: not a URL: ${JSON.stringify(url)}`);
  }
  if (endpoint.protocol !== 'http:' && endpoint.protocol !== 'https:')
    throw new StalledError('DaemonUnreachable', `--daemon: not an http(s) URL: ${endpoint.protocol}`);
  // never print credentials given in the URL
  const shown = `${endpoint.protocol}//${endpoint.host}${endpoint.pathname}`;
  let res: Response;
  try {
    res = await fetch(endpoint, { signal: AbortSignal.timeout(timeoutMs), redirect: 'error' });
  } catch (err) {
    throw new StalledError('DaemonUnreachable', `cannot reach the daemon at ${shown}`, { cause: err });
  }
  if (res.status !== 200) {
    await res.body?.cancel();
    throw new StalledError('DaemonUnreachable', `${shown} answered ${res.status}`);
  }
  if (Number(res.headers.get('content-length') ?? 0) > MAX_DAEMON_ANSWER) {
    await res.body?.cancel();
    throw new StalledError(
      'DaemonUnreachable',
      `${shown}: the answer is larger than ${MAX_DAEMON_ANSWER} bytes`,
    );
  }
  const text = await res.text();
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new StalledError('InvalidStatus', `${shown} did not answer JSON`);
  }
  const d = doc as { vms?: unknown; hosts?: unknown };
  const isNamed = (x: unknown) =>
    typeof x === 'object' &&
    x !== null &&
    typeof (x as { metadata?: { name?: unknown } }).metadata?.name === 'string';
  if (
    !Array.isArray(d.vms) ||
    !d.vms.every((v) => isNamed(v) && typeof (v as { phase?: unknown }).phase === 'string') ||
    (d.hosts !== undefined && (!Array.isArray(d.hosts) || !d.hosts.every(isNamed)))
  )
    throw new StalledError('InvalidStatus', `${shown}: not a fleet status ({vms: [...], hosts: [...]})`);
  return {
    vms: d.vms as VirtualMachineStatus[],
    hosts: (d.hosts ?? []) as HostStatus[],
    problems: [],
  };
}

/** A running watch. */
export interface FleetWatch {
  close(): Promise<void>;
}

/**
 * Call `onChange` (debounced) after anything under `REPO/status/` changes; the directory may not
 * exist yet. Links are watched as links, never followed.
 */
export async function watchStatusFiles(
  repo: string,
  onChange: () => void,
  debounceMs = 200,
): Promise<FleetWatch> {
  const root = path.resolve(repo);
  const status = path.join(root, STATUS_DIR);
  // the repository root at depth 0 sees status/ appear; status/ itself at depth 1 (vms/, hosts/)
  const watcher = watch([root, status], {
    ignoreInitial: true,
    followSymlinks: false,
    depth: 2,
    ignored: (p: string) => {
      const abs = path.resolve(p);
      return abs !== root && abs !== status && !abs.startsWith(status + path.sep);
    },
  });
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  watcher.on('all', () => {
    if (closed) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = undefined;
      if (!closed) onChange();
    }, debounceMs);
  });
  await new Promise<void>((resolve, reject) => {
    watcher.once('ready', () => resolve());
    watcher.once('error', reject);
  });
  return {
    close: async () => {
      closed = true;
      if (timer) clearTimeout(timer);
      await watcher.close();
    },
  };
}
