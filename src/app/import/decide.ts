/**
 * `vmplace import`, the pure part: from what the hosts show (their storage locations and their
 * domains) and the manifests already in the repository, decide which Host, Cluster and
 * VirtualMachine manifests to add, and what to tell the operator about everything else. No I/O:
 * `run.ts` observes and writes, `render.ts` turns the drafts into YAML.
 *
 * The rules:
 * - Nothing that exists is changed: a declared VM, host or cluster is compared and any
 *   difference reported, never rewritten.
 * - A new host's storage locations are its pools (the driver's `storageLocations`) and the
 *   folders its disks are in, outermost first (a location inside another is dropped: one path,
 *   one location), each checked by the rules `validate` applies to storage paths.
 * - A path found on every new host is Cluster storage only when the operator names it
 *   (`--cluster NAME --shared PATH`); otherwise it stays local to each host and is offered.
 * - One VirtualMachine per domain at its current host and storage (the location holding most of
 *   its disks, per-disk `disks:` for the others). A domain vmplace cannot move is imported with
 *   `suspend: true` and the reasons; a domain it cannot describe (a name that is not a DNS label,
 *   a disk in no declared location) is left out and reported.
 */
import type { DomainInfo } from '../../drivers/driver';
import { isInside, normaliseAbsolute } from '../../drivers/paths';
import { storageProblem } from '../../manifests/trust';
import { quote } from '../../text';
import type { DesiredState, HostSpec, StorageLocation, VirtualMachineSpec } from '../../types';
import { draftVm, hostText, locate, placementDifference, storageDisks } from './vm-draft';

export { hostText } from './vm-draft';

/** What one host showed (or why it could not be looked at). */
export interface ObservedHost {
  name: string;
  spec: HostSpec;
  /** a Host manifest of this name is in the repository */
  declared: boolean;
  pools: { name: string; path: string }[];
  domains: DomainInfo[];
  error?: { reason: string; message: string };
}

export interface ImportOptions {
  /** the Cluster new hosts join */
  cluster?: string;
  /** paths the operator says are one shared filesystem on every host of `cluster` */
  shared: string[];
  /** the repository, whose tree is never storage */
  repoDir: string;
  /** vmplace's state directory (default /var/lib/vmplace), never storage */
  stateDir?: string;
}

export type ImportReason =
  | 'HostUnreachable'
  | 'HostAlreadyDeclared'
  | 'StorageNotImportable'
  | 'StorageInsideAnother'
  | 'StorageNotDeclared'
  | 'SharedStorageOffered'
  | 'SharedPathMissing'
  | 'NameNotImportable'
  | 'DiskOutsideStorage'
  | 'NoStorage'
  | 'ManifestDiffers'
  | 'Unmovable'
  | 'FileExists'
  | 'ManifestInvalid'
  | 'ImportedVmWouldMove';

/** Something the operator should know: `warning` when something was left out. */
export interface ImportNote {
  severity: 'info' | 'warning';
  reason: ImportReason;
  /** `Host/hv1`, `VirtualMachine/web-01`, `Cluster/c1`, or a path */
  subject: string;
  message: string;
}

export interface HostDraft {
  name: string;
  spec: HostSpec;
}
export interface ClusterDraft {
  name: string;
  storage: StorageLocation[];
}
export interface VmDraft {
  name: string;
  spec: VirtualMachineSpec;
  /** why vmplace cannot move it (then `spec.suspend` is true) */
  unmovable: string[];
}

export interface ImportDecision {
  hosts: HostDraft[];
  clusters: ClusterDraft[];
  vms: VmDraft[];
  notes: ImportNote[];
}

const DNS_LABEL = /^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$/;
/** the schema's absolute path: no `.`/`..` segments, no `//`, no control characters */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const SCHEMA_PATH = /^(?:\/(?!\.{1,2}(?:\/|$))[^/\u0000-\u001f\u007f-\u009f]+)+$/;

/** Is `name` a manifest name (a lowercase DNS label)? */
export function isManifestName(name: string): boolean {
  return DNS_LABEL.test(name);
}

/**
 * A manifest name made from a hypervisor's name for a place (`Default Pool` → `default-pool`),
 * unique among `taken` (a suffix `-2`, `-3`, ...).
 */
export function locationName(raw: string, taken: ReadonlySet<string>): string {
  const base =
    raw
      .toLowerCase()
      .replace(/[^a-z0-9-]+/g, '-')
      .replace(/-+/g, '-')
      .replace(/^-+|-+$/g, '')
      .slice(0, 63)
      .replace(/-+$/, '') || 'storage';
  if (!taken.has(base)) return base;
  for (let i = 2; ; i++) {
    const suffix = `-${i}`;
    const name = base.slice(0, 63 - suffix.length).replace(/-+$/, '') + suffix;
    if (!taken.has(name)) return name;
  }
}

interface Candidate {
  path: string;
  /** the hypervisor's name (pool) or the folder's last segment */
  label: string;
  what: string;
}

/** The storage candidates of a new host: its pools, then its disks' folders; checked and un-nested. */
function hostCandidates(h: ObservedHost, opts: ImportOptions, notes: ImportNote[]): Candidate[] {
  const raw: Candidate[] = h.pools.map((p) => ({
    path: p.path,
    label: p.name,
    what: `pool ${quote(hostText(p.name))}`,
  }));
  for (const dom of h.domains)
    for (const d of storageDisks(dom)) {
      if (d.type !== 'file' || !d.path) continue;
      const n = normaliseAbsolute(d.path);
      if (!n || n === '/') continue;
      const dir = n.slice(0, n.lastIndexOf('/')) || '/';
      raw.push({ path: dir, label: dir.slice(dir.lastIndexOf('/') + 1), what: 'the folder of disks' });
    }
  const checked: Candidate[] = [];
  for (const c of raw) {
    const p = normaliseAbsolute(c.path);
    const why =
      p === undefined || !SCHEMA_PATH.test(p)
        ? 'is not an absolute, normalised path of printable characters'
        : storageProblem(p, { repoDir: opts.repoDir, ...(opts.stateDir ? { stateDir: opts.stateDir } : {}) });
    if (why) {
      if (
        !notes.some(
          (n) =>
            n.reason === 'StorageNotImportable' &&
            n.subject === `Host/${h.name}` &&
            n.message.includes(quote(hostText(c.path))),
        )
      )
        notes.push({
          severity: 'warning',
          reason: 'StorageNotImportable',
          subject: `Host/${h.name}`,
          message: `${c.what} at ${quote(hostText(c.path))} ${why}: not declared as storage`,
        });
      continue;
    }
    checked.push({ ...c, path: p! });
  }
  // outermost first; pools before folders at the same path (their name is the better one)
  checked.sort((a, b) => a.path.length - b.path.length);
  const kept: Candidate[] = [];
  for (const c of checked) {
    const outer = kept.find((k) => k.path === c.path || isInside(c.path, k.path));
    if (!outer) {
      kept.push(c);
      continue;
    }
    if (outer.path !== c.path && c.what.startsWith('pool'))
      notes.push({
        severity: 'info',
        reason: 'StorageInsideAnother',
        subject: `Host/${h.name}`,
        message: `${c.what} at ${quote(hostText(c.path))} lies inside ${quote(hostText(outer.path))}, declared as one location`,
      });
  }
  return kept.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** Decide what to add to the repository (see the file comment). Pure. */
export function decideImport(
  observed: readonly ObservedHost[],
  existing: DesiredState,
  opts: ImportOptions,
): ImportDecision {
  const notes: ImportNote[] = [];
  const hosts: HostDraft[] = [];
  const clusters: ClusterDraft[] = [];
  const reachable = observed.filter((h) => {
    if (!h.error) return true;
    notes.push({
      severity: 'warning',
      reason: 'HostUnreachable',
      subject: `Host/${h.name}`,
      message: `could not be observed (${h.error.reason}): ${hostText(h.error.message, 300)}; nothing of it was imported`,
    });
    return false;
  });

  // ---- storage of new hosts, shared storage
  const fresh = reachable.filter((h) => !h.declared);
  const candidates = new Map(fresh.map((h) => [h.name, hostCandidates(h, opts, notes)]));
  const onEvery = (p: string): boolean =>
    fresh.length > 0 && fresh.every((h) => candidates.get(h.name)!.some((c) => c.path === p));
  const existingCluster = opts.cluster ? existing.clusters.get(opts.cluster) : undefined;
  const clusterStorage: StorageLocation[] = existingCluster ? [...(existingCluster.spec.storage ?? [])] : [];
  const sharedPaths = new Set<string>(clusterStorage.map((s) => s.path));
  if (opts.cluster && !existingCluster) {
    const taken = new Set<string>();
    for (const raw of opts.shared) {
      const p = normaliseAbsolute(raw) ?? raw;
      if (!onEvery(p)) {
        const missing = fresh
          .filter((h) => !candidates.get(h.name)!.some((c) => c.path === p))
          .map((h) => h.name);
        notes.push({
          severity: 'warning',
          reason: 'SharedPathMissing',
          subject: quote(hostText(p)),
          message: `--shared ${quote(hostText(p))}: not a pool or a folder of disks on ${missing.join(', ') || 'any host'}; not declared as Cluster storage`,
        });
        continue;
      }
      const label = candidates.get(fresh[0]!.name)!.find((c) => c.path === p)!.label;
      const name = locationName(label, taken);
      taken.add(name);
      clusterStorage.push({ name, path: p });
      sharedPaths.add(p);
    }
    clusters.push({ name: opts.cluster, storage: clusterStorage });
  } else if (existingCluster) {
    for (const raw of opts.shared) {
      const p = normaliseAbsolute(raw) ?? raw;
      if (!sharedPaths.has(p))
        notes.push({
          severity: 'warning',
          reason: 'SharedPathMissing',
          subject: `Cluster/${opts.cluster}`,
          message: `--shared ${quote(hostText(p))} is not storage of the existing Cluster/${opts.cluster}, which import does not change; add it there by hand`,
        });
    }
  }
  if (fresh.length > 1) {
    const offered = new Set<string>();
    for (const c of candidates.get(fresh[0]!.name)!)
      if (!sharedPaths.has(c.path) && onEvery(c.path)) offered.add(c.path);
    for (const p of offered)
      notes.push({
        severity: 'info',
        reason: 'SharedStorageOffered',
        subject: quote(hostText(p)),
        message: `${quote(hostText(p))} is storage on every imported host (${fresh.map((h) => h.name).join(', ')}): declared as each host's own storage; if it is one shared filesystem, import with --cluster NAME --shared ${quote(hostText(p))} instead (review with --dry-run first)`,
      });
  }
  const locsOf = new Map<string, StorageLocation[]>();
  for (const h of fresh) {
    const taken = new Set(clusterStorage.map((s) => s.name));
    const own: StorageLocation[] = [];
    for (const c of candidates.get(h.name)!) {
      if (sharedPaths.has(c.path)) continue;
      const name = locationName(c.label, taken);
      taken.add(name);
      own.push({ name, path: c.path });
    }
    const spec: HostSpec = {
      ...h.spec,
      ...(opts.cluster ? { cluster: opts.cluster } : {}),
      ...(own.length ? { storage: own } : {}),
    };
    if (!own.length) delete spec.storage;
    hosts.push({ name: h.name, spec });
    locsOf.set(h.name, [...own, ...clusterStorage]);
  }
  for (const h of reachable.filter((x) => x.declared)) {
    const host = existing.hosts.get(h.name);
    const cluster = host?.spec.cluster ? existing.clusters.get(host.spec.cluster) : undefined;
    const locs = [...(host?.spec.storage ?? []), ...(cluster?.spec.storage ?? [])];
    locsOf.set(h.name, locs);
    const undeclared = h.pools.filter((p) => !locate(locs, p.path));
    if (undeclared.length)
      notes.push({
        severity: 'info',
        reason: 'StorageNotDeclared',
        subject: `Host/${h.name}`,
        message: `pools not declared as storage (the manifest is not changed): ${undeclared.map((p) => `${hostText(p.name)} at ${quote(hostText(p.path))}`).join(', ')}`,
      });
  }

  // ---- one VirtualMachine per domain
  const byName = new Map<string, { host: string; dom: DomainInfo }[]>();
  for (const h of reachable)
    for (const dom of h.domains) {
      const list = byName.get(dom.name) ?? [];
      list.push({ host: h.name, dom });
      byName.set(dom.name, list);
    }
  const vms: VmDraft[] = [];
  for (const name of [...byName.keys()].sort()) {
    const all = byName.get(name)!.sort((a, b) => (a.host < b.host ? -1 : 1));
    const subject = `VirtualMachine/${isManifestName(name) ? name : hostText(name, 70)}`;
    if (!isManifestName(name)) {
      notes.push({
        severity: 'warning',
        reason: 'NameNotImportable',
        subject,
        message: `domain ${quote(hostText(name, 70))} on ${all.map((x) => x.host).join(', ')} is not a manifest name (a lowercase DNS label); rename the domain to adopt it`,
      });
      continue;
    }
    const entry = all.find((x) => x.dom.state === 'running') ?? all[0]!;
    const declared = existing.vms.get(name);
    // a declared VM is only compared: what could not be described about it is not news
    const draft = draftVm(
      name,
      entry.host,
      entry.dom,
      locsOf.get(entry.host) ?? [],
      declared ? [] : notes,
      subject,
    );
    if (!draft) continue;
    if (all.length > 1)
      draft.unmovable.push(`it is defined on several hosts (${all.map((x) => x.host).join(', ')})`);
    if (declared) {
      const diff = placementDifference(declared.spec, draft.spec, entry.dom);
      if (diff)
        notes.push({
          severity: 'info',
          reason: 'ManifestDiffers',
          subject,
          message: `${declared.source.file}:${declared.source.line}: ${diff}; the manifest is left as it is (vmplace plan shows the move)`,
        });
      continue;
    }
    if (draft.unmovable.length) draft.spec.suspend = true;
    vms.push(draft);
  }
  return { hosts, clusters, vms, notes };
}
