/**
 * The daemon's Prometheus metrics on a private registry (never prom-client's global one), all
 * prefixed `vmplace_`, with low cardinality: no label holds a VM, host or path name.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ReplicaStats } from '../coord/coordination';
import type { Phase, Strategy } from '../types';

/** How a migration ended, as counted by `vmplace_migrations_total{result}`. */
export type MigrationResult = 'completed' | 'rolled_back' | 'failed' | 'blocked';

/** Every value of `phase` in `vmplace_vms`; all are set on each {@link DaemonMetrics.setVmPhases}. */
export const PHASES: readonly Phase[] = ['Placed', 'Pending', 'Migrating', 'Blocked', 'Failed', 'Unknown'];
const RESULTS: readonly MigrationResult[] = ['completed', 'rolled_back', 'failed', 'blocked'];
const STRATEGIES: readonly Strategy[] = ['quick', 'live', 'cold'];

/** Seconds; a pass without migrations takes well under a second, one with a copy can take hours. */
export const RECONCILE_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200];
/** Seconds a guest is paused during a migration: 10 ms up to 10 s. */
export const PAUSE_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * The daemon's metrics. Create one per process (or per test); `registry` is what `/metrics`
 * serves.
 */
export class DaemonMetrics {
  readonly registry: Registry;
  private readonly reconcileDuration: Histogram;
  private readonly migrations: Counter<'result' | 'strategy'>;
  private readonly pause: Histogram;
  private readonly bytesCopied: Counter;
  private readonly vms: Gauge<'phase'>;
  private readonly lastGitSync: Gauge;
  private readonly gitSyncErrors: Counter;
  private readonly statusCommits: Counter;

  /**
   * Several replicas: ownership and lease state of this replica, read at each scrape, labelled
   * by replica name (`vmplace_replica_*`), and takeovers counted.
   */
  watchReplica(stats: () => ReplicaStats): void {
    const registers = [this.registry];
    const labelNames = ['replica'] as const;
    const gauge = (name: string, help: string, value: (s: ReplicaStats) => number): void => {
      new Gauge({
        name,
        help,
        labelNames,
        registers,
        collect() {
          const s = stats();
          this.reset();
          this.set({ replica: s.replica }, value(s));
        },
      });
    };
    gauge('vmplace_replica_owned_vms', 'VMs whose lock this replica holds.', (s) => s.owned);
    gauge(
      'vmplace_replica_members',
      'Live replicas sharing the fleet, as this replica sees them.',
      (s) => s.members.length,
    );
    gauge('vmplace_replica_lease_ok', '1 while the lease was kept alive within half its TTL.', (s) =>
      s.leaseOk ? 1 : 0,
    );
    gauge(
      'vmplace_replica_lease_age_seconds',
      'Seconds since the last successful keepalive was sent (+Inf without a lease).',
      (s) => s.leaseAgeSeconds,
    );
    gauge('vmplace_replica_leader', '1 on the replica that writes the hosts’ status and the summary.', (s) =>
      s.leader ? 1 : 0,
    );
    gauge(
      'vmplace_replica_fenced_writes',
      'State writes refused by the fence since start.',
      (s) => s.fencedWrites,
    );
    this.takeovers = new Counter({
      name: 'vmplace_replica_takeovers_total',
      help: 'Migrations this replica took over from a replica that was gone.',
      labelNames,
      registers,
    });
    this.replica = stats().replica;
    this.takeovers.inc({ replica: this.replica }, 0);
  }

  private takeovers?: Counter<'replica'>;
  private replica = '';

  /** A migration was taken over from a replica that was gone. */
  tookOver(): void {
    this.takeovers?.inc({ replica: this.replica });
  }

  /** @param opts.defaultMetrics collect process metrics (`vmplace_process_*`, `vmplace_nodejs_*`); default true */
  constructor(opts: { defaultMetrics?: boolean } = {}) {
    const registers = [(this.registry = new Registry())];
    this.reconcileDuration = new Histogram({
      name: 'vmplace_reconcile_duration_seconds',
      help: 'Duration of reconcile passes, migrations included.',
      buckets: RECONCILE_BUCKETS,
      registers,
    });
    this.migrations = new Counter({
      name: 'vmplace_migrations_total',
      help: 'Migrations that ended, by result (completed, rolled_back, failed, blocked) and strategy.',
      labelNames: ['result', 'strategy'],
      registers,
    });
    this.pause = new Histogram({
      name: 'vmplace_migration_pause_seconds',
      help: 'Time a guest was paused during a completed migration.',
      buckets: PAUSE_BUCKETS,
      registers,
    });
    this.bytesCopied = new Counter({
      name: 'vmplace_bytes_copied_total',
      help: 'Disk bytes copied by migrations.',
      registers,
    });
    this.vms = new Gauge({
      name: 'vmplace_vms',
      help: 'Virtual machines by phase, as of the last reconcile pass.',
      labelNames: ['phase'],
      registers,
    });
    this.lastGitSync = new Gauge({
      name: 'vmplace_last_git_sync_timestamp_seconds',
      help: 'Unix time of the last successful git sync.',
      registers,
    });
    this.gitSyncErrors = new Counter({
      name: 'vmplace_git_sync_errors_total',
      help: 'Failed git syncs (fetch or clone).',
      registers,
    });
    this.statusCommits = new Counter({
      name: 'vmplace_status_commits_total',
      help: 'Status commits pushed.',
      registers,
    });
    // every series exists from the start, so rate() and absent() behave before the first event
    for (const result of RESULTS)
      for (const strategy of STRATEGIES) this.migrations.inc({ result, strategy }, 0);
    for (const phase of PHASES) this.vms.set({ phase }, 0);
    if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: 'vmplace_' });
  }

  /**
   * Count a finished migration; `pauseMs` (guest pause) and `bytes` (copied) when known.
   * `bytes` counts for every result: a rolled-back copy still moved data.
   */
  recordMigration(result: MigrationResult, strategy: Strategy, pauseMs?: number, bytes?: number): void {
    this.migrations.inc({ result, strategy });
    if (pauseMs !== undefined && pauseMs >= 0) this.pause.observe(pauseMs / 1000);
    if (bytes !== undefined && bytes > 0) this.bytesCopied.inc(bytes);
  }

  /** Observe the duration of one reconcile pass. */
  observeReconcile(seconds: number): void {
    this.reconcileDuration.observe(seconds);
  }

  /** Set `vmplace_vms` for every phase; phases missing from `counts` are 0. */
  setVmPhases(counts: Partial<Record<Phase, number>>): void {
    for (const phase of PHASES) this.vms.set({ phase }, counts[phase] ?? 0);
  }

  /** A git sync succeeded at `at`. */
  markGitSync(at: Date = new Date()): void {
    this.lastGitSync.set(at.getTime() / 1000);
  }

  /** A git sync failed. */
  gitSyncFailed(): void {
    this.gitSyncErrors.inc();
  }

  /** A status commit was pushed. */
  statusCommitted(): void {
    this.statusCommits.inc();
  }

  /** The text exposition format, as `/metrics` serves it. */
  metrics(): Promise<string> {
    return this.registry.metrics();
  }

  /** Content type of {@link metrics}. */
  get contentType(): string {
    return this.registry.contentType;
  }
}
