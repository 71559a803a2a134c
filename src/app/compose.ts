import type { Logger } from 'pino';
import { Daemon, type DaemonOptions } from '../daemon/daemon';
import { createDrivers, type DriverSet } from '../drivers/factory';
import type { StepActors } from '../machine/runner';
import { createStepActors, type StepDeps, storeRecords } from '../machine/steps';
import { SOLO, type Coordination } from '../coord/coordination';
import { EtcdCoordination } from '../coord/etcd/coordination';
import type { EtcdOptions } from '../coord/etcd/options';
import { fencedDriver, fencedTransport } from '../coord/fenced';
import { MigrationStore, type MigrationRecords } from '../machine/store';
import { hostsSharingPath } from '../planner/shared-storage';
import { Reconciler, type ReconcilerEvents, type StepRun } from '../reconciler/reconciler';
import type { DesiredState } from '../types';

/**
 * The composition root: builds the drivers, the migration store, the step actors and the
 * reconciler, the same way for `vmplace apply` and `vmplace daemon`. The CLI parses arguments
 * and prints; the daemon schedules passes and commits status; neither builds any of this.
 */

/** What the real steps of a migration are wired to, besides what the reconciler gives each run. */
export interface StepWorld {
  /** the drivers of the current manifests (undefined before the first manifests are read) */
  drivers: () => DriverSet | undefined;
  /** the current manifests: hosts' specs (transfer addresses, ssh) and shared storage */
  desired: () => DesiredState | undefined;
  store: MigrationRecords;
  onProgress?: StepDeps['onProgress'];
}

/**
 * The real step actors of one migration. The one place where drivers, manifests and the
 * migration store are wired into the steps' deps: a change of the driver contract or of the
 * steps' deps is made here and nowhere else.
 */
export function stepActorsFor(world: StepWorld, run: StepRun): StepActors {
  const drivers = (): DriverSet => {
    const d = world.drivers();
    if (!d) throw new Error('no drivers: no manifests were read');
    return d;
  };
  const store = world.store;
  // one daemon: the fence lets everything through, and the driver is used as it is
  const shared = run.fence.revision !== '';
  return createStepActors({
    driverFor: (h) => {
      const d = drivers().get(h);
      if (!d) throw new Error(`no driver for host ${h}`);
      return shared ? fencedDriver(d, run.fence) : d;
    },
    transportFor: (from, to) => {
      const t = drivers().transportFor(from, to);
      return t && shared ? fencedTransport(t, run.fence) : t;
    },
    hostSpecFor: (h) => world.desired()?.hosts.get(h)?.spec,
    sharedWith: (h, p) => {
      const d = world.desired();
      return d ? hostsSharingPath(d, h, p) : [];
    },
    ...storeRecords(store, run.fence),
    stopping: run.stopping,
    beforeStep: run.beforeStep,
    track: run.track,
    logger: run.logger,
    ...(run.bwlimitKiBps ? { bwlimitKiBps: run.bwlimitKiBps } : {}),
    ...(world.onProgress ? { onProgress: world.onProgress } : {}),
  });
}

export interface RuntimeOptions {
  stateDir: string;
  logger: Logger;
  events?: ReconcilerEvents;
  onProgress?: StepDeps['onProgress'];
  /** base of the per-VM retry backoff (default 30 s) */
  backoffBaseMs?: number;
  /** how replicas share the fleet (default: one daemon) */
  coordination?: Coordination;
}

/** The store, the drivers and the reconciler of one process. */
export interface Runtime {
  store: MigrationRecords;
  reconciler: Reconciler;
  /** Serve these manifests: drivers are rebuilt when the hosts' or clusters' manifests change. */
  useDesired(desired: DesiredState): void;
  /** Close the drivers' connections. */
  close(): Promise<void>;
}

export function composeRuntime(o: RuntimeOptions): Runtime {
  const coordination = o.coordination ?? SOLO;
  const store = coordination.store(new MigrationStore(o.stateDir));
  let desired: DesiredState | undefined;
  let drivers: DriverSet | undefined;
  let driversKey = '';
  const world: StepWorld = {
    drivers: () => drivers,
    desired: () => desired,
    store,
    ...(o.onProgress ? { onProgress: o.onProgress } : {}),
  };
  const reconciler = new Reconciler({
    ...o.events,
    driverFor: (h) => drivers?.get(h),
    store,
    coordination,
    logger: o.logger,
    actorsFor: (_vm, run) => stepActorsFor(world, run),
    ...(o.backoffBaseMs !== undefined ? { backoffBaseMs: o.backoffBaseMs } : {}),
  });
  return {
    store,
    reconciler,
    useDesired(d) {
      desired = d;
      const key = JSON.stringify(
        [...d.hosts.values(), ...d.clusters.values()].map((x) => [x.kind, x.metadata.name, x.spec]),
      );
      if (key === driversKey && drivers) return;
      const old = drivers;
      drivers = createDrivers(d, { stateDir: o.stateDir, logger: o.logger });
      driversKey = key;
      // in-flight migrations may still use the old drivers' connections; detached: closeAll
      // never rejects (each close's error is dropped) and nothing waits for it
      if (old && reconciler.inFlight().length === 0) void old.closeAll();
    },
    close: async () => {
      await drivers?.closeAll();
    },
  };
}

/** `vmplace daemon` over the runtime of {@link composeRuntime}. */
export function createDaemon(opts: DaemonOptions & { etcd?: EtcdOptions }): Daemon {
  const { etcd, ...rest } = opts;
  const coordination = etcd
    ? new EtcdCoordination(etcd, opts.logger.child({ component: 'etcd', replica: etcd.replicaId }))
    : SOLO;
  return new Daemon({ ...rest, coordination }, (events, onProgress) =>
    composeRuntime({ stateDir: opts.stateDir, logger: opts.logger, events, onProgress, coordination }),
  );
}
