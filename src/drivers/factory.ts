import type { Logger } from 'pino';
import type { HypervisorDriver } from './driver';
import { LibvirtDriver } from './libvirt/driver';
import { localTransport, rsyncSshTransport, type Transport, transferSshOf } from '../transfer/transport';
import type { DesiredState } from '../types';

export interface DriverSet {
  get: (host: string) => HypervisorDriver | undefined;
  /**
   * The transport between two declared hosts (see transfer/transport.ts): a local copy on one
   * libvirt host, rsync over ssh between two; undefined for a pair vmplace cannot copy between
   * (hosts of different hypervisors, a host without a transfer address).
   */
  transportFor: (from: string, to: string) => Transport | undefined;
  closeAll: () => Promise<void>;
}

/**
 * One driver per declared host, created on first use. A driver may write and delete only
 * inside the host's declared storage (its own and its cluster's). Not in vmplace's state dir:
 * state files go on storage, and the state dir (migration records, the daemon's clone) is the
 * management box's, never a host's to delete in.
 */
export function createDrivers(desired: DesiredState, opts: { stateDir: string; logger: Logger }): DriverSet {
  const cache = new Map<string, HypervisorDriver>();
  const get = (hostName: string): HypervisorDriver | undefined => {
    const cached = cache.get(hostName);
    if (cached) return cached;
    const host = desired.hosts.get(hostName);
    if (!host || host.spec.driver !== 'libvirt') return undefined;
    const cluster = host.spec.cluster ? desired.clusters.get(host.spec.cluster) : undefined;
    const allowedRoots = [
      ...(host.spec.storage ?? []).map((s) => s.path),
      ...(cluster?.spec.storage ?? []).map((s) => s.path),
    ];
    const drv = new LibvirtDriver(hostName, host.spec, {
      allowedRoots,
      logger: opts.logger.child({ host: hostName }),
    });
    cache.set(hostName, drv);
    return drv;
  };
  const transportFor = (from: string, to: string): Transport | undefined => {
    const a = get(from);
    const b = get(to);
    // both POSIX hosts vmplace runs programs on (libvirt today)
    if (!(a instanceof LibvirtDriver) || !(b instanceof LibvirtDriver)) return undefined;
    if (from === to) return localTransport(a.exec, (p) => a.guardPath(p));
    const targetSsh = transferSshOf(desired.hosts.get(to)?.spec);
    if (!targetSsh) return undefined;
    return rsyncSshTransport(a.exec, b.exec, targetSsh, (p) => b.guardPath(p));
  };
  return {
    get,
    transportFor,
    closeAll: async () => {
      await Promise.all([...cache.values()].map((d) => d.close().catch(() => undefined)));
    },
  };
}
