import type { MigrationContext } from '../machine/types';
import type { Observation, ObservedVm } from '../inventory/observe';
import { FINAL_STEPS } from '../machine/migration-machine';
import {
  API_VERSION,
  type ActualState,
  type Condition,
  type DesiredState,
  type HostStatus,
  type MigrationStatus,
  type MigrationStep,
  type Phase,
  type Plan,
  type PlannedMigration,
  type VirtualMachine,
  type VirtualMachineStatus,
} from '../types';

/** A migration as status sees it: its step and its context. */
export interface MigrationView {
  step: string;
  context: MigrationContext;
}

export interface ComposeInput {
  vm: VirtualMachine;
  observed?: ObservedVm;
  /** the current or last migration of this VM */
  migration?: MigrationView;
  /** the migration ran in this pass: its failure outranks what the plan says now */
  migrationThisPass?: boolean;
  /** the plan's entry for this VM, when a move is still needed */
  planned?: PlannedMigration;
  /** true when the VM's actual placement matches its desired placement */
  atDesired: boolean;
  previous?: VirtualMachineStatus;
  /** every declared host was observed: a VM found on none of them is known to be absent */
  allHostsObserved?: boolean;
  revision?: string;
  now: Date;
}

/** The status block of a migration, from its machine context. */
export function migrationStatus(view: MigrationView): MigrationStatus {
  const c = view.context;
  const firstMove = c.moves[0];
  const out: MigrationStatus = {
    id: c.id,
    strategy: c.strategy,
    from: { host: c.fromHost, ...(firstMove ? { storage: firstMove.fromStorage } : {}) },
    to: { host: c.toHost, ...(firstMove ? { storage: firstMove.toStorage } : {}) },
    step: view.step as MigrationStep,
    ...(c.deltaRounds ? { round: c.rounds ?? 1 } : {}),
    bytesDone: c.bytesDone,
    bytesTotal: c.bytesTotal,
    startedAt: c.startedAt,
    attempts: c.attempts,
  };
  if (c.finishedAt) out.finishedAt = c.finishedAt;
  if (c.pauseMs !== undefined) out.pauseMs = c.pauseMs;
  // reason and message only: kind and retry delay are the reconciler's, not the status file's
  if (c.lastError) out.lastError = { reason: c.lastError.reason, message: c.lastError.message };
  return out;
}

/**
 * One VM's status from what was observed and what its migration did. Conditions keep their
 * `lastTransitionTime` while their status does not change, so that an unchanged world renders
 * byte-identical files (no empty status commits).
 */
export function composeVmStatus(input: ComposeInput): VirtualMachineStatus {
  const { vm, observed, migration, planned, atDesired } = input;
  const name = vm.metadata.name;
  let phase: Phase;
  let placed: Omit<Condition, 'lastTransitionTime'>;
  const step = migration?.step;
  const inFlight = step !== undefined && !FINAL_STEPS.has(step);

  if (!observed?.placement && input.allHostsObserved) {
    // known to be absent: a human has to define it (or fix the manifest's name)
    phase = 'Blocked';
    placed = {
      type: 'Placed',
      status: 'False',
      reason: 'DomainNotFound',
      message: `no declared host has a domain ${name}`,
    };
  } else if (!observed?.placement) {
    phase = 'Unknown';
    placed = {
      type: 'Placed',
      status: 'Unknown',
      reason: 'HostUnreachable',
      message: `${name} was not found, and not every host could be observed`,
    };
  } else if (inFlight) {
    phase = 'Migrating';
    placed = {
      type: 'Placed',
      status: 'False',
      reason: 'Migrating',
      message: `migration ${migration!.context.id} is at ${step}`,
    };
  } else if (atDesired) {
    phase = 'Placed';
    placed = {
      type: 'Placed',
      status: 'True',
      reason: 'AtDesiredPlacement',
      message: 'every disk is where the manifest says',
    };
  } else if (vm.spec.suspend) {
    phase = 'Pending';
    placed = {
      type: 'Placed',
      status: 'False',
      reason: 'Suspended',
      message: 'spec.suspend is true; vmplace does not move it',
    };
  } else if (input.migrationThisPass && (step === 'RolledBack' || step === 'Failed')) {
    phase = 'Failed';
    placed = failedCondition(migration!);
  } else if (planned?.blocked) {
    const f = planned.findings.find((x) => x.severity === 'error');
    phase = 'Blocked';
    placed = {
      type: 'Placed',
      status: 'False',
      reason: f?.reason ?? 'Blocked',
      message: f?.message ?? 'blocked',
    };
  } else if (step === 'Blocked') {
    phase = 'Blocked';
    const e = migration!.context.lastError;
    placed = {
      type: 'Placed',
      status: 'False',
      reason: e?.reason ?? 'Blocked',
      message: e?.message ?? 'blocked',
    };
  } else if (step === 'RolledBack' || step === 'Failed') {
    phase = 'Failed';
    placed = failedCondition(migration!);
  } else {
    phase = 'Pending';
    placed = {
      type: 'Placed',
      status: 'False',
      reason: 'MigrationPlanned',
      message: 'a migration is planned',
    };
  }

  const prevPlaced = input.previous?.conditions.find((c) => c.type === 'Placed');
  const lastTransitionTime =
    prevPlaced && prevPlaced.status === placed.status && prevPlaced.reason === placed.reason
      ? prevPlaced.lastTransitionTime
      : input.now.toISOString();

  const status: VirtualMachineStatus = {
    apiVersion: API_VERSION,
    kind: 'VirtualMachineStatus',
    metadata: { name },
    phase,
    conditions: [{ ...placed, lastTransitionTime }],
  };
  if (input.revision) status.observedRevision = input.revision;
  if (observed?.placement) status.placement = observed.placement;
  if (observed && observed.definedOn.length > 1) status.definedOn = [...observed.definedOn];
  if (migration) status.migration = migrationStatus(migration);
  else if (input.previous?.migration) status.migration = input.previous.migration;
  return status;
}

function failedCondition(m: MigrationView): Omit<Condition, 'lastTransitionTime'> {
  const e = m.context.lastError;
  return {
    type: 'Placed',
    status: 'False',
    reason: e?.reason ?? 'MigrationFailed',
    message: `${m.step === 'RolledBack' ? 'rolled back' : 'failed'}: ${e?.message ?? 'unknown error'}`,
  };
}

/** What the planner is given as actual state: the observed VMs, and hosts (an unreachable one keeps its last status). */
export function toActual(obs: Observation, previous: ActualState): ActualState {
  const vms = new Map<string, VirtualMachineStatus>();
  for (const [name, o] of obs.vms) {
    if (!o.placement) continue;
    vms.set(name, {
      apiVersion: 'vmplace.dev/v1alpha1',
      kind: 'VirtualMachineStatus',
      metadata: { name },
      phase: 'Unknown',
      conditions: [],
      placement: o.placement,
      // a second definition blocks every move of the VM (DefinedOnSeveralHosts)
      ...(o.definedOn.length > 1 ? { definedOn: [...o.definedOn] } : {}),
    });
  }
  // a host that could not be observed keeps its last known status
  const hosts = new Map(obs.hosts);
  for (const [name, h] of previous.hosts)
    if (!hosts.has(name) && obs.unreachable.has(name)) hosts.set(name, h);
  return { vms, hosts };
}

/** The status of every desired VM, by name, from one observation, the plan and the migrations. */
export function composeAll(
  deps: { desired: DesiredState; previous: ActualState; revision?: string },
  obs: Observation,
  plan: Plan,
  views: Map<string, MigrationView>,
  now: Date,
  thisPass: ReadonlySet<string> = new Set(),
): VirtualMachineStatus[] {
  const planned = new Map(plan.migrations.map((m) => [m.vm, m]));
  const unchanged = new Set(plan.unchanged);
  const out: VirtualMachineStatus[] = [];
  for (const [name, vm] of [...deps.desired.vms].sort(([a], [b]) => a.localeCompare(b))) {
    out.push(
      composeVmStatus({
        vm,
        observed: obs.vms.get(name),
        migration: views.get(name),
        migrationThisPass: thisPass.has(name),
        allHostsObserved: obs.unreachable.size === 0,
        planned: planned.get(name),
        atDesired: unchanged.has(name),
        previous: deps.previous.vms.get(name),
        revision: deps.revision,
        now,
      }),
    );
  }
  return out;
}

const PHASES: Phase[] = ['Placed', 'Pending', 'Migrating', 'Blocked', 'Failed', 'Unknown'];

/** How many VMs are in each phase. */
export function countPhases(statuses: VirtualMachineStatus[]): Record<Phase, number> {
  const out = Object.fromEntries(PHASES.map((p) => [p, 0])) as Record<Phase, number>;
  for (const s of statuses) out[s.phase]++;
  return out;
}

/**
 * Host status changes all the time (free bytes move with every guest write, observedAt with
 * every pass). To keep status commits for real changes, a host keeps its committed status
 * while nothing but free bytes moved by less than 1% of capacity, for up to 10 minutes.
 */
export function stabiliseHosts(
  observed: HostStatus[],
  previous: ReadonlyMap<string, HostStatus>,
  now: Date,
  maxAgeMs = 600_000,
): HostStatus[] {
  return observed
    .map((h) => {
      const p = previous.get(h.metadata.name);
      if (!p) return h;
      const age = now.getTime() - Date.parse(p.observedAt);
      if (!(age >= 0 && age < maxAgeMs)) return h;
      if (JSON.stringify(p.cpu ?? {}) !== JSON.stringify(h.cpu ?? {})) return h;
      if (p.storage.length !== h.storage.length) return h;
      const same = h.storage.every((s, i) => {
        const q = p.storage[i]!;
        return (
          q.name === s.name &&
          q.path === s.path &&
          q.capacityBytes === s.capacityBytes &&
          Math.abs(q.freeBytes - s.freeBytes) <= s.capacityBytes / 100
        );
      });
      return same ? p : h;
    })
    .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
}
