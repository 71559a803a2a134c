import { POSIX_RULES, type PathRules } from '../drivers/path-rules';

/**
 * Where a moved disk lands: a directory of the VM's own inside the target storage location,
 * `<location>/<vm>/<file name>`. VM names are unique in the fleet, so two VMs can never be
 * given one target path, whatever their files are called (`/srv/a/web-01/disk.qcow2` and
 * `/srv/a/db-01/disk.qcow2` become `/srv/b/web-01/disk.qcow2` and `/srv/b/db-01/disk.qcow2`).
 * When two disks of the VM share a file name, each is prefixed with its target device
 * (`vdb-disk.qcow2`), so one VM's disks never collide either. Pure: the planner and the
 * migration's Preflight call this one function, so the plan shows the paths the migration uses.
 * Paths follow the target host's driver (`rules`): on a Hyper-V host `D:\VMs\web-01\disk.vhdx`,
 * and file names that differ only in case (`A.vhdx`, `a.vhdx`) count as one name there.
 *
 * @param vm the VM (domain) name: a DNS label, validated by the manifests
 * @param target the disk's target device (vda, sdb, ...)
 * @param srcPath the disk's current file
 * @param toPath the target storage location's path
 * @param vmDiskPaths the current files of all the VM's disks (moved or not)
 * @param rules the path rules of the target host's driver (POSIX by default: libvirt)
 */
export function targetDiskPath(
  vm: string,
  target: string,
  srcPath: string,
  toPath: string,
  vmDiskPaths: readonly string[],
  rules: PathRules = POSIX_RULES,
): string {
  const base = rules.basename(srcPath);
  const baseKey = rules.key(base);
  const sameName = vmDiskPaths.filter((p) => rules.key(rules.basename(p)) === baseKey).length;
  const name = sameName > 1 ? `${target}-${base}` : base;
  return rules.join(toPath, vm, name);
}

/** A path that several disks would share, in one scope. */
export interface PathCollision {
  scope: string;
  /** the path as the first disk names it */
  path: string;
  /** the form it was compared in (see {@link findPathCollisions}) */
  key: string;
  disks: { vm: string; target: string }[];
}

/**
 * Paths that more than one (vm, disk) would end up at. Input: every disk's final path after
 * the planned moves (moved disks at their target path, the others where they are), with the
 * scope in which a path names one file: the host for local storage, the cluster for storage
 * its hosts share, and optionally the form in which paths of that scope compare (`key`: upper
 * case on Windows, where `D:\VMs\a.vhdx` and `d:\vms\A.VHDX` are one file; the path itself
 * when absent).
 * Returns each shared path (as its first disk names it) with the disks that share it, in a
 * stable order.
 */
export function findPathCollisions(
  finals: readonly { vm: string; target: string; scope: string; path: string; key?: string }[],
): PathCollision[] {
  const by = new Map<string, PathCollision>();
  for (const f of finals) {
    const key = f.key ?? f.path;
    const id = `${f.scope}\0${key}`;
    const entry = by.get(id) ?? { scope: f.scope, path: f.path, key, disks: [] };
    entry.disks.push({ vm: f.vm, target: f.target });
    by.set(id, entry);
  }
  const out: PathCollision[] = [];
  for (const { scope, path: p, key, disks } of by.values()) {
    if (disks.length < 2) continue;
    out.push({
      scope,
      path: p,
      key,
      disks: [...disks].sort((a, b) => `${a.vm}/${a.target}`.localeCompare(`${b.vm}/${b.target}`)),
    });
  }
  return out.sort((a, b) => `${a.scope}/${a.path}`.localeCompare(`${b.scope}/${b.path}`));
}

/**
 * The paths of a VM's disks that {@link targetDiskPath} compares names with: disks and LUNs
 * (not cdroms or floppies), a file's path or a block device's, absolute ones only (in the
 * style of `rules`, the host's driver). The same set observation records as the placement, so
 * the plan and the migration agree on names.
 */
export function namingDiskPaths(
  disks: readonly { device: string; type: string; path?: string; sourceDev?: string }[],
  rules: PathRules = POSIX_RULES,
): string[] {
  return disks
    .filter((d) => d.device === 'disk' || d.device === 'lun')
    .map((d) => (d.type === 'file' ? (d.path ?? '') : d.type === 'block' ? (d.sourceDev ?? '') : ''))
    .filter((p) => rules.isAbsolute(p));
}
