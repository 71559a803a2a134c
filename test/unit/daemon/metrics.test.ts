import { register as globalRegistry } from 'prom-client';
import { DaemonMetrics } from '../../../src/daemon/metrics';

/** The value of one sample line, e.g. `vmplace_vms{phase="Placed"}`. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('DaemonMetrics', () => {
  it('registers every metric on a private registry, all prefixed vmplace_', async () => {
    const m = new DaemonMetrics();
    const text = await m.metrics();
    for (const name of [
      'vmplace_reconcile_duration_seconds',
      'vmplace_migrations_total',
      'vmplace_migration_pause_seconds',
      'vmplace_bytes_copied_total',
      'vmplace_vms',
      'vmplace_last_git_sync_timestamp_seconds',
      'vmplace_git_sync_errors_total',
      'vmplace_status_commits_total',
      'vmplace_process_cpu_user_seconds_total',
      'vmplace_nodejs_eventloop_lag_seconds',
    ]) {
      expect(text).toContain(`# TYPE ${name} `);
    }
    const names = text
      .split('\n')
      .filter((l) => l.startsWith('# TYPE '))
      .map((l) => l.split(' ')[2]!);
    expect(names.filter((n) => !n.startsWith('vmplace_'))).toEqual([]);
    expect(await globalRegistry.metrics()).not.toContain('vmplace_');
    expect(m.contentType).toMatch(/^text\/plain/);
    // a second instance does not clash (tests, restarts in-process)
    expect(() => new DaemonMetrics({ defaultMetrics: false })).not.toThrow();
  });

  it('counts migrations by result and strategy with pause and bytes', async () => {
    const m = new DaemonMetrics({ defaultMetrics: false });
    let text = await m.metrics();
    expect(sample(text, 'vmplace_migrations_total{result="completed",strategy="quick"}')).toBe(0);
    m.recordMigration('completed', 'quick', 40, 1_000_000);
    m.recordMigration('completed', 'quick', 2500);
    m.recordMigration('rolled_back', 'live', undefined, 500);
    m.recordMigration('blocked', 'cold');
    text = await m.metrics();
    expect(sample(text, 'vmplace_migrations_total{result="completed",strategy="quick"}')).toBe(2);
    expect(sample(text, 'vmplace_migrations_total{result="rolled_back",strategy="live"}')).toBe(1);
    expect(sample(text, 'vmplace_migrations_total{result="blocked",strategy="cold"}')).toBe(1);
    expect(sample(text, 'vmplace_migrations_total{result="failed",strategy="quick"}')).toBe(0);
    expect(sample(text, 'vmplace_migration_pause_seconds_count')).toBe(2);
    expect(sample(text, 'vmplace_migration_pause_seconds_sum')).toBeCloseTo(2.54);
    expect(sample(text, 'vmplace_migration_pause_seconds_bucket{le="0.05"}')).toBe(1);
    expect(sample(text, 'vmplace_migration_pause_seconds_bucket{le="0.01"}')).toBe(0);
    expect(sample(text, 'vmplace_migration_pause_seconds_bucket{le="10"}')).toBe(2);
    expect(sample(text, 'vmplace_bytes_copied_total')).toBe(1_000_500);
  });

  it('sets every phase on each pass and keeps the rest of the state', async () => {
    const m = new DaemonMetrics({ defaultMetrics: false });
    m.setVmPhases({ Placed: 5, Migrating: 1 });
    m.setVmPhases({ Placed: 6 });
    m.observeReconcile(0.3);
    m.markGitSync(new Date('2025-01-15T10:00:00Z'));
    m.gitSyncFailed();
    m.statusCommitted();
    m.statusCommitted();
    const text = await m.metrics();
    expect(sample(text, 'vmplace_vms{phase="Placed"}')).toBe(6);
    expect(sample(text, 'vmplace_vms{phase="Migrating"}')).toBe(0);
    expect(sample(text, 'vmplace_vms{phase="Unknown"}')).toBe(0);
    expect(sample(text, 'vmplace_reconcile_duration_seconds_count')).toBe(1);
    expect(sample(text, 'vmplace_reconcile_duration_seconds_bucket{le="0.25"}')).toBe(0);
    expect(sample(text, 'vmplace_reconcile_duration_seconds_bucket{le="0.5"}')).toBe(1);
    expect(sample(text, 'vmplace_last_git_sync_timestamp_seconds')).toBe(1736935200);
    expect(sample(text, 'vmplace_git_sync_errors_total')).toBe(1);
    expect(sample(text, 'vmplace_status_commits_total')).toBe(2);
  });

  it('has no per-VM labels: every series uses only phase, result, strategy or le', async () => {
    const m = new DaemonMetrics({ defaultMetrics: false });
    m.recordMigration('failed', 'live', 10, 10);
    const labels = new Set([...(await m.metrics()).matchAll(/[{,]([a-z_]+)="/g)].map((x) => x[1]));
    expect([...labels].sort()).toEqual(['le', 'phase', 'result', 'strategy']);
  });
});
