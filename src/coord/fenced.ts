import type { HypervisorDriver } from '../drivers/driver';
import { passFence, type Fence } from '../machine/fence';
import type { Transport } from '../transfer/transport';

/**
 * The driver methods that only read: everything else changes a host (a snapshot, a save, a
 * restore, a define, a removal, a block job, a new file) and is checked against the run's fence
 * right before it starts. A method missing from this list is fenced: a new method of the
 * contract is a side effect until someone decides it is not.
 */
export const READ_ONLY_DRIVER_METHODS: ReadonlySet<string> = new Set([
  'ownFile',
  'diskPathsOf',
  'withDiskPaths',
  'listDomains',
  'getDomain',
  'domainState',
  'imageInfo',
  'probeFormat',
  'fsInfo',
  'storageLocations',
  'hostCpu',
  'fileExists',
  'fileSize',
  'canRun',
  'checkImage',
  'waitForSaveJob',
  'waitForMigrationJob',
  'guestRunTime',
  'holdsSavedState',
  'savedDefinition',
  'definition',
  'guardPath',
  'checksum',
  'fileIdentity',
  'filesInUse',
  'close',
]);

/**
 * The driver as one migration run sees it: every method with a side effect checks `fence`
 * synchronously before it starts, so a replica that lost its lock (or whose lease may have
 * expired, e.g. after the process was stopped for longer than the lease) starts nothing on a
 * host, even in the middle of a step, even before its own timers noticed.
 */
export function fencedDriver(driver: HypervisorDriver, fence: Fence): HypervisorDriver {
  const wrapped = new Map<PropertyKey, unknown>();
  return new Proxy(driver, {
    get(target, prop, receiver) {
      const value: unknown = Reflect.get(target, prop, receiver);
      if (typeof value !== 'function' || typeof prop !== 'string' || READ_ONLY_DRIVER_METHODS.has(prop))
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      let w = wrapped.get(prop);
      if (!w) {
        const fn = value as (...a: unknown[]) => unknown;
        w = async (...args: unknown[]): Promise<unknown> => {
          await passFence(fence);
          return fn.apply(target, args);
        };
        wrapped.set(prop, w);
      }
      return w;
    },
  });
}

/**
 * The transport as one migration run sees it: a copy passes `fence` before it starts, and the
 * copy passes it again before every command it runs on a host (the sync, the checksums, the
 * removal of its part file, the rename), so a copy that outlived its lock changes nothing more.
 */
export function fencedTransport(t: Transport, fence: Fence): Transport {
  return {
    name: t.name,
    reachable: () => t.reachable(),
    copy: async (src, dst, opts = {}) => {
      await passFence(fence);
      return t.copy(src, dst, { ...opts, fence: () => passFence(fence) });
    },
  };
}
