/**
 * A per-disk override (`spec.disks.<target>`) is only meaningful for a disk the VM has: a typo
 * (`vbd` for `vdb`) would otherwise be ignored and the disk it meant would follow `spec.storage`.
 * Pure: the VM's disks come from its status (what was observed); a VM not observed yet is not
 * checked.
 */
import type { ActualState, DesiredState, Problem } from '../types';

/** One problem, at the override's key, per override naming a disk the VM's observed placement lacks. */
export function unknownDiskOverrides(desired: DesiredState, actual: ActualState): Problem[] {
  const problems: Problem[] = [];
  for (const name of [...desired.vms.keys()].sort()) {
    const vm = desired.vms.get(name)!;
    const placement = actual.vms.get(name)?.placement;
    if (!placement || !vm.spec.disks) continue;
    const have = placement.disks.map((d) => d.target).sort();
    for (const dev of Object.keys(vm.spec.disks)) {
      if (have.includes(dev)) continue;
      const at = vm.diskSources?.[dev] ?? vm.source;
      problems.push({
        file: at.file,
        line: at.line,
        col: at.col,
        object: `VirtualMachine/${name}`,
        message: `spec.disks.${dev}: ${name} has no disk ${dev} (status/ shows ${have.join(', ') || 'none'}); the override would be ignored`,
      });
    }
  }
  return problems;
}
