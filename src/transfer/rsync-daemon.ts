/**
 * The fast channel between hosts for the copies inside a pause (`policy.pauseTransfer: tcp`: the
 * last deltas and the memory state file): rsync on the source pushes the file over plain TCP to
 * a one-shot rsync daemon that vmplace starts on the target for this one file, not through ssh.
 *
 * Why: on the hosts of the lab (2 vCPUs), ssh's own per-packet work caps a host-to-host stream
 * at ~100 MB/s, and the 83 MB memory state of the lab guest took 2.0-2.2 s through rsync over
 * ssh against 0.23-0.29 s through an rsync daemon (bench/NOTES.md); that copy lies inside the
 * pause when the hosts share no storage.
 *
 * What it trades: the bytes cross the network **unencrypted** (as the memory of a `live`
 * migration does on libvirt's `tcp://` migration stream). Integrity is not traded: the file is
 * still hashed on both hosts and renamed into place only when the digests, which travel over
 * the ssh connections, are equal.
 *
 * Who may write: the daemon runs only while this copy runs (killed after it, and by `timeout`
 * at the latest), on the target's transfer address and a random port; a client must answer
 * rsync's challenge with a random 192-bit secret that reaches both hosts over ssh on standard
 * input (never in an argv, a log or an error); the module is write-only, unlisted, and its
 * filter lets exactly one name in, the part file this migration created and owns (`include =
 * /NAME`, `exclude = *`, enforced by the daemon). Its configuration, secret and lock files are
 * created beside that part file (`PART.rsyncd.*`, never over an existing file, mode 0600) and
 * removed with the daemon. Paths with anything but `[A-Za-z0-9._+/-]` (rsync's configuration
 * expands `%VAR%` and trims spaces) are not sent this way: the copy goes through ssh.
 *
 * Any failure to set the channel up, or of the copy through it, is the caller's to fall back
 * from (between-hosts.ts copies through ssh then; the part file keeps what arrived).
 */
import { randomBytes, randomInt } from 'node:crypto';
import { VmplaceError } from '../errors';
import type { HostExec } from '../exec/types';
import { DEFAULT_IO_TIMEOUT_SEC, RSYNC_COPY } from './rsync-direct';
import { sentBytes } from './rsync-progress';

const SAFE_PATH = /^\/[A-Za-z0-9._+/-]+$/;
const SAFE_NAME = /^[A-Za-z0-9._+-]+$/;
const SAFE_ADDRESS = /^[A-Za-z0-9.:-]+$/;

/** Ports the daemon may take: below Linux's default ephemeral range (32768-60999), which outgoing connections use. */
export const DAEMON_PORTS = { from: 20_000, to: 32_000 } as const;

/** Where the part's daemon files go (pure). */
export function daemonFiles(part: string): { conf: string; secret: string; lock: string } {
  return { conf: `${part}.rsyncd.conf`, secret: `${part}.rsyncd.secret`, lock: `${part}.rsyncd.lock` };
}

/**
 * The daemon's configuration for one part file (pure), without `uid`/`gid` (the target's
 * script puts its own user first: rsync run by root would otherwise write as `nobody`).
 * Undefined when a path cannot be written into rsync's configuration safely.
 */
export function daemonConfig(part: string): string | undefined {
  if (!SAFE_PATH.test(part)) return undefined;
  const slash = part.lastIndexOf('/');
  const dir = part.slice(0, slash) || '/';
  const name = part.slice(slash + 1);
  if (!SAFE_NAME.test(name) || name.startsWith('.') || dir.split('/').includes('..')) return undefined;
  const f = daemonFiles(part);
  return [
    'use chroot = no',
    'numeric ids = yes',
    'log file = /dev/null',
    'max connections = 2',
    `lock file = ${f.lock}`,
    '[m]',
    `path = ${dir}`,
    'read only = no',
    'write only = yes',
    'list = no',
    'auth users = vmplace',
    `secrets file = ${f.secret}`,
    'strict modes = yes',
    `include = /${name}`,
    'exclude = *',
    'refuse options = delete* remove-source-files link-dest copy-dest compare-dest backup-dir partial-dir temp-dir',
    '',
  ].join('\n');
}

/**
 * Run on the target: `$1` part, `$2` address, `$3` port, `$4` lifetime (s). Standard input: the
 * secret's line, then the configuration. Prints the daemon's pid once the kernel lists a
 * listening socket on that port held by the daemon itself (/proc/net/tcp and its fds); exit 4
 * (stopped, files removed) when it does not within 2 s: the port was taken (by anyone: a
 * process of another user listening there first would otherwise be sent the file), rsync
 * refused the configuration.
 */
export const START_DAEMON_SCRIPT = [
  'set -u',
  'part=$1 addr=$2 port=$3 life=$4',
  'conf=$part.rsyncd.conf secret=$part.rsyncd.secret lock=$part.rsyncd.lock',
  'umask 077',
  'set -C',
  'IFS= read -r key || exit 2',
  'printf "vmplace:%s\\n" "$key" > "$secret" || exit 3',
  '{ printf "uid = %s\\ngid = %s\\n" "$(id -u)" "$(id -g)"; cat; } > "$conf" || { rm -f -- "$secret"; exit 3; }',
  'setsid timeout "$life" rsync --daemon --no-detach --port="$port" --address="$addr" --config="$conf" </dev/null >/dev/null 2>&1 &',
  'pid=$!',
  // ready = OUR daemon holds the listening socket: a connection that succeeds proves nothing
  // (anyone on the host may have bound that port first, and would then get the file)
  'hex=$(printf "%04X" "$port")',
  'listening() {',
  '  local c fd l ino',
  '  for c in "$pid" $(cat /proc/"$pid"/task/*/children 2>/dev/null || pgrep -P "$pid"); do',
  '    for fd in /proc/"$c"/fd/*; do',
  '      l=$(readlink "$fd" 2>/dev/null) || continue',
  '      case $l in "socket:["*"]") ino=${l#socket:[}; ino=${ino%]} ;; *) continue ;; esac',
  '      cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v h=":$hex" -v i="$ino" \'$4 == "0A" && substr($2, length($2) - 4) == h && $10 == i { f = 1 } END { exit !f }\' && return 0',
  '    done',
  '  done',
  '  return 1',
  '}',
  'for i in $(seq 1 100); do',
  '  if listening; then echo "$pid"; exit 0; fi',
  '  kill -0 "$pid" 2>/dev/null || break',
  '  sleep 0.02',
  'done',
  'kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null',
  'rm -f -- "$conf" "$secret" "$lock"',
  'exit 4',
].join('\n');

/**
 * Run on the target: `$1` pid, `$2` part. Kills that daemon's whole process group (only if its
 * command line names this part's configuration: a pid is never signalled on trust) and waits
 * until none of the group is left but zombies (1 s at most); removes its files.
 *
 * SIGKILL, not SIGTERM: the daemon has nothing to finish once the copy is over or abandoned
 * (the part file is verified by hash before it is used, its files are removed here), and an
 * rsync daemon took ~0.4 s to end on SIGTERM on the lab, all of it inside the VM's pause.
 */
export const STOP_DAEMON_SCRIPT = [
  'set -u',
  'pid=$1 part=$2',
  'if [ -r "/proc/$pid/cmdline" ] && tr "\\0" "\\n" < "/proc/$pid/cmdline" | grep -qxF -- "--config=$part.rsyncd.conf"; then',
  // its own process group (setsid): timeout, the daemon, a connection's receiver and generator
  '  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null',
  // a process of the group that is not a zombie (an exited one waits for its parent to reap it)
  '  live() {',
  '    command -v ps >/dev/null 2>&1 || { kill -0 -- "-$pid" 2>/dev/null; return; }',
  '    ps -e -o pgid=,stat= 2>/dev/null | awk -v g="$pid" \'$1 == g && $2 !~ /^Z/ { f = 1 } END { exit !f }\'',
  '  }',
  '  for i in $(seq 1 50); do live || break; sleep 0.02; done',
  'fi',
  'rm -f -- "$part.rsyncd.conf" "$part.rsyncd.secret" "$part.rsyncd.lock"',
].join('\n');

/** The source's rsync push into the daemon (pure); the secret goes on standard input. */
export function daemonPushArgv(
  src: string,
  part: string,
  address: string,
  port: number,
  opts: { ioTimeoutSec?: number; bwlimitKiBps?: number } = {},
): string[] {
  if (!SAFE_ADDRESS.test(address) || address.startsWith('-'))
    throw new TypeError(`bad target address ${JSON.stringify(address)}`);
  const host = address.includes(':') ? `[${address}]` : address;
  const name = part.slice(part.lastIndexOf('/') + 1);
  return [
    ...RSYNC_COPY,
    `--timeout=${Math.max(1, Math.floor(opts.ioTimeoutSec ?? DEFAULT_IO_TIMEOUT_SEC))}`,
    ...(opts.bwlimitKiBps !== undefined ? [`--bwlimit=${Math.max(1, Math.floor(opts.bwlimitKiBps))}`] : []),
    '--contimeout=5',
    '--password-file=-',
    '--',
    src,
    `rsync://vmplace@${host}:${port}/m/${name}`,
  ];
}

/** A one-shot daemon running on the target for one part file (see {@link openDaemon}). */
export interface DaemonChannel {
  readonly part: string;
  readonly address: string;
  readonly port: number;
  /** when `timeout` ends the daemon at the latest (this process's clock, ms) */
  readonly endsAt: number;
  /** push `src` (on the source host, `total` bytes) into the part file; the secret goes on stdin */
  push(
    srcHost: HostExec,
    src: string,
    total: number,
    opts?: { ioTimeoutSec?: number; bwlimitKiBps?: number; signal?: AbortSignal },
  ): Promise<{ literal: number; wire: number }>;
  /** stop the daemon and remove its files (idempotent; never rejects) */
  stop(): Promise<void>;
}

/** Seconds a daemon lives for a copy of `total` bytes: at 10 MB/s, plus a minute; at least 2 minutes. */
export function daemonLifeSec(total: number): number {
  return Math.max(120, Math.ceil(total / 10_000_000) + 60);
}

/**
 * Start a one-shot rsync daemon on `dstHost` for `part`, reached by the source at `address`,
 * for at most `lifeSec` seconds. Rejects `TransferFailed` when it cannot be set up (a path the
 * channel does not take, the port taken, rsync refused): nothing is left running then.
 */
export async function openDaemon(
  dstHost: HostExec,
  part: string,
  opts: { address: string; lifeSec: number },
): Promise<DaemonChannel> {
  const config = daemonConfig(part);
  if (!config) throw new VmplaceError('TransferFailed', `${part}: not a path the tcp channel takes`);
  if (!SAFE_ADDRESS.test(opts.address) || opts.address.startsWith('-'))
    throw new VmplaceError(
      'TransferFailed',
      `${JSON.stringify(opts.address)}: not an address the tcp channel takes`,
    );
  const secret = randomBytes(24).toString('hex');
  const port = randomInt(DAEMON_PORTS.from, DAEMON_PORTS.to);
  const life = Math.max(1, Math.ceil(opts.lifeSec));
  const t0 = Date.now();
  const started = await dstHost.run(
    ['bash', '-c', START_DAEMON_SCRIPT, 'vmplace-rsyncd', part, opts.address, String(port), String(life)],
    { input: `${secret}\n${config}`, allowExitCodes: [2, 3, 4] },
  );
  const pid = started.exitCode === 0 ? /^(\d+)\s*$/.exec(started.stdout)?.[1] : undefined;
  if (!pid)
    throw new VmplaceError(
      'TransferFailed',
      `no rsync daemon for ${part} on ${dstHost.label} at ${opts.address}:${port} (exit ${started.exitCode})`,
    );
  let stopping: Promise<void> | undefined;
  return {
    part,
    address: opts.address,
    port,
    endsAt: t0 + life * 1000,
    async push(srcHost, src, total, o = {}) {
      if (stopping) throw new VmplaceError('TransferFailed', `the rsync daemon for ${part} was stopped`);
      const leftSec = Math.floor((t0 + life * 1000 - Date.now()) / 1000);
      try {
        const r = await srcHost.run(daemonPushArgv(src, part, opts.address, port, o), {
          input: `${secret}\n`,
          timeoutMs: Math.max(1, leftSec) * 1000,
          ...(o.signal ? { signal: o.signal } : {}),
        });
        return sentBytes(r.stdout, total);
      } catch (err) {
        throw new VmplaceError(
          'TransferFailed',
          `rsync ${src} from ${srcHost.label} to the daemon on ${opts.address}:${port} failed`,
          { cause: err },
        );
      }
    },
    stop() {
      stopping ??= dstHost.run(['bash', '-c', STOP_DAEMON_SCRIPT, 'vmplace-rsyncd-stop', pid, part]).then(
        () => undefined,
        () => undefined,
      );
      return stopping;
    },
  };
}

/**
 * Copy `src` on `srcHost` into `part` on `dstHost` (reached by the source at `address`) through
 * a one-shot rsync daemon. Resolves with the file data sent and the bytes on the link; rejects
 * `TransferFailed` when the channel cannot be set up or the copy fails (nothing secret in it).
 */
export async function copyViaDaemon(
  srcHost: HostExec,
  dstHost: HostExec,
  src: string,
  part: string,
  total: number,
  opts: { address: string; ioTimeoutSec?: number; bwlimitKiBps?: number; signal?: AbortSignal },
): Promise<{ literal: number; wire: number }> {
  const ch = await openDaemon(dstHost, part, { address: opts.address, lifeSec: daemonLifeSec(total) });
  try {
    return await ch.push(srcHost, src, total, opts);
  } finally {
    await ch.stop();
  }
}
