import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import type { Logger } from 'pino';
import type { HypervisorDriver } from '../drivers/driver';
import { observe, type Observation } from '../inventory/observe';
import { parseDuration } from '../duration';
import { NEEDS_HUMAN_REASONS } from '../machine/migration-machine';
import { runMigration, type RunResult } from '../machine/runner';
import { createStepActors, type StepDeps } from '../machine/steps';
import { MigrationStore, type StoredMigration } from '../machine/store';
import type { MigrationContext, MigrationInput } from '../machine/types';
import { planMigrations } from '../planner/plan';
import { Topology } from '../planner/topology';
import {
  DEFAULT_POLICY,
  type ActualState,
  type DesiredState,
  type Plan,
  type PlannedMigration,
  type PlanPolicy,
  type VirtualMachineStatus,
} from '../types';
import { composeVmStatus, type MigrationView } from './compose-status';

/** What one apply pass needs from outside; everything that touches the world is injected. */
export interface ApplyDeps {
  desired: DesiredState;
  /** previous status files, to keep condition times stable */
  previous: ActualState;
  driverFor: (host: string) => HypervisorDriver | undefined;
  store: MigrationStore;
  stepDeps: Omit<StepDeps, 'driverFor'>;
  logger: Logger;
  /** write status files; called after observation and after every migration step */
  writeStatus(vms: VirtualMachineStatus[], hosts: ActualState['hosts']): Promise<void>;
  /** show the plan and ask; resolve false to stop before any migration */
  confirm?(plan: Plan): Promise<boolean>;
  onMigrationStart?(m: PlannedMigration, id: string): void;
  onMigrationEnd?(vm: string, result: RunResult): void;
  /** at most this many migrations at once (default 2) */
  parallel?: number;
  revision?: string;
  /** space margins for planning and pre-flight (default DEFAULT_POLICY) */
  policy?: PlanPolicy;
  now?: () => Date;
}

export interface ApplyResult {
  plan: Plan;
  results: Map<string, RunResult>;
  statuses: VirtualMachineStatus[];
  /** true when every VM is at its desired placement */
  converged: boolean;
  /** true when a migration failed, rolled back or is blocked */
  anyFailed: boolean;
}

/** A migration id: sortable by time, unique enough for file names. */
export function newMigrationId(now: Date): string {
  const t = now.toISOString().replace(/[-:]/g, '').replace(/\..*$/, '');
  return `${t}-${randomBytes(3).toString('hex')}`;
}

/**
 * One level-based pass: resume interrupted migrations first, observe, plan, run what the plan
 * allows (in its order, at most `parallel` at once, one per VM), observe again, write status.
 */
export async function applyOnce(deps: ApplyDeps): Promise<ApplyResult> {
  const now = deps.now ?? (() => new Date());
  const log = deps.logger;
  const results = new Map<string, RunResult>();
  const views = new Map<string, MigrationView>();
  const driverFor = (h: string): HypervisorDriver => {
    const d = deps.driverFor(h);
    if (!d) throw new Error(`no driver for host ${h}`);
    return d;
  };
  const stepDeps: StepDeps = {
    ...deps.stepDeps,
    driverFor,
    intents: {
      mark: (c, what) => deps.store.markIntent(c.vm, c.id, what),
      has: (c, what) => deps.store.hasIntent(c.vm, c.id, what),
      at: (c, what) => deps.store.intentAt(c.vm, c.id, what),
    },
    owned: {
      record: (c, rec) => deps.store.recordOwned(c.vm, c.id, rec),
      list: (c) => deps.store.listOwned(c.vm, c.id),
    },
  };
  const policy = deps.policy ?? DEFAULT_POLICY;

  // Status written while migrations run reflects the latest observation plus their progress.
  let observation: Observation = await observe(deps.desired, deps.driverFor, now);
  let plan = planMigrations(deps.desired, toActual(observation, deps.previous), policy, {
    revision: deps.revision,
  });
  const writeAll = async (): Promise<VirtualMachineStatus[]> => {
    const statuses = composeAll(deps, observation, plan, views, now(), new Set(results.keys()));
    await deps.writeStatus(statuses, observation.hosts);
    return statuses;
  };
  const run = async (
    start: Parameters<typeof runMigration>[0],
    vm: string,
    id: string,
  ): Promise<RunResult> => {
    const vlog = log.child({ vm, migration: id });
    const actors = createStepActors({ ...stepDeps, logger: vlog });
    const res = await runMigration(start, {
      actors,
      store: deps.store,
      onTransition: async (step, context) => {
        vlog.info({ step, bytesDone: context.bytesDone, bytesTotal: context.bytesTotal }, 'migration step');
        views.set(vm, { step, context });
        await writeAll();
      },
    });
    vlog.info(
      { step: res.step, pauseMs: res.context.pauseMs, reason: res.context.lastError?.reason },
      'migration finished',
    );
    results.set(vm, res);
    views.set(vm, { step: res.step, context: res.context });
    deps.onMigrationEnd?.(vm, res);
    return res;
  };

  // 1. Resume every interrupted migration before planning anything new.
  const { records, problems } = await deps.store.listActive();
  for (const p of problems) log.error({ file: p.file }, `unreadable migration state: ${p.message}`);
  if (records.length) {
    log.info({ count: records.length }, 'resuming interrupted migrations');
    await Promise.all(records.map((r: StoredMigration) => run({ snapshot: r.snapshot }, r.vm, r.id)));
    observation = await observe(deps.desired, deps.driverFor, now);
  }
  for (const vm of deps.desired.vms.keys()) {
    if (views.has(vm)) continue;
    const last = await deps.store.lastDone(vm);
    const snap = last?.snapshot as { value?: string; context?: MigrationContext } | undefined;
    if (snap?.value && snap.context) views.set(vm, { step: snap.value, context: snap.context });
  }

  // 2. Plan against what is there now.
  plan = planMigrations(deps.desired, toActual(observation, deps.previous), policy, {
    revision: deps.revision,
  });
  for (const [host, why] of observation.unreachable) log.error({ host, reason: why.reason }, why.message);
  await writeAll();
  // a VM whose resumed migration stopped for a human (e.g. SavedStateLost) is not tried again in
  // this pass: a new attempt would only overwrite that report
  const runnable = plan.migrations.filter(
    (m) => !m.blocked && !NEEDS_HUMAN_REASONS.has(results.get(m.vm)?.context.lastError?.reason ?? ''),
  );
  if (runnable.length && deps.confirm && !(await deps.confirm(plan))) {
    return finish(false);
  }

  // 3. Run, in plan order, at most `parallel` at once.
  const topo = new Topology(deps.desired, toActual(observation, deps.previous));
  const queue = [...runnable].sort((a, b) => a.order - b.order);
  const parallel = Math.max(1, deps.parallel ?? 2);
  const workers = Array.from({ length: Math.min(parallel, queue.length) }, async () => {
    for (let m = queue.shift(); m; m = queue.shift()) {
      const id = newMigrationId(now());
      const input = migrationInput(m, id, topo, policy, maxPauseOf(deps.desired, m.vm));
      deps.onMigrationStart?.(m, id);
      await run({ input, startedAt: now().toISOString() }, m.vm, id).catch((err: unknown) => {
        log.error({ err, vm: m.vm }, 'migration crashed');
      });
    }
  });
  await Promise.all(workers);

  // 4. Observe again and write the final status.
  observation = await observe(deps.desired, deps.driverFor, now);
  plan = planMigrations(deps.desired, toActual(observation, deps.previous), policy, {
    revision: deps.revision,
  });
  return finish(true);

  async function finish(_ran: boolean): Promise<ApplyResult> {
    const statuses = await writeAll();
    const anyFailed =
      [...results.values()].some((r) => r.step !== 'Completed') || plan.migrations.some((m) => m.blocked);
    const converged = plan.migrations.length === 0 && plan.unknown.length === 0;
    return { plan, results, statuses, converged, anyFailed };
  }
}

/** The machine's input for a planned migration: storage names resolved to paths on the target. */
export function migrationInput(
  m: PlannedMigration,
  id: string,
  topo: Topology,
  policy: PlanPolicy = DEFAULT_POLICY,
  /** spec.maxPause of the VM, in ms */
  maxPauseMs?: number,
): MigrationInput {
  return {
    id,
    vm: m.vm,
    strategy: m.strategy,
    fromHost: m.from.host,
    toHost: m.to.host,
    moves: m.disks.map((d) => {
      const loc = topo.resolve(m.to.host, d.to);
      if (!loc) throw new Error(`storage ${d.to} is not known on host ${m.to.host}`);
      const from = topo.resolve(m.from.host, d.from);
      return {
        target: d.target,
        fromStorage: d.from,
        toStorage: d.to,
        toPath: path.posix.normalize(loc.path),
        // the same location (a cluster's shared storage): nothing to copy
        ...(from?.key === loc.key ? { stays: true } : {}),
      };
    }),
    targetMarginBytes: policy.targetMarginBytes,
    sourceHeadroomRatio: policy.sourceHeadroomRatio,
    ...sharedStatePathOf(m, topo),
    maxPauseMs: maxPauseMs ?? 1000,
    maxRounds: policy.maxDeltaRounds ?? 8,
    maxForwardAttempts: 5,
  };
}

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

export function composeAll(
  deps: Pick<ApplyDeps, 'desired' | 'previous' | 'revision'>,
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

/** A VM's `spec.maxPause` in ms (undefined when absent or not a duration). */
export function maxPauseOf(desired: DesiredState, vm: string): number | undefined {
  const text = desired.vms.get(vm)?.spec.maxPause;
  if (!text) return undefined;
  try {
    return parseDuration(text);
  } catch {
    return undefined;
  }
}

/** For hosts of one cluster: the path of a shared location both mount (the state file goes there). */
function sharedStatePathOf(m: PlannedMigration, topo: Topology): { sharedStatePath?: string } {
  if (m.from.host === m.to.host) return {};
  const there = new Set(topo.locationsOf(m.to.host).map((l) => l.key));
  const shared = topo.locationsOf(m.from.host).find((l) => l.scope === 'cluster' && there.has(l.key));
  return shared ? { sharedStatePath: path.posix.normalize(shared.path) } : {};
}
