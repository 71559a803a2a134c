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
import { capabilitiesOf, quickSupported } from '../drivers/capabilities';
import { formatBytes } from './bytes';
import { executedStrategy, type SpaceDisk, spaceNeeds } from './space';
import { checkTargetPaths } from './collisions';
import { definedOnFindings } from './defined-on';
import { diffPlacement, type PlacementDiff } from './diff';
import { checkHostStatus, checkPlacement } from './status-checks';
import { orderBySpace, type OrderItem, type OrderOutcome, type SpaceNeed } from './order';
import { describeLocation, Topology, type Location } from './topology';
import { cpuFindings } from './cpu';
import { cycleText, listNames } from './names';

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
  /** the differencing disks copied in with them (quick; estimated by the headroom ratio) */
  overlays: number;
  /** the migration writes here as its target (else only as its source) */
  target: boolean;
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
    const draft = draftMigration(topology, vm, diff, placement.memoryBytes, pol, placement.running);
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
        need: dem.disks + dem.overlays + dem.memory + dem.margin + dem.headroom,
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
  running?: boolean,
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

  if (diff.hostChanged) {
    findings.push(...hypervisorFindings(topology, fromHost, toHost));
    findings.push(...cpuFindings(topology, fromHost, toHost, strategy));
  }
  // what runs (a shut-off VM moves cold): the strategy checks and the space model below
  const executed = executedStrategy(vm.spec.strategy, running);
  findings.push(...strategyFindings(topology, vm, fromHost, executed, diff.hostChanged));

  const demands = new Map<string, LocationDemand>();
  const demandOn = (location: Location): LocationDemand => {
    let dem = demands.get(location.key);
    if (!dem) {
      dem = {
        location,
        target: false,
        disks: 0,
        overlays: 0,
        memory: 0,
        margin: 0,
        headroom: 0,
        headroomVirtual: 0,
        release: 0,
      };
      demands.set(location.key, dem);
    }
    return dem;
  };

  const targets = new Map<string, Location>();
  const locations = new Map<string, Location>();
  const moving: SpaceDisk[] = [];
  const released = new Map<string, number>();
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
    if (!disk.dataMoves || !disk.to || !disk.from) continue;
    locations.set(disk.to.key, disk.to);
    locations.set(disk.from.key, disk.from);
    moving.push({
      from: disk.from.key,
      to: disk.to.key,
      virtualBytes: disk.virtualBytes,
      allocatedBytes: disk.allocatedBytes,
    });
    released.set(disk.from.key, (released.get(disk.from.key) ?? 0) + disk.allocatedBytes);
  }

  // The one space model Preflight uses too (space.ts). The memory state (quick only) is saved
  // on storage both hosts share when there is one, else beside the first target disk, and
  // across hosts without shared storage first beside the first source disk.
  const first = diff.disks.find((d) => d.to !== undefined);
  const shared = diff.hostChanged ? sharedLocation(topology, fromHost, toHost) : undefined;
  const stateAt = shared ?? first?.to;
  if (stateAt) locations.set(stateAt.key, stateAt);
  const firstMoving = moving[0];
  const needs = spaceNeeds({
    strategy: executed,
    disks: moving,
    memoryBytes,
    ...(stateAt && moving.length + (diff.hostChanged ? 1 : 0) > 0 ? { stateAt: stateAt.key } : {}),
    ...(diff.hostChanged && !shared && firstMoving ? { stateFirstAt: firstMoving.from } : {}),
    marginBytes: policy.targetMarginBytes,
    headroomRatio: policy.sourceHeadroomRatio,
  });
  for (const [key, n] of needs.target) {
    const dem = demandOn(locations.get(key)!);
    dem.target = true;
    dem.disks += n.disks;
    dem.overlays += n.overlays;
    dem.memory += n.memory;
    dem.margin = n.margin;
    targets.set(key, locations.get(key)!);
  }
  for (const [key, n] of needs.source) {
    const dem = demandOn(locations.get(key)!);
    dem.headroom += n.headroom;
    dem.headroomVirtual += n.headroomVirtual;
    dem.memory += n.memory;
  }
  for (const [key, bytes] of released) demandOn(locations.get(key)!).release += bytes;

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

/**
 * A move between hosts of two hypervisors (a libvirt host and a Hyper-V host) is blocked, as
 * Preflight would block it (`MixedHypervisors`): disk formats, definitions and paths differ.
 * Hosts no manifest declares are left to the status checks.
 */
function hypervisorFindings(topology: Topology, fromHost: string, toHost: string): Finding[] {
  const from = topology.driverOf(fromHost);
  const to = topology.driverOf(toHost);
  if (from === undefined || to === undefined || from === to) return [];
  return [
    {
      severity: 'error',
      reason: 'MixedHypervisors',
      message: `${fromHost} runs ${from} and ${toHost} runs ${to}; vmplace moves VMs only between hosts of one hypervisor`,
    },
  ];
}

/**
 * A strategy the hosts' driver cannot run, as Preflight would refuse it (`StrategyUnsupported`):
 * quick of a running VM where the driver has no quick storage migration, or none within one host
 * (Hyper-V), a cold move to another host where the driver cannot define a VM there. A host no manifest declares is
 * left to Preflight.
 */
function strategyFindings(
  topology: Topology,
  vm: VirtualMachine,
  fromHost: string,
  executed: 'quick' | 'live' | 'cold',
  hostChanged: boolean,
): Finding[] {
  if (!topology.declares(fromHost)) return [];
  const caps = capabilitiesOf(topology.driverOf(fromHost));
  if (!caps) return [];
  const name = vm.metadata.name;
  if (executed === 'quick' && !caps.quickStorageMigration)
    return [
      {
        severity: 'error',
        reason: 'StrategyUnsupported',
        message: `${name}: strategy ${vm.spec.strategy ?? 'quick (the default)'} needs quick storage migration, which the ${caps.family} driver does not have; set strategy: auto (or live) to move it live`,
      },
    ];
  if (executed === 'quick' && !quickSupported(caps, hostChanged))
    return [
      {
        severity: 'error',
        reason: 'StrategyUnsupported',
        message: `${name}: strategy ${vm.spec.strategy ?? 'quick (the default)'} within one host needs quick storage migration within a host, which the ${caps.family} driver does not have (it restores a saved VM only on another host); set strategy: auto (or live) to move it live`,
      },
    ];
  if (executed === 'cold' && hostChanged && !caps.defineOnOtherHost)
    return [
      {
        severity: 'error',
        reason: 'StrategyUnsupported',
        message: `${name}: a cold move to another host needs the VM defined there, which the ${caps.family} driver does not do yet; move it running (strategy: auto or live) or within its host`,
      },
    ];
  return [];
}

/** A cluster location both hosts reach (where a cross-host quick move saves the memory state). */
function sharedLocation(topology: Topology, fromHost: string, toHost: string): Location | undefined {
  const there = new Set(topology.locationsOf(toHost).map((l) => l.key));
  return topology.locationsOf(fromHost).find((l) => l.scope === 'cluster' && there.has(l.key));
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
        if (dem.target) {
          const parts = [`${formatBytes(dem.disks)} disks`];
          if (dem.overlays > 0) parts.push(`${formatBytes(dem.overlays)} differencing disks`);
          parts.push(`${formatBytes(dem.memory)} memory state`);
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
          message: `needs ${formatBytes(s.need)} free on ${where} for differencing disks (${policy.sourceHeadroomRatio} x ${formatBytes(dem.headroomVirtual)} virtual)${dem.memory > 0 ? ` and the memory state saved there first (${formatBytes(dem.memory)})` : ''} but at most ${best} will be free`,
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
