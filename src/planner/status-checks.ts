/**
 * Status is input like any other: `status/` comes from the repository (a pull request can edit
 * it), and even an observed placement may name paths nobody declared. Before anything is planned
 * from a placement or a host status, it is checked against the manifests; every disagreement is
 * a finding with a PascalCase reason. Pure.
 */
import * as path from 'node:path';
import type { DesiredState, Finding, HostStatus, Placement } from '../types';
import { isPathInside, type Location, type Topology } from './topology';

/**
 * True for an absolute path in normal form: no `.` or `..` segment, no empty segment, no
 * trailing slash. Only such paths are compared with storage locations: `/srv/a/../../etc/x`
 * starts with `/srv/a/` but is not inside it.
 */
export function isNormalisedPath(p: string): boolean {
  return p.startsWith('/') && path.posix.normalize(p) === p && (p === '/' || !p.endsWith('/'));
}

/**
 * The location a disk of `placement` is on: the storage its label names when the path lies
 * inside that storage, else the location holding the path; undefined for a path that is not in
 * normal form or lies in no declared location of the host.
 */
export function diskLocation(
  topology: Topology,
  host: string,
  disk: { path: string; storage?: string },
): Location | undefined {
  if (!isNormalisedPath(disk.path)) return undefined;
  const named = disk.storage === undefined ? undefined : topology.resolve(host, disk.storage);
  if (named && isPathInside(disk.path, named.path)) return named;
  return topology.locate(host, disk.path);
}

/**
 * Findings (all errors: nothing may be planned from such a placement) about one VM's placement:
 * a host no manifest declares (`PlacementHostUndeclared`), a disk path not in normal form
 * (`DiskPathNotNormalised`), outside every declared storage of its host (`DiskOutsideStorage`)
 * or not inside the storage its label names (`DiskStorageMismatch`), and two disks with one
 * target (`DuplicateDiskTarget`) or one path (`DuplicateDiskPath`).
 */
export function checkPlacement(topology: Topology, desired: DesiredState, placement: Placement): Finding[] {
  const out: Finding[] = [];
  const host = placement.host;
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
    if (paths.has(disk.path)) error('DuplicateDiskPath', `two disks have the path ${disk.path}`);
    paths.add(disk.path);
    if (!desired.hosts.has(host)) continue;
    if (!isNormalisedPath(disk.path)) {
      error(
        'DiskPathNotNormalised',
        `disk ${disk.target}: path ${disk.path} is not an absolute path in normal form (no ., .., // or trailing /)`,
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
      } else if (!isPathInside(disk.path, named.path)) {
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
 * name but at another path than the manifests say (`HostStorageMismatch`); its free space
 * cannot be trusted for that location.
 */
export function checkHostStatus(topology: Topology, status: HostStatus): Finding[] {
  const out: Finding[] = [];
  const host = status.metadata.name;
  const declared = topology.locationsOf(host);
  for (const s of status.storage) {
    const loc = declared.find((l) => l.name === s.name);
    if (loc === undefined) continue;
    if (!isNormalisedPath(s.path) || s.path !== loc.path) {
      out.push({
        severity: 'error',
        reason: 'HostStorageMismatch',
        message: `host ${host} status gives storage ${s.name} the path ${s.path}; its manifest says ${loc.path}`,
      });
    }
  }
  return out;
}
