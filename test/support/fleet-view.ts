/**
 * A synthetic fleet for the fleet page's tests: `n` VMs over hosts of two local locations each
 * and one cluster location, some migrating, one blocked, one failed. Statuses only (no hypervisor).
 */
import type { HostStatus, VirtualMachineStatus } from '../../src/types';
import { buildFleetView, type FleetView } from '../../src/ui/view';

const GiB = 1024 ** 3;

export function syntheticStatuses(
  n: number,
  hostsCount = Math.max(2, Math.ceil(n / 25)),
): { vms: VirtualMachineStatus[]; hosts: HostStatus[] } {
  const hosts: HostStatus[] = [];
  for (let h = 0; h < hostsCount; h++)
    hosts.push({
      apiVersion: 'vmplace.dev/v1alpha1',
      kind: 'HostStatus',
      metadata: { name: `host-${String(h).padStart(2, '0')}` },
      observedAt: '2025-01-01T00:00:00.000Z',
      storage: [
        { name: 'ssd', path: `/srv/ssd`, capacityBytes: 2000 * GiB, freeBytes: (800 + h) * GiB },
        { name: 'hdd', path: `/srv/hdd`, capacityBytes: 8000 * GiB, freeBytes: 5000 * GiB },
        { name: 'san', path: `/mnt/san`, capacityBytes: 20000 * GiB, freeBytes: 9000 * GiB },
      ],
    });
  const vms: VirtualMachineStatus[] = [];
  for (let i = 0; i < n; i++) {
    const host = hosts[i % hostsCount]!.metadata.name;
    const storage = ['ssd', 'hdd', 'san'][i % 3]!;
    const s: VirtualMachineStatus = {
      apiVersion: 'vmplace.dev/v1alpha1',
      kind: 'VirtualMachineStatus',
      metadata: { name: `vm-${String(i).padStart(3, '0')}` },
      observedRevision: 'a'.repeat(40),
      placement: {
        host,
        memoryBytes: 2 * GiB,
        running: true,
        disks: [
          {
            target: 'vda',
            path: `/srv/${storage}/vm-${i}/vda.qcow2`,
            storage,
            format: 'qcow2',
            virtualBytes: 40 * GiB,
            allocatedBytes: (5 + (i % 7)) * GiB,
          },
        ],
      },
      phase: 'Placed',
      conditions: [
        {
          type: 'Placed',
          status: 'True',
          reason: 'AtDesiredPlacement',
          message: 'placed as desired',
          lastTransitionTime: '2025-01-01T00:00:00.000Z',
        },
      ],
    };
    if (i % 20 === 5) {
      s.phase = 'Migrating';
      s.migration = {
        id: `m-${i}`,
        strategy: 'quick',
        from: { host, storage },
        to: { host, storage: storage === 'ssd' ? 'hdd' : 'ssd' },
        step: 'CopyingBase',
        bytesDone: (i % 10) * GiB,
        bytesTotal: 12 * GiB,
        startedAt: '2025-01-01T00:00:00.000Z',
        attempts: 1,
      };
    }
    if (i === 7) {
      s.phase = 'Blocked';
      s.conditions = [
        {
          type: 'Placed',
          status: 'False',
          reason: 'TargetSpaceInsufficient',
          message: 'storage hdd on host-07 has 1 GiB free, 12 GiB needed',
          lastTransitionTime: '2025-01-01T00:00:00.000Z',
        },
      ];
    }
    if (i === 8) {
      s.phase = 'Failed';
      s.migration = {
        id: 'm-8',
        strategy: 'quick',
        from: { host, storage },
        to: { host, storage: 'hdd' },
        step: 'Failed',
        bytesDone: 0,
        bytesTotal: GiB,
        attempts: 3,
        lastError: { reason: 'ChecksumMismatch', message: 'copy differs' },
      };
    }
    vms.push(s);
  }
  return { vms, hosts };
}

/** The page's view of {@link syntheticStatuses}. */
export function syntheticView(n: number, now = new Date('2025-01-01T00:01:00Z')): FleetView {
  const { vms, hosts } = syntheticStatuses(n);
  return buildFleetView({
    now,
    vms,
    hosts,
    recent: [
      {
        vm: 'vm-001',
        id: 'm-old',
        result: 'Completed',
        strategy: 'quick',
        from: { host: 'host-01', storage: 'ssd' },
        to: { host: 'host-01', storage: 'hdd' },
        bytes: 5 * GiB,
        pauseMs: 640,
        finishedAt: '2025-01-01T00:00:30.000Z',
      },
    ],
    daemon: {
      revision: 'b'.repeat(40),
      manifestRevision: 'a'.repeat(40),
      lastSyncAt: '2025-01-01T00:00:58.000Z',
      suspended: false,
      outsideWindow: false,
      windows: 0,
      ready: true,
    },
  });
}
