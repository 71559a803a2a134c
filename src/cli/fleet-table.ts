/**
 * `vmplace status`: the fleet as a table in the terminal, one row per VM, like `kubectl get`:
 * upper-case headers, columns three spaces apart, `-` for nothing. Pure: the statuses come from
 * the status files or a daemon (src/app/fleet.ts); every cell passes through {@link safeText}, so
 * a name or an error from status cannot move the cursor or reorder the text.
 */
import { formatBytes } from '../planner/bytes';
import { safeText } from '../text';
import type { MigrationStatus, MigrationStep, VirtualMachineStatus } from '../types';

/** The columns, in order. */
export const FLEET_COLUMNS = ['VM', 'HOST', 'STORAGE', 'PHASE', 'STEP', 'PROGRESS', 'PAUSE'] as const;

const FINAL_STEPS: ReadonlySet<MigrationStep> = new Set(['Completed', 'RolledBack', 'Failed', 'Blocked']);

/** True while a migration is under way (not pending, not in a final step). */
function inFlight(m: MigrationStatus | undefined): m is MigrationStatus {
  return m !== undefined && m.step !== 'Pending' && !FINAL_STEPS.has(m.step);
}

/** `a->b` when a migration in flight changes it, else `a`. */
function moving(now: string, to: string | undefined, m: MigrationStatus | undefined): string {
  return inFlight(m) && to !== undefined && to !== now ? `${now}->${to}` : now;
}

/** Human pause: `640ms`, `1.2s`. */
export function formatPause(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)}ms` : `${(ms / 1000).toFixed(1)}s`;
}

/** The cells of one VM's row. */
export function fleetRow(s: VirtualMachineStatus): string[] {
  const m = s.migration;
  const host = s.placement?.host ?? m?.from.host ?? '-';
  const storages = [...new Set((s.placement?.disks ?? []).map((d) => d.storage ?? '?'))];
  const storage = storages.length ? storages.join(',') : '-';
  const step = m ? (m.step === 'DeltaRound' && m.round ? `${m.step} ${m.round}` : m.step) : '-';
  const progress =
    m && m.bytesTotal > 0
      ? `${Math.floor((Math.min(m.bytesDone, m.bytesTotal) / m.bytesTotal) * 100)}% of ${formatBytes(m.bytesTotal)}`
      : '-';
  return [
    s.metadata.name,
    moving(host, m?.to.host, m),
    moving(storage, m?.to.storage, m),
    s.phase,
    step,
    progress,
    m?.pauseMs !== undefined ? formatPause(m.pauseMs) : '-',
  ].map((c) => safeText(c));
}

/**
 * The table, sorted by VM name, ending with a newline; the empty string for no VMs (the caller
 * says so, as `kubectl get` says "No resources found").
 */
export function renderFleetTable(vms: readonly VirtualMachineStatus[]): string {
  if (vms.length === 0) return '';
  const rows = [...vms]
    .sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0))
    .map(fleetRow);
  const all = [[...FLEET_COLUMNS], ...rows];
  const widths = FLEET_COLUMNS.map((_, i) => Math.max(...all.map((r) => r[i]!.length)));
  return all
    .map((r) =>
      r
        .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]! + 3)))
        .join('')
        .trimEnd(),
    )
    .join('\n')
    .concat('\n');
}
