import type { Logger } from 'pino';
import type { HypervisorDriver } from './driver';
import { LibvirtDriver } from './libvirt/driver';
import { parseDomainXml, rewriteDiskPaths } from './libvirt/xml';
import type { DesiredState } from '../types';

export interface DriverSet {
  get: (host: string) => HypervisorDriver | undefined;
  rewriteDiskPaths: (xml: string, paths: Record<string, string>) => string;
  diskPathsOf: (xml: string) => Record<string, string | undefined>;
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
  return {
    get,
    rewriteDiskPaths: (xml, paths) => rewriteDiskPaths(xml, paths),
    diskPathsOf: (xml) => Object.fromEntries(parseDomainXml(xml).disks.map((d) => [d.target, d.path])),
    closeAll: async () => {
      await Promise.all([...cache.values()].map((d) => d.close().catch(() => undefined)));
    },
  };
}
