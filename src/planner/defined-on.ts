/**
 * A VM defined on more than one host: a stale definition that a host reboot (autostart) or an
 * operator could start beside the real one, each writing its own copy of the data. vmplace
 * moves such a VM only after a human removed the stale definition.
 */
import type { ActualState, Finding, VmFinding } from '../types';
import type { PlacementDiff } from './diff';

/** The hosts defining `vm` according to its status, when there is more than one. */
function severalHosts(actual: ActualState, vm: string): string[] | undefined {
  const hosts = [...new Set(actual.vms.get(vm)?.definedOn ?? [])].sort();
  return hosts.length > 1 ? hosts : undefined;
}

function message(vm: string, hosts: readonly string[]): string {
  return `a domain ${vm} is defined on ${hosts.length} hosts (${hosts.join(', ')}); undefine the stale one: a second definition can start a second copy of the VM`;
}

/**
 * `DefinedOnSeveralHosts` findings: blocking (error) on every drafted migration of such a VM,
 * a warning in the plan's own findings for such a VM without a migration (`unmoved`: unchanged
 * or suspended VMs), so that it is reported even when nothing would move it.
 */
export function definedOnFindings(
  actual: ActualState,
  drafts: readonly { diff: PlacementDiff; findings: Finding[] }[],
  unmoved: readonly string[],
): VmFinding[] {
  for (const d of drafts) {
    const hosts = severalHosts(actual, d.diff.vm);
    if (hosts)
      d.findings.push({
        severity: 'error',
        reason: 'DefinedOnSeveralHosts',
        message: message(d.diff.vm, hosts),
      });
  }
  const out: VmFinding[] = [];
  for (const vm of [...unmoved].sort()) {
    const hosts = severalHosts(actual, vm);
    if (hosts)
      out.push({
        subject: `VirtualMachine/${vm}`,
        vm,
        severity: 'warning',
        reason: 'DefinedOnSeveralHosts',
        message: message(vm, hosts),
      });
  }
  return out;
}
