/**
 * An ssh connection from the source host to the target opened before a copy needs it, for a
 * copy whose source is still being written (`sourceReady`: the memory state being saved inside
 * the VM's pause). rsync's own ssh then runs over it (`ControlPath`, `ControlMaster=no`) instead
 * of opening a connection after the save: measured by hand between the lab hosts (83 MB, ssh
 * AES-GCM), 590-744 ms with a new connection against 396-476 ms over one already open; a new
 * host-to-host ssh connection alone took 210-250 ms (bench/NOTES.md, 2026-12-03).
 *
 * The master is `ssh -M -N -f` on the source host, with the copy's own options (keys, known
 * hosts, host keys checked), its socket next to the source file (a declared storage location)
 * under a random name, mode 0600 (ssh's own), removed by `-O exit` and by `rm` after it. It also
 * ends by itself `lifeSec` after its last client (`ControlPersist`): a management box that died
 * mid-copy leaves no connection behind for long. Anything that fails here only means no master:
 * the copy's ssh connects as it always did (it does so too when the socket is gone).
 */
import { randomBytes } from 'node:crypto';
import { posix } from 'node:path';

import type { HostExec } from '../exec/types';
import type { SshSpec } from '../types';
import { COPY_CIPHERS, hopSshOptions } from './rsync-direct';

export interface HopMaster {
  /** the control socket on the source host */
  readonly path: string;
  /** close the connection and remove the socket (never rejects) */
  stop(): Promise<void>;
}

/** Longest socket path used: a Unix socket's name holds 108 bytes on Linux, 104 elsewhere. */
const MAX_SOCKET_PATH = 100;

/** `$1` socket, then ssh's options, `--`, the target: start the master, its output discarded. */
const START_MASTER_SCRIPT =
  'sock=$1; shift; exec ssh -M -N -f -o ControlPath="$sock" "$@" </dev/null >/dev/null 2>&1';

/** `$1` socket, `$2` target: ask the master to exit, then remove the socket if it is still there. */
const STOP_MASTER_SCRIPT =
  'ssh -F /dev/null -o ControlPath="$1" -O exit -- "$2" </dev/null >/dev/null 2>&1; rm -f -- "$1"';

/** The socket's path next to `src`, or undefined when it would be too long or need quoting. */
export function masterSocketPath(src: string, token = randomBytes(6).toString('hex')): string | undefined {
  const p = posix.join(posix.dirname(src), `.vmplace-ssh-${token}`);
  // ssh expands % tokens in ControlPath, rsync splits its -e value (no quote allowed there)
  return p.length <= MAX_SOCKET_PATH && /^[A-Za-z0-9._/+-]+$/.test(p) ? p : undefined;
}

/**
 * Open the master on `srcHost` towards `target`; resolves once it is authenticated (`-f`), or
 * with undefined when it could not be opened.
 */
export async function openHopMaster(
  srcHost: HostExec,
  src: string,
  target: SshSpec,
  lifeSec: number,
): Promise<HopMaster | undefined> {
  const path = masterSocketPath(src);
  if (!path) return undefined;
  let stopping: Promise<void> | undefined;
  // once: the copy stops it beside its finish, and again on its way out
  const stop = (): Promise<void> =>
    (stopping ??= srcHost
      .run(['sh', '-c', STOP_MASTER_SCRIPT, 'vmplace-ssh-stop', path, target.host], { timeoutMs: 30_000 })
      .then(
        () => undefined,
        () => undefined,
      ));
  try {
    const r = await srcHost.run(
      [
        'sh',
        '-c',
        START_MASTER_SCRIPT,
        'vmplace-ssh-master',
        path,
        ...hopSshOptions(target),
        '-o',
        `Ciphers=${COPY_CIPHERS}`,
        '-o',
        `ControlPersist=${Math.max(1, Math.floor(lifeSec))}`,
        '--',
        target.host,
      ],
      { allowExitCodes: [255], timeoutMs: 60_000 },
    );
    if (r.exitCode !== 0) {
      await stop();
      return undefined;
    }
  } catch {
    await stop();
    return undefined;
  }
  return { path, stop };
}
