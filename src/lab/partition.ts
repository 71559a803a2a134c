/**
 * Cutting one process off from etcd while it still reaches everything else (git on disk, lab
 * hosts over ssh, its own HTTP port): netfilter in this machine's network namespace.
 *
 * The process is started with a group id of its own (`spawnOptionsFor(target)`: `{ gid }` for
 * `child_process.spawn`, or `argvPrefixFor(target)`: a `setpriv` prefix); `partitionFromEtcd`
 * then inserts, for every etcd client endpoint, an OUTPUT rule
 *   `-d HOST -p tcp --dport PORT -m owner --gid-owner GID -m comment --comment TAG -j DROP`.
 * DROP, not REJECT: packets vanish as on a cut cable, so the process sees timeouts, not quick
 * errors; established connections are cut too (their segments are dropped and retransmitted
 * until heal). The rule matches only that gid and those ports, so other processes (other
 * helpers' tests, the etcd members themselves) are untouched. Descendants of the process inherit
 * the gid and are cut off from etcd too.
 *
 * Every rule carries the tag `vmplace-lab-partition:<owner pid>:<owner start time>`; `heal()`
 * removes the rules of its partition, and `removeStalePartitionRules()` (run by every
 * `partitionFromEtcd`) removes those whose owner process is gone (a crashed test run).
 */
import { processStartTime } from './etcd-registry';
import { LabCommandError, run, type RunResult } from './run';

const TAG_PREFIX = 'vmplace-lab-partition';
const CHAIN = 'OUTPUT';

/** A process that can be partitioned: started with this group id. */
export interface PartitionTarget {
  readonly gid: number;
}

export interface Partition {
  /** Remove this partition's rules (idempotent). */
  heal(): Promise<void>;
}

let counter = 0;

/**
 * A new target: a group id no other live process of the lab uses (derived from this pid; the
 * group need not exist in /etc/group).
 */
export function newPartitionTarget(): PartitionTarget {
  return { gid: 1_500_000_000 + process.pid * 64 + (counter++ % 64) };
}

/** Spread into `child_process.spawn` options to start a partitionable process. */
export function spawnOptionsFor(target: PartitionTarget): { gid: number } {
  return { gid: target.gid };
}

/** The same as an argv prefix (`[...argvPrefixFor(t), cmd, ...args]`), for wrappers that take argv. */
export function argvPrefixFor(target: PartitionTarget): string[] {
  return ['setpriv', `--regid=${target.gid}`, '--clear-groups', '--'];
}

async function ownerTag(): Promise<string> {
  return `${TAG_PREFIX}:${process.pid}:${(await processStartTime(process.pid)) ?? '0'}`;
}

function ruleSpec(target: PartitionTarget, endpoint: string, tag: string): string[] {
  const url = new URL(endpoint);
  const port = url.port || (url.protocol === 'https:' ? '443' : '80');
  return [
    '-d',
    url.hostname,
    '-p',
    'tcp',
    '--dport',
    port,
    '-m',
    'owner',
    '--gid-owner',
    String(target.gid),
    '-m',
    'comment',
    '--comment',
    tag,
    '-j',
    'DROP',
  ];
}

const iptables = (args: string[]): Promise<RunResult> =>
  run('iptables', ['-w', '5', ...args], { timeoutMs: 15_000 });

async function ruleExists(spec: string[]): Promise<boolean> {
  try {
    await iptables(['-C', CHAIN, ...spec]);
    return true;
  } catch (err) {
    if (err instanceof LabCommandError && err.exitCode === 1) return false;
    throw err;
  }
}

/**
 * Cut the target off from every client endpoint of the cluster (IPv4 literals, e.g.
 * `http://127.0.0.1:2379`) until `heal()`.
 */
export async function partitionFromEtcd(
  target: PartitionTarget,
  cluster: { readonly endpoints: readonly string[] },
): Promise<Partition> {
  await removeStalePartitionRules();
  const tag = await ownerTag();
  const specs = cluster.endpoints.map((e) => ruleSpec(target, e, tag));
  const inserted: string[][] = [];
  const heal = async (): Promise<void> => {
    for (const spec of inserted.splice(0)) {
      while (await ruleExists(spec)) await iptables(['-D', CHAIN, ...spec]);
    }
  };
  try {
    for (const spec of specs) {
      await iptables(['-I', CHAIN, ...spec]);
      inserted.push(spec);
    }
  } catch (err) {
    await heal();
    throw err;
  }
  return { heal };
}

/** Remove partition rules whose owner process is gone; returns how many were removed. */
export async function removeStalePartitionRules(): Promise<number> {
  const { stdout } = await iptables(['-S', CHAIN]);
  let removed = 0;
  for (const line of stdout.split('\n')) {
    const m = new RegExp(`--comment "?${TAG_PREFIX}:(\\d+):(\\d+)"?`).exec(line);
    if (!m || !line.startsWith(`-A ${CHAIN} `)) continue;
    if ((await processStartTime(Number(m[1]))) === m[2]) continue; // owner still running
    // `-S` prints the rule as arguments; our rules have no quoted spaces
    const spec = line.slice(`-A ${CHAIN} `.length).replace(/"/g, '').split(' ');
    await iptables(['-D', CHAIN, ...spec]).catch(() => undefined);
    removed++;
  }
  return removed;
}
