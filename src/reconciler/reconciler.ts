import type { Logger } from 'pino';
import type { HypervisorDriver } from '../drivers/driver';
import { describeError, outcomeOf, type Outcome } from '../errors';
import { observe, type Observation } from '../inventory/observe';
import {
  startMigration,
  stepGate,
  type MigrationHandle,
  type RunResult,
  type StepActors,
} from '../machine/runner';
import { SOLO, type Coordination, type MigrationClaim } from '../coord/coordination';
import type { Fence } from '../machine/fence';
import type { MigrationRecords } from '../machine/store';
import type { MigrationContext, MigrationInput } from '../machine/types';
import { planMigrations } from '../planner/plan';
import { Topology } from '../planner/topology';
import { insideMaintenanceWindow, type Settings } from '../settings';
import type {
  ActualState,
  DesiredState,
  HostStatus,
  Phase,
  Plan,
  PlannedMigration,
  VirtualMachineStatus,
} from '../types';
import { composeAll, countPhases, stabiliseHosts, toActual, type MigrationView } from './compose-status';
import { maxPauseOf, migrationInput, newMigrationId } from './migration-input';
import {
  addUsage,
  contextTargetKey,
  shouldCancel,
  stalledKeyOf,
  targetKey,
  usageOf,
  whyHeldBack,
  type Hold,
} from './scheduling';

/** What one pass is given: the state of the repository at one revision. */
export interface PassInput {
  desired: DesiredState;
  /** status files as committed, to keep condition times and host status stable */
  previous: ActualState;
  settings: Settings;
  /** the commit that last changed the manifests (not the daemon's own status commits) */
  revision?: string;
  /** start no migration of a VM that already had one in this process (`vmplace apply`) */
  oncePerVm?: boolean;
  /** asked before the first migration this pass would start; false starts none */
  approve?: (toStart: PlannedMigration[], plan: Plan) => Promise<boolean>;
}

export interface PassResult {
  plan: Plan;
  statuses: VirtualMachineStatus[];
  hosts: HostStatus[];
  /** VMs whose migration started in this pass */
  started: string[];
  /** VMs whose migration was cancelled in this pass */
  cancelled: string[];
  /** VMs held back, with why: limits, window, suspend, hold after a failure, not approved */
  deferred: Map<string, string>;
  phases: Record<Phase, number>;
  /** a start lost a race with another replica: run the next pass soon */
  retrySoon?: boolean;
  /** hosts this pass could not observe, with why */
  unreachable?: ReadonlyMap<string, { reason: string; message: string }>;
}

export interface ReconcilerEvents {
  /** a migration started (not a resumed one) */
  onStarted?(m: PlannedMigration, id: string): void;
  /** a migration moved to another step (persisted); the migration waits for a returned promise */
  onTransition?(vm: string, step: string, context: MigrationContext): void | Promise<void>;
  /** a migration reached a final state (or a shutdown checkpoint) */
  onFinished?(vm: string, result: RunResult): void;
  /** several replicas: this replica took over the migration of `vm`, persisted in `step` */
  onTakeover?(vm: string, step: string): void;
}

/** What the step actors of one migration get from the reconciler. */
export interface StepRun {
  stopping: () => boolean;
  /** the run's fence (several replicas; lets everything through for one daemon) */
  fence: Fence;
  /** awaited before every step: its snapshot is persisted and the fence lets it act */
  beforeStep: () => Promise<void>;
  /** told of every step's promise (an abandoned run's step in flight is awaited before a resume) */
  track: (step: Promise<unknown>) => void;
  /** from `limits.bandwidth` in vmplace.yaml */
  bwlimitKiBps?: number;
  logger: Logger;
}

export interface ReconcilerDeps extends ReconcilerEvents {
  /** drivers for observation */
  driverFor: (host: string) => HypervisorDriver | undefined;
  store: MigrationRecords;
  /** how replicas share the fleet (default: one daemon, {@link SOLO}) */
  coordination?: Coordination;
  /** the step actors of one migration (the composition root wires the real steps; tests stand-ins) */
  actorsFor: (vm: string, run: StepRun) => StepActors;
  logger: Logger;
  now?: () => Date;
  /** base of the per-VM retry backoff after a failed migration (default 30 s; doubles, with jitter, up to 1 h) */
  backoffBaseMs?: number;
}

/**
 * The one reconcile loop, run by the daemon pass after pass and by `vmplace apply` until
 * nothing more starts (see applyOnce). It keeps one migration handle per VM in flight, a hold
 * per VM after a failure, and the last result of each VM. Every pass is level-based: it
 * observes the hosts again, plans from what is there, cancels migrations whose desired
 * placement changed before the VM was paused, starts new ones within suspend, windows, holds
 * and limits, and returns the status to write. Migrations run in the background between
 * passes; one stuck or failing VM never holds up another.
 */
export class Reconciler {
  private readonly running = new Map<string, { handle: MigrationHandle; target: string }>();
  private readonly views = new Map<string, MigrationView>();
  private readonly holds = new Map<string, Hold>();
  /** VMs with a migration started or resumed by this process */
  private readonly launched = new Set<string>();
  private resumed?: Promise<void>;
  private stopping = false;
  private lastObservation?: Observation;
  private lastInput?: PassInput;
  private lastPlan?: Plan;
  /** the fleet's claim token read by the last {@link fleetUsage} */
  private fleetToken = '';
  /** a claim of this pass lost a race with another replica: the next pass should come soon */
  private claimConflict = false;
  /** runs abandoned after their lock was lost, until their step in flight settled */
  private readonly abandoned = new Map<string, Promise<unknown>>();
  /**
   * Ids of migrations this process ran to their end (the newest 1,000): a pass that listed the
   * records before such a run finished must not resume it from its stale record (seen: a
   * migration finished, then "resuming migration ... Completed" and finished a second time).
   */
  private readonly finishedIds = new Set<string>();

  private readonly coord: Coordination;

  constructor(private readonly deps: ReconcilerDeps) {
    this.coord = deps.coordination ?? SOLO;
    // a lost lock stops its run at once: its copies are killed before another replica starts
    this.coord.onLost?.((vms) => this.abandonRuns(vms));
  }

  private abandonRuns(vms: readonly string[]): void {
    for (const vm of vms) {
      const r = this.running.get(vm);
      if (!r) continue;
      this.deps.logger.warn(
        { vm, migration: r.handle.id, step: r.handle.step() },
        'lock lost: this replica stops the migration',
      );
      r.handle.abandon('lock lost');
    }
  }

  private get now(): Date {
    return (this.deps.now ?? (() => new Date()))();
  }

  /** VMs with a migration in flight. */
  inFlight(): string[] {
    return [...this.running.keys()].sort();
  }

  /** Resolves once no migration is in flight. */
  async settled(): Promise<void> {
    while (this.running.size) await this.nextFinish();
  }

  /** Resolves when one of the migrations in flight finishes (at once when none is). */
  async nextFinish(): Promise<void> {
    const done = [...this.running.values()].map((r) => r.handle.done.then(undefined, () => undefined));
    if (done.length) await Promise.race(done);
    // the handle's own continuation (which updates `running`) was attached first and has run
  }

  /** Resume every interrupted migration of the state dir, once (the first pass does it too). */
  resume(settings: Settings, desired: DesiredState): Promise<void> {
    this.resumed ??= this.resumeInterrupted(settings, desired);
    return this.resumed;
  }

  async pass(input: PassInput): Promise<PassResult> {
    const log = this.deps.logger;
    this.lastInput = input;
    await this.resume(input.settings, input.desired);
    await this.rebalance(input);
    const observation = await observe(input.desired, this.deps.driverFor, () => this.now);
    for (const [host, why] of observation.unreachable) log.error({ host, reason: why.reason }, why.message);
    this.lastObservation = observation;
    const actual = toActual(observation, input.previous);
    const plan = planMigrations(input.desired, actual, input.settings.policy, { revision: input.revision });
    this.lastPlan = plan;

    // Cancel: a migration whose target is no longer what the manifests want, not yet paused.
    const cancelled: string[] = [];
    for (const [vm, r] of this.running) {
      if (!shouldCancel(vm, r.target, plan, actual.vms.get(vm)?.placement, input.desired)) continue;
      log.info(
        { vm, migration: r.handle.id, step: r.handle.step() },
        'desired placement changed: cancelling',
      );
      r.handle.cancel('the desired placement changed before the VM was paused');
      cancelled.push(vm);
    }

    // Start what the plan allows.
    const deferred = new Map<string, string>();
    const now = this.now;
    const topo = new Topology(input.desired, actual);
    const gate = {
      settings: input.settings,
      inWindow: insideMaintenanceWindow(input.settings.maintenanceWindows, now),
      usage: usageOf(await this.fleetUsage()),
      now,
      stopping: this.stopping,
    };
    const toStart: { m: PlannedMigration; input: MigrationInput }[] = [];
    for (const m of [...plan.migrations].sort((a, b) => a.order - b.order)) {
      if (m.blocked || this.running.has(m.vm) || !this.coord.owns(m.vm)) continue;
      if (input.oncePerVm && this.launched.has(m.vm)) continue;
      const hold = this.holds.get(m.vm);
      if (hold?.stalled) {
        // what it waits for is taken from the first observation after the failure
        const key = stalledKeyOf(m.vm, input.desired, observation);
        if (hold.stalledKey === undefined) hold.stalledKey = key;
        else if (hold.stalledKey !== key) this.holds.delete(m.vm);
      }
      // several replicas: no new migration while this replica cannot prove its lease (etcd away)
      const shared = this.coord.health();
      const why = shared.ready
        ? whyHeldBack(m, { ...gate, hold: this.holds.get(m.vm) })
        : `this replica cannot start migrations: ${shared.why ?? 'not ready'}`;
      if (why) {
        deferred.set(m.vm, why);
        continue;
      }
      try {
        const id = newMigrationId(now);
        toStart.push({
          m,
          input: migrationInput(m, id, topo, input.settings.policy, maxPauseOf(input.desired, m.vm)),
        });
        addUsage(gate.usage, m, 1);
      } catch (err) {
        deferred.set(m.vm, describeError(err).message);
      }
    }
    if (
      toStart.length &&
      input.approve &&
      !(await input.approve(
        toStart.map((s) => s.m),
        plan,
      ))
    ) {
      for (const { m } of toStart.splice(0)) deferred.set(m.vm, 'not approved');
    }
    // several replicas: each start is claimed in etcd against the fleet's usage as read above
    let token = this.fleetToken;
    for (const s of toStart.splice(0)) {
      const next = await this.coord.claim(claimOf(s.input), token);
      if (next === undefined) {
        deferred.set(s.m.vm, 'another replica started or claimed a migration meanwhile; next pass');
        this.claimConflict = true;
        continue;
      }
      token = next;
      toStart.push(s);
    }
    for (const s of toStart) {
      this.launch({ input: s.input, startedAt: now.toISOString() }, s.m.vm, targetKey(s.m), input.settings);
      this.deps.onStarted?.(s.m, s.input.id);
    }
    if (deferred.size) log.info({ deferred: Object.fromEntries(deferred) }, 'migrations held back');

    const statuses = this.statuses();
    const hosts = stabiliseHosts([...observation.hosts.values()], input.previous.hosts, now);
    const phases = countPhases(statuses);
    const retrySoon = this.claimConflict;
    this.claimConflict = false;
    return {
      plan,
      statuses,
      hosts,
      started: toStart.map((s) => s.m.vm),
      cancelled,
      deferred,
      phases,
      ...(retrySoon ? { retrySoon } : {}),
      unreachable: observation.unreachable,
    };
  }

  /** Status of every desired VM from the last observation and the migrations' current state. */
  statuses(): VirtualMachineStatus[] {
    if (!this.lastInput || !this.lastObservation || !this.lastPlan) return [];
    for (const [vm, r] of this.running)
      this.views.set(vm, { step: r.handle.step(), context: r.handle.context() });
    // a failure of this process's own migration outranks what the plan says now
    return composeAll(
      this.lastInput,
      this.lastObservation,
      this.lastPlan,
      this.views,
      this.now,
      this.launched,
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

  /**
   * Several replicas: take the locks of the VMs this replica should own and give back the
   * others (not while a migration runs); stop the runs whose lock was lost without writing
   * anything more; resume the migrations of the VMs just taken over from their persisted step.
   */
  private async rebalance(input: PassInput): Promise<void> {
    if (!this.coord.shared) return;
    const log = this.deps.logger;
    // etcd away: what is lost is still given up (below); nothing is taken or resumed this pass
    const listed = await this.deps.store.listActive().catch((err: unknown) => {
      log.warn({ err: describeError(err).message }, 'cannot list the fleet’s migrations');
      return undefined;
    });
    const records = listed?.records ?? [];
    for (const p of listed?.problems ?? [])
      log.error({ file: p.file }, `unreadable migration state: ${p.message}`);
    const fleet = new Set([...input.desired.vms.keys(), ...records.map((r) => r.vm)]);
    const { acquired, lost } = listed
      ? await this.coord.balance([...fleet].sort(), (vm) => this.running.has(vm))
      : await this.coord.balance([], () => true);
    this.abandonRuns(lost);
    // every migration of a VM this replica holds runs here: one taken over with its VM, and one
    // whose run stopped without finishing (its record is still there)
    const taken = new Set(acquired);
    for (const r of records) {
      const vm = r.vm;
      if (this.running.has(vm) || !this.coord.owns(vm)) continue;
      // a run of this process abandoned earlier must have settled before the VM is touched again
      await this.abandoned.get(vm);
      if (this.running.has(vm) || !this.coord.owns(vm) || this.finishedIds.has(r.id)) continue;
      const snap = r.snapshot as { context?: MigrationContext; value?: string } | null;
      log.info(
        { vm, migration: r.id, step: snap?.value },
        taken.has(vm) ? 'taking over migration' : 'resuming migration',
      );
      if (taken.has(vm)) this.deps.onTakeover?.(vm, snap?.value ?? '');
      this.launch(
        { snapshot: r.snapshot },
        vm,
        snap?.context ? contextTargetKey(snap.context) : '',
        input.settings,
      );
    }
  }

  /** The migrations in flight in the fleet: this process's own, and the other replicas' claims. */
  private async fleetUsage(): Promise<MigrationClaim[]> {
    const mine = new Map<string, MigrationClaim>();
    for (const r of this.running.values()) {
      const c = r.handle.context();
      mine.set(c.vm, claimOf(c));
    }
    if (!this.coord.shared) return [...mine.values()];
    const { migrations, token } = await this.coord.fleetMigrations();
    this.fleetToken = token;
    for (const m of migrations) if (!mine.has(m.vm)) mine.set(m.vm, m);
    return [...mine.values()];
  }

  private async resumeInterrupted(settings: Settings, desired: DesiredState): Promise<void> {
    const { records, problems } = await this.deps.store.listActive();
    for (const p of problems)
      this.deps.logger.error({ file: p.file }, `unreadable migration state: ${p.message}`);
    for (const r of records) {
      // several replicas: the others' migrations are theirs (taken over by `rebalance` if they die)
      if (this.coord.shared) continue;
      const ctx = (r.snapshot as { context?: MigrationContext }).context;
      this.deps.logger.info({ vm: r.vm, migration: r.id }, 'resuming interrupted migration');
      this.launch({ snapshot: r.snapshot }, r.vm, ctx ? contextTargetKey(ctx) : '', settings);
    }
    // the last finished migration of every desired VM that has none in this process
    for (const vm of desired.vms.keys()) {
      if (this.views.has(vm)) continue;
      const last = await this.deps.store.lastDone(vm);
      const snap = last?.snapshot as { value?: string; context?: MigrationContext } | undefined;
      if (snap?.value && snap.context && !this.views.has(vm))
        this.views.set(vm, { step: snap.value, context: snap.context });
    }
  }

  private launch(
    start: Parameters<typeof startMigration>[0],
    vm: string,
    target: string,
    settings: Settings,
  ): void {
    const log = this.deps.logger;
    const bw = settings.limits.bandwidthBytesPerSecond;
    const fence = this.coord.fenceFor(vm);
    const gate = stepGate(fence);
    const actors = this.deps.actorsFor(vm, {
      stopping: () => this.stopping,
      fence,
      ...gate.hooks,
      ...(bw ? { bwlimitKiBps: Math.max(1, Math.floor(bw / 1024)) } : {}),
      logger: log.child({ vm }),
    });
    const handle = startMigration(start, {
      actors,
      store: this.deps.store,
      ...(this.coord.shared ? { fence } : {}),
      shouldStop: () => this.stopping,
      onTransition: async (step, context) => {
        log.info({ vm, migration: context.id, step, bytesDone: context.bytesDone }, 'migration step');
        this.views.set(vm, { step, context });
        await this.deps.onTransition?.(vm, step, context);
      },
    });
    gate.bind(handle);
    this.running.set(vm, { handle, target });
    this.launched.add(vm);
    // detached: the loop goes on while the migration runs (shutdown and `apply` wait through
    // `this.running`); the outcome and a crash of the runner are both handled here
    void handle.done
      .then((result) => {
        this.running.delete(vm);
        if (result.lost) {
          // another replica holds the VM now and resumes the migration from its persisted step;
          // the step that was in flight here is aborted: wait for it before touching the VM again
          const settledStep = gate.lastStep();
          this.abandoned.set(vm, settledStep);
          void settledStep.then(() => {
            if (this.abandoned.get(vm) === settledStep) this.abandoned.delete(vm);
          });
          this.views.delete(vm);
          log.warn({ vm, migration: result.context.id, step: result.step }, 'migration handed over');
          this.deps.onFinished?.(vm, result);
          return;
        }
        this.views.set(vm, { step: result.step, context: result.context });
        if (!result.stopped) {
          this.finishedIds.add(result.context.id);
          if (this.finishedIds.size > 1000) this.finishedIds.delete(this.finishedIds.values().next().value!);
          this.recordOutcome(vm, result);
        }
        const e = result.context.lastError;
        log.info(
          {
            vm,
            migration: result.context.id,
            step: result.step,
            pauseMs: result.context.pauseMs,
            ...(result.step !== 'Completed' && e ? { reason: e.reason } : {}),
          },
          'migration finished',
        );
        this.deps.onFinished?.(vm, result);
      })
      .catch((err: unknown) => {
        this.running.delete(vm);
        log.error({ vm, err }, 'migration runner crashed');
        this.hold(vm, outcomeOf(err, this.retryContext(vm)));
      });
  }

  /** What the VM's next attempt waits for, after a migration that did not complete (see outcomeOf). */
  private recordOutcome(vm: string, result: RunResult): void {
    if (result.step === 'Completed') {
      this.holds.delete(vm);
      return;
    }
    const c = result.context;
    // a migration that did not complete without an error (none today) is retried like a transient one
    const outcome = outcomeOf(c.lastError ?? {}, { ...this.retryContext(vm), committed: c.committed });
    this.hold(vm, outcome);
  }

  private retryContext(vm: string): { failures: number; backoffBaseMs: number } {
    return {
      failures: (this.holds.get(vm)?.failures ?? 0) + 1,
      backoffBaseMs: this.deps.backoffBaseMs ?? 30_000,
    };
  }

  private hold(vm: string, outcome: Outcome): void {
    const failures = (this.holds.get(vm)?.failures ?? 0) + 1;
    if (outcome.next === 'requeue') {
      if (outcome.afterMs <= 0)
        this.holds.delete(vm); // replanned at once (a cancel)
      else this.holds.set(vm, { failures, notBefore: this.now.getTime() + outcome.afterMs });
    } else {
      // stalled or failed: held until its manifests or the world change (a human acts)
      this.holds.set(vm, { failures, notBefore: 0, stalled: true });
    }
  }
}

/** A migration as the fleet-wide limits count it. */
function claimOf(c: MigrationInput): MigrationClaim {
  return {
    vm: c.vm,
    id: c.id,
    fromHost: c.fromHost,
    toHost: c.toHost,
    moves: c.moves.map((m) => ({ fromStorage: m.fromStorage, toStorage: m.toStorage })),
  };
}
