/**
 * Scale test: 10,000 VMs over 500 hosts, generated in memory. Checks the plan's shape and that
 * its order really is executable; timing belongs to bench/, not here.
 */
import { planMigrations } from '../../../src/planner/plan';
import type { HostStatus, ManifestObject, Plan, VirtualMachineStatus } from '../../../src/types';
import {
  actualState,
  cluster,
  desiredState,
  disk,
  GiB,
  host,
  hostStatus,
  vm,
  vmStatus,
} from '../../support/builders';

const CLUSTERS = 50;
const HOSTS_PER_CLUSTER = 10;
const VMS_PER_HOST = 20;
const HOSTS = CLUSTERS * HOSTS_PER_CLUSTER;
const DISK = 2 * GiB;
const MARGIN = 1 * GiB;
const RATIO = 0.1;

const hostName = (c: number, h: number) => `hv-${String(c).padStart(2, '0')}-${h}`;
const csvPath = (c: number) => `/cluster/c${c}/csv`;
const LOCAL = '/var/lib/vmplace/local';

type Variant = 'ample' | 'tight';

interface Fleet {
  desired: ReturnType<typeof desiredState>;
  actual: ReturnType<typeof actualState>;
  free: Map<string, number>;
  clusterOf: Map<string, number>;
}

/**
 * Per host, VM j (0..19) by j % 5: 0 unchanged, 1 local -> shared on the same host, 2 shared,
 * moved to the next host of the cluster (state only), 3 local -> local of the same host index
 * in the next cluster, 4 local -> local of the next host in the cluster. Every fifth VM of
 * kind 0 is suspended, every tenth host's first VM has no status.
 */
function buildFleet(variant: Variant): Fleet {
  const objects: ManifestObject[] = [];
  const statuses: (HostStatus | VirtualMachineStatus)[] = [];
  const free = new Map<string, number>();
  const clusterOf = new Map<string, number>();
  const localFree = variant === 'ample' ? 1000 * GiB : 1 * GiB;
  for (let c = 0; c < CLUSTERS; c++) {
    objects.push(cluster(`c${c}`, { csv: csvPath(c) }));
    free.set(`c${c}/csv`, 100_000 * GiB);
    for (let h = 0; h < HOSTS_PER_CLUSTER; h++) {
      const name = hostName(c, h);
      clusterOf.set(name, c);
      objects.push(host(name, { cluster: `c${c}`, storage: { local: LOCAL } }));
      free.set(`${name}/local`, localFree);
      statuses.push(
        hostStatus(name, {
          cpu: { vendor: 'GenuineIntel', model: 'Cascadelake-Server' },
          storage: [
            { name: 'local', path: LOCAL, free: localFree },
            { name: 'csv', path: csvPath(c), free: 100_000 * GiB },
          ],
        }),
      );
      for (let j = 0; j < VMS_PER_HOST; j++) {
        const vmName = `vm-${name}-${String(j).padStart(2, '0')}`;
        const kind = j % 5;
        const onLocal = disk('vda', `${LOCAL}/${vmName}.qcow2`, { allocated: DISK });
        const onCsv = disk('vda', `${csvPath(c)}/${vmName}.qcow2`, { allocated: DISK });
        const nextHost = hostName(c, (h + 1) % HOSTS_PER_CLUSTER);
        const nextCluster = hostName((c + 1) % CLUSTERS, h);
        const [toHost, toStorage, placed] =
          kind === 0
            ? [name, 'local', onLocal]
            : kind === 1
              ? [name, 'csv', onLocal]
              : kind === 2
                ? [nextHost, 'csv', onCsv]
                : kind === 3
                  ? [nextCluster, 'local', onLocal]
                  : [nextHost, 'local', onLocal];
        objects.push(vm(vmName, toHost, toStorage, { suspend: kind === 0 && j % 10 === 5 }));
        if (j === 0 && h === 0) continue;
        statuses.push(vmStatus(vmName, { host: name, disks: [placed] }));
      }
    }
  }
  return { desired: desiredState(objects), actual: actualState(statuses), free, clusterOf };
}

/** Independent replay: every unblocked migration, in order, finds the space it needs. */
function replay(plan: Plan, fleet: Fleet): void {
  const free = new Map(fleet.free);
  const loc = (h: string, storage: string) =>
    storage === 'csv' ? `c${fleet.clusterOf.get(h)!}/csv` : `${h}/${storage}`;
  for (const m of plan.migrations) {
    if (m.blocked) continue;
    const need = new Map<string, number>();
    for (const d of m.disks) {
      if (d.bytes === 0) continue;
      const target = loc(m.to.host, d.to);
      need.set(target, (need.get(target) ?? MARGIN) + d.bytes);
      const source = loc(m.from.host, d.from);
      need.set(source, (need.get(source) ?? 0) + RATIO * d.bytes);
    }
    for (const [key, bytes] of need) {
      if (free.get(key)! < bytes) throw new Error(`${m.vm} (order ${m.order}) does not fit on ${key}`);
    }
    for (const d of m.disks) {
      if (d.bytes === 0) continue;
      const target = loc(m.to.host, d.to);
      const source = loc(m.from.host, d.from);
      free.set(target, free.get(target)! - d.bytes);
      free.set(source, free.get(source)! + d.bytes);
    }
  }
}

describe('scale: 10,000 VMs over 500 hosts (shape, not timing)', () => {
  it.each<Variant>(['ample', 'tight'])('plans a %s fleet correctly', (variant) => {
    const fleet = buildFleet(variant);
    expect(fleet.desired.vms.size).toBe(HOSTS * VMS_PER_HOST);
    const plan = planMigrations(fleet.desired, fleet.actual, {
      targetMarginBytes: MARGIN,
      sourceHeadroomRatio: RATIO,
    });

    // every VM in exactly one bucket
    const all = [...plan.migrations.map((m) => m.vm), ...plan.unchanged, ...plan.unknown, ...plan.suspended];
    expect(all).toHaveLength(10_000);
    expect(new Set(all).size).toBe(10_000);
    expect(plan.unknown).toHaveLength(CLUSTERS);
    expect(plan.suspended).toHaveLength(HOSTS * 2);
    expect(plan.unchanged).toHaveLength(HOSTS * 2 - CLUSTERS);

    // kinds
    const count = (pred: (m: Plan['migrations'][number]) => boolean) => plan.migrations.filter(pred).length;
    expect(plan.migrations).toHaveLength(HOSTS * 16);
    expect(count((m) => m.kind === 'same-host')).toBe(HOSTS * 4);
    expect(count((m) => m.stateOnly)).toBe(HOSTS * 4);
    expect(count((m) => m.stateOnly && m.kind === 'cross-host' && m.disks.every((d) => d.bytes === 0))).toBe(
      HOSTS * 4,
    );
    expect(count((m) => m.kind === 'cross-cluster')).toBe(HOSTS * 4);
    expect(count((m) => m.kind === 'cross-host' && !m.stateOnly)).toBe(HOSTS * 4);

    // orders: a permutation of 1..n, output sorted by it, blocked ones last
    expect(plan.migrations.map((m) => m.order)).toEqual(plan.migrations.map((_, i) => i + 1));
    const firstBlocked = plan.migrations.findIndex((m) => m.blocked);
    if (firstBlocked >= 0) expect(plan.migrations.slice(firstBlocked).every((m) => m.blocked)).toBe(true);
    for (const m of plan.migrations) {
      expect(m.blocked).toBe(m.findings.some((f) => f.severity === 'error'));
    }

    replay(plan, fleet);
    if (variant === 'ample') {
      expect(firstBlocked).toBe(-1);
    } else {
      // 1 GiB free on every local disk: incoming local moves must wait for outgoing ones
      const sameHostFirst = plan.migrations.findIndex((m) => m.kind === 'same-host');
      const firstIncomingLocal = plan.migrations.findIndex((m) => m.kind === 'cross-cluster');
      expect(sameHostFirst).toBeLessThan(firstIncomingLocal);
      expect(count((m) => m.blocked)).toBeLessThan(plan.migrations.length / 10);
    }
  });
});
