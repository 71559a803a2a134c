/**
 * Migrations in flight, for the plan a person reads (`vmplace plan`): a VM whose status says
 * `Migrating` is not "unchanged" even when its observed placement already matches the
 * manifests (restored on the target, not yet cleaned up), and a planned move of such a VM says
 * that one is running. The reconciler does not use this: it resumes its own migrations from its
 * store and decides cancellation on the plain plan.
 */
import type { ActualState, MigrationStatus, Plan } from '../types';

/** Reason of the finding on a planned move whose VM has a migration in flight. */
export const MIGRATION_IN_FLIGHT = 'MigrationInFlight';

/** `migration m-1 to hv-b/fast is at CopyingBase (40% of 2.0 GiB copied)` */
export function describeInFlight(m: MigrationStatus): string {
  const to = `${m.to.host}${m.to.storage ? `/${m.to.storage}` : ''}`;
  const pct = m.bytesTotal > 0 ? Math.floor((100 * m.bytesDone) / m.bytesTotal) : 0;
  return `migration ${m.id} to ${to} is at ${m.step} (${pct}% copied)`;
}

/**
 * `plan` with the VMs of `actual` in phase `Migrating` taken out of `unchanged` into `inFlight`,
 * and an info finding ({@link MIGRATION_IN_FLIGHT}) on each planned move of such a VM. Pure: a
 * new plan, `plan` itself is not changed.
 */
export function markInFlight(plan: Plan, actual: ActualState): Plan {
  const running = (vm: string): MigrationStatus | undefined => {
    const s = actual.vms.get(vm);
    return s?.phase === 'Migrating' ? s.migration : undefined;
  };
  const inFlight = plan.unchanged.filter((vm) => running(vm) !== undefined);
  const migrations = plan.migrations.map((m) => {
    const r = running(m.vm);
    if (!r) return m;
    return {
      ...m,
      findings: [
        ...m.findings,
        {
          severity: 'info' as const,
          reason: MIGRATION_IN_FLIGHT,
          message: `${describeInFlight(r)}; the daemon resumes it, or cancels it if the manifests now want the VM elsewhere`,
        },
      ],
    };
  });
  const out: Plan = {
    ...plan,
    migrations,
    unchanged: plan.unchanged.filter((vm) => running(vm) === undefined),
  };
  if (inFlight.length) out.inFlight = [...(plan.inFlight ?? []), ...inFlight].sort();
  return out;
}
