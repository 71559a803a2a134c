import * as path from 'node:path';

/**
 * Where a moved disk lands: a directory of the VM's own inside the target storage location,
 * `<location>/<vm>/<file name>`. VM names are unique in the fleet, so two VMs can never be
 * given one target path, whatever their files are called (`/srv/a/web-01/disk.qcow2` and
 * `/srv/a/db-01/disk.qcow2` become `/srv/b/web-01/disk.qcow2` and `/srv/b/db-01/disk.qcow2`).
 * When two disks of the VM share a file name, each is prefixed with its target device
 * (`vdb-disk.qcow2`), so one VM's disks never collide either. Pure: the planner and the
 * migration's Preflight call this one function, so the plan shows the paths the migration uses.
 *
 * @param vm the VM (domain) name: a DNS label, validated by the manifests
 * @param target the disk's target device (vda, sdb, ...)
 * @param srcPath the disk's current file
 * @param toPath the target storage location's path
 * @param vmDiskPaths the current files of all the VM's disks (moved or not)
 */
export function targetDiskPath(
  vm: string,
  target: string,
  srcPath: string,
  toPath: string,
  vmDiskPaths: readonly string[],
): string {
  const base = path.posix.basename(srcPath);
  const sameName = vmDiskPaths.filter((p) => path.posix.basename(p) === base).length;
  const name = sameName > 1 ? `${target}-${base}` : base;
  return path.posix.join(toPath, vm, name);
}

/**
 * Paths that more than one (vm, disk) would end up at. Input: every disk's final path after
 * the planned moves (moved disks at their target path, the others where they are), with the
 * scope in which a path names one file: the host for local storage, the cluster for storage
 * its hosts share.
 * Returns each shared path with the disks that share it, in a stable order.
 */
export function findPathCollisions(
  finals: readonly { vm: string; target: string; scope: string; path: string }[],
): { scope: string; path: string; disks: { vm: string; target: string }[] }[] {
  const by = new Map<string, { vm: string; target: string }[]>();
  for (const f of finals) {
    const key = `${f.scope}\0${f.path}`;
    const list = by.get(key) ?? [];
    list.push({ vm: f.vm, target: f.target });
    by.set(key, list);
  }
  const out: { scope: string; path: string; disks: { vm: string; target: string }[] }[] = [];
  for (const [key, disks] of by) {
    if (disks.length < 2) continue;
    const [scope, p] = key.split('\0') as [string, string];
    out.push({
      scope,
      path: p,
      disks: [...disks].sort((a, b) => `${a.vm}/${a.target}`.localeCompare(`${b.vm}/${b.target}`)),
    });
  }
  return out.sort((a, b) => `${a.scope}/${a.path}`.localeCompare(`${b.scope}/${b.path}`));
}

/**
 * The paths of a VM's disks that {@link targetDiskPath} compares names with: disks and LUNs
 * (not cdroms or floppies), a file's path or a block device's, absolute ones only. The same
 * set observation records as the placement, so the plan and the migration agree on names.
 */
export function namingDiskPaths(
  disks: readonly { device: string; type: string; path?: string; sourceDev?: string }[],
): string[] {
  return disks
    .filter((d) => d.device === 'disk' || d.device === 'lun')
    .map((d) => (d.type === 'file' ? (d.path ?? '') : d.type === 'block' ? (d.sourceDev ?? '') : ''))
    .filter((p) => p.startsWith('/'));
}
