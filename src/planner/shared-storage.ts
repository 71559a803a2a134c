import { pathRulesFor } from '../drivers/path-rules';
import type { DesiredState } from '../types';

/**
 * The other hosts that see the file `p` of `host`: the members of the host's cluster, when `p`
 * lies in one of that cluster's (shared) storage locations. A file on host-local storage is
 * seen by `host` only, even when another host has a location at the same path. Paths compare
 * by the host's driver's rules (case-insensitively on Hyper-V). Pure.
 */
export function hostsSharingPath(desired: DesiredState, host: string, p: string): string[] {
  const cluster = desired.hosts.get(host)?.spec.cluster;
  if (cluster === undefined) return [];
  const locations = desired.clusters.get(cluster)?.spec.storage ?? [];
  const rules = pathRulesFor(desired.hosts.get(host)?.spec.driver);
  const shared = locations.some((l) => rules.isInside(p, l.path));
  if (!shared) return [];
  return [...desired.hosts]
    .filter(([name, h]) => name !== host && h.spec.cluster === cluster)
    .map(([name]) => name)
    .sort();
}
