/**
 * How a migration's files travel: one transport per host pair, chosen by the composition root
 * (drivers/factory.ts) from what the two hosts are. The machine asks for the transport of its
 * pair and never for how it works; a pair with none (a libvirt host and a Hyper-V host) is
 * Blocked in Preflight.
 *
 * Today: on one POSIX host, a local sparse copy (copy-local.ts); between two POSIX hosts, rsync
 * over ssh host to host, or relayed through the management box when the source cannot reach
 * the target (between-hosts.ts). Every copy is verified by sha256 on both ends and renamed into
 * place only then, under a claim of ownership when one is given.
 */
import type { HostExec, ProgressFn } from '../exec/types';
import type { SshSpec } from '../types';
import { copyBetweenHosts, targetReachable } from './between-hosts';
import { type CopyClaim, copyLocal } from './copy-local';

export interface TransportCopyOptions {
  onProgress?: ProgressFn;
  bwlimitKiBps?: number;
  claim?: CopyClaim;
  signal?: AbortSignal;
  /** how data goes between hosts: host to host, or relayed (default: direct when reachable) */
  mode?: 'direct' | 'relay' | 'auto';
  /** files up to this size go through the management box's open connections */
  relayBelowBytes?: number;
  /**
   * Awaited before every command the copy runs on a host (several daemon replicas: it waits
   * while the replica's lease is unproven and rejects once its lock is lost)
   */
  fence?: () => Promise<void>;
  /** between two hosts, `tcp`: unencrypted through a one-shot rsync daemon (rsync-daemon.ts) */
  channel?: 'ssh' | 'tcp';
  /**
   * The source is still being written (a memory state being saved): the copy prepares the
   * target at once and reads the source only once this resolves (rejects with its reason)
   */
  sourceReady?: Promise<unknown>;
  /**
   * With `sourceReady`: the source is written from its start while `sourceReady` is pending and
   * may be read meanwhile; a transport may send it as it grows (between-hosts: stream-growing.ts)
   */
  sourceGrows?: boolean;
}

/**
 * `exec` whose every command first passes `before` (the same object otherwise: a proxy, so
 * what the copies ask of it, such as whether it is an ssh host, still holds).
 */
export function guardedExec(exec: HostExec, before: (() => Promise<void>) | undefined): HostExec {
  if (!before) return exec;
  return new Proxy(exec, {
    get(target, prop, receiver) {
      const v: unknown = Reflect.get(target, prop, receiver);
      if (prop === 'run') {
        const run = target.run.bind(target);
        return async (...args: Parameters<HostExec['run']>) => {
          await before();
          return run(...args);
        };
      }
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

export interface Transport {
  /** `local` (one host), `rsync+ssh` (two POSIX hosts) */
  readonly name: string;
  /** can the source host reach the target host directly? (always true on one host) */
  reachable(): Promise<boolean>;
  /** copy `src` (on the source host) to `dst` (on the target host), verified; resumable where it can */
  copy(src: string, dst: string, opts?: TransportCopyOptions): Promise<TransportCopyResult>;
}

export interface TransportCopyResult {
  mode: 'local' | 'direct' | 'relay';
  /**
   * sha256 (hex, as `HypervisorDriver.checksum` gives it) of the content now at `dst`, when the
   * copy proved it by hashing the source as it was read and the target before the rename; a
   * caller that needs the digest uses it instead of reading both files again. Absent when the
   * copy was proven another way (a byte comparison) or not hashed.
   */
  sha256?: string;
  /** between two hosts: `tcp` when the data went through the rsync daemon, else `ssh` */
  channel?: 'ssh' | 'tcp';
  /** why `channel: 'tcp'` was asked for and not taken */
  channelFallback?: string;
  /** the data crossed while the source was being written (`sourceGrows`) */
  streamed?: boolean;
  /** why `sourceGrows` was given and the usual copy ran */
  streamFallback?: string;
}

/** One POSIX host: a sparse local copy, verified, renamed into place. */
export function localTransport(exec: HostExec, guard: (p: string) => Promise<void>): Transport {
  return {
    name: 'local',
    reachable: () => Promise.resolve(true),
    async copy(src, dst, opts = {}) {
      await Promise.all([guard(dst), opts.sourceReady]);
      const r = await copyLocal(guardedExec(exec, opts.fence), src, dst, {
        ...(opts.claim ? { claim: opts.claim } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
        ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
        ...(opts.bwlimitKiBps ? { bwlimitKiBps: opts.bwlimitKiBps } : {}),
      });
      return r.sha256 ? { mode: 'local', sha256: r.sha256 } : { mode: 'local' };
    },
  };
}

/**
 * Two POSIX hosts: rsync over ssh from the source to the target's transfer address (`targetSsh`:
 * address, user, port as the source host reaches it), or relayed through the management box.
 */
export function rsyncSshTransport(
  srcExec: HostExec,
  dstExec: HostExec,
  targetSsh: SshSpec,
  guard: (p: string) => Promise<void>,
): Transport {
  return {
    name: 'rsync+ssh',
    reachable: () => targetReachable(srcExec, targetSsh),
    async copy(src, dst, opts = {}) {
      const r = await copyBetweenHosts(
        guardedExec(srcExec, opts.fence),
        guardedExec(dstExec, opts.fence),
        src,
        dst,
        {
          ...(opts.claim ? { claim: opts.claim } : {}),
          ...(opts.signal ? { signal: opts.signal } : {}),
          guard: () => guard(dst),
          targetSsh,
          mode: opts.mode ?? 'auto',
          ...(opts.channel ? { channel: opts.channel } : {}),
          ...(opts.sourceReady ? { sourceReady: opts.sourceReady } : {}),
          ...(opts.sourceGrows ? { sourceGrows: true } : {}),
          ...(opts.relayBelowBytes ? { relayBelowBytes: opts.relayBelowBytes } : {}),
          ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
          ...(opts.bwlimitKiBps ? { bwlimitKiBps: opts.bwlimitKiBps } : {}),
        },
      );
      return {
        mode: r.mode,
        ...(r.sha256 ? { sha256: r.sha256 } : {}),
        ...(r.channel ? { channel: r.channel } : {}),
        ...(r.channelFallback !== undefined ? { channelFallback: r.channelFallback } : {}),
        ...(r.streamed ? { streamed: true } : {}),
        ...(r.streamFallback !== undefined ? { streamFallback: r.streamFallback } : {}),
      };
    },
  };
}

/**
 * How a source host reaches `host` for copies and migration streams: the target's transfer
 * address (or its ssh host), with the user and port of its ssh spec; the source host's own ssh
 * identity is used. Undefined when the host declares neither address.
 */
export function transferSshOf(
  spec: { transferAddress?: string; ssh?: SshSpec } | undefined,
): SshSpec | undefined {
  const address = spec?.transferAddress ?? spec?.ssh?.host;
  if (!address) return undefined;
  return {
    host: address,
    user: spec?.ssh?.user ?? 'root',
    ...(spec?.ssh?.port ? { port: spec.ssh.port } : {}),
  };
}
