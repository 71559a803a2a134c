/**
 * Where storage lives: resolves storage names and disk paths to *locations* and knows how much
 * space each location has. A location is keyed by its owner, not by the host that reaches it:
 * a cluster's shared storage is one location (`cluster c1, csv2`) however many hosts mount it.
 */
import { pathRulesFor, POSIX_RULES, type PathRules } from '../drivers/path-rules';
import type {
  ActualState,
  DesiredState,
  DriverName,
  HostStatus,
  StorageLocation,
  StorageStatus,
} from '../types';

/** A storage location as the planner accounts for it. */
export interface Location {
  /** stable identity: scope + owner + name */
  key: string;
  name: string;
  /** normalised absolute path (no trailing slash except `/`) */
  path: string;
  /** `host` for a host's local storage, `cluster` for a cluster's shared storage */
  scope: 'host' | 'cluster';
  /** host name (scope `host`) or cluster name (scope `cluster`) */
  owner: string;
}

/** The identity of a location; a NUL separator cannot occur in names. */
export function locationKey(scope: Location['scope'], owner: string, name: string): string {
  return `${scope}\u0000${owner}\u0000${name}`;
}

/** `csv2 (cluster c1)` / `local (host hv-a)`, for messages. */
export function describeLocation(loc: Location): string {
  return `${loc.name} (${loc.scope} ${loc.owner})`;
}

function normalisePath(path: string): string {
  const trimmed = path.replace(/\/+$/, '');
  return trimmed === '' ? '/' : trimmed;
}

/**
 * True when `path` is `dir` or lies below it, comparing whole POSIX path segments (a host's
 * own rules: {@link Topology.rulesOf}).
 */
export function isPathInside(path: string, dir: string): boolean {
  return POSIX_RULES.isAtOrInside(path, dir);
}

/**
 * An index over desired and actual state, built once per plan so that every lookup is O(1) or
 * O(locations of one host). Pure: reads its inputs, never changes them.
 */
export class Topology {
  private readonly clusterOfHost = new Map<string, string>();
  private readonly hostsOfCluster = new Map<string, string[]>();
  private readonly statusStorage = new Map<string, Map<string, StorageStatus>>();
  private readonly locationCache = new Map<string, Location[]>();
  private readonly freeCache = new Map<string, number | undefined>();

  constructor(
    private readonly desired: DesiredState,
    private readonly actual: ActualState,
  ) {
    for (const [name, host] of desired.hosts) {
      const cluster = host.spec.cluster;
      if (cluster === undefined) continue;
      this.clusterOfHost.set(name, cluster);
      const members = this.hostsOfCluster.get(cluster);
      if (members) members.push(name);
      else this.hostsOfCluster.set(cluster, [name]);
    }
    for (const members of this.hostsOfCluster.values()) members.sort();
    for (const [name, status] of actual.hosts) {
      const byName = new Map<string, StorageStatus>();
      for (const s of status.storage) if (!byName.has(s.name)) byName.set(s.name, s);
      this.statusStorage.set(name, byName);
    }
  }

  /** The cluster a host belongs to according to its manifest, if any. */
  clusterOf(host: string): string | undefined {
    return this.clusterOfHost.get(host);
  }

  /** Does a Host manifest declare `host`? */
  declares(host: string): boolean {
    return this.desired.hosts.has(host);
  }

  /** The driver of a host according to its manifest, if any. */
  driverOf(host: string): DriverName | undefined {
    return this.desired.hosts.get(host)?.spec.driver;
  }

  /**
   * The path rules of a host's driver (Windows for `driver: hyperv`); POSIX for a host no
   * manifest declares. Its cluster's shared storage follows the same rules (the manifests
   * refuse a host whose driver is not its cluster's).
   */
  rulesOf(host: string): PathRules {
    return pathRulesFor(this.driverOf(host));
  }

  /** The observed status of a host, if any. */
  hostStatus(host: string): HostStatus | undefined {
    return this.actual.hosts.get(host);
  }

  /**
   * Every location a host reaches: its local storage, then its cluster's shared storage. A host
   * without a manifest (a VM can sit on a host nobody declared) falls back to the locations its
   * status reports, all treated as local.
   */
  locationsOf(host: string): Location[] {
    const cached = this.locationCache.get(host);
    if (cached) return cached;
    const out: Location[] = [];
    const manifest = this.desired.hosts.get(host);
    // Windows paths are accepted only in normal form (no trailing separator but a volume's root)
    const posix = this.rulesOf(host).style === 'posix';
    const add = (scope: Location['scope'], owner: string, list: readonly StorageLocation[] | undefined) => {
      for (const s of list ?? []) {
        out.push({
          key: locationKey(scope, owner, s.name),
          name: s.name,
          path: posix ? normalisePath(s.path) : s.path,
          scope,
          owner,
        });
      }
    };
    if (manifest) {
      add('host', host, manifest.spec.storage);
      const cluster = manifest.spec.cluster;
      if (cluster !== undefined) add('cluster', cluster, this.desired.clusters.get(cluster)?.spec.storage);
    } else {
      add('host', host, this.actual.hosts.get(host)?.storage);
    }
    this.locationCache.set(host, out);
    return out;
  }

  /** The location a storage name means on a host; a host-local name wins over a shared one. */
  resolve(host: string, storageName: string): Location | undefined {
    return this.locationsOf(host).find((l) => l.name === storageName);
  }

  /**
   * The location holding `path` on `host`: the longest matching location path, segment-aware,
   * by the host's path rules (case-insensitive on Windows).
   */
  locate(host: string, path: string): Location | undefined {
    const rules = this.rulesOf(host);
    let best: Location | undefined;
    for (const loc of this.locationsOf(host)) {
      if (!rules.isAtOrInside(path, loc.path)) continue;
      if (best === undefined || loc.path.length > best.path.length) best = loc;
    }
    return best;
  }

  /** Whether `host`'s status lists a storage named like `loc` (for "storage unknown" warnings). */
  hostReports(host: string, loc: Location): boolean {
    return this.statusStorage.get(host)?.has(loc.name) ?? false;
  }

  /**
   * Free bytes observed on a location, or undefined when nobody reports it. Shared storage takes
   * the smallest value any member host reports (the most conservative observation).
   */
  freeBytes(loc: Location): number | undefined {
    if (this.freeCache.has(loc.key)) return this.freeCache.get(loc.key);
    let free: number | undefined;
    const hosts = loc.scope === 'host' ? [loc.owner] : (this.hostsOfCluster.get(loc.owner) ?? []);
    for (const h of hosts) {
      const s = this.statusStorage.get(h)?.get(loc.name);
      if (s !== undefined && (free === undefined || s.freeBytes < free)) free = s.freeBytes;
    }
    this.freeCache.set(loc.key, free);
    return free;
  }
}
