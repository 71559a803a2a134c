import type { MigrationContext } from '../machine/types';
import type { ObservedVm } from '../inventory/observe';
import { FINAL_STEPS } from '../machine/migration-machine';
import {
  API_VERSION,
  type Condition,
  type MigrationStatus,
  type MigrationStep,
  type Phase,
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
  if (c.lastError) out.lastError = c.lastError;
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
