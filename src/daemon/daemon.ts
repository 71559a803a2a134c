import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { stringify } from 'yaml';
import { SOLO, type Coordination } from '../coord/coordination';
import { describeError, outcomeOf } from '../errors';
import { Notifier } from '../notify/notifier';
import type { RunResult } from '../machine/runner';
import type { MigrationRecords } from '../machine/store';
import { loadDesiredState } from '../manifests';
import { loadActualState, writeStatusFiles } from '../status/files';
import type { PassResult, Reconciler, ReconcilerEvents } from '../reconciler/reconciler';
import { migrationStatus } from '../reconciler/compose-status';
import type { MigrationContext } from '../machine/types';
import { insideMaintenanceWindow, loadSettings, SettingsKeeper, type Settings } from '../settings';
import { FleetEvents } from '../ui/events';
import { pageRoutes } from '../ui/page';
import { buildFleetView, ProgressTracker, type FinishedView, type FleetView } from '../ui/view';
import { writeRepoFile } from '../status/files';
import { GitSync, type GitCredentials } from '../status/git';
import type { LoadOptions } from '../manifests/load';
import { capProblems, formatProblem, formatProblemsCapped } from '../manifests/format';
import type { DesiredState, HostStatus, Problem, VirtualMachineStatus } from '../types';
import { isLoopback, parseListen, startHttpServer, type HttpServer } from './http';
import { acquireLock, workdirLockLocation, type Lock } from './lock';
import { DaemonMetrics, type MigrationResult } from './metrics';
import { watchManifests, type ManifestWatcher } from './watch';

export interface DaemonOptions {
  repo: string;
  branch: string;
  workdir: string;
  stateDir: string;
  intervalMs: number;
  listen: string;
  webhookSecret?: Buffer;
  /** credentials for an https remote, handed to git by a credential helper (see GitSync) */
  gitCredentials?: GitCredentials;
  /** the operator's trust file and vmplace's directories, for every load of the manifests */
  trust?: LoadOptions['trust'];
  author: { name: string; email: string };
  signingKey?: string;
  signingFormat?: 'openpgp' | 'ssh' | 'x509';
  /** how long SIGTERM waits for migrations to reach a checkpoint (default 120 s) */
  shutdownTimeoutMs: number;
  logger: Logger;
  /** several replicas sharing the fleet (etcd); default: this daemon alone */
  coordination?: Coordination;
  /** the fleet page's token (`--ui-token-file`); see src/ui/page.ts for when it is needed */
  uiToken?: Buffer;
}

/** Finished migrations the fleet page lists. */
const RECENT_FINISHED = 20;

/** What the daemon runs on, built by the composition root (src/app/compose.ts). */
export interface DaemonRuntime {
  store: MigrationRecords;
  reconciler: Reconciler;
  /** serve these manifests (drivers are rebuilt when hosts change) */
  useDesired(desired: DesiredState): void;
  close(): Promise<void>;
}

/**
 * `vmplace daemon`: follow a GitOps repository and converge. One pass at a time: fetch,
 * load the manifests at the fetched revision, observe, plan, cancel/start migrations (they run
 * in the background), write status and commit it (one commit per pass that changed
 * something). A pass runs every interval, on a webhook, on a change of a local working copy,
 * and when a migration finishes. A failing pass is logged and retried at the next trigger;
 * one bad VM or host never stops the others.
 */
export class Daemon {
  private readonly log: Logger;
  private readonly metrics = new DaemonMetrics();
  private readonly store: MigrationRecords;
  private git!: GitSync;
  private http?: HttpServer;
  private watcher?: ManifestWatcher;
  private locks: Lock[] = [];
  private readonly runtime: DaemonRuntime;
  private readonly reconciler: Reconciler;
  private ready = false;
  private stopping = false;
  private wake?: () => void;
  private pending = false;
  private loop?: Promise<void>;
  private lastPass?: PassResult;
  private lastProblems: Problem[] = [];
  private desired?: DesiredState;
  private readonly settings = new SettingsKeeper();
  /** when each migration finished, for the completion → status commit latency log */
  private finishedAt = new Map<string, number>();
  /** after a failed pass: when the next one runs (see `passFailed`), and how many failed in a row */
  private retryInMs?: number;
  private failedPasses = 0;
  private readonly coord: Coordination;
  /** the fleet page: copies' progress between steps, its event stream, what it shows of git */
  private readonly progress = new ProgressTracker();
  private readonly events = new FleetEvents(() => this.fleetView());
  private readonly finished: FinishedView[] = [];
  private settingsNow?: Settings;
  private sync: { revision?: string; manifestRevision?: string; at?: string; error?: string } = {};
  private readonly notifier: Notifier;

  constructor(
    private readonly opts: DaemonOptions,
    compose: (
      events: ReconcilerEvents,
      onProgress: (ctx: MigrationContext, done: number, total: number) => void,
    ) => DaemonRuntime,
  ) {
    this.log = opts.logger;
    this.coord = opts.coordination ?? SOLO;
    this.notifier = new Notifier({
      stateDir: opts.stateDir,
      replica: this.coord.replicaId,
      logger: this.log.child({ component: 'notify' }),
    });
    this.runtime = compose(
      {
        onStarted: (m, id) => {
          if (this.coord.owns(m.vm)) this.notifier.migrationStarted(m, id, this.labelsOf(m.vm));
        },
        onFinished: (vm, result) => this.migrationFinished(vm, result),
        onTakeover: () => this.metrics.tookOver(),
        onTransition: () => this.events.changed(),
      },
      (ctx, done, total) => {
        this.progress.record(ctx.id, done, total, Date.now());
        this.events.changed();
      },
    );
    this.store = this.runtime.store;
    this.reconciler = this.runtime.reconciler;
  }

  /** Take the locks, start serving, run the first pass, then keep going until `stop`. */
  async start(): Promise<void> {
    const wl = workdirLockLocation(this.opts.workdir);
    this.locks.push(await acquireLock(wl.dir, wl.name));
    this.locks.push(await acquireLock(this.opts.stateDir, 'daemon'));
    await this.store.init();
    await this.notifier.start({
      ...this.opts.trust,
      stateDir: this.opts.stateDir,
      workdir: this.opts.workdir,
      repoDir: this.opts.workdir,
    });
    if (this.coord.shared) {
      this.metrics.watchReplica(() => this.coord.stats());
      this.coord.onChange(() => this.trigger('replicas or locks changed'));
      this.coord.start?.();
    }
    this.git = new GitSync({
      repo: this.opts.repo,
      branch: this.opts.branch,
      workdir: this.opts.workdir,
      author: this.opts.author,
      ...(this.opts.gitCredentials ? { credentials: this.opts.gitCredentials } : {}),
      logger: this.log.child({ component: 'git' }),
      ...(this.opts.signingKey ? { signingKey: this.opts.signingKey } : {}),
      ...(this.opts.signingFormat ? { signingFormat: this.opts.signingFormat } : {}),
    });
    this.http = await startHttpServer({
      listen: this.opts.listen,
      metrics: this.metrics,
      onWebhook: () => this.trigger('webhook'),
      ...(this.opts.webhookSecret ? { webhookSecret: this.opts.webhookSecret } : {}),
      isReady: () => this.ready && this.coord.health().ready,
      notReadyWhy: () => (this.ready ? this.coord.health().why : 'the first pass has not finished'),
      fleet: () => ({ vms: this.reconciler.statuses(), hosts: this.lastPass?.hosts ?? [] }),
      routes: pageRoutes({
        events: this.events,
        ...(this.opts.uiToken ? { token: this.opts.uiToken } : {}),
        exposed: !isLoopback(parseListen(this.opts.listen).host),
      }),
      logger: this.log.child({ component: 'http' }),
    });
    if (!this.opts.uiToken && !isLoopback(parseListen(this.opts.listen).host))
      this.log.warn(
        { listen: this.opts.listen },
        'the fleet page is off: listening beyond loopback without --ui-token-file',
      );
    this.log.info({ listen: this.http.address.url }, 'serving health, readiness, metrics and webhooks');
    if (await isLocalWorkingCopy(this.opts.repo)) {
      try {
        this.watcher = await watchManifests(this.opts.repo, () => this.trigger('local change'));
        this.log.info({ repo: this.opts.repo }, 'watching the local working copy');
      } catch (err) {
        this.log.warn({ err }, 'cannot watch the local working copy; polling only');
      }
    }
    this.loop = this.run();
  }

  private labelsOf(vm: string): Record<string, string> | undefined {
    return this.desired?.vms.get(vm)?.metadata.labels;
  }

  private migrationFinished(vm: string, result: RunResult): void {
    if (result.stopped) return;
    const c = result.context;
    if (!result.lost && this.coord.owns(vm))
      this.notifier.migrationFinished(result.step, c, this.labelsOf(vm));
    const outcome: Record<string, MigrationResult> = {
      Completed: 'completed',
      RolledBack: 'rolled_back',
      Failed: 'failed',
      Blocked: 'blocked',
    };
    const r = outcome[result.step];
    if (r)
      this.metrics.recordMigration(
        r,
        c.strategy,
        c.pauseMs,
        result.step === 'Completed' ? c.bytesDone : undefined,
      );
    this.finishedAt.set(vm, Date.now());
    this.progress.forget(c.id);
    if (r) {
      const m = migrationStatus({ step: result.step, context: c });
      this.finished.unshift({
        vm,
        id: c.id,
        result: result.step,
        strategy: c.effectiveStrategy ?? c.strategy,
        from: m.from,
        to: m.to,
        bytes: c.bytesDone,
        ...(c.pauseMs !== undefined ? { pauseMs: c.pauseMs } : {}),
        startedAt: c.startedAt,
        finishedAt: c.finishedAt ?? new Date().toISOString(),
        ...(m.lastError ? { error: m.lastError } : {}),
      });
      this.finished.length = Math.min(this.finished.length, RECENT_FINISHED);
    }
    this.events.changed();
    this.trigger('migration finished');
  }

  /** What the fleet page shows now: what this replica knows (its own VMs when several share the fleet). */
  private fleetView(): FleetView {
    const now = new Date();
    const s = this.settingsNow;
    const windows = s?.maintenanceWindows ?? [];
    const stats = this.coord.shared ? this.coord.stats() : undefined;
    return buildFleetView({
      now,
      vms: this.reconciler.statuses().filter((v) => this.coord.owns(v.metadata.name)),
      hosts: this.lastPass?.hosts ?? [],
      ...(this.desired ? { desired: this.desired } : {}),
      progress: (id) => this.progress.get(id),
      ...(this.lastPass ? { heldBack: this.lastPass.deferred } : {}),
      recent: this.finished,
      daemon: {
        ...(this.sync.revision ? { revision: this.sync.revision } : {}),
        ...(this.sync.manifestRevision ? { manifestRevision: this.sync.manifestRevision } : {}),
        ...(this.sync.at ? { lastSyncAt: this.sync.at } : {}),
        ...(this.sync.error ? { syncError: this.sync.error } : {}),
        suspended: s?.suspend ?? false,
        outsideWindow: windows.length > 0 && !insideMaintenanceWindow(windows, now),
        windows: windows.length,
        ready: this.ready,
        ...(stats ? { replica: stats.replica } : {}),
      },
    });
  }

  /** The address the HTTP server listens on. */
  get address(): { host: string; port: number; url: string } | undefined {
    return this.http?.address;
  }

  /** Ask for a pass as soon as the current one (if any) is done. */
  trigger(reason: string): void {
    this.log.debug({ reason }, 'pass requested');
    this.pending = true;
    this.wake?.();
  }

  /**
   * SIGTERM: stop starting migrations, let the ones in flight reach a checkpoint where the VM
   * runs (bounded), write a last status, release everything.
   */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.log.info('stopping: letting migrations reach a checkpoint');
    this.wake?.();
    await this.loop;
    const { unfinished } = await this.reconciler.shutdown(this.opts.shutdownTimeoutMs);
    if (unfinished.length) this.log.warn({ vms: unfinished }, 'stopped with migrations between checkpoints');
    await this.commit('vmplace: status at shutdown').catch((err: unknown) =>
      this.log.error({ err }, 'last status commit failed'),
    );
    // several replicas: the lease is revoked, the others take the VMs at once
    await this.coord.close();
    await this.notifier.close();
    await this.watcher?.close();
    this.events.close();
    await this.http?.close();
    await this.runtime.close();
    for (const l of this.locks.reverse()) await l.release();
    this.log.info('stopped');
  }

  private async run(): Promise<void> {
    while (!this.stopping) {
      this.pending = false;
      await this.pass();
      if (this.stopping) break;
      if (!this.pending) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, this.retryInMs ?? this.opts.intervalMs);
          this.wake = () => {
            clearTimeout(t);
            resolve();
          };
        });
        this.wake = undefined;
      }
    }
  }

  /** One level-based pass. Never throws: a failed pass is logged and the next one tries again. */
  async pass(): Promise<void> {
    const t0 = process.hrtime.bigint();
    const log = this.log;
    try {
      let revision: string;
      try {
        revision = (await this.git.sync()).revision;
        this.metrics.markGitSync(new Date());
        this.sync = { ...this.sync, revision, at: new Date().toISOString() };
        delete this.sync.error;
        this.notifier.gitSync();
      } catch (err) {
        this.metrics.gitSyncFailed();
        this.notifier.gitSync(err);
        const d = describeError(err);
        this.sync = { ...this.sync, error: `${d.reason}: ${d.message}`.slice(0, 300) };
        this.events.changed();
        log.error({ err }, 'git sync failed; no pass until it works');
        this.passFailed(err);
        return;
      }
      const root = this.opts.workdir;
      const trust = { ...this.opts.trust, stateDir: this.opts.stateDir, workdir: this.opts.workdir };
      const desired = await loadDesiredState(root, { trust });
      const previous = await loadActualState(root);
      // unreadable or invalid: keep the last good settings (never defaults that lift suspend)
      const { settings, problems: settingsProblems } = this.settings.update(await loadSettings(root, trust));
      this.notifier.configure(settings.notifications, { ...trust, repoDir: root });
      const problems = [...desired.problems, ...previous.problems, ...settingsProblems];
      const capped = capProblems(problems);
      for (const p of capped.shown) log.error({ file: p.file, line: p.line, col: p.col }, formatProblem(p));
      for (const note of capped.notes) log.error(note);
      this.lastProblems = problems;
      this.desired = desired;
      this.runtime.useDesired(desired);
      const manifestRevision = (await this.git.lastManifestRevision().catch(() => undefined)) ?? revision;
      const result = await this.reconciler.pass({
        desired,
        previous: previous.state,
        settings,
        revision: manifestRevision,
      });
      this.lastPass = result;
      this.settingsNow = settings;
      this.sync.manifestRevision = manifestRevision;
      this.events.changed();
      this.notifyPass(result, desired);
      this.metrics.setVmPhases(result.phases);
      if (result.started.length) log.info({ vms: result.started, revision }, 'migrations started');
      await this.commit(`vmplace: status of ${manifestRevision.slice(0, 12)}`);
      this.ready = true;
      this.failedPasses = 0;
      // a start lost a race with another replica: try again soon, not at the next interval
      this.retryInMs = result.retrySoon
        ? Math.min(this.opts.intervalMs, 200 + Math.random() * 300)
        : undefined;
    } catch (err) {
      log.error({ err, ...describeError(err) }, 'pass failed');
      this.passFailed(err);
    } finally {
      this.metrics.observeReconcile(Number(process.hrtime.bigint() - t0) / 1e9);
    }
  }

  /** VMs the plan blocks (their owner tells), hosts unreachable (the elected replica tells). */
  private notifyPass(result: PassResult, desired: DesiredState): void {
    for (const m of result.plan.migrations)
      if (m.blocked && this.coord.owns(m.vm)) this.notifier.planBlocked(m, this.labelsOf(m.vm));
    if (this.coord.isLeader())
      this.notifier.hostsObserved([...desired.hosts.keys()], result.unreachable ?? new Map());
  }

  /** The next pass after a failed one: a waiting error's `retryAfterMs`, a backoff, at most the interval. */
  private passFailed(err: unknown): void {
    this.failedPasses++;
    const every = this.opts.intervalMs;
    const o = outcomeOf(err, { failures: this.failedPasses, backoffBaseMs: every, backoffMaxMs: every });
    this.retryInMs = o.next === 'requeue' ? Math.min(o.afterMs, every) : undefined;
  }

  private async commit(message: string): Promise<void> {
    if (!this.lastPass) return;
    const res = await this.git.commitStatus(async (wd) => {
      // Recomputed from memory on every attempt: a rejected push loses no update. Several
      // replicas: each writes the files of the VMs it holds, over the others' latest commit; the
      // one elected writes the hosts and the summary (from every VM's file as committed).
      const statuses = this.reconciler.statuses().filter((s) => this.coord.owns(s.metadata.name));
      const leader = this.coord.isLeader();
      await writeStatusFiles(wd, { vms: statuses, ...(leader ? { hosts: this.lastPass!.hosts } : {}) });
      if (!leader) return;
      const all = this.coord.shared ? [...(await loadActualState(wd)).state.vms.values()] : statuses;
      await writeSummary(wd, this.lastProblems, all, this.lastPass!.hosts, this.desired);
    }, message);
    if (res.committed) {
      this.metrics.statusCommitted();
      const now = Date.now();
      for (const [vm, at] of this.finishedAt) {
        this.log.info(
          { vm, ms: now - at, revision: res.revision },
          'status commit pushed after migration finished',
        );
      }
      this.finishedAt.clear();
      this.log.info({ revision: res.revision, attempts: res.attempts }, 'status committed');
    }
  }
}

/** `status/summary.yaml`: the problems of the manifests and the counts by phase. */
async function writeSummary(
  root: string,
  problems: Problem[],
  statuses: VirtualMachineStatus[],
  hosts: HostStatus[],
  desired?: DesiredState,
): Promise<void> {
  const phases: Record<string, number> = {};
  for (const s of statuses) phases[s.phase] = (phases[s.phase] ?? 0) + 1;
  const doc = {
    apiVersion: 'vmplace.dev/v1alpha1',
    kind: 'Summary',
    vms: statuses.length,
    hosts: hosts.length,
    phases: Object.fromEntries(Object.entries(phases).sort()),
    invalidFiles: [...(desired?.invalidFiles ?? [])].sort(),
    problems: formatProblemsCapped(problems),
  };
  // never through a link the repository holds (status/, status/summary.yaml): see writeRepoFile
  writeRepoFile(root, 'status/summary.yaml', stringify(doc));
}

async function isLocalWorkingCopy(repo: string): Promise<boolean> {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(repo) || /^[^/]+@[^:]+:/.test(repo)) return false;
  return fs
    .stat(path.join(repo, 'manifests'))
    .then((s) => s.isDirectory())
    .catch(() => false);
}
