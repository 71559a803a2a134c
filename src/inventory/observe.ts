import type { HypervisorDriver } from '../drivers/driver';
import { describeError } from '../errors';
import { Topology } from '../planner/topology';
import type { DesiredState, DiskPlacement, HostStatus, Placement, StorageStatus } from '../types';
import { API_VERSION } from '../types';

/** What observation found for one VM. */
export interface ObservedVm {
  name: string;
  placement?: Placement;
  /** libvirt state on the host that has it */
  domainState?: string;
  /** hosts on which a domain of that name is defined (more than one is a problem) */
  definedOn: string[];
}

export interface Observation {
  hosts: Map<string, HostStatus>;
  vms: Map<string, ObservedVm>;
  /** hosts that could not be observed, with the reason */
  unreachable: Map<string, { reason: string; message: string }>;
}

/**
 * Look at every declared host through its driver: the CPU, the capacity and free bytes of
 * every storage location it reaches (its own and its cluster's), and every declared VM
 * defined there with its disks. A host that fails is reported, never thrown, so one broken
 * host does not hide the others.
 */
export async function observe(
  desired: DesiredState,
  driverFor: (host: string) => HypervisorDriver | undefined,
  now: () => Date = () => new Date(),
): Promise<Observation> {
  const topo = new Topology(desired, { vms: new Map(), hosts: new Map() });
  const hosts = new Map<string, HostStatus>();
  const vms = new Map<string, ObservedVm>();
  const unreachable = new Map<string, { reason: string; message: string }>();

  await Promise.all(
    [...desired.hosts.keys()].sort().map(async (hostName) => {
      const drv = driverFor(hostName);
      if (!drv) {
        unreachable.set(hostName, { reason: 'DriverUnavailable', message: `no driver for host ${hostName}` });
        return;
      }
      // the host's own path rules (Windows on Hyper-V): a path of another style is no file of it
      const rules = topo.rulesOf(hostName);
      try {
        const storage: StorageStatus[] = [];
        for (const loc of topo.locationsOf(hostName)) {
          try {
            const fs = await drv.fsInfo(loc.path);
            storage.push({
              name: loc.name,
              path: loc.path,
              capacityBytes: fs.capacityBytes,
              freeBytes: fs.freeBytes,
            });
          } catch {
            // a location that does not exist yet is reported with no capacity
            storage.push({ name: loc.name, path: loc.path, capacityBytes: 0, freeBytes: 0 });
          }
        }
        const cpu = await drv.hostCpu().catch(() => ({}));
        hosts.set(hostName, {
          apiVersion: API_VERSION,
          kind: 'HostStatus',
          metadata: { name: hostName },
          observedAt: now().toISOString(),
          cpu,
          storage,
        });
        const domains = new Set(await drv.listDomains());
        for (const vmName of desired.vms.keys()) {
          if (!domains.has(vmName)) continue;
          const dom = await drv.getDomain(vmName);
          if (!dom) continue;
          const disks: DiskPlacement[] = [];
          for (const d of dom.disks) {
            // cdroms and floppies are media, not the VM's storage
            if (d.device !== 'disk' && d.device !== 'lun') continue;
            // A block device (or LUN) is recorded by its device path, outside every storage
            // location: a plan that wants it elsewhere meets the DiskNotFile pre-flight finding.
            // Network disks have no path on the host and are not placed anywhere.
            const path = d.type === 'file' ? (d.path ?? '') : d.type === 'block' ? (d.sourceDev ?? '') : '';
            if (!rules.isAbsolute(path)) continue;
            const placed: DiskPlacement = {
              target: d.target,
              path,
              format: d.format ?? (d.type === 'file' ? 'raw' : d.type),
              virtualBytes: 0,
              allocatedBytes: 0,
            };
            const loc = path ? topo.locate(hostName, path) : undefined;
            if (loc) placed.storage = loc.name;
            if (d.type === 'file' && path) {
              try {
                const info = await drv.imageInfo(path, { forceShare: true, format: placed.format });
                placed.virtualBytes = info.virtualBytes;
                placed.allocatedBytes = info.allocatedBytes;
              } catch {
                // missing or unreadable image: keep what the definition says
              }
            }
            disks.push(placed);
          }
          const seen = vms.get(vmName);
          const entry: ObservedVm = {
            name: vmName,
            placement: {
              host: hostName,
              memoryBytes: dom.memoryBytes,
              running: dom.state === 'running',
              disks,
            },
            domainState: dom.state,
            definedOn: [...(seen?.definedOn ?? []), hostName].sort(),
          };
          // A VM defined on two hosts: the running one is where it is.
          if (!seen || (seen.domainState !== 'running' && dom.state === 'running')) vms.set(vmName, entry);
          else seen.definedOn = entry.definedOn;
        }
      } catch (err) {
        unreachable.set(hostName, describeError(err));
      }
    }),
  );
  return { hosts, vms, unreachable };
}
