import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { HypervisorDriver } from '../drivers/driver';
import { describeError } from '../errors';
import { observe, type Observation } from '../inventory/observe';
import { NEEDS_HUMAN_REASONS } from '../machine/migration-machine';
import { startMigration, type MigrationHandle, type RunResult, type StepActors } from '../machine/runner';
import { createStepActors, type StepDeps } from '../machine/steps';
import type { MigrationStore } from '../machine/store';
import type { MigrationContext } from '../machine/types';
import { planMigrations } from '../planner/plan';
import { Topology } from '../planner/topology';
import { insideMaintenanceWindow, type Settings } from '../settings';
import type {
  ActualState,
  DesiredState,
  HostStatus,
  Phase,
  Placement,
  Plan,
  PlannedMigration,
  VirtualMachineStatus,
} from '../types';
import { composeAll, maxPauseOf, migrationInput, newMigrationId, toActual } from './apply';
import type { MigrationView } from './compose-status';
import { backoffDelay } from '../backoff';

/** What one pass is given: the state of the repository at one revision. */
export interface PassInput {
  desired: DesiredState;
  /** status files as committed, to keep condition times and host status stable */
  previous: ActualState;
  settings: Settings;
  /** the commit that last changed the manifests (not the daemon's own status commits) */
  revision?: string;
}

export interface PassResult {
  plan: Plan;
  statuses: VirtualMachineStatus[];
  hosts: HostStatus[];
  /** VMs whose migration started in this pass */
  started: string[];
  /** VMs whose migration was cancelled in this pass */
  cancelled: string[];
  /** VMs held back, with why: limits, window, suspend, backoff */
  deferred: Map<string, string>;
  phases: Record<Phase, number>;
}

export interface ReconcilerEvents {
  /** a migration moved to another step (persisted) */
  onTransition?(vm: string, step: string, context: MigrationContext): void;
  /** a migration reached a final state (or a shutdown checkpoint) */
  onFinished?(vm: string, result: RunResult): void;
}

export interface ReconcilerDeps extends ReconcilerEvents {
  driverFor: (host: string) => HypervisorDriver | undefined;
  store: MigrationStore;
  stepDeps: Omit<StepDeps, 'driverFor' | 'stopping' | 'bwlimitKiBps'>;
  logger: Logger;
  now?: () => Date;
  /** base of the per-VM retry backoff after a failed migration (default 30 s; doubles, with jitter, up to 1 h) */
  backoffBaseMs?: number;
  /** stand-in step actors (tests); default: the real steps over the drivers */
  actorsFor?: (vm: string) => StepActors;
}

interface Backoff {
  failures: number;
  notBefore: number;
  /** a stalled VM waits until this key (its manifests and its world) changes */
  stalledKey?: string;
}

/**
 * The daemon's memory across passes: one migration handle per VM in flight, per-VM backoff,
 * and the last result of each VM. Every pass is level-based: it observes the hosts again,
 * plans from what is there, cancels migrations whose desired placement changed before the VM
 * was paused, starts new ones within limits, windows and backoff, and returns the status to
 * write. Migrations run in the background between passes; one stuck or failing VM never
 * holds up another.
 */
export class Reconciler {
  private readonly running = new Map<string, { handle: MigrationHandle; target: string }>();
  private readonly views = new Map<string, MigrationView>();
  private readonly backoff = new Map<string, Backoff>();
  private resumed = false;
  private stopping = false;
  private settings?: Settings;
  private lastObservation?: Observation;
  private lastInput?: PassInput;
  private lastPlan?: Plan;

  constructor(private readonly deps: ReconcilerDeps) {}

  private get now(): Date {
    return (this.deps.now ?? (() => new Date()))();
  }

  /** VMs with a migration in flight. */
  inFlight(): string[] {
    return [...this.running.keys()].sort();
  }

  async pass(input: PassInput): Promise<PassResult> {
    const log = this.deps.logger;
    this.settings = input.settings;
    this.lastInput = input;
    if (!this.resumed) {
      this.resumed = true;
      await this.resumeInterrupted();
      await this.loadLastResults(input.desired);
    }
    const observation = await observe(input.desired, this.deps.driverFor, () => this.now);
    for (const [host, why] of observation.unreachable) log.error({ host, reason: why.reason }, why.message);
    this.lastObservation = observation;
    const actual = toActual(observation, input.previous);
    const plan = planMigrations(input.desired, actual, input.settings.policy, { revision: input.revision });
    this.lastPlan = plan;
    const topo = new Topology(input.desired, actual);

    // Cancel: a migration whose target is no longer what the manifests want, not yet paused.
    const cancelled: string[] = [];
    const wanted = new Map(plan.migrations.map((m) => [m.vm, m]));
    for (const [vm, r] of this.running) {
      const m = wanted.get(vm);
      // Cancel only on evidence: planned elsewhere now, or wanted where it already is. A VM the
      // observation missed (a host that did not answer, a domain mid-restore) is no reason.
      const elsewhere = m !== undefined && targetKey(m) !== r.target;
      // (a VM observed where this migration is taking it, mid-restore, has arrived: no reason)
      const backWhereItIs =
        m === undefined && plan.unchanged.includes(vm) && !arrived(actual.vms.get(vm)?.placement, r.target);
      if ((elsewhere || backWhereItIs) && input.desired.vms.has(vm)) {
        log.info(
          { vm, migration: r.handle.id, step: r.handle.step() },
          'desired placement changed: cancelling',
        );
        r.handle.cancel('the desired placement changed before the VM was paused');
        cancelled.push(vm);
      }
    }

    // Start what the plan allows.
    const started: string[] = [];
    const deferred = new Map<string, string>();
    const now = this.now;
    const inWindow = insideMaintenanceWindow(input.settings.maintenanceWindows, now);
    const usage = this.usage();
    for (const m of [...plan.migrations].sort((a, b) => a.order - b.order)) {
      if (m.blocked || this.running.has(m.vm)) continue;
      const why = this.holdBack(m, input, observation, inWindow, usage, now);
      if (why) {
        deferred.set(m.vm, why);
        continue;
      }
      let mInput;
      try {
        mInput = migrationInput(
          m,
          newMigrationId(now),
          topo,
          input.settings.policy,
          maxPauseOf(input.desired, m.vm),
        );
      } catch (err) {
        deferred.set(m.vm, describeError(err).message);
        continue;
      }
      this.launch({ input: mInput, startedAt: now.toISOString() }, m.vm, targetKey(m));
      addUsage(usage, m, 1);
      started.push(m.vm);
    }
    if (deferred.size) log.info({ deferred: Object.fromEntries(deferred) }, 'migrations held back');

    const statuses = this.statuses();
    const hosts = stabiliseHosts([...observation.hosts.values()], input.previous.hosts, now);
    const phases = countPhases(statuses);
    return { plan, statuses, hosts, started, cancelled, deferred, phases };
  }

  /** Status of every desired VM from the last observation and the migrations' current state. */
  statuses(): VirtualMachineStatus[] {
    if (!this.lastInput || !this.lastObservation || !this.lastPlan) return [];
    for (const [vm, r] of this.running)
      this.views.set(vm, { step: r.handle.step(), context: r.handle.context() });
    return composeAll(
      this.lastInput,
      this.lastObservation,
      this.lastPlan,
      this.views,
      this.now,
      new Set(this.views.keys()),
    );
  }

  /** Stop starting work; let in-flight migrations reach a checkpoint where the VM runs (bounded). */
  async shutdown(timeoutMs: number): Promise<{ checkpointed: string[]; unfinished: string[] }> {
    this.stopping = true;
    const pending = [...this.running.values()].map((r) => r.handle);
    const timeout = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), timeoutMs).unref());
    const results = await Promise.all(
      pending.map((h) => Promise.race([h.done.then(() => h.vm), timeout]).catch(() => h.vm)),
    );
    const unfinished = results.filter((r) => r === 'timeout').length ? this.inFlight() : [];
    return { checkpointed: pending.map((h) => h.vm).filter((vm) => !unfinished.includes(vm)), unfinished };
  }

  // ------------------------------------------------------------------ internals

  private async resumeInterrupted(): Promise<void> {
    const { records, problems } = await this.deps.store.listActive();
    for (const p of problems)
      this.deps.logger.error({ file: p.file }, `unreadable migration state: ${p.message}`);
    for (const r of records) {
      const snap = r.snapshot as { context?: MigrationContext };
      const ctx = snap.context;
      const target = ctx ? contextTargetKey(ctx) : '';
      this.deps.logger.info({ vm: r.vm, migration: r.id }, 'resuming interrupted migration');
      this.launch({ snapshot: r.snapshot }, r.vm, target);
    }
  }

  /** The last finished migration of every desired VM that has none in this process yet. */
  private async loadLastResults(desired: DesiredState): Promise<void> {
    for (const vm of desired.vms.keys()) {
      if (this.views.has(vm)) continue;
      const last = await this.deps.store.lastDone(vm);
      const snap = last?.snapshot as { value?: string; context?: MigrationContext } | undefined;
      if (snap?.value && snap.context) this.views.set(vm, { step: snap.value, context: snap.context });
    }
  }

  private launch(start: Parameters<typeof startMigration>[0], vm: string, target: string): void {
    const log = this.deps.logger;
    const bw = this.settings?.limits.bandwidthBytesPerSecond;
    const actors =
      this.deps.actorsFor?.(vm) ??
      createStepActors({
        ...this.deps.stepDeps,
        driverFor: (h) => {
          const d = this.deps.driverFor(h);
          if (!d) throw new Error(`no driver for host ${h}`);
          return d;
        },
        stopping: () => this.stopping,
        intents: {
          mark: (c, what) => this.deps.store.markIntent(c.vm, c.id, what),
          has: (c, what) => this.deps.store.hasIntent(c.vm, c.id, what),
          at: (c, what) => this.deps.store.intentAt(c.vm, c.id, what),
        },
        owned: {
          record: (c, rec) => this.deps.store.recordOwned(c.vm, c.id, rec),
          list: (c) => this.deps.store.listOwned(c.vm, c.id),
        },
        ...(bw ? { bwlimitKiBps: Math.max(1, Math.floor(bw / 1024)) } : {}),
        logger: log.child({ vm }),
      });
    const handle = startMigration(start, {
      actors,
      store: this.deps.store,
      shouldStop: () => this.stopping,
      onTransition: (step, context) => {
        log.info({ vm, migration: context.id, step, bytesDone: context.bytesDone }, 'migration step');
        this.views.set(vm, { step, context });
        this.deps.onTransition?.(vm, step, context);
      },
    });
    this.running.set(vm, { handle, target });
    // detached: the loop goes on while the migration runs (shutdown and `apply` wait through
    // `this.running`); the outcome and a crash of the runner are both handled here
    void handle.done
      .then((result) => {
        this.running.delete(vm);
        this.views.set(vm, { step: result.step, context: result.context });
        if (!result.stopped) this.recordOutcome(vm, result);
        log.info(
          {
            vm,
            migration: result.context.id,
            step: result.step,
            pauseMs: result.context.pauseMs,
            ...(result.step !== 'Completed' && result.context.lastError
              ? { reason: result.context.lastError.reason }
              : {}),
          },
          'migration finished',
        );
        this.deps.onFinished?.(vm, result);
      })
      .catch((err: unknown) => {
        this.running.delete(vm);
        log.error({ vm, err }, 'migration runner crashed');
        this.bumpBackoff(vm);
      });
  }

  private recordOutcome(vm: string, result: RunResult): void {
    if (result.step === 'Completed') {
      this.backoff.delete(vm);
    } else if (result.step === 'Blocked' || NEEDS_HUMAN_REASONS.has(result.context.lastError?.reason ?? '')) {
      // held until its manifests or the world change (a human acts)
      this.backoff.set(vm, { failures: 0, notBefore: 0, stalledKey: this.stalledKey(vm) });
    } else if (result.context.lastError?.reason === 'Cancelled') {
      this.backoff.delete(vm); // replanned at once
    } else {
      this.bumpBackoff(vm);
    }
  }

  private bumpBackoff(vm: string): void {
    const prev = this.backoff.get(vm);
    const failures = (prev?.failures ?? 0) + 1;
    const base = this.deps.backoffBaseMs ?? 30_000;
    const delay = backoffDelay(failures, base, 3_600_000);
    this.backoff.set(vm, { failures, notBefore: this.now.getTime() + delay });
  }

  /** What a stalled VM waits for: its manifests, its host's, and what was observed of it. */
  private stalledKey(vm: string): string {
    const input = this.lastInput;
    const v = input?.desired.vms.get(vm);
    const host = v ? input?.desired.hosts.get(v.spec.host) : undefined;
    const cluster = host?.spec.cluster ? input?.desired.clusters.get(host.spec.cluster) : undefined;
    const placed = this.lastObservation?.vms.get(vm)?.placement;
    const room = host
      ? this.lastObservation?.hosts
          .get(host.metadata.name)
          ?.storage.map((s) => [s.name, Math.floor(s.freeBytes / 2 ** 30)])
      : undefined;
    return createHash('sha256')
      .update(JSON.stringify([v?.spec, host?.spec, cluster?.spec, placed, room]))
      .digest('hex');
  }

  private holdBack(
    m: PlannedMigration,
    input: PassInput,
    obs: Observation,
    inWindow: boolean,
    usage: Usage,
    now: Date,
  ): string | undefined {
    if (this.stopping) return 'shutting down';
    if (input.settings.suspend) return 'suspended by vmplace.yaml';
    if (!inWindow) return 'outside every maintenance window';
    const b = this.backoff.get(m.vm);
    if (b?.stalledKey !== undefined) {
      this.lastObservation = obs;
      if (b.stalledKey === this.stalledKey(m.vm)) return 'blocked until its manifests or the world change';
      this.backoff.delete(m.vm);
    } else if (b && b.notBefore > now.getTime()) {
      return `backing off after ${b.failures} failure(s) until ${new Date(b.notBefore).toISOString()}`;
    }
    const l = input.settings.limits;
    if (usage.total >= l.concurrent) return `limit: ${l.concurrent} migrations at once`;
    for (const h of hostsOf(m))
      if ((usage.hosts.get(h) ?? 0) >= l.perHost) return `limit: ${l.perHost} per host (${h})`;
    for (const s of storagesOf(m))
      if ((usage.storages.get(s) ?? 0) >= l.perStorage) return `limit: ${l.perStorage} per storage (${s})`;
    return undefined;
  }

  private usage(): Usage {
    const u: Usage = { total: 0, hosts: new Map(), storages: new Map() };
    for (const r of this.running.values()) {
      const c = r.handle.context();
      u.total++;
      for (const h of new Set([c.fromHost, c.toHost])) u.hosts.set(h, (u.hosts.get(h) ?? 0) + 1);
      for (const mv of c.moves) {
        for (const s of [`${c.fromHost}/${mv.fromStorage}`, `${c.toHost}/${mv.toStorage}`])
          u.storages.set(s, (u.storages.get(s) ?? 0) + 1);
      }
    }
    return u;
  }
}

interface Usage {
  total: number;
  hosts: Map<string, number>;
  storages: Map<string, number>;
}

function hostsOf(m: PlannedMigration): string[] {
  return [...new Set([m.from.host, m.to.host])];
}

function storagesOf(m: PlannedMigration): string[] {
  return [...new Set(m.disks.flatMap((d) => [`${m.from.host}/${d.from}`, `${m.to.host}/${d.to}`]))];
}

function addUsage(u: Usage, m: PlannedMigration, n: number): void {
  u.total += n;
  for (const h of hostsOf(m)) u.hosts.set(h, (u.hosts.get(h) ?? 0) + n);
  for (const s of storagesOf(m)) u.storages.set(s, (u.storages.get(s) ?? 0) + n);
}

/** Where a planned migration goes: host and storage per disk. */
function targetKey(m: PlannedMigration): string {
  return JSON.stringify([m.to.host, m.disks.map((d) => [d.target, d.to]).sort()]);
}

/** True when `p` already is where the migration of target key `key` (see {@link targetKey}) goes. */
function arrived(p: Placement | undefined, key: string): boolean {
  if (!p) return false;
  const [host, moves] = JSON.parse(key) as [string, [string, string][]];
  return p.host === host && moves.every(([t, s]) => p.disks.some((d) => d.target === t && d.storage === s));
}

function contextTargetKey(c: MigrationContext): string {
  return JSON.stringify([c.toHost, c.moves.map((d) => [d.target, d.toStorage]).sort()]);
}

const PHASES: Phase[] = ['Placed', 'Pending', 'Migrating', 'Blocked', 'Failed', 'Unknown'];

function countPhases(statuses: VirtualMachineStatus[]): Record<Phase, number> {
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
