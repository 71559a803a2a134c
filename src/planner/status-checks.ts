/**
 * Status is input like any other: `status/` comes from the repository (a pull request can edit
 * it), and even an observed placement may name paths nobody declared. Before anything is planned
 * from a placement or a host status, it is checked against the manifests; every disagreement is
 * a finding with a PascalCase reason. Pure.
 */
import { POSIX_RULES } from '../drivers/path-rules';
import type { DesiredState, Finding, HostStatus, Placement } from '../types';
import type { Location, Topology } from './topology';

/**
 * True for an absolute POSIX path in normal form: no `.` or `..` segment, no empty segment, no
 * trailing slash. Only such paths are compared with storage locations: `/srv/a/../../etc/x`
 * starts with `/srv/a/` but is not inside it. (A host's own rules: `Topology.rulesOf(host).check`;
 * on a Hyper-V host, Windows paths in normal form.)
 */
export function isNormalisedPath(p: string): boolean {
  return POSIX_RULES.check(p) === undefined;
}

/**
 * The location a disk of `placement` is on: the storage its label names when the path lies
 * inside that storage, else the location holding the path; undefined for a path that is not in
 * normal form (by the host's path rules) or lies in no declared location of the host.
 */
export function diskLocation(
  topology: Topology,
  host: string,
  disk: { path: string; storage?: string },
): Location | undefined {
  const rules = topology.rulesOf(host);
  if (rules.check(disk.path) !== undefined) return undefined;
  const named = disk.storage === undefined ? undefined : topology.resolve(host, disk.storage);
  if (named && rules.isAtOrInside(disk.path, named.path)) return named;
  return topology.locate(host, disk.path);
}

/**
 * Findings (all errors: nothing may be planned from such a placement) about one VM's placement:
 * a host no manifest declares (`PlacementHostUndeclared`), a disk path not in normal form
 * (`DiskPathNotNormalised`), outside every declared storage of its host (`DiskOutsideStorage`)
 * or not inside the storage its label names (`DiskStorageMismatch`), and two disks with one
 * target (`DuplicateDiskTarget`) or one path (`DuplicateDiskPath`). Paths follow the host's
 * driver: POSIX on libvirt hosts, Windows on Hyper-V hosts (compared case-insensitively, so
 * `D:\VMs\a.vhdx` and `d:\vms\A.VHDX` are one path).
 */
export function checkPlacement(topology: Topology, desired: DesiredState, placement: Placement): Finding[] {
  const out: Finding[] = [];
  const host = placement.host;
  const rules = topology.rulesOf(host);
  const error = (reason: string, message: string): void => {
    out.push({ severity: 'error', reason, message });
  };
  if (!desired.hosts.has(host)) {
    error(
      'PlacementHostUndeclared',
      `status places the VM on host ${host}, which no manifest declares; nothing is planned from it`,
    );
  }
  const targets = new Set<string>();
  const paths = new Set<string>();
  for (const disk of placement.disks) {
    if (targets.has(disk.target)) error('DuplicateDiskTarget', `two disks have the target ${disk.target}`);
    targets.add(disk.target);
    const pathKey = rules.key(disk.path);
    if (paths.has(pathKey)) error('DuplicateDiskPath', `two disks have the path ${disk.path}`);
    paths.add(pathKey);
    if (!desired.hosts.has(host)) continue;
    const why = rules.check(disk.path);
    if (why !== undefined) {
      error(
        'DiskPathNotNormalised',
        rules.style === 'posix'
          ? `disk ${disk.target}: path ${disk.path} is not an absolute path in normal form (no ., .., // or trailing /)`
          : `disk ${disk.target}: path ${disk.path} is not an absolute Windows path in normal form (host ${host} runs Hyper-V): it ${why}`,
      );
      continue;
    }
    if (disk.storage !== undefined) {
      const named = topology.resolve(host, disk.storage);
      if (named === undefined) {
        error(
          'DiskStorageMismatch',
          `disk ${disk.target}: storage ${disk.storage} is not declared on host ${host} or its cluster`,
        );
      } else if (!rules.isAtOrInside(disk.path, named.path)) {
        error(
          'DiskStorageMismatch',
          `disk ${disk.target}: path ${disk.path} is not inside storage ${disk.storage} (${named.path})`,
        );
      }
    }
    if (topology.locate(host, disk.path) === undefined) {
      error(
        'DiskOutsideStorage',
        `disk ${disk.target}: path ${disk.path} lies in no declared storage location of host ${host}; vmplace moves only what it may delete`,
      );
    }
  }
  return out;
}

/**
 * Findings (errors) about one host's status: a storage location it reports under a declared
 * name but at another path than the manifests say (`HostStorageMismatch`; compared as the
 * host's filesystem compares, so case-insensitively on Hyper-V); its free space cannot be
 * trusted for that location.
 */
export function checkHostStatus(topology: Topology, status: HostStatus): Finding[] {
  const out: Finding[] = [];
  const host = status.metadata.name;
  const rules = topology.rulesOf(host);
  const declared = topology.locationsOf(host);
  for (const s of status.storage) {
    const loc = declared.find((l) => l.name === s.name);
    if (loc === undefined) continue;
    if (rules.check(s.path) !== undefined || rules.key(s.path) !== rules.key(loc.path)) {
      out.push({
        severity: 'error',
        reason: 'HostStorageMismatch',
        message: `host ${host} status gives storage ${s.name} the path ${s.path}; its manifest says ${loc.path}`,
      });
    }
  }
  return out;
}
