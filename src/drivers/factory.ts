import type { Logger } from 'pino';
import type { HypervisorDriver } from './driver';
import { HyperVDriver } from './hyperv/driver';
import { LibvirtDriver } from './libvirt/driver';
import { localTransport, rsyncSshTransport, type Transport, transferSshOf } from '../transfer/transport';
import { windowsLocalTransport, windowsSshTransport } from './hyperv/transport';
import type { DesiredState, HostSpec } from '../types';

export interface DriverSet {
  get: (host: string) => HypervisorDriver | undefined;
  /**
   * The transport between two declared hosts (see transfer/transport.ts): a local copy on one
   * libvirt host, rsync over ssh between two; on one Hyper-V host a local copy, between two
   * `scp.exe` from the source to the target's sshd (drivers/hyperv/transport.ts); undefined for a
   * pair vmplace cannot copy between (hosts of different hypervisors, a host without a transfer
   * address).
   */
  transportFor: (from: string, to: string) => Transport | undefined;
  closeAll: () => Promise<void>;
}

/**
 * One driver per declared host, created on first use: `LibvirtDriver` for `driver: libvirt`,
 * `HyperVDriver` for `driver: hyperv`. A driver may write and delete only inside the host's
 * declared storage (its own and its cluster's). Not in vmplace's state dir: state files go on
 * storage, and the state dir (migration records, the daemon's clone) is the management box's,
 * never a host's to delete in.
 */
export function createDrivers(desired: DesiredState, opts: { stateDir: string; logger: Logger }): DriverSet {
  const cache = new Map<string, HypervisorDriver>();
  const get = (hostName: string): HypervisorDriver | undefined => {
    const cached = cache.get(hostName);
    if (cached) return cached;
    const host = desired.hosts.get(hostName);
    if (!host || (host.spec.driver !== 'libvirt' && host.spec.driver !== 'hyperv')) return undefined;
    const cluster = host.spec.cluster ? desired.clusters.get(host.spec.cluster) : undefined;
    const allowedRoots = [
      ...(host.spec.storage ?? []).map((s) => s.path),
      ...(cluster?.spec.storage ?? []).map((s) => s.path),
    ];
    const logger = opts.logger.child({ host: hostName });
    const drv: HypervisorDriver =
      host.spec.driver === 'hyperv'
        ? new HyperVDriver(hostName, host.spec, { allowedRoots, logger })
        : new LibvirtDriver(hostName, host.spec, { allowedRoots, logger });
    cache.set(hostName, drv);
    return drv;
  };
  const transportFor = (from: string, to: string): Transport | undefined => {
    const a = get(from);
    const b = get(to);
    if (a instanceof HyperVDriver && b instanceof HyperVDriver) {
      if (from === to) return windowsLocalTransport(a);
      const targetSsh = windowsTargetSshOf(desired.hosts.get(to)?.spec);
      return targetSsh ? windowsSshTransport(a, b, targetSsh) : undefined;
    }
    // both POSIX hosts vmplace runs programs on (libvirt)
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

/**
 * How a Hyper-V source host reaches a Hyper-V target's sshd for copies: its transfer address (or
 * its ssh host), its ssh user (none: the source account's own name, never `root`, which Windows
 * does not have) and port (22).
 */
export function windowsTargetSshOf(
  spec: Pick<HostSpec, 'transferAddress' | 'ssh'> | undefined,
): { host: string; user: string; port: number } | undefined {
  const host = spec?.transferAddress ?? spec?.ssh?.host;
  if (!host) return undefined;
  return { host, user: spec?.ssh?.user ?? '', port: spec?.ssh?.port ?? 22 };
}
