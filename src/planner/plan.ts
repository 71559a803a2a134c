/**
 * The pure planner: desired state + actual state + policy -> Plan. Synchronous, no I/O, no
 * clock; the same inputs always give the same plan.
 */
import {
  DEFAULT_POLICY,
  type ActualState,
  type DesiredState,
  type Finding,
  type MigrationKind,
  type Plan,
  type PlanFinding,
  type PlannedMigration,
  type PlanPolicy,
  type Strategy,
  type VirtualMachine,
} from '../types';
import { formatBytes } from './bytes';
import { checkTargetPaths } from './collisions';
import { definedOnFindings } from './defined-on';
import { diffPlacement, type PlacementDiff } from './diff';
import { checkHostStatus, checkPlacement } from './status-checks';
import { orderBySpace, type OrderItem, type OrderOutcome, type SpaceNeed } from './order';
import { describeLocation, Topology, type Location } from './topology';

/** Options that are not policy: identity of the desired state being planned. */
export interface PlanOptions {
  /** git revision of the manifests, copied into the plan */
  revision?: string;
}

/** What one migration asks of one location, kept apart for messages. */
interface LocationDemand {
  location: Location;
  /** allocated bytes of disks copied in */
  disks: number;
  /** saved memory state, needed while the migration runs */
  memory: number;
  margin: number;
  /** room for differencing disks of disks copied out */
  headroom: number;
  /** virtual bytes behind `headroom` */
  headroomVirtual: number;
  /** allocated bytes of disks copied out, freed once done */
  release: number;
}

interface Draft {
  vm: VirtualMachine;
  diff: PlacementDiff;
  kind: MigrationKind;
  strategy: Strategy;
  findings: Finding[];
  demands: Map<string, LocationDemand>;
}

/**
 * Plan the migrations that bring the actual placement to the desired one.
 *
 * Every desired VM lands in exactly one bucket: `suspended` (spec.suspend, never planned),
 * `unknown` (no status or no placement yet), `unchanged`, or one `PlannedMigration`. Each
 * migration carries offline pre-flight findings (space on targets, headroom on sources, CPU
 * compatibility, missing status) and a 1-based `order` such that every unblocked migration
 * fits when run after all earlier ones; blocked migrations come last. Output is sorted by
 * order, the name lists by name.
 *
 * @param policy margins; missing fields take `DEFAULT_POLICY` values
 * @param opts.revision copied to `plan.revision`
 */
export function planMigrations(
  desired: DesiredState,
  actual: ActualState,
  policy: Partial<PlanPolicy> = DEFAULT_POLICY,
  opts: PlanOptions = {},
): Plan {
  const pol: PlanPolicy = { ...DEFAULT_POLICY, ...policy };
  const topology = new Topology(desired, actual);
  const plan: Plan = { migrations: [], unchanged: [], unknown: [], suspended: [] };
  if (opts.revision !== undefined) plan.revision = opts.revision;

  // status is input like any other: checked against the manifests before anything is planned
  const inputFindings: PlanFinding[] = [];
  const hostFindings = new Map<string, Finding[]>();
  for (const name of [...actual.hosts.keys()].sort()) {
    if (!desired.hosts.has(name)) continue;
    const found = checkHostStatus(topology, actual.hosts.get(name)!);
    if (found.length) hostFindings.set(name, found);
  }
  const hostsInMigrations = new Set<string>();

  const drafts: Draft[] = [];
  for (const name of [...desired.vms.keys()].sort()) {
    const vm = desired.vms.get(name)!;
    if (vm.spec.suspend === true) {
      plan.suspended.push(name);
      continue;
    }
    const placement = actual.vms.get(name)?.placement;
    if (placement === undefined) {
      plan.unknown.push(name);
      continue;
    }
    const statusFindings = checkPlacement(topology, desired, placement);
    const diff = diffPlacement(topology, vm, placement);
    if (!diff.changed) {
      plan.unchanged.push(name);
      for (const f of statusFindings) inputFindings.push({ subject: `VirtualMachine/${name}`, ...f });
      continue;
    }
    const draft = draftMigration(topology, vm, diff, placement.memoryBytes, pol);
    draft.findings.unshift(...statusFindings);
    for (const h of new Set([diff.fromHost, diff.toHost])) {
      hostsInMigrations.add(h);
      draft.findings.push(...(hostFindings.get(h) ?? []));
    }
    drafts.push(draft);
  }
  for (const [h, found] of hostFindings) {
    if (hostsInMigrations.has(h)) continue;
    for (const f of found) inputFindings.push({ subject: `Host/${h}`, ...f });
  }
  // Fleet-wide checks, before ordering so that what they block takes no space.
  const toPaths = checkTargetPaths(topology, actual, drafts);
  inputFindings.push(...definedOnFindings(actual, drafts, [...plan.unchanged, ...plan.suspended]));
  if (inputFindings.length) plan.findings = inputFindings;

  // Order everything not already blocked by an error finding.
  const orderable: Draft[] = [];
  const orderItems: OrderItem[] = [];
  const free = new Map<string, number>();
  for (const d of drafts) {
    if (d.findings.some((f) => f.severity === 'error')) continue;
    const needs: SpaceNeed[] = [];
    for (const [key, dem] of d.demands) {
      const f = topology.freeBytes(dem.location);
      if (f === undefined) continue;
      free.set(key, f);
      needs.push({
        key,
        need: dem.disks + dem.memory + dem.margin + dem.headroom,
        consume: dem.disks,
        release: dem.release,
      });
    }
    orderable.push(d);
    orderItems.push({ vm: d.vm.metadata.name, needs });
  }
  const outcomes = orderBySpace(orderItems, free);

  const orderOf = new Map<Draft, number>();
  let lastOrdered = 0;
  orderable.forEach((d, i) => {
    const outcome = outcomes[i]!;
    if (outcome.kind === 'ordered') {
      orderOf.set(d, outcome.position);
      lastOrdered = Math.max(lastOrdered, outcome.position);
    } else {
      d.findings.push(...orderFindings(d, outcome, pol));
    }
  });
  let next = lastOrdered;
  for (const d of drafts) if (!orderOf.has(d)) orderOf.set(d, ++next);

  plan.migrations = drafts
    .map((d) => toPlannedMigration(d, orderOf.get(d)!, toPaths.get(d.vm.metadata.name)))
    .sort((a, b) => a.order - b.order || (a.vm < b.vm ? -1 : a.vm > b.vm ? 1 : 0));
  return plan;
}

function kindOf(topology: Topology, from: string, to: string): MigrationKind {
  if (from === to) return 'same-host';
  const a = topology.clusterOf(from);
  const b = topology.clusterOf(to);
  return a !== undefined && b !== undefined && a !== b ? 'cross-cluster' : 'cross-host';
}

function draftMigration(
  topology: Topology,
  vm: VirtualMachine,
  diff: PlacementDiff,
  memoryBytes: number,
  policy: PlanPolicy,
): Draft {
  const findings: Finding[] = [];
  const strategy: Strategy = vm.spec.strategy ?? 'quick';
  const { fromHost, toHost } = diff;

  for (const host of fromHost === toHost ? [fromHost] : [fromHost, toHost]) {
    if (topology.hostStatus(host) === undefined) {
      findings.push({
        severity: 'warning',
        reason: 'HostStatusUnknown',
        message: `host ${host} has no status yet; space and CPU checks involving it are skipped`,
      });
    }
  }

  if (diff.hostChanged) findings.push(...cpuFindings(topology, fromHost, toHost, strategy));

  const demands = new Map<string, LocationDemand>();
  const demandOn = (location: Location): LocationDemand => {
    let dem = demands.get(location.key);
    if (!dem) {
      dem = { location, disks: 0, memory: 0, margin: 0, headroom: 0, headroomVirtual: 0, release: 0 };
      demands.set(location.key, dem);
    }
    return dem;
  };

  const targets = new Map<string, Location>();
  for (const disk of diff.disks) {
    if (disk.to === undefined) {
      findings.push({
        severity: 'error',
        reason: 'StorageUnresolved',
        message: `disk ${disk.target}: storage ${disk.toName} is not declared on host ${toHost} or its cluster`,
      });
    } else {
      targets.set(disk.to.key, disk.to);
    }
    // a disk in no declared location: checkPlacement reports it (DiskOutsideStorage, an error)
    if (!disk.dataMoves) continue;
    if (disk.to) demandOn(disk.to).disks += disk.allocatedBytes;
    if (disk.from) {
      const dem = demandOn(disk.from);
      dem.headroom += Math.ceil(policy.sourceHeadroomRatio * disk.virtualBytes);
      dem.headroomVirtual += disk.virtualBytes;
      dem.release += disk.allocatedBytes;
    }
  }

  // The saved memory state goes to the VM's main storage on the target host.
  const memoryLocation = topology.resolve(toHost, vm.spec.storage);
  if (memoryLocation && memoryBytes > 0) {
    demandOn(memoryLocation).memory += memoryBytes;
    targets.set(memoryLocation.key, memoryLocation);
  }
  for (const dem of demands.values()) {
    if (dem.disks > 0 || dem.memory > 0) dem.margin = policy.targetMarginBytes;
  }

  if (topology.hostStatus(toHost) !== undefined) {
    for (const loc of targets.values()) {
      if (topology.freeBytes(loc) !== undefined) continue;
      findings.push({
        severity: 'warning',
        reason: 'StorageStatusUnknown',
        message: `no host status reports storage ${describeLocation(loc)}; space checks for it are skipped`,
      });
    }
  }

  return { vm, diff, kind: kindOf(topology, fromHost, toHost), strategy, findings, demands };
}

function cpuFindings(topology: Topology, fromHost: string, toHost: string, strategy: Strategy): Finding[] {
  const a = topology.hostStatus(fromHost)?.cpu;
  const b = topology.hostStatus(toHost)?.cpu;
  if (a === undefined || b === undefined) return [];
  if (a.vendor !== undefined && b.vendor !== undefined && a.vendor !== b.vendor) {
    // A cold move boots the guest afresh, so a different vendor is a risk, not a blocker.
    return [
      {
        severity: strategy === 'cold' ? 'warning' : 'error',
        reason: 'CpuVendorMismatch',
        message: `CPU vendor differs: ${fromHost} has ${a.vendor}, ${toHost} has ${b.vendor}; a running guest cannot move between them`,
      },
    ];
  }
  if (a.model !== undefined && b.model !== undefined && a.model !== b.model) {
    return [
      {
        severity: 'warning',
        reason: 'CpuModelMismatch',
        message: `CPU model differs: ${fromHost} has ${a.model}, ${toHost} has ${b.model}; the guest CPU model must be available on both`,
      },
    ];
  }
  return [];
}

const MAX_NAMES = 10;

function listNames(names: readonly string[]): string {
  if (names.length <= MAX_NAMES) return names.join(', ');
  return `${names.slice(0, MAX_NAMES).join(', ')} and ${names.length - MAX_NAMES} more`;
}

function cycleText(cycle: readonly string[]): string {
  if (cycle.length <= MAX_NAMES + 1) return cycle.join(' -> ');
  return `${cycle.slice(0, MAX_NAMES).join(' -> ')} -> ... (${cycle.length - 1} VMs) -> ${cycle[0]!}`;
}

function orderFindings(
  d: Draft,
  outcome: Exclude<OrderOutcome, { kind: 'ordered' }>,
  policy: PlanPolicy,
): Finding[] {
  const vm = d.vm.metadata.name;
  switch (outcome.kind) {
    case 'insufficient':
      return outcome.shortfalls.map((s) => {
        const dem = d.demands.get(s.key)!;
        const where = describeLocation(dem.location);
        const best = formatBytes(Math.max(0, s.best));
        if (dem.disks > 0 || dem.memory > 0) {
          const parts = [`${formatBytes(dem.disks)} disks`, `${formatBytes(dem.memory)} memory state`];
          parts.push(`${formatBytes(dem.margin)} margin`);
          if (dem.headroom > 0) parts.push(`${formatBytes(dem.headroom)} source headroom`);
          return {
            severity: 'error' as const,
            reason: 'TargetSpaceInsufficient',
            message: `needs ${formatBytes(s.need)} free on ${where} (${parts.join(' + ')}) but at most ${best} will be free after the other planned moves`,
          };
        }
        return {
          severity: 'error' as const,
          reason: 'SourceHeadroomInsufficient',
          message: `needs ${formatBytes(s.need)} free on ${where} for differencing disks (${policy.sourceHeadroomRatio} x ${formatBytes(dem.headroomVirtual)} virtual) but at most ${best} will be free`,
        };
      });
    case 'cycle': {
      const onCycle = outcome.cycle[0] === vm;
      return [
        {
          severity: 'error',
          reason: 'OrderingCycle',
          message: `${onCycle ? '' : `${vm} waits on `}space dependency cycle ${cycleText(outcome.cycle)}: each move needs space that only the next one frees; move one of these VMs elsewhere or add space`,
        },
      ];
    }
    case 'dependency':
      return [
        {
          severity: 'error',
          reason: 'SpaceDependencyBlocked',
          message: `needs space that only blocked moves would free: ${listNames(outcome.waitingOn)}`,
        },
      ];
  }
}

function toPlannedMigration(
  d: Draft,
  order: number,
  toPaths?: ReadonlyMap<string, string>,
): PlannedMigration {
  return {
    vm: d.vm.metadata.name,
    kind: d.kind,
    strategy: d.strategy,
    from: { host: d.diff.fromHost },
    to: { host: d.diff.toHost },
    disks: d.diff.disks.map((disk) => ({
      target: disk.target,
      from: disk.fromName,
      to: disk.toName,
      bytes: disk.bytes,
      ...(toPaths?.has(disk.target) ? { toPath: toPaths.get(disk.target)! } : {}),
    })),
    stateOnly: d.diff.stateOnly,
    blocked: d.findings.some((f) => f.severity === 'error'),
    findings: d.findings,
    order,
  };
}

/**
 * True when the plan would change anything: at least one migration, blocked or not (a blocked
 * migration is still drift). Used for `--detailed-exitcode`.
 */
export function planHasChanges(plan: Plan): boolean {
  return plan.migrations.length > 0;
}
