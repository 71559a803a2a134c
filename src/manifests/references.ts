/**
 * Cross-reference checks over all documents of a repository: unique names per kind, hosts
 * naming existing clusters, VMs naming existing hosts and storage locations, and storage
 * locations that neither share a name nor overlap on disk within a host and its cluster. Every
 * check is a map lookup, so the whole pass is linear in the number of objects.
 */
import type { Cluster, Host, Kind, Problem, SourceRef, StorageLocation, VirtualMachine } from '../types';
import type { DataPath } from './schemas';
import { displayPath, quote } from './schemas';
import { isInside } from '../drivers/paths';
import { pathRulesFor, type PathRules } from '../drivers/path-rules';
import { sameHostKey } from '../connection-uri';

/** Which machine a Host is: its ssh host and port, or this machine. */
function machineKey(h: Host): string {
  const ssh = h.spec.ssh;
  return ssh ? `ssh ${sameHostKey(ssh.host)}:${ssh.port ?? 22}` : 'the management box';
}

/** One document that declared `kind`/`name`, valid or not. */
export interface Declaration {
  kind: Kind;
  name: string;
  /** the typed object when the document passed its schema and value checks */
  object?: Host | Cluster | VirtualMachine;
  /**
   * Position of a path inside the declaring document. Called only to report a problem: it may
   * parse the file again (see `parseYamlFile`).
   */
  locate: (p: DataPath, atKey?: boolean) => SourceRef;
}

type Status = 'ok' | 'missing' | 'invalid' | 'duplicate';

/** The result: only objects whose references all resolve. */
export interface Resolved {
  hosts: Map<string, Host>;
  clusters: Map<string, Cluster>;
  vms: Map<string, VirtualMachine>;
  problems: Problem[];
}

/** `Kind/name` for messages; odd names are quoted so they cannot forge output. */
export function objectLabel(kind: string, name: unknown): string {
  if (typeof name === 'string' && /^[a-z0-9][-a-z0-9.]{0,62}$/.test(name)) return `${kind}/${name}`;
  return typeof name === 'string' ? `${kind}/${quote(name, 40)}` : `${kind}/?`;
}

/** Where `metadata.name` of a declaration is. */
function nameAt(d: Declaration): SourceRef {
  return d.locate(['metadata', 'name']);
}

function where(ref: SourceRef): string {
  return `${ref.file}:${ref.line}:${ref.col}`;
}

/**
 * Resolve references between declarations (in file order). Rules:
 * - a name declared more than once for one kind is reported at every later declaration and
 *   **all** its declarations are dropped: which one the operator meant is unknown, and acting
 *   on a guess could move a VM to the wrong place;
 * - an object whose reference does not resolve (missing, invalid or duplicated target) is
 *   dropped, so a broken Host takes its VMs out of the desired state instead of letting them
 *   be planned against partial information.
 *
 * @param skippedFiles number of manifest files that could not be parsed at all, for hints
 */
export function resolveReferences(declarations: Declaration[], skippedFiles: number): Resolved {
  const problems: Problem[] = [];
  const byKind: Record<Kind, Map<string, Declaration[]>> = {
    Host: new Map(),
    Cluster: new Map(),
    VirtualMachine: new Map(),
  };
  for (const d of declarations) {
    const m = byKind[d.kind];
    const list = m.get(d.name);
    if (list) list.push(d);
    else m.set(d.name, [d]);
  }
  const status: Record<Kind, Map<string, Status>> = {
    Host: new Map(),
    Cluster: new Map(),
    VirtualMachine: new Map(),
  };
  for (const kind of Object.keys(byKind) as Kind[]) {
    for (const [name, list] of byKind[kind]) {
      if (list.length > 1) {
        const first = nameAt(list[0]!);
        for (const d of list.slice(1)) {
          problems.push({
            ...nameAt(d),
            object: objectLabel(kind, name),
            message: `metadata.name: duplicate ${kind} name ${quote(name)}; first declared at ${where(first)} (all declarations ignored)`,
          });
        }
        status[kind].set(name, 'duplicate');
      } else status[kind].set(name, list[0]!.object ? 'ok' : 'invalid');
    }
  }
  const hint = skippedFiles
    ? ` (${skippedFiles} manifest file(s) could not be loaded; it may be declared there)`
    : '';
  const refProblem = (kind: Kind, name: string): string => {
    const s = status[kind].get(name) ?? 'missing';
    if (s === 'missing') return `${kind} ${quote(name)} not found${hint}`;
    if (s === 'duplicate') return `${kind} ${quote(name)} is declared more than once`;
    return `${kind} ${quote(name)} has problems (see above)`;
  };
  const single = <T>(kind: Kind): { d: Declaration; obj: T }[] => {
    const out: { d: Declaration; obj: T }[] = [];
    for (const [name, list] of byKind[kind]) {
      if (status[kind].get(name) === 'ok') out.push({ d: list[0]!, obj: list[0]!.object as T });
    }
    return out;
  };

  // clusters: their own storage must be consistent
  const clusters = new Map<string, Cluster>();
  for (const { d, obj } of single<Cluster>('Cluster')) {
    const found = checkStorage(obj.spec.storage ?? [], [], d, problems, pathRulesFor(obj.spec.driver));
    if (found) status.Cluster.set(obj.metadata.name, 'invalid');
    else clusters.set(obj.metadata.name, obj);
  }

  // hosts: cluster exists; local storage consistent with the cluster's shared storage
  const hosts = new Map<string, Host>();
  const storageNames = new Map<string, { names: Set<string>; cluster?: string }>();
  const machines = new Map<string, { d: Declaration; obj: Host }[]>();
  for (const { d, obj } of single<Host>('Host')) {
    const label = objectLabel('Host', obj.metadata.name);
    let bad = false;
    let shared: StorageLocation[] = [];
    const clusterName = obj.spec.cluster;
    const rules = pathRulesFor(obj.spec.driver);
    if (clusterName !== undefined) {
      const c = clusters.get(clusterName);
      const clusterDriver = c?.spec.driver ?? 'libvirt';
      if (!c) {
        problems.push({
          ...d.locate(['spec', 'cluster']),
          object: label,
          message: `spec.cluster: ${refProblem('Cluster', clusterName)}`,
        });
        bad = true;
      } else if (clusterDriver !== obj.spec.driver) {
        // one cluster, one hypervisor: its shared storage has one path style, its hosts one driver
        problems.push({
          ...d.locate(['spec', 'cluster']),
          object: label,
          message: `spec.cluster: Cluster ${quote(clusterName)} is a ${clusterDriver} cluster${c.spec.driver === undefined ? ' (no spec.driver: libvirt)' : ''} and this host's driver is ${obj.spec.driver}; the hosts of a cluster have its driver (declared at ${where(c.source)})`,
        });
        bad = true;
      } else shared = c.spec.storage ?? [];
    }
    if (!bad && checkStorage(obj.spec.storage ?? [], shared, d, problems, rules, clusterName)) bad = true;
    if (bad) {
      status.Host.set(obj.metadata.name, 'invalid');
      continue;
    }
    hosts.set(obj.metadata.name, obj);
    const machine = machineKey(obj);
    const same = machines.get(machine);
    if (same) same.push({ d, obj });
    else machines.set(machine, [{ d, obj }]);
    const names = new Set<string>();
    for (const s of obj.spec.storage ?? []) names.add(s.name);
    for (const s of shared) names.add(s.name);
    storageNames.set(obj.metadata.name, { names, cluster: clusterName });
  }

  // hosts that are one machine: their own storage must not overlap (one's cleanup deletes the other's files)
  for (const [machine, list] of machines) {
    if (list.length < 2) continue;
    const seen: { host: string; path: string }[] = [];
    for (const { d, obj } of list) {
      let bad = false;
      const own = obj.spec.storage ?? [];
      const rules = pathRulesFor(obj.spec.driver);
      // POSIX exactly as before; Windows paths compare case-insensitively (a POSIX path is never
      // inside a Windows one: both styles fail the other's rules)
      const overlaps = (a: string, b: string): boolean =>
        rules.style === 'posix'
          ? isInside(a, b, { allowRoot: true }) || isInside(b, a)
          : rules.isAtOrInside(a, b) || rules.isAtOrInside(b, a);
      own.forEach((loc, i) => {
        const clash = seen.find((o) => overlaps(loc.path, o.path));
        if (!clash) return;
        const p: DataPath = ['spec', 'storage', i, 'path'];
        problems.push({
          ...d.locate(p),
          object: objectLabel('Host', obj.metadata.name),
          message: `${displayPath(p)}: ${quote(loc.path)} overlaps storage ${quote(clash.path)} of Host ${quote(clash.host)}, which is the same machine (${machine})`,
        });
        bad = true;
      });
      for (const loc of own) seen.push({ host: obj.metadata.name, path: loc.path });
      if (bad) {
        hosts.delete(obj.metadata.name);
        storageNames.delete(obj.metadata.name);
        status.Host.set(obj.metadata.name, 'invalid');
      }
    }
  }

  // virtual machines: host exists; every storage named is one of the host's or its cluster's
  const vms = new Map<string, VirtualMachine>();
  for (const { d, obj } of single<VirtualMachine>('VirtualMachine')) {
    const label = objectLabel('VirtualMachine', obj.metadata.name);
    const hostName = obj.spec.host;
    const host = storageNames.get(hostName);
    if (!host) {
      problems.push({
        ...d.locate(['spec', 'host']),
        object: label,
        message: `spec.host: ${refProblem('Host', hostName)}`,
      });
      continue;
    }
    let bad = false;
    const wants: [DataPath, string][] = [[['spec', 'storage'], obj.spec.storage]];
    for (const [dev, o] of Object.entries(obj.spec.disks ?? {}))
      wants.push([['spec', 'disks', dev, 'storage'], o.storage]);
    for (const [p, name] of wants) {
      if (host.names.has(name)) continue;
      const owner = host.cluster
        ? `Host ${quote(hostName)} or of its Cluster ${quote(host.cluster)}`
        : `Host ${quote(hostName)}`;
      const known = [...host.names].sort();
      const avail = known.length
        ? `available: ${known.slice(0, 10).join(', ')}${known.length > 10 ? ', …' : ''}`
        : 'it has none';
      problems.push({
        ...d.locate(p),
        object: label,
        message: `${displayPath(p)}: ${quote(name)} is not a storage location of ${owner} (${avail})`,
      });
      bad = true;
    }
    if (!bad) vms.set(obj.metadata.name, obj);
  }
  return { hosts, clusters, vms, problems };
}

/**
 * Check `own` storage locations (of the declaring object) against each other and against the
 * `shared` locations of its cluster: names unique, paths neither equal nor nested (a file under
 * a nested path would belong to two locations), compared by the driver's path `rules` (on
 * Windows, `D:\VMs` and `d:\vms` are one path). Reports at the own location; returns true
 * when something was wrong.
 */
function checkStorage(
  own: StorageLocation[],
  shared: StorageLocation[],
  d: Declaration,
  problems: Problem[],
  rules: PathRules,
  clusterName?: string,
): boolean {
  const label = objectLabel(d.kind, d.name);
  let bad = false;
  const report = (i: number, field: 'name' | 'path', message: string): void => {
    const p: DataPath = ['spec', 'storage', i, field];
    problems.push({ ...d.locate(p), object: label, message: `${displayPath(p)}: ${message}` });
    bad = true;
  };
  const sharedNames = new Map<string, StorageLocation>();
  for (const s of shared) sharedNames.set(s.name, s);
  const ownNames = new Map<string, number>();
  own.forEach((s, i) => {
    const first = ownNames.get(s.name);
    if (first !== undefined)
      report(i, 'name', `duplicate storage name ${quote(s.name)} (first at spec.storage[${first}])`);
    else ownNames.set(s.name, i);
    if (sharedNames.has(s.name)) {
      report(
        i,
        'name',
        `storage name ${quote(s.name)} clashes with the shared storage of Cluster ${quote(clusterName)}`,
      );
    }
  });

  // every path (by its comparison key), with who declares it; own index or -1 for shared
  const byPath = new Map<string, { path: string; list: { name: string; own: number }[] }>();
  const add = (p: string, v: { name: string; own: number }): void => {
    const entry = byPath.get(rules.key(p));
    if (entry) entry.list.push(v);
    else byPath.set(rules.key(p), { path: p, list: [v] });
  };
  own.forEach((s, i) => add(s.path, { name: s.name, own: i }));
  for (const s of shared) add(s.path, { name: s.name, own: -1 });
  const describe = (v: { name: string; own: number }): string =>
    v.own >= 0
      ? `storage ${quote(v.name)}`
      : `shared storage ${quote(v.name)} of Cluster ${quote(clusterName)}`;
  for (const [k, { path: p, list }] of byPath) {
    // equal paths; own locations come first in each list
    const head = list[0]!;
    for (const v of list.slice(1)) {
      if (v.own >= 0) report(v.own, 'path', `same path as ${describe(head)}`);
      else if (head.own >= 0) report(head.own, 'path', `same path as ${describe(v)}`);
    }
    // nested paths: look up every ancestor directory (linear in path depth)
    let cut = k.lastIndexOf(rules.sep);
    while (cut > 0) {
      const ancestorKey = k.slice(0, cut);
      const outer = byPath.get(ancestorKey);
      if (outer) {
        const ancestor = outer.path;
        for (const inner of list) {
          for (const o of outer.list) {
            if (inner.own >= 0)
              report(inner.own, 'path', `${quote(p)} is inside ${describe(o)} (${quote(ancestor)})`);
            else if (o.own >= 0)
              report(o.own, 'path', `${quote(ancestor)} contains ${describe(inner)} (${quote(p)})`);
          }
        }
      }
      cut = ancestorKey.lastIndexOf(rules.sep);
    }
  }
  return bad;
}
