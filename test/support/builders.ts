/** Small fake-state builders for planner tests: objects of the types in src/types.ts. */
import {
  API_VERSION,
  type ActualState,
  type Cluster,
  type DesiredState,
  type DiskPlacement,
  type DriverName,
  type Host,
  type HostStatus,
  type ManifestObject,
  type SourceRef,
  type Strategy,
  type VirtualMachine,
  type VirtualMachineStatus,
} from '../../src/types';

export const GiB = 1024 ** 3;
export const MiB = 1024 ** 2;

export const SOURCE: SourceRef = { file: 'fleet/test.yaml', line: 1, col: 1 };

/** `{ local: '/var/lib/vm' }` -> storage locations. */
function locations(storage: Record<string, string> | undefined) {
  return storage === undefined ? undefined : Object.entries(storage).map(([name, path]) => ({ name, path }));
}

/** A Host; `driver: 'hyperv'` gives it a Hyper-V URI (its storage paths are then Windows paths). */
export function host(
  name: string,
  opts: { cluster?: string; storage?: Record<string, string>; driver?: DriverName } = {},
): Host {
  const driver = opts.driver ?? 'libvirt';
  return {
    apiVersion: API_VERSION,
    kind: 'Host',
    metadata: { name },
    spec: {
      driver,
      uri: driver === 'hyperv' ? `ssh://${name}` : `qemu+ssh://${name}/system`,
      ...(opts.cluster === undefined ? {} : { cluster: opts.cluster }),
      ...(opts.storage === undefined ? {} : { storage: locations(opts.storage) }),
    },
    source: SOURCE,
  };
}

export function cluster(
  name: string,
  storage: Record<string, string>,
  opts: { driver?: DriverName } = {},
): Cluster {
  return {
    apiVersion: API_VERSION,
    kind: 'Cluster',
    metadata: { name },
    spec: { ...(opts.driver === undefined ? {} : { driver: opts.driver }), storage: locations(storage) },
    source: SOURCE,
  };
}

export function vm(
  name: string,
  hostName: string,
  storage: string,
  opts: { disks?: Record<string, string>; strategy?: Strategy; suspend?: boolean } = {},
): VirtualMachine {
  return {
    apiVersion: API_VERSION,
    kind: 'VirtualMachine',
    metadata: { name },
    spec: {
      host: hostName,
      storage,
      ...(opts.disks === undefined
        ? {}
        : { disks: Object.fromEntries(Object.entries(opts.disks).map(([t, s]) => [t, { storage: s }])) }),
      ...(opts.strategy === undefined ? {} : { strategy: opts.strategy }),
      ...(opts.suspend === undefined ? {} : { suspend: opts.suspend }),
    },
    source: SOURCE,
  };
}

export function disk(
  target: string,
  path: string,
  opts: { storage?: string; allocated?: number; virtual?: number; format?: string } = {},
): DiskPlacement {
  const allocated = opts.allocated ?? 2 * GiB;
  return {
    target,
    path,
    ...(opts.storage === undefined ? {} : { storage: opts.storage }),
    format: opts.format ?? 'qcow2',
    virtualBytes: opts.virtual ?? allocated,
    allocatedBytes: allocated,
  };
}

/** A VM status; without `placement` the VM has not been observed yet. */
export function vmStatus(
  name: string,
  placement?: { host: string; memoryBytes?: number; disks: DiskPlacement[] },
): VirtualMachineStatus {
  return {
    apiVersion: API_VERSION,
    kind: 'VirtualMachineStatus',
    metadata: { name },
    ...(placement === undefined
      ? {}
      : {
          placement: {
            host: placement.host,
            memoryBytes: placement.memoryBytes ?? 0,
            disks: placement.disks,
          },
        }),
    phase: placement === undefined ? 'Unknown' : 'Placed',
    conditions: [],
  };
}

export function hostStatus(
  name: string,
  opts: {
    cpu?: { vendor?: string; model?: string };
    storage: { name: string; path: string; free: number; capacity?: number }[];
  },
): HostStatus {
  return {
    apiVersion: API_VERSION,
    kind: 'HostStatus',
    metadata: { name },
    observedAt: '2025-01-01T00:00:00Z',
    ...(opts.cpu === undefined ? {} : { cpu: opts.cpu }),
    storage: opts.storage.map((s) => ({
      name: s.name,
      path: s.path,
      capacityBytes: s.capacity ?? Math.max(s.free, 1000 * GiB),
      freeBytes: s.free,
    })),
  };
}

export function desiredState(objects: ManifestObject[]): DesiredState {
  const state: DesiredState = {
    hosts: new Map(),
    clusters: new Map(),
    vms: new Map(),
    problems: [],
    invalidFiles: new Set(),
  };
  for (const o of objects) {
    if (o.kind === 'Host') state.hosts.set(o.metadata.name, o);
    else if (o.kind === 'Cluster') state.clusters.set(o.metadata.name, o);
    else state.vms.set(o.metadata.name, o);
  }
  return state;
}

export function actualState(statuses: (VirtualMachineStatus | HostStatus)[]): ActualState {
  const state: ActualState = { vms: new Map(), hosts: new Map() };
  for (const s of statuses) {
    if (s.kind === 'HostStatus') state.hosts.set(s.metadata.name, s);
    else state.vms.set(s.metadata.name, s);
  }
  return state;
}

// ------------------------------------------------------------------ a standard small fleet

export const CPU = { vendor: 'GenuineIntel', model: 'Cascadelake-Server' };
export const LOCAL = '/var/lib/vmplace/local';
export const CSV1 = '/cluster/c1/csv';
export const CSV2 = '/cluster/c2/csv';

export interface FleetOptions {
  /** free bytes per location, keyed `host:storage` (e.g. `hv-a:local`, `hv-a:csv`) */
  free?: Record<string, number>;
  /** hosts that have no HostStatus */
  noStatus?: string[];
  cpu?: Record<string, { vendor?: string; model?: string }>;
}

/**
 * Cluster c1 (hv-a, hv-b; shared `csv`), cluster c2 (hv-c; shared `csv`), standalone hv-s.
 * Every host has local storage `local`. Plenty of free space unless `free` says otherwise.
 */
export function fleet(opts: FleetOptions = {}): { objects: ManifestObject[]; hostStatuses: HostStatus[] } {
  const hosts: [string, string | undefined][] = [
    ['hv-a', 'c1'],
    ['hv-b', 'c1'],
    ['hv-c', 'c2'],
    ['hv-s', undefined],
  ];
  const objects: ManifestObject[] = [cluster('c1', { csv: CSV1 }), cluster('c2', { csv: CSV2 })];
  const hostStatuses: HostStatus[] = [];
  for (const [name, c] of hosts) {
    objects.push(host(name, { ...(c === undefined ? {} : { cluster: c }), storage: { local: LOCAL } }));
    if (opts.noStatus?.includes(name)) continue;
    const storage = [{ name: 'local', path: LOCAL, free: opts.free?.[`${name}:local`] ?? 500 * GiB }];
    if (c !== undefined) {
      storage.push({
        name: 'csv',
        path: c === 'c1' ? CSV1 : CSV2,
        free: opts.free?.[`${name}:csv`] ?? 500 * GiB,
      });
    }
    hostStatuses.push(hostStatus(name, { cpu: opts.cpu?.[name] ?? CPU, storage }));
  }
  return { objects, hostStatuses };
}
