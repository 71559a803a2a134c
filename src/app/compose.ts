import type { Logger } from 'pino';
import { Daemon, type DaemonOptions } from '../daemon/daemon';
import { createDrivers, type DriverSet } from '../drivers/factory';
import type { StepActors } from '../machine/runner';
import { createStepActors, type StepDeps, storeRecords } from '../machine/steps';
import { MigrationStore } from '../machine/store';
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
  store: MigrationStore;
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
  return createStepActors({
    driverFor: (h) => {
      const d = drivers().get(h);
      if (!d) throw new Error(`no driver for host ${h}`);
      return d;
    },
    transportFor: (from, to) => drivers().transportFor(from, to),
    hostSpecFor: (h) => world.desired()?.hosts.get(h)?.spec,
    sharedWith: (h, p) => {
      const d = world.desired();
      return d ? hostsSharingPath(d, h, p) : [];
    },
    ...storeRecords(store),
    stopping: run.stopping,
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
}

/** The store, the drivers and the reconciler of one process. */
export interface Runtime {
  store: MigrationStore;
  reconciler: Reconciler;
  /** Serve these manifests: drivers are rebuilt when the hosts' or clusters' manifests change. */
  useDesired(desired: DesiredState): void;
  /** Close the drivers' connections. */
  close(): Promise<void>;
}

export function composeRuntime(o: RuntimeOptions): Runtime {
  const store = new MigrationStore(o.stateDir);
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
export function createDaemon(opts: DaemonOptions): Daemon {
  return new Daemon(opts, (events) =>
    composeRuntime({ stateDir: opts.stateDir, logger: opts.logger, events }),
  );
}
