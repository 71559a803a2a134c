/** CPU findings of a move between two hosts, from the CPUs their status files report (pure). */
import type { Finding, Strategy } from '../types';
import type { Topology } from './topology';

export function cpuFindings(
  topology: Topology,
  fromHost: string,
  toHost: string,
  strategy: Strategy,
): Finding[] {
  const a = topology.hostStatus(fromHost)?.cpu;
  const b = topology.hostStatus(toHost)?.cpu;
  if (a === undefined || b === undefined) return [];
  if (a.vendor !== undefined && b.vendor !== undefined && a.vendor !== b.vendor) {
    // A cold move boots the guest afresh, so a different vendor is a risk, not a blocker.
    return [
      {
        severity: strategy === 'cold' ? 'warning' : 'error',
        reason: 'CpuVendorMismatch',
        message: `CPU vendor differs: ${fromHost} has ${a.vendor}, ${toHost} has ${b.vendor}; a running guest cannot move between them`,
      },
    ];
  }
  if (a.model !== undefined && b.model !== undefined && a.model !== b.model) {
    return [
      {
        severity: 'warning',
        reason: 'CpuModelMismatch',
        message: `CPU model differs: ${fromHost} has ${a.model}, ${toHost} has ${b.model}; the guest CPU model must be available on both`,
      },
    ];
  }
  return [];
}
