/**
 * What the fleet page shows, as plain data: {@link buildFleetView} turns the daemon's state (the
 * VMs' statuses, the hosts of the last pass, the copies' progress, git and settings) into one
 * JSON-ready {@link FleetView}; {@link diffFleetView} gives what changed between two views, so
 * the event stream sends a snapshot once and then only the VMs that changed. Pure: no I/O, no
 * clock (the caller passes `now`).
 */
import type { DesiredState, HostStatus, MigrationStatus, Phase, VirtualMachineStatus } from '../types';

/** One storage location of a host, with what fills it. */
export interface StorageView {
  name: string;
  path: string;
  /** `cluster`: declared by the host's Cluster (shared by its hosts); `local`: the host's own */
  kind: 'local' | 'cluster';
  capacityBytes: number;
  freeBytes: number;
  /** VMs with at least one disk here, sorted */
  vms: string[];
}

export interface HostView {
  name: string;
  cluster?: string;
  observedAt?: string;
  storage: StorageView[];
  /** VMs on this host whose disks are on none of its locations, sorted */
  elsewhere: string[];
}

export interface MigrationView {
  id: string;
  strategy: string;
  from: { host: string; storage?: string };
  to: { host: string; storage?: string };
  step: string;
  round?: number;
  bytesDone: number;
  bytesTotal: number;
  /** bytes per second over the last few seconds of progress; absent before two samples */
  rateBytesPerSec?: number;
  /** seconds left at that rate */
  etaSec?: number;
  startedAt?: string;
  pauseMs?: number;
  attempts: number;
}

export interface VmView {
  name: string;
  phase: Phase;
  host?: string;
  /** storage locations of its disks, sorted, distinct */
  storage: string[];
  running?: boolean;
  /** allocated bytes of its disks */
  allocatedBytes: number;
  migration?: MigrationView;
  /** Blocked, Failed or a failing condition: why, as the status says it */
  problem?: { reason: string; message: string };
  /** held back by the last pass: limits, window, suspend, hold after a failure, not approved */
  heldBack?: string;
}

/** A migration that reached a final state since the daemon started. */
export interface FinishedView {
  vm: string;
  id: string;
  result: string;
  strategy: string;
  from: { host: string; storage?: string };
  to: { host: string; storage?: string };
  bytes: number;
  pauseMs?: number;
  startedAt?: string;
  finishedAt: string;
  error?: { reason: string; message: string };
}

export interface DaemonView {
  /** the commit of the repository the last pass read */
  revision?: string;
  /** the last commit that changed the manifests (what placement follows) */
  manifestRevision?: string;
  lastSyncAt?: string;
  /** the last git sync failed: why (no secrets: the error's reason and a short message) */
  syncError?: string;
  suspended: boolean;
  /** maintenance windows are configured and now is outside every one */
  outsideWindow: boolean;
  windows: number;
  ready: boolean;
  /** several replicas share the fleet: this page shows what this replica knows */
  replica?: string;
}

export interface FleetView {
  at: string;
  daemon: DaemonView;
  hosts: HostView[];
  vms: VmView[];
  recent: FinishedView[];
}

/** The changes from one view to the next: whole parts when they changed, VMs one by one. */
export interface FleetPatch {
  at: string;
  daemon?: DaemonView;
  hosts?: HostView[];
  recent?: FinishedView[];
  /** VMs new or changed */
  vms?: VmView[];
  /** VMs gone */
  removed?: string[];
}

/** Progress of a copy as the steps report it (bytesDone grows during a step; the status only at its end). */
export interface ProgressSample {
  bytesDone: number;
  bytesTotal: number;
  /** rate over the last samples, see {@link ProgressTracker} */
  rateBytesPerSec?: number;
}

export interface FleetViewInput {
  now: Date;
  vms: VirtualMachineStatus[];
  hosts: HostStatus[];
  desired?: DesiredState;
  progress?: (migrationId: string) => ProgressSample | undefined;
  heldBack?: ReadonlyMap<string, string>;
  daemon: DaemonView;
  recent: readonly FinishedView[];
}

const FINAL_STEPS = new Set(['Completed', 'RolledBack', 'Failed', 'Blocked']);

/** The page's data from the daemon's state. */
export function buildFleetView(input: FleetViewInput): FleetView {
  const vms = input.vms.map((s) => vmView(s, input)).sort((a, b) => a.name.localeCompare(b.name));
  const hosts = input.hosts
    .map((h) => hostView(h, input.desired, vms))
    .sort((a, b) => a.name.localeCompare(b.name));
  return { at: input.now.toISOString(), daemon: input.daemon, hosts, vms, recent: [...input.recent] };
}

function vmView(s: VirtualMachineStatus, input: FleetViewInput): VmView {
  const disks = s.placement?.disks ?? [];
  const storage = [...new Set(disks.flatMap((d) => (d.storage ? [d.storage] : [])))].sort();
  const v: VmView = {
    name: s.metadata.name,
    phase: s.phase,
    storage,
    allocatedBytes: disks.reduce((n, d) => n + d.allocatedBytes, 0),
  };
  if (s.placement) {
    v.host = s.placement.host;
    if (s.placement.running !== undefined) v.running = s.placement.running;
  }
  const m = s.migration;
  if (m && !FINAL_STEPS.has(m.step) && s.phase === 'Migrating') v.migration = migrationView(m, input);
  const problem = problemOf(s);
  if (problem) v.problem = problem;
  const held = input.heldBack?.get(s.metadata.name);
  if (held) v.heldBack = held;
  return v;
}

function migrationView(m: MigrationStatus, input: FleetViewInput): MigrationView {
  const p = input.progress?.(m.id);
  // the steps report progress while they copy; the status catches up at the end of each step
  const bytesDone = Math.max(m.bytesDone, p?.bytesDone ?? 0);
  const bytesTotal = Math.max(m.bytesTotal, p?.bytesTotal ?? 0);
  const v: MigrationView = {
    id: m.id,
    strategy: m.strategy,
    from: m.from,
    to: m.to,
    step: m.step,
    bytesDone: Math.min(bytesDone, bytesTotal),
    bytesTotal,
    attempts: m.attempts,
  };
  if (m.round !== undefined) v.round = m.round;
  if (m.startedAt) v.startedAt = m.startedAt;
  if (m.pauseMs !== undefined) v.pauseMs = m.pauseMs;
  const rate = p?.rateBytesPerSec;
  if (rate !== undefined && rate > 0) {
    v.rateBytesPerSec = Math.round(rate);
    v.etaSec = Math.ceil(Math.max(0, bytesTotal - bytesDone) / rate);
  }
  return v;
}

/** Why a VM needs a look: its failed migration, else its first failing condition, when Blocked/Failed. */
function problemOf(s: VirtualMachineStatus): { reason: string; message: string } | undefined {
  if (s.phase !== 'Blocked' && s.phase !== 'Failed' && s.phase !== 'Unknown') return undefined;
  const err = s.migration?.lastError;
  if (err && (s.migration?.step === 'Failed' || s.migration?.step === 'Blocked' || s.phase === 'Failed'))
    return { reason: err.reason, message: err.message };
  const c =
    s.conditions.find((c) => c.status === 'False' && c.type !== 'Placed') ??
    s.conditions.find((c) => c.status !== 'True');
  if (c) return { reason: c.reason, message: c.message };
  if (err) return { reason: err.reason, message: err.message };
  return { reason: s.phase, message: '' };
}

function hostView(h: HostStatus, desired: DesiredState | undefined, vms: VmView[]): HostView {
  const name = h.metadata.name;
  const cluster = desired?.hosts.get(name)?.spec.cluster;
  const clusterStorage = new Set(
    (cluster ? (desired?.clusters.get(cluster)?.spec.storage ?? []) : []).map((l) => l.name),
  );
  const here = vms.filter((v) => v.host === name);
  const storage = h.storage.map((s) => ({
    name: s.name,
    path: s.path,
    kind: clusterStorage.has(s.name) ? ('cluster' as const) : ('local' as const),
    capacityBytes: s.capacityBytes,
    freeBytes: s.freeBytes,
    vms: here.filter((v) => v.storage.includes(s.name)).map((v) => v.name),
  }));
  const known = new Set(h.storage.map((s) => s.name));
  const v: HostView = {
    name,
    observedAt: h.observedAt,
    storage,
    elsewhere: here.filter((v) => !v.storage.some((s) => known.has(s))).map((v) => v.name),
  };
  if (cluster) v.cluster = cluster;
  return v;
}

/** What changed from `prev` to `next`; `undefined` when nothing did (besides the time). */
export function diffFleetView(prev: FleetView, next: FleetView): FleetPatch | undefined {
  const patch: FleetPatch = { at: next.at };
  let changed = false;
  if (!same(prev.daemon, next.daemon)) {
    patch.daemon = next.daemon;
    changed = true;
  }
  if (!same(prev.hosts, next.hosts)) {
    patch.hosts = next.hosts;
    changed = true;
  }
  if (!same(prev.recent, next.recent)) {
    patch.recent = next.recent;
    changed = true;
  }
  const before = new Map(prev.vms.map((v) => [v.name, JSON.stringify(v)]));
  const vms = next.vms.filter((v) => before.get(v.name) !== JSON.stringify(v));
  const names = new Set(next.vms.map((v) => v.name));
  const removed = prev.vms.filter((v) => !names.has(v.name)).map((v) => v.name);
  if (vms.length) patch.vms = vms;
  if (removed.length) patch.removed = removed;
  return changed || vms.length || removed.length ? patch : undefined;
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * The copies' progress between status updates, per migration id: the latest bytes and a rate
 * over the last {@link ProgressTracker.windowMs} of samples. Bounded: one entry per migration,
 * dropped by {@link forget} when it finishes.
 */
export class ProgressTracker {
  private readonly samples = new Map<string, { at: number; done: number }[]>();
  private readonly latest = new Map<string, { done: number; total: number }>();

  constructor(readonly windowMs = 5_000) {}

  record(id: string, done: number, total: number, atMs: number): void {
    let s = this.samples.get(id);
    if (!s) this.samples.set(id, (s = []));
    const last = s[s.length - 1];
    // a new step copies from 0 again (the delta after the base): start the rate afresh
    if (last && done < last.done) s.length = 0;
    s.push({ at: atMs, done });
    while (s.length > 2 && s[0]!.at < atMs - this.windowMs) s.shift();
    this.latest.set(id, { done, total });
  }

  get(id: string): ProgressSample | undefined {
    const l = this.latest.get(id);
    if (!l) return undefined;
    const s = this.samples.get(id) ?? [];
    const first = s[0];
    const last = s[s.length - 1];
    const out: ProgressSample = { bytesDone: l.done, bytesTotal: l.total };
    if (first && last && last.at - first.at >= 200 && last.done > first.done)
      out.rateBytesPerSec = ((last.done - first.done) * 1000) / (last.at - first.at);
    return out;
  }

  forget(id: string): void {
    this.samples.delete(id);
    this.latest.delete(id);
  }
}
