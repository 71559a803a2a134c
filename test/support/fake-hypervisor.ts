/**
 * FAKE: an in-memory model of hypervisor hosts for unit tests of the whole migration machine.
 * It is never proof about libvirt (or any real hypervisor): real libvirt stays the proof in the
 * lab tests (test/lab/). What it models, on purpose small:
 *
 * - hosts with declared storage roots (free space per root, `guardPath`), directories and
 *   files; a file has an identity (like `dev:ino`) and a content: a disk image (format, parent
 *   path, blocks) or an opaque blob (a saved state, an empty file);
 * - VMs per host: state, live and persistent definitions (opaque `VmDefinition`s of family
 *   `fake`), autostart, memory, a boot id (a guest booted afresh lost its memory);
 * - a guest that writes blocks into the top layer of its disks (`guestWrite`), each write
 *   acknowledged and remembered, so a test can ask whether every acknowledged write is in the
 *   disk's data (the chain merged) at the end;
 * - layers (freeze, merge online and offline, relink), saves and restores, a live storage move,
 *   a live migration, verified copies between hosts (`FakeTransport`, with part files and
 *   ownership claims like transfer/copy-local.ts);
 * - failures and crashes: every driver and transport method goes through `world.op(name)`,
 *   which can crash the vmplace process before the op or after it took effect (`Crash`: from
 *   then on every op of that process throws `Crash` and changes nothing; the world, being the
 *   hypervisor, lives on, and `restart()` gives a new process new drivers), or throw an injected
 *   error at op N;
 * - invariants checked after every op (`violations`): a VM active on two hosts, a VM active on
 *   one host and set to autostart on another, a file removed while a VM's chain uses it, an
 *   original disk removed while no other copy of the VM holds its data.
 *
 * Every op is synchronous inside (resolves in microtasks only), so a run is deterministic: op
 * number N is the same op in every run of the same scenario.
 *
 * FAKE Hyper-V flavour (`FakeHostOptions.flavour: 'hyperv'`, family `fake-hyperv`): the same
 * world shaped where Hyper-V behaves otherwise than libvirt, so that the whole machine runs
 * against it behind the contract. It is a FAKE written from Hyper-V's documented behaviour,
 * never proof about Hyper-V (only a real Hyper-V host is). What it models:
 * - Windows paths (`WINDOWS_PATHS`: `D:\VMs\web\web-os.vhdx`, `C:\ClusterStorage\Volume1`); the
 *   guard refuses whatever `checkWindowsPath` refuses (a `/`, `..`, streams, device names); a
 *   host's files and directories are one namespace of case-folded names, as on NTFS (a file
 *   keeps the spelling it was created with);
 * - a checkpoint covers every disk: `freezeDisks` asked for some disks layers EVERY disk of the
 *   VM with a differencing disk (`.avhdx`, format `avhdx`) beside its parent: the asked disks
 *   under the asked names (which must lie beside the parent), the others under names the
 *   hypervisor picks (`<disk>_fake-checkpoint-N.avhdx`); it returns every layer it made;
 * - merges run in the background: `mergeLayers` / `mergeLayerOffline` start one (an op) and
 *   then poll (`.wait` ops) until it is done; a merge completes `mergeOps` ops after it started,
 *   whatever the vmplace process does meanwhile (it dies: the merge goes on); when it completes
 *   the data is in the parent, the VM's disk runs from the parent, the merged `.avhdx` files
 *   are deleted;
 * - a saved state is a set of files: `save(vm, 'x.vmrs')` writes `x.vmrs` (memory), the guest
 *   state `x.vmgs` and the configuration `x.vmcx` beside it; it is complete only with all three
 *   from one save, so a restore on another host (Import-VM of the copied configuration) needs
 *   all of them there; `removeFile` removes them (and their part files), the transport copies
 *   them; the saved definition is read only where the saved VM is registered (`savedDefinition`);
 * - one configuration per VM (no live/persistent split): a restore registers the VM with the
 *   restored configuration, a checkpoint, merge or storage move changes both;
 * - `Move-VMStorage` (`moveDiskLive`) and `Move-VM -IncludeStorage` (`migrateLive`) move: the
 *   source file, and across hosts the source VM, are gone afterwards;
 * - capabilities: liveStorageMove, liveMigration, stateOnSharedStorage; no pausedMigration, no
 *   liveOntoLayers. Quick within one host is offered by the FAKE (the machine's one-host cases
 *   run on it) though the real driver does not (`quickWithinHost: false`): a test that wants
 *   Hyper-V's own capabilities passes `HYPERV_CAPABILITIES`.
 * Not modelled: storage two hosts see at once (a CSV is a root of each host, not shared between
 * them); names Hyper-V picks for the asked disks' layers (it honours the asked name); memory in
 * a checkpoint (standard checkpoints); a merge per checkpoint (Remove-VMCheckpoint merges every
 * disk of it, the fake merges per disk); the checkpoints' configuration files and Compare-VM's report (an incompatible target); merges
 * that fail or are cancelled.
 */
import { createHash } from 'node:crypto';

import {
  type DomainInfo,
  type DomainState,
  type DriverCapabilities,
  type FsInfo,
  type HypervisorDriver,
  type ImageInfo,
  type OwnFileKind,
  type PathSemantics,
  type VmDefinition,
  POSIX_PATHS,
  ownFileBaseName,
  type MigrateLiveOptions,
  type MigratePausedOptions,
  type MigrateOntoLayersOptions,
  type MoveDiskLiveOptions,
} from '../../src/drivers/driver';
import { pathRulesOfStyle } from '../../src/drivers/path-rules';
import { checkWindowsPath, WINDOWS_PATHS } from '../../src/drivers/windows-paths';
import { StalledError, VmplaceError } from '../../src/errors';
import type { Reason } from '../../src/errors';
import { PART_SUFFIX } from '../../src/transfer/copy-local';
import type { Transport, TransportCopyOptions, TransportCopyResult } from '../../src/transfer/transport';

/** A reason only the FAKE raises (what the real drivers would report as a failed command). */
export function fakeReason(r: string): Reason {
  return r as Reason;
}

// ------------------------------------------------------------------ crash and failure plans

/** The vmplace process died here (thrown by `world.op`); not a VmplaceError: nothing routes on it. */
export class Crash extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'Crash';
  }
}

export function isCrash(err: unknown): err is Crash {
  return err instanceof Crash;
}

/**
 * What happens at op `at` (1-based, counted over the whole scenario, across restarts):
 * `crash` kills the process before the op or after it took effect; `fail` throws `error(name)`
 * before the op (nothing happened) or after it (it happened, the caller hears an error).
 */
export type OpPlan =
  | { kind: 'crash'; at: number; phase: 'before' | 'after' }
  | { kind: 'fail'; at: number; phase: 'before' | 'after'; error: (op: string) => Error };

/** One op as it ran: its number, name, and what the harness said was running then. */
export interface OpRecord {
  n: number;
  name: string;
  host: string;
  /** the machine's step when the op ran (set by the harness) */
  step?: string;
  /** the migration had passed the point of no return (set by the harness) */
  committed?: boolean;
}

// ------------------------------------------------------------------ the world's data

export interface FakeImage {
  kind: 'image';
  format: string;
  /** the image below (a path on the same host), as the image's header records it */
  parent?: string;
  parentFormat?: string;
  virtualBlocks: number;
  blocks: Record<number, string>;
}

/** Anything that is not a disk image: a saved state, an empty file just created. */
export interface FakeBlob {
  kind: 'blob';
  /** bytes the file takes */
  bytes: number;
  /** a saved state of a VM (the definition and memory inside it); `saveId` names the save */
  saved?: { vm: string; def: FakeDef; bootId: string; paused: boolean; saveId?: string };
  /** Hyper-V flavour: a file of the saved state `saveId` beside its main file (the guest state) */
  sidecarOf?: string;
}

export interface FakeFile {
  identity: string;
  content: FakeImage | FakeBlob;
}

/** The fake's VM definition (inside the opaque `VmDefinition.data`). */
export interface FakeDef {
  name: string;
  memoryBytes: number;
  disks: { target: string; path: string; format: string }[];
}

export interface FakeVm {
  name: string;
  state: 'running' | 'paused' | 'shutoff';
  /** the running definition (active VMs only) */
  live?: FakeDef;
  /** the persistent definition; a transient VM has none and vanishes when it stops */
  persistent?: FakeDef;
  autostart: boolean;
  /** the guest's memory: kept by save/restore and live migration, new on every boot */
  bootId?: string;
  /** grows while the guest runs (each write it makes); `guestRunTime` */
  ran?: number;
}

export interface FakeHostOptions {
  /** storage roots with their capacity in bytes (default 100 GiB each) */
  roots: Record<string, number | undefined>;
  /**
   * How the FAKE host behaves: `libvirt`-shaped (the default: POSIX paths, QEMU's layers) or
   * `hyperv`-shaped (see the file's header: Windows paths, checkpoints of every disk,
   * background merges, saved states as several files; family `fake-hyperv`)
   */
  flavour?: 'libvirt' | 'hyperv';
  family?: string;
  capabilities?: Partial<Omit<DriverCapabilities, 'family'>>;
  /** what `storageLocations` reports (default: each root, named by its last segment) */
  pools?: { name: string; path: string }[];
}

/**
 * Paths as keys, compared by `fold` (the identity on POSIX hosts; upper case on Windows, where
 * `D:\VMs\a.vhdx` and `d:\vms\A.VHDX` name one file). An entry keeps the spelling it was first
 * set with, as a file keeps the name it was created with.
 */
export class PathMap<V> extends Map<string, V> {
  private readonly spelling = new Map<string, string>();
  constructor(private readonly fold: (p: string) => string) {
    super();
  }
  override get(p: string): V | undefined {
    const s = this.spelling.get(this.fold(p));
    return s === undefined ? undefined : super.get(s);
  }
  override has(p: string): boolean {
    return this.spelling.has(this.fold(p));
  }
  override set(p: string, v: V): this {
    const s = this.spelling.get(this.fold(p));
    if (s === undefined) this.spelling.set(this.fold(p), p);
    return super.set(s ?? p, v);
  }
  override delete(p: string): boolean {
    const s = this.spelling.get(this.fold(p));
    if (s === undefined) return false;
    this.spelling.delete(this.fold(p));
    return super.delete(s);
  }
  override clear(): void {
    this.spelling.clear();
    super.clear();
  }
}

/** A set of paths compared by `fold` (see {@link PathMap}). */
export class PathSet extends Set<string> {
  private readonly spelling = new Map<string, string>();
  constructor(private readonly fold: (p: string) => string) {
    super();
  }
  override has(p: string): boolean {
    return this.spelling.has(this.fold(p));
  }
  override add(p: string): this {
    if (this.spelling.has(this.fold(p))) return this;
    this.spelling.set(this.fold(p), p);
    return super.add(p);
  }
  override delete(p: string): boolean {
    const s = this.spelling.get(this.fold(p));
    if (s === undefined) return false;
    this.spelling.delete(this.fold(p));
    return super.delete(s);
  }
  override clear(): void {
    this.spelling.clear();
    super.clear();
  }
}

/** A checkpoint the Hyper-V-shaped host made: the layers asked for, and every layer it made. */
export interface FakeCheckpoint {
  vm: string;
  asked: string[];
  layers: { target: string; layer: string; below: string }[];
}

export class FakeHost {
  readonly flavour: 'libvirt' | 'hyperv';
  /** the host's path semantics: POSIX, or Windows for the Hyper-V flavour */
  readonly paths: PathSemantics;
  /** how two spellings of a path are compared: identical on POSIX, case-folded on Windows */
  readonly fold: (p: string) => string;
  readonly files: PathMap<FakeFile>;
  readonly dirs: PathSet;
  readonly vms = new Map<string, FakeVm>();
  readonly roots: Map<string, number>;
  readonly capabilities: DriverCapabilities;
  readonly pools: { name: string; path: string }[];
  /** the format of the layers the hypervisor makes: qcow2 (libvirt) or avhdx (Hyper-V) */
  readonly layerFormat: string;
  /** Hyper-V flavour: the checkpoints made, for an idempotent `freezeDisks` */
  readonly checkpoints: FakeCheckpoint[] = [];
  constructor(
    readonly name: string,
    opts: FakeHostOptions,
  ) {
    this.flavour = opts.flavour ?? 'libvirt';
    const hyperv = this.flavour === 'hyperv';
    this.paths = hyperv ? WINDOWS_PATHS : POSIX_PATHS;
    const rules = pathRulesOfStyle(this.paths.style);
    this.fold = (p) => rules.key(p);
    this.files = new PathMap(this.fold);
    this.dirs = new PathSet(this.fold);
    this.layerFormat = hyperv ? 'avhdx' : 'qcow2';
    this.roots = new Map(Object.entries(opts.roots).map(([p, c]) => [p, c ?? 100 * 2 ** 30]));
    this.pools = opts.pools ?? [...this.roots.keys()].map((p) => ({ name: this.paths.basename(p), path: p }));
    for (const r of this.roots.keys()) this.dirs.add(r);
    this.capabilities = {
      family: opts.family ?? (hyperv ? 'fake-hyperv' : 'fake'),
      liveStorageMove: opts.capabilities?.liveStorageMove ?? true,
      liveMigration: opts.capabilities?.liveMigration ?? true,
      stateOnSharedStorage: opts.capabilities?.stateOnSharedStorage ?? hyperv,
      pausedMigration: opts.capabilities?.pausedMigration ?? false,
      liveOntoLayers: opts.capabilities?.liveOntoLayers ?? false,
      quickStorageMigration: opts.capabilities?.quickStorageMigration ?? true,
      quickWithinHost: opts.capabilities?.quickWithinHost ?? true,
      defineOnOtherHost: opts.capabilities?.defineOnOtherHost ?? true,
    };
  }

  /** do `a` and `b` name one file on this host? */
  same(a: string, b: string): boolean {
    return this.fold(a) === this.fold(b);
  }

  rootOf(p: string): string | undefined {
    for (const r of this.roots.keys()) if (this.same(p, r) || this.paths.isInside(p, r)) return r;
    return undefined;
  }

  /**
   * Hyper-V flavour: the other files of the saved state whose main file is `p` (`x.vmrs` has
   * its guest state `x.vmgs` and the VM's configuration `x.vmcx`, which registers the VM on
   * another host); none for any other file, or on a libvirt-shaped host.
   */
  stateSidecars(p: string): string[] {
    if (this.flavour !== 'hyperv' || !/\.vmrs$/i.test(p)) return [];
    const stem = p.slice(0, -'.vmrs'.length);
    return [`${stem}.vmgs`, `${stem}.vmcx`];
  }
}

const clone = <T>(x: T): T => JSON.parse(JSON.stringify(x)) as T;

export function encodeDef(family: string, def: FakeDef): VmDefinition {
  return { driver: family, data: JSON.stringify(def) };
}

export function decodeDef(def: VmDefinition): FakeDef {
  return JSON.parse(def.data) as FakeDef;
}

// ------------------------------------------------------------------ the world

export class FakeWorld {
  readonly hosts = new Map<string, FakeHost>();
  /** what broke an invariant, with the op it happened at */
  readonly violations: string[] = [];
  /** every op that ran (in every process), in order */
  readonly trace: OpRecord[] = [];
  /** the latest acknowledged value of each written block: vm → target → block → value */
  readonly acked = new Map<string, Map<string, Map<number, string>>>();
  /** the blocks each disk had at the start: vm → target → blocks */
  readonly initial = new Map<string, Map<string, Record<number, string>>>();
  /** original disk images by `host\0path` (see `preciousKey`): removing one needs another full copy of its VM's data */
  readonly precious = new Map<string, { vm: string; target: string }>();
  /**
   * Hyper-V flavour: what the hypervisor does in the background (merges), each done after
   * `remaining` more ops, whatever the vmplace process does meanwhile
   */
  readonly jobs: { host: string; key: string; remaining: number; complete: () => void }[] = [];
  /** Hyper-V flavour: ops a merge takes in the background, from the op that started it */
  mergeOps = 3;
  /** files the hypervisor named itself for a migration (the layers of disks a checkpoint was not asked for) */
  readonly hypervisorMade: { host: string; path: string }[] = [];
  /** bytes one block takes (allocation, space) */
  blockBytes = 1024 * 1024;
  /** how fast copies go, for the world's clock (bytes per ms) */
  copyBytesPerMs = 100 * 1024;
  /** the world's clock (ms since epoch): each op takes 1 ms, a copy its bytes at `copyBytesPerMs` */
  clock = Date.UTC(2030, 0, 1);
  /**
   * copies answer with the sha256 both ends were proven by, as the real ones do; false: like a
   * copy proven by byte comparison (no digest), the caller hashes both files itself
   */
  copyDigests = true;
  /**
   * a live migration of the memory converges (the guest dirties less than crosses); false: it
   * ends only by the caller's `suspendAfterMs`, paused, and fails without one
   */
  liveConverges = true;
  /** can `from` reach `to` directly (the transport's `reachable`) */
  reachable: (from: string, to: string) => boolean = () => true;
  /** images `checkImage` reports problems in */
  readonly corrupt = new Set<string>();
  /** called after each op took effect (e.g. a guest write) */
  afterOp?: (world: FakeWorld, op: OpRecord) => void;
  /** the harness's view of the machine (its step, past the point of no return?), copied into each op's record */
  observe?: () => { step?: string; committed?: boolean };
  plan?: OpPlan;
  /** each op waits a turn of the event loop first, so a step's snapshot is stored before its first op (see `op`) */
  durableTransitions = true;
  /** ops so far, over every process */
  opCount = 0;
  /** the process generation: drivers of an older one are dead (their process crashed) */
  epoch = 1;
  /** the op at which the current process died, if it did */
  crashedAt?: OpRecord;
  private nextIdentity = 1;
  private nextBoot = 1;
  private writeSeq = 0;
  private nextCheckpoint = 1;
  private nextSave = 1;

  addHost(name: string, opts: FakeHostOptions): FakeHost {
    const h = new FakeHost(name, opts);
    this.hosts.set(name, h);
    return h;
  }

  host(name: string): FakeHost {
    const h = this.hosts.get(name);
    if (!h) throw new Error(`fake world: no host ${name}`);
    return h;
  }

  /** A driver of the current process for `host`. */
  driver(host: string): FakeDriver {
    return new FakeDriver(this, this.host(host), this.epoch);
  }

  /** The transport of the process `epoch` from `from` to `to`; none between hosts of two families. */
  transport(from: string, to: string, epoch = this.epoch): Transport | undefined {
    const a = this.host(from);
    const b = this.host(to);
    if (a.capabilities.family !== b.capabilities.family) return undefined;
    return new FakeTransport(this, a, b, epoch);
  }

  /** The vmplace process starts again after a crash: new drivers, nothing in memory. */
  restart(): void {
    this.epoch++;
    this.crashedAt = undefined;
  }

  get dead(): boolean {
    return this.crashedAt !== undefined;
  }

  newIdentity(): string {
    return `fake:${this.nextIdentity++}`;
  }

  /** a new checkpoint's id (Hyper-V flavour: in the names of the layers the hypervisor picks) */
  newCheckpoint(): string {
    return `fake-checkpoint-${this.nextCheckpoint++}`;
  }

  newSave(): string {
    return `save-${this.nextSave++}`;
  }

  /** The key of `precious` for `path` on `host` (the host's own comparison of names). */
  preciousKey(host: string, path: string): string {
    return `${host}\0${this.host(host).fold(path)}`;
  }

  // ---- setup helpers

  mkdirs(host: string, dir: string): void {
    const h = this.host(host);
    for (let d = dir; h.rootOf(d) !== undefined && !h.dirs.has(d); d = h.paths.dirname(d)) h.dirs.add(d);
  }

  /** Put a disk image on a host (its directory made) and remember its blocks as the disk's start. */
  putImage(host: string, path: string, image: Omit<FakeImage, 'kind'>): FakeFile {
    this.mkdirs(host, this.host(host).paths.dirname(path));
    const f: FakeFile = { identity: this.newIdentity(), content: { kind: 'image', ...clone(image) } };
    this.host(host).files.set(path, f);
    return f;
  }

  /**
   * A VM with one image per disk (`format`, `blocks` filled with its start data), defined
   * persistently on `host`, running or shut off. Its disk images are precious: removing one is
   * a violation unless another copy of the VM holds all its data.
   */
  addVm(
    host: string,
    vm: {
      name: string;
      state: 'running' | 'shutoff';
      disks: { target: string; path: string; format?: string; blocks?: number; virtualBlocks?: number }[];
      memoryBytes?: number;
      autostart?: boolean;
    },
  ): FakeVm {
    const def: FakeDef = {
      name: vm.name,
      memoryBytes: vm.memoryBytes ?? 64 * 2 ** 20,
      disks: vm.disks.map((d) => ({ target: d.target, path: d.path, format: d.format ?? 'qcow2' })),
    };
    const start = new Map<string, Record<number, string>>();
    for (const d of vm.disks) {
      const blocks: Record<number, string> = {};
      for (let i = 0; i < (d.blocks ?? 8); i++) blocks[i] = `${vm.name}/${d.target}/base-${i}`;
      this.putImage(host, d.path, {
        format: d.format ?? 'qcow2',
        virtualBlocks: d.virtualBlocks ?? 4096,
        blocks,
      });
      start.set(d.target, blocks);
      this.precious.set(this.preciousKey(host, d.path), { vm: vm.name, target: d.target });
    }
    this.initial.set(vm.name, start);
    const v: FakeVm = {
      name: vm.name,
      state: vm.state,
      persistent: def,
      autostart: vm.autostart ?? false,
      ...(vm.state === 'running' ? { live: clone(def), bootId: this.boot() } : {}),
    };
    this.host(host).vms.set(vm.name, v);
    return v;
  }

  boot(): string {
    return `boot-${this.nextBoot++}`;
  }

  // ---- the guest

  /** Hosts on which the VM is active (running or paused). */
  activeOn(vm: string): string[] {
    return [...this.hosts.values()]
      .filter((h) => {
        const v = h.vms.get(vm);
        return v !== undefined && v.state !== 'shutoff';
      })
      .map((h) => h.name);
  }

  /** Hosts on which the VM is defined (persistently or running transiently). */
  definedOn(vm: string): string[] {
    return [...this.hosts.values()].filter((h) => h.vms.has(vm)).map((h) => h.name);
  }

  /**
   * The guest of a running `vm` writes one block into the top layer of one of its disks (in
   * turn) and the write is acknowledged. Does nothing when the VM runs nowhere.
   */
  guestWrite(vm: string): void {
    const on = this.activeOn(vm).filter((h) => this.host(h).vms.get(vm)!.state === 'running');
    if (on.length !== 1) return;
    const h = this.host(on[0]!);
    const def = h.vms.get(vm)!.live!;
    const seq = ++this.writeSeq;
    const disk = def.disks[seq % def.disks.length]!;
    const f = h.files.get(disk.path);
    if (!f || f.content.kind !== 'image') {
      this.violations.push(`guest of ${vm} writes to ${disk.path} on ${h.name}, which is not an image`);
      return;
    }
    const v = h.vms.get(vm)!;
    v.ran = (v.ran ?? 0) + 1;
    const block = seq % f.content.virtualBlocks;
    const value = `${vm}/${disk.target}/w${seq}`;
    f.content.blocks[block] = value;
    let byTarget = this.acked.get(vm);
    if (!byTarget) this.acked.set(vm, (byTarget = new Map()));
    let blocks = byTarget.get(disk.target);
    if (!blocks) byTarget.set(disk.target, (blocks = new Map()));
    blocks.set(block, value);
  }

  /** What the disk `target` of `vm` must hold: its start data with every acknowledged write. */
  expectedData(vm: string, target: string): Record<number, string> {
    const out = { ...(this.initial.get(vm)?.get(target) ?? {}) };
    for (const [b, v] of this.acked.get(vm)?.get(target) ?? []) out[b] = v;
    return out;
  }

  /** The paths of the chain from `path` down (top first); stops with a note when a parent is missing. */
  chainOf(host: string, path: string): { paths: string[]; broken?: string } {
    const h = this.host(host);
    const paths: string[] = [];
    for (let p: string | undefined = path; p !== undefined;) {
      if (paths.includes(p)) return { paths, broken: `a loop at ${p}` };
      const f = h.files.get(p);
      if (!f) return { paths, broken: `${p} is missing` };
      paths.push(p);
      p = f.content.kind === 'image' ? f.content.parent : undefined;
    }
    return { paths };
  }

  /** The data a disk at `path` on `host` shows: its chain merged (bottom first). */
  dataOf(host: string, path: string): { blocks: Record<number, string>; broken?: string } {
    const h = this.host(host);
    const { paths, broken } = this.chainOf(host, path);
    const blocks: Record<number, string> = {};
    for (const p of [...paths].reverse()) {
      const c = h.files.get(p)!.content;
      if (c.kind === 'image') Object.assign(blocks, c.blocks);
    }
    return broken ? { blocks, broken } : { blocks };
  }

  /** The blocks of `expected` that the disk at `path` on `host` does not hold (with what it holds). */
  missingData(host: string, path: string, expected: Record<number, string>): string[] {
    const { blocks, broken } = this.dataOf(host, path);
    const out = Object.entries(expected)
      .filter(([b, v]) => blocks[Number(b)] !== v)
      .map(([b, v]) => `block ${b}: want ${v}, has ${blocks[Number(b)] ?? 'nothing'}`);
    return broken ? [`chain broken: ${broken}`, ...out] : out;
  }

  // ---- ops

  /**
   * Every driver and transport method runs through here: counted, recorded, checked against
   * the plan (crash or fail before or after), then the effect, the invariants, `afterOp`.
   */
  async op<T>(epoch: number, host: string, name: string, effect: () => T): Promise<T> {
    // A hypervisor command takes longer than a local write: what the process queued before
    // (the machine's snapshot of the step it just entered) lands first. `durableTransitions:
    // false` lets an op run in the same turn instead, where a crash can beat that write.
    if (this.durableTransitions) await new Promise<void>((r) => setImmediate(r));
    else await Promise.resolve();
    if (epoch !== this.epoch || this.dead)
      throw new Crash(`the vmplace process is gone (${name} on ${host})`);
    const rec: OpRecord = { n: ++this.opCount, name, host, ...this.observe?.() };
    this.trace.push(rec);
    this.clock += 1;
    // the hypervisor's background work goes on with time, whatever happens to the process
    this.advanceJobs();
    const plan = this.plan?.at === rec.n ? this.plan : undefined;
    if (plan?.phase === 'before') {
      if (plan.kind === 'crash') {
        this.crashedAt = rec;
        throw new Crash(`crash before op ${rec.n} (${name} on ${host})`);
      }
      throw plan.error(name);
    }
    const out = effect();
    this.checkInvariants(rec);
    this.afterOp?.(this, rec);
    if (plan?.phase === 'after') {
      if (plan.kind === 'crash') {
        this.crashedAt = rec;
        throw new Crash(`crash after op ${rec.n} (${name} on ${host})`);
      }
      throw plan.error(name);
    }
    return out;
  }

  private checkInvariants(rec: OpRecord): void {
    const at = `op ${rec.n} (${rec.name} on ${rec.host}${rec.step ? `, in ${rec.step}` : ''})`;
    const names = new Set([...this.hosts.values()].flatMap((h) => [...h.vms.keys()]));
    for (const vm of names) {
      const active = this.activeOn(vm);
      if (active.length > 1) this.violations.push(`${at}: ${vm} is active on ${active.join(' and ')}`);
      const autostart = [...this.hosts.values()]
        .filter((h) => h.vms.get(vm)?.persistent && h.vms.get(vm)?.autostart)
        .map((h) => h.name);
      const elsewhere = autostart.filter((h) => active.length > 0 && !active.includes(h));
      if (elsewhere.length > 0)
        this.violations.push(
          `${at}: ${vm} runs on ${active.join(',')} and would also start on ${elsewhere.join(',')} at a boot`,
        );
      for (const h of active) {
        for (const d of this.host(h).vms.get(vm)!.live!.disks) {
          const c = this.chainOf(h, d.path);
          if (c.broken) this.violations.push(`${at}: ${vm} on ${h} runs on a broken chain: ${c.broken}`);
        }
      }
    }
  }

  /** Called before a file is removed: is anyone using it, is it the last copy of a VM's data? */
  checkRemoval(host: string, path: string, opName: string): void {
    const step = this.trace[this.trace.length - 1]?.step;
    const at = `op ${this.opCount} (${opName} on ${host}${step ? `, in ${step}` : ''})`;
    const h = this.host(host);
    const inChain = (top: string): boolean => this.chainOf(host, top).paths.some((x) => h.same(x, path));
    for (const vm of h.vms.values()) {
      for (const def of [vm.state !== 'shutoff' ? vm.live : undefined, vm.persistent]) {
        for (const d of def?.disks ?? []) {
          if (inChain(d.path))
            this.violations.push(`${at}: removed ${path}, which ${vm.name} uses (${vm.state})`);
        }
      }
    }
    const p = this.precious.get(this.preciousKey(host, path));
    if (!p) return;
    // another copy of the VM must hold everything the guest wrote (a verified target)
    const want = this.expectedData(p.vm, p.target);
    const holders = [...this.hosts.values()].flatMap((o) => {
      const vm = o.vms.get(p.vm);
      const def = vm?.state !== 'shutoff' ? vm?.live : vm?.persistent;
      const d = def?.disks.find((x) => x.target === p.target);
      if (!d || (o.name === host && inChain(d.path))) return [];
      return this.missingData(o.name, d.path, want).length === 0 ? [`${o.name}:${d.path}`] : [];
    });
    if (holders.length === 0)
      this.violations.push(
        `${at}: removed the original ${path} of ${p.vm} ${p.target} while no other copy holds its data`,
      );
    else this.precious.delete(this.preciousKey(host, path));
  }

  /** The hypervisor removes a file (a merged layer): checked like a removal by vmplace. */
  dropFile(host: string, path: string, opName: string): void {
    const h = this.host(host);
    if (!h.files.has(path)) return;
    this.checkRemoval(host, path, opName);
    h.files.delete(path);
  }

  // ---- the hypervisor's background work (Hyper-V flavour)

  startJob(host: string, key: string, complete: () => void): void {
    this.jobs.push({ host, key, remaining: this.mergeOps, complete });
  }

  jobRunning(host: string, key: string): boolean {
    return this.jobs.some((j) => j.host === host && j.key === key);
  }

  private advanceJobs(): void {
    for (const j of [...this.jobs]) {
      if (--j.remaining > 0) continue;
      this.jobs.splice(this.jobs.indexOf(j), 1);
      j.complete();
    }
  }

  /**
   * A merge of the chain under `top` completes (Hyper-V flavour, in the background): the data
   * of the whole chain goes into its bottom image, every configuration that named a merged layer
   * names the bottom image, and the merged layers are deleted.
   */
  completeMerge(host: string, top: string): void {
    const h = this.host(host);
    const { paths, broken } = this.chainOf(host, top);
    if (broken || paths.length < 2) return;
    const bottomPath = paths[paths.length - 1]!;
    const bottom = h.files.get(bottomPath)!.content as FakeImage;
    bottom.blocks = this.dataOf(host, top).blocks;
    const merged = paths.slice(0, -1);
    for (const v of h.vms.values())
      for (const def of [v.live, v.persistent])
        for (const d of def?.disks ?? [])
          if (merged.some((m) => h.same(m, d.path)))
            Object.assign(d, { path: bottomPath, format: bottom.format });
    for (const m of merged) this.dropFile(host, m, 'merge (background)');
  }

  /**
   * An offline merge of `layer` into its parent completes (Hyper-V flavour): the parent holds
   * the layer's data, what named the layer (a configuration, a layer above) names the parent,
   * and the layer is deleted.
   */
  completeOfflineMerge(host: string, layer: string): void {
    const h = this.host(host);
    const c = h.files.get(layer)?.content;
    if (c?.kind !== 'image' || c.parent === undefined) return;
    const parent = h.files.get(c.parent)?.content;
    if (parent?.kind !== 'image') return;
    Object.assign(parent.blocks, c.blocks);
    for (const f of h.files.values())
      if (f.content.kind === 'image' && f.content.parent !== undefined && h.same(f.content.parent, layer))
        Object.assign(f.content, { parent: c.parent, parentFormat: c.parentFormat ?? parent.format });
    for (const v of h.vms.values())
      for (const def of [v.live, v.persistent])
        for (const d of def?.disks ?? [])
          if (h.same(d.path, layer))
            Object.assign(d, { path: c.parent, format: c.parentFormat ?? parent.format });
    this.dropFile(host, layer, 'merge offline (background)');
  }

  /**
   * Files whose names say a migration made them (overlays, states, probes, part files, temp
   * files), and the layers the hypervisor named itself for a migration's checkpoint.
   */
  migrationFiles(): string[] {
    const out: string[] = [];
    for (const h of this.hosts.values())
      for (const p of h.files.keys()) if (/\.vmplace-/.test(h.paths.basename(p))) out.push(`${h.name}:${p}`);
    for (const m of this.hypervisorMade)
      if (this.host(m.host).files.has(m.path)) out.push(`${m.host}:${m.path}`);
    return out;
  }
}

// ------------------------------------------------------------------ the driver

function checksumOf(c: FakeImage | FakeBlob): string {
  const canonical =
    c.kind === 'image'
      ? {
          format: c.format,
          parent: c.parent ?? null,
          parentFormat: c.parentFormat ?? null,
          virtualBlocks: c.virtualBlocks,
          blocks: Object.entries(c.blocks).sort(([a], [b]) => Number(a) - Number(b)),
        }
      : { bytes: c.bytes, saved: c.saved ?? null };
  return createHash('sha256').update(JSON.stringify(canonical)).digest('hex');
}

/**
 * FAKE `HypervisorDriver` for one host of a `FakeWorld` (see the file's header). Each method is
 * one op (`world.op`); compound methods (a live move, a live migration) are several, so a crash
 * can land between their parts as it can between a real driver's commands.
 */
export class FakeDriver implements HypervisorDriver {
  readonly hostName: string;
  readonly capabilities: DriverCapabilities;
  readonly paths: PathSemantics;

  constructor(
    readonly world: FakeWorld,
    private readonly host: FakeHost,
    private readonly epoch: number,
  ) {
    this.hostName = host.name;
    this.capabilities = host.capabilities;
    this.paths = host.paths;
  }

  private get hyperv(): boolean {
    return this.host.flavour === 'hyperv';
  }

  private op<T>(name: string, effect: () => T): Promise<T> {
    return this.world.op(this.epoch, this.host.name, name, effect);
  }

  private get family(): string {
    return this.capabilities.family;
  }

  private encode(def: FakeDef): VmDefinition {
    return encodeDef(this.family, def);
  }

  private decode(def: VmDefinition): FakeDef {
    if (def.driver !== this.family)
      throw new StalledError('DriverMismatch', `a ${def.driver} definition given to a ${this.family} driver`);
    return decodeDef(def);
  }

  private guard(p: string, opts: { allowRoot?: boolean } = {}): void {
    const root = this.host.rootOf(p);
    // Windows: only what checkWindowsPath accepts (no `/`, `..`, streams, device names)
    const malformed = this.hyperv
      ? checkWindowsPath(p) !== undefined
      : p.includes('/../') || p.endsWith('/..');
    if (root === undefined || (this.host.same(root, p) && !opts.allowRoot) || malformed)
      throw new StalledError(
        'PathOutsideStorage',
        `${p} is not inside the declared storage of ${this.hostName}`,
      );
  }

  private file(p: string): FakeFile {
    const f = this.host.files.get(p);
    if (!f) throw new VmplaceError(fakeReason('FileNotFound'), `${p} does not exist on ${this.hostName}`);
    return f;
  }

  private image(p: string): FakeImage {
    const c = this.file(p).content;
    if (c.kind !== 'image') throw new VmplaceError(fakeReason('ImageUnreadable'), `${p} is not a disk image`);
    return c;
  }

  private vm(name: string): FakeVm {
    const v = this.host.vms.get(name);
    if (!v) throw new VmplaceError('DomainNotFound', `${name} is not defined on ${this.hostName}`);
    return v;
  }

  private defOf(v: FakeVm): FakeDef {
    return (v.state !== 'shutoff' ? v.live : v.persistent)!;
  }

  private bytesOf(c: FakeImage | FakeBlob): number {
    return c.kind === 'image' ? Object.keys(c.blocks).length * this.world.blockBytes : c.bytes;
  }

  private requireDir(p: string): void {
    if (!this.host.dirs.has(this.paths.dirname(p)))
      throw new VmplaceError(
        fakeReason('NoSuchDirectory'),
        `${this.paths.dirname(p)} does not exist on ${this.hostName}`,
      );
  }

  /** A VM that was active stops: a transient one vanishes, a persistent one is shut off. */
  private stop(v: FakeVm): void {
    delete v.live;
    delete v.bootId;
    v.state = 'shutoff';
    if (!v.persistent) this.host.vms.delete(v.name);
  }

  /** Activate `def` (restore, migration): every disk must be an image of the format the definition declares. */
  private checkBootable(def: FakeDef): void {
    for (const d of def.disks) {
      const c = this.world.chainOf(this.hostName, d.path);
      if (c.broken)
        throw new VmplaceError(fakeReason('DiskUnusable'), `${def.name} disk ${d.target}: ${c.broken}`);
      const img = this.image(d.path);
      if (img.format !== d.format)
        throw new VmplaceError(
          fakeReason('DiskUnusable'),
          `${d.path} is ${img.format}, ${def.name} opens it as ${d.format}`,
        );
    }
  }

  removeRaw(p: string, opName: string): void {
    this.world.dropFile(this.hostName, p, opName);
  }

  /** Hyper-V flavour: a layer is an `.avhdx` (Hyper-V opens no other), a saved state a `.vmrs`. */
  ownFile(dir: string, vm: string, migration: string, kind: OwnFileKind): string {
    const base = ownFileBaseName(vm, migration, kind);
    if (!this.hyperv) return this.paths.join(dir, base);
    const ext = kind.what === 'layer' ? '.avhdx' : kind.what === 'state' ? '.vmrs' : '.tmp';
    return this.paths.join(dir, `${base}${ext}`);
  }

  // ---- definitions (pure)

  diskPathsOf(def: VmDefinition): Record<string, string | undefined> {
    return Object.fromEntries(this.decode(def).disks.map((d) => [d.target, d.path]));
  }

  /** A disk without a format is one of the fake's layers (qcow2, like libvirt's; avhdx on Hyper-V). */
  withDiskPaths(def: VmDefinition, disks: Record<string, { path: string; format?: string }>): VmDefinition {
    const d = this.decode(def);
    const missing = Object.keys(disks).filter((t) => !d.disks.some((x) => x.target === t));
    if (missing.length)
      throw new StalledError('DiskNotFound', `definition of ${d.name} has no disk ${missing.join(', ')}`);
    return this.encode({
      ...d,
      disks: d.disks.map((x) => {
        const w = disks[x.target];
        return w ? { ...x, path: w.path, format: w.format ?? this.host.layerFormat } : x;
      }),
    });
  }

  // ---- observation

  listDomains(): Promise<string[]> {
    return this.op('listDomains', () => [...this.host.vms.keys()]);
  }

  getDomain(name: string): Promise<DomainInfo | undefined> {
    return this.op('getDomain', () => {
      const v = this.host.vms.get(name);
      if (!v) return undefined;
      const def = this.defOf(v);
      return {
        name,
        uuid: `fake-${name}`,
        state: v.state as DomainState,
        persistent: v.persistent !== undefined,
        memoryBytes: def.memoryBytes,
        vcpus: 1,
        domainType: 'fake',
        autostart: v.autostart,
        disks: def.disks.map((d) => {
          const f = this.host.files.get(d.path)?.content;
          return {
            target: d.target,
            type: 'file',
            device: 'disk',
            path: d.path,
            format: d.format,
            readonly: false,
            hasBackingStore: f?.kind === 'image' && f.parent !== undefined,
          };
        }),
        definition: this.encode(def),
      };
    });
  }

  domainState(name: string): Promise<DomainState | undefined> {
    return this.op('domainState', () => this.host.vms.get(name)?.state);
  }

  imageInfo(path: string, opts: { format?: string; forceShare?: boolean } = {}): Promise<ImageInfo> {
    return this.op('imageInfo', () => {
      const f = this.file(path).content;
      const format = opts.format ?? this.host.layerFormat;
      if (f.kind !== 'image' || (format !== 'raw' && f.format !== format))
        throw new VmplaceError(fakeReason('ImageUnreadable'), `${path} is not a ${format} image`);
      const asRaw = format === 'raw' && f.format !== 'raw';
      const bytes = this.bytesOf(f);
      return {
        path,
        format,
        virtualBytes: f.virtualBlocks * this.world.blockBytes,
        allocatedBytes: bytes,
        fileBytes: bytes,
        ...(f.parent && !asRaw ? { backingFile: f.parent } : {}),
        ...(f.parentFormat && !asRaw ? { backingFormat: f.parentFormat } : {}),
        chainLength: f.parent && !asRaw ? 2 : 1,
      };
    });
  }

  probeFormat(path: string): Promise<string | undefined> {
    return this.op('probeFormat', () => {
      const f = this.file(path).content;
      return f.kind === 'image' && f.format !== 'raw' ? f.format : undefined;
    });
  }

  fsInfo(path: string): Promise<FsInfo> {
    return this.op('fsInfo', () => {
      const root = this.host.rootOf(path);
      if (root === undefined || !this.host.dirs.has(path))
        throw new VmplaceError(fakeReason('NoSuchDirectory'), `${path} does not exist on ${this.hostName}`);
      const capacity = this.host.roots.get(root)!;
      let used = 0;
      for (const [p, f] of this.host.files) if (this.host.rootOf(p) === root) used += this.bytesOf(f.content);
      return { capacityBytes: capacity, freeBytes: Math.max(0, capacity - used) };
    });
  }

  storageLocations(): Promise<{ name: string; path: string }[]> {
    return this.op('storageLocations', () => this.host.pools.map((p) => ({ ...p })));
  }

  hostCpu(): Promise<{ vendor?: string; model?: string }> {
    return this.op('hostCpu', () => ({ vendor: 'fake', model: 'fake-cpu' }));
  }

  fileExists(path: string): Promise<boolean> {
    return this.op('fileExists', () => this.host.files.has(path));
  }

  fileSize(path: string): Promise<number | undefined> {
    return this.op('fileSize', () => {
      const f = this.host.files.get(path);
      return f ? this.bytesOf(f.content) : undefined;
    });
  }

  canRun(def: VmDefinition): Promise<{ compatible: boolean; message: string }> {
    return this.op('canRun', () =>
      def.driver === this.family
        ? { compatible: true, message: 'fake hosts run every fake VM' }
        : { compatible: false, message: `a ${def.driver} VM on a ${this.family} host` },
    );
  }

  // ---- layers

  freezeDisks(
    vm: string,
    layers: { target: string; layer: string }[],
  ): Promise<{ target: string; layer: string; below: string }[]> {
    return this.op('freezeDisks', () => {
      if (this.hyperv) return this.checkpoint(vm, layers);
      for (const l of layers) this.guard(l.layer);
      const v = this.vm(vm);
      const def = this.defOf(v);
      const diskOf = (t: string): FakeDef['disks'][number] => {
        const d = def.disks.find((x) => x.target === t);
        if (!d) throw new StalledError('DiskNotFound', `${vm} has no disk ${t}`);
        return d;
      };
      const done = layers.filter((l) => diskOf(l.target).path === l.layer);
      if (done.length === layers.length)
        return layers.map((l) => ({ ...l, below: this.image(l.layer).parent ?? '' }));
      if (done.length > 0)
        throw new StalledError('SnapshotPartial', `${vm}: only some disks are on their layers`);
      for (const l of layers) {
        if (this.host.files.has(l.layer))
          throw new StalledError('OverlayExists', `${l.layer} exists but ${vm} does not use it`);
        this.requireDir(l.layer);
      }
      const out = layers.map((l) => {
        const d = diskOf(l.target);
        const below = this.image(d.path);
        this.host.files.set(l.layer, {
          identity: this.world.newIdentity(),
          content: {
            kind: 'image',
            format: 'qcow2',
            parent: d.path,
            parentFormat: d.format,
            virtualBlocks: below.virtualBlocks,
            blocks: {},
          },
        });
        return { target: l.target, layer: l.layer, below: d.path };
      });
      // the running and the persistent definition both name the new layers (libvirt does so too)
      for (const x of [v.live, v.persistent]) {
        for (const l of layers) {
          const d = x?.disks.find((y) => y.target === l.target);
          if (d) Object.assign(d, { path: l.layer, format: 'qcow2' });
        }
      }
      return out;
    });
  }

  /**
   * Hyper-V flavour (inside the op `freezeDisks`): Checkpoint-VM. Every disk of the VM gets a
   * differencing disk beside its image: an asked disk under the asked name (which must lie
   * there), every other disk under a name the hypervisor picks. Returns every layer it made,
   * the asked ones first. Idempotent: with the asked disks on their layers, the same checkpoint's
   * layers are returned, those of other disks only while their disk still runs on them.
   */
  private checkpoint(
    vm: string,
    layers: { target: string; layer: string }[],
  ): { target: string; layer: string; below: string }[] {
    const h = this.host;
    for (const l of layers) this.guard(l.layer);
    const v = this.vm(vm);
    const def = this.defOf(v);
    const diskOf = (t: string): FakeDef['disks'][number] => {
      const d = def.disks.find((x) => x.target === t);
      if (!d) throw new StalledError('DiskNotFound', `${vm} has no disk ${t}`);
      return d;
    };
    const done = layers.filter((l) => h.same(diskOf(l.target).path, l.layer));
    if (done.length === layers.length) {
      const cp = h.checkpoints.find(
        (c) =>
          c.vm === vm &&
          c.asked.length === layers.length &&
          layers.every((l, i) => h.same(c.asked[i]!, l.layer)),
      );
      const others = (cp?.layers ?? []).filter(
        (x) =>
          !layers.some((l) => l.target === x.target) &&
          def.disks.some((d) => d.target === x.target && h.same(d.path, x.layer)),
      );
      return [...layers.map((l) => ({ ...l, below: this.image(l.layer).parent ?? '' })), ...others];
    }
    if (done.length > 0)
      throw new StalledError('SnapshotPartial', `${vm}: only some disks are on their layers`);
    const id = this.world.newCheckpoint();
    const asked = layers.map((l) => ({ ...l, below: diskOf(l.target).path }));
    const others = def.disks
      .filter((d) => !layers.some((l) => l.target === d.target))
      .map((d) => {
        const stem = this.paths.basename(d.path).replace(/\.[^.]*$/, '');
        return {
          target: d.target,
          layer: this.paths.join(this.paths.dirname(d.path), `${stem}_${id}.avhdx`),
          below: d.path,
        };
      });
    const made = [...asked, ...others];
    for (const m of made) {
      if (!h.same(this.paths.dirname(m.layer), this.paths.dirname(m.below)))
        throw new StalledError(
          fakeReason('LayerPlacement'),
          `Hyper-V makes the differencing disk of ${vm} ${m.target} beside ${m.below}, not at ${m.layer}`,
        );
      if (h.files.has(m.layer))
        throw new StalledError('OverlayExists', `${m.layer} exists but ${vm} does not use it`);
      this.requireDir(m.layer);
    }
    for (const m of made) {
      const below = this.image(m.below);
      h.files.set(m.layer, {
        identity: this.world.newIdentity(),
        content: {
          kind: 'image',
          format: h.layerFormat,
          parent: m.below,
          parentFormat: diskOf(m.target).format,
          virtualBlocks: below.virtualBlocks,
          blocks: {},
        },
      });
    }
    // one configuration: what runs and what is defined both name the new layers
    for (const x of [v.live, v.persistent]) {
      for (const m of made) {
        const d = x?.disks.find((y) => y.target === m.target);
        if (d) Object.assign(d, { path: m.layer, format: h.layerFormat });
      }
    }
    h.checkpoints.push({ vm, asked: layers.map((l) => l.layer), layers: made });
    for (const o of others) this.world.hypervisorMade.push({ host: this.hostName, path: o.layer });
    return made;
  }

  /**
   * Hyper-V flavour: a merge runs in the background. Start it (or find it running), then ask
   * until it is done (each `.wait` an op, as a real driver polls): the method resolves only
   * once the disk runs from the bottom image, but a process that dies meanwhile leaves the
   * merge running, and it completes anyway.
   */
  private async mergeInBackground(
    key: string,
    ops: { start: string; wait: string },
    begin: () => (() => void) | undefined,
  ): Promise<void> {
    const running = await this.op(ops.start, () => {
      if (this.world.jobRunning(this.hostName, key)) return true;
      const complete = begin();
      if (complete) this.world.startJob(this.hostName, key, complete);
      return complete !== undefined;
    });
    for (let i = 0; running; i++) {
      if (await this.op(ops.wait, () => !this.world.jobRunning(this.hostName, key))) return;
      if (i > 1000) throw new Error(`fake world: the merge ${key} never ends`);
    }
  }

  mergeLayers(vm: string, target: string, opts: { top?: string } = {}): Promise<void> {
    if (this.hyperv)
      return this.mergeInBackground(
        `merge\0${vm}\0${target}`,
        { start: 'mergeLayers', wait: 'mergeLayers.wait' },
        () => {
          const v = this.vm(vm);
          if (v.state === 'shutoff') throw new VmplaceError('DomainNotRunning', `${vm} is not running`);
          const d = v.live!.disks.find((x) => x.target === target);
          if (!d) throw new StalledError('DiskNotFound', `${vm} has no disk ${target}`);
          if (this.image(d.path).parent === undefined) return undefined;
          if (opts.top !== undefined && !this.host.same(d.path, opts.top)) return undefined;
          const { broken } = this.world.chainOf(this.hostName, d.path);
          if (broken) throw new VmplaceError(fakeReason('ChainBroken'), `${vm} ${target}: ${broken}`);
          const top = d.path;
          return () => this.world.completeMerge(this.hostName, top);
        },
      );
    return this.op('mergeLayers', () => {
      const v = this.vm(vm);
      if (v.state === 'shutoff') throw new VmplaceError('DomainNotRunning', `${vm} is not running`);
      const d = v.live!.disks.find((x) => x.target === target);
      if (!d) throw new StalledError('DiskNotFound', `${vm} has no disk ${target}`);
      const top = this.image(d.path);
      if (top.parent === undefined) return;
      if (opts.top !== undefined && d.path !== opts.top) return;
      const { paths, broken } = this.world.chainOf(this.hostName, d.path);
      if (broken) throw new VmplaceError(fakeReason('ChainBroken'), `${vm} ${target}: ${broken}`);
      const bottomPath = paths[paths.length - 1]!;
      const bottom = this.image(bottomPath);
      bottom.blocks = this.world.dataOf(this.hostName, d.path).blocks;
      const oldTop = d.path;
      Object.assign(d, { path: bottomPath, format: bottom.format });
      const p = v.persistent?.disks.find((x) => x.target === target);
      if (p && p.path === oldTop) Object.assign(p, { path: bottomPath, format: bottom.format });
    });
  }

  mergeLayerOffline(layer: string): Promise<void> {
    if (this.hyperv)
      return this.mergeInBackground(
        `merge-offline\0${this.host.fold(layer)}`,
        { start: 'mergeLayerOffline', wait: 'mergeLayerOffline.wait' },
        () => {
          this.guard(layer);
          // merged already: Hyper-V deleted the layer
          const f = this.host.files.get(layer);
          if (f?.content.kind !== 'image' || f.content.parent === undefined) return undefined;
          this.guard(f.content.parent);
          this.image(f.content.parent);
          for (const v of this.host.vms.values())
            if (
              v.state !== 'shutoff' &&
              v.live!.disks.some((d) =>
                this.world.chainOf(this.hostName, d.path).paths.some((p) => this.host.same(p, layer)),
              )
            )
              throw new VmplaceError(fakeReason('ImageInUse'), `${layer} is in use by ${v.name}`);
          return () => this.world.completeOfflineMerge(this.hostName, layer);
        },
      );
    return this.op('mergeLayerOffline', () => {
      this.guard(layer);
      const img = this.image(layer);
      if (img.parent === undefined) return;
      this.guard(img.parent);
      for (const v of this.host.vms.values())
        if (
          v.state !== 'shutoff' &&
          v.live!.disks.some((d) => this.world.chainOf(this.hostName, d.path).paths.includes(layer))
        )
          throw new VmplaceError(fakeReason('ImageInUse'), `${layer} is in use by ${v.name}`);
      const below = this.image(img.parent);
      Object.assign(below.blocks, img.blocks);
      img.blocks = {};
    });
  }

  createLayer(path: string, parent: string, parentFormat?: string): Promise<void> {
    return this.op('createLayer', () => {
      this.guard(path);
      this.guard(parent);
      this.requireDir(path);
      const below = this.image(parent);
      this.removeRaw(path, 'createLayer');
      this.host.files.set(path, {
        identity: this.world.newIdentity(),
        content: {
          kind: 'image',
          format: 'qcow2',
          parent,
          parentFormat: parentFormat ?? 'qcow2',
          virtualBlocks: below.virtualBlocks,
          blocks: {},
        },
      });
    });
  }

  relinkLayer(layer: string, parent: string, parentFormat?: string): Promise<void> {
    return this.op('relinkLayer', () => {
      this.guard(layer);
      const img = this.image(layer);
      img.parent = parent;
      img.parentFormat = parentFormat ?? 'qcow2';
    });
  }

  checkImage(path: string, format: string): Promise<string[]> {
    return this.op('checkImage', () => {
      const img = this.image(path);
      if (img.format !== format) return [`${path} is ${img.format}, not ${format}`];
      return this.world.corrupt.has(path) ? [`${path}: corrupt (injected)`] : [];
    });
  }

  // ---- lifecycle

  /**
   * Hyper-V flavour: Save-VM writes the memory state as files; the fake's driver has them named
   * after `stateFile` (`x.vmrs`, and the guest state `x.vmgs` beside it).
   */
  save(vm: string, stateFile: string, opts: { knownActive?: boolean } = {}): Promise<void> {
    void opts;
    return this.op('save', () => {
      this.guard(stateFile);
      const v = this.host.vms.get(vm);
      if (v && v.state !== 'shutoff') {
        this.requireDir(stateFile);
        const sidecars = this.host.stateSidecars(stateFile);
        for (const p of [stateFile, ...sidecars]) this.removeRaw(p, 'save');
        const saveId = this.world.newSave();
        this.host.files.set(stateFile, {
          identity: this.world.newIdentity(),
          content: {
            kind: 'blob',
            bytes: v.live!.memoryBytes,
            saved: {
              vm,
              def: clone(v.live!),
              bootId: v.bootId!,
              paused: v.state === 'paused',
              ...(sidecars.length ? { saveId } : {}),
            },
          },
        });
        for (const p of sidecars)
          this.host.files.set(p, {
            identity: this.world.newIdentity(),
            content: { kind: 'blob', bytes: this.world.blockBytes, sidecarOf: saveId },
          });
        this.stop(v);
        return;
      }
      if (this.holds(stateFile, vm)) return;
      throw new StalledError(
        'DomainNotRunning',
        `${vm} is ${v?.state ?? 'not defined'} and ${stateFile} holds no save of it`,
      );
    });
  }

  waitForSaveJob(vm: string): Promise<boolean> {
    void vm;
    return this.op('waitForSaveJob', () => false);
  }

  /** A complete saved state of `vm`: on Hyper-V with every file of the same save beside it. */
  private holds(stateFile: string, vm: string): boolean {
    const c = this.host.files.get(stateFile)?.content;
    if (c?.kind !== 'blob' || c.saved?.vm !== vm) return false;
    return this.host.stateSidecars(stateFile).every((p) => {
      const x = this.host.files.get(p)?.content;
      return x?.kind === 'blob' && x.sidecarOf !== undefined && x.sidecarOf === c.saved?.saveId;
    });
  }

  holdsSavedState(stateFile: string, vm: string): Promise<boolean> {
    return this.op('holdsSavedState', () => {
      this.guard(stateFile);
      return this.holds(stateFile, vm);
    });
  }

  savedDefinition(stateFile: string): Promise<VmDefinition> {
    return this.op('savedDefinition', () => {
      const c = this.file(stateFile).content;
      if (c.kind !== 'blob' || !c.saved)
        throw new VmplaceError(fakeReason('StateUnreadable'), `${stateFile} holds no saved state`);
      // Hyper-V keeps a saved VM's definition in its registered configuration: read only there
      if (this.hyperv && this.host.vms.get(c.saved.vm)?.state !== 'shutoff')
        throw new StalledError(
          'NotSupportedByDriver',
          `${stateFile}: ${c.saved.vm} is not saved and registered on ${this.hostName}`,
        );
      return this.encode(c.saved.def);
    });
  }

  restore(stateFile: string, def?: VmDefinition, opts: { knownInactive?: boolean } = {}): Promise<void> {
    void opts;
    return this.op('restore', () => {
      const c = this.file(stateFile).content;
      if (c.kind !== 'blob' || !c.saved)
        throw new VmplaceError(fakeReason('StateUnreadable'), `${stateFile} holds no saved state`);
      const d = def ? this.decode(def) : clone(c.saved.def);
      const existing = this.host.vms.get(d.name);
      if (existing && existing.state !== 'shutoff') return;
      if (!this.holds(stateFile, c.saved.vm))
        throw new VmplaceError(
          fakeReason('StateUnreadable'),
          `${stateFile} lacks a file of its saved state (${this.host.stateSidecars(stateFile).join(', ')})`,
        );
      this.checkBootable(d);
      const v: FakeVm = existing ?? { name: d.name, state: 'shutoff', autostart: false };
      v.state = c.saved.paused ? 'paused' : 'running';
      v.live = d;
      v.bootId = c.saved.bootId;
      // Hyper-V: one configuration; the restored VM is registered with it (no transient VMs)
      if (this.hyperv) v.persistent = clone(d);
      this.host.vms.set(d.name, v);
    });
  }

  definition(vm: string, opts: { inactive?: boolean } = {}): Promise<VmDefinition> {
    return this.op('definition', () => {
      const v = this.vm(vm);
      const def = opts.inactive ? v.persistent : this.defOf(v);
      if (!def)
        throw new VmplaceError(
          fakeReason('DomainNotPersistent'),
          `${vm} has no persistent definition on ${this.hostName}`,
        );
      return this.encode(def);
    });
  }

  define(def: VmDefinition): Promise<void> {
    return this.op('define', () => {
      const d = this.decode(def);
      const v = this.host.vms.get(d.name);
      if (v) v.persistent = clone(d);
      else
        this.host.vms.set(d.name, { name: d.name, state: 'shutoff', persistent: clone(d), autostart: false });
    });
  }

  undefine(vm: string): Promise<void> {
    return this.op('undefine', () => {
      const v = this.host.vms.get(vm);
      if (!v || !v.persistent) return;
      delete v.persistent;
      v.autostart = false;
      if (v.state === 'shutoff') this.host.vms.delete(vm);
    });
  }

  start(vm: string): Promise<void> {
    return this.op('start', () => {
      const v = this.host.vms.get(vm);
      if (!v) throw new StalledError('DomainNotFound', `${vm} is not defined on ${this.hostName}`);
      if (v.state !== 'shutoff') return;
      this.checkBootable(v.persistent!);
      v.live = clone(v.persistent!);
      v.state = 'running';
      v.bootId = this.world.boot();
    });
  }

  pause(vm: string, opts: { knownRunning?: boolean } = {}): Promise<void> {
    void opts;
    return this.op('pause', () => {
      const v = this.host.vms.get(vm);
      if (!v) throw new StalledError('DomainNotFound', `${vm} is not defined on ${this.hostName}`);
      if (v.state === 'shutoff') throw new VmplaceError('DomainNotRunning', `${vm} is shut off`);
      v.state = 'paused';
    });
  }

  waitForMigrationJob(vm: string): Promise<boolean> {
    void vm;
    return this.op('waitForMigrationJob', () => false);
  }

  guestRunTime(vm: string): Promise<string | undefined> {
    return this.op('guestRunTime', () => {
      const v = this.host.vms.get(vm);
      return v && v.state !== 'shutoff' ? String(v.ran ?? 0) : undefined;
    });
  }

  /** The paused VM moves at once (one op): its memory (boot id) and the definition onto `opts.disks`. */
  async migratePaused(vm: string, target: HypervisorDriver, opts: MigratePausedOptions): Promise<void> {
    await this.migrateInto(vm, target, opts, {
      op: 'migratePaused',
      capability: 'pausedMigration',
      what: 'paused migration',
      from: 'paused',
      notFrom: 'DomainNotPaused',
      disks: (def, there) => {
        for (const d of def.disks) {
          const to = opts.disks.find((x) => x.target === d.target);
          if (to) Object.assign(d, { path: to.path, format: to.format ?? 'qcow2' });
        }
        // the target must open each disk (checked on the world: `target` may be a fenced proxy)
        for (const d of def.disks) {
          const c = this.world.chainOf(there.name, d.path);
          const f = there.files.get(d.path)?.content;
          if (c.broken || f?.kind !== 'image' || f.format !== d.format)
            throw new VmplaceError(
              fakeReason('DiskUnusable'),
              `${vm} disk ${d.target} cannot be opened on ${there.name}: ${c.broken ?? `${d.path} is not a ${d.format} image`}`,
            );
        }
      },
    });
  }

  /**
   * The running VM moves at once (one op): the source's top layer of each disk is mirrored into
   * the target's (empty) top layer, memory (boot id) and definition onto `opts.disks`.
   */
  async migrateOntoLayers(
    vm: string,
    target: HypervisorDriver,
    opts: MigrateOntoLayersOptions,
  ): Promise<{ downtimeMs?: number }> {
    // a guest dirtying memory faster than it crosses: only the bound ends it (paused, below);
    // without one it runs until someone aborts it, the VM still on this host
    if (!this.world.liveConverges && opts.suspendAfterMs === undefined)
      await this.op('migrateOntoLayers', () => {
        throw new VmplaceError(fakeReason('NeverConverged'), `the live migration of ${vm} never converged`);
      });
    await this.migrateInto(vm, target, opts, {
      op: 'migrateOntoLayers',
      capability: 'liveOntoLayers',
      what: 'live migration onto layers',
      from: 'running',
      notFrom: 'DomainNotRunning',
      disks: (def, there) => {
        for (const d of def.disks) {
          const to = opts.disks.find((x) => x.target === d.target);
          if (!to) continue;
          const f = there.files.get(to.path)?.content;
          const c = this.world.chainOf(there.name, to.path);
          if (f?.kind !== 'image' || c.broken)
            throw new VmplaceError(
              fakeReason('DiskUnusable'),
              `${vm} disk ${d.target}: ${to.path} on ${there.name} is not a usable layer${c.broken ? `: ${c.broken}` : ''}`,
            );
          // the mirror: the source's top layer into the target's
          Object.assign(f.blocks, this.image(d.path).blocks);
          this.world.clock +=
            (Object.keys(f.blocks).length * this.world.blockBytes) / this.world.copyBytesPerMs;
          Object.assign(d, { path: to.path, format: to.format ?? 'qcow2' });
        }
      },
    });
    if (this.world.liveConverges) return { downtimeMs: 5 };
    this.world.clock += opts.suspendAfterMs ?? 0;
    return { downtimeMs: 1000 }; // what was left to send, paused
  }

  /**
   * What both migrations share: both ends fake hosts of one family offering `capability`, not
   * cancelled; then in one op the VM in state `from` here and not active there, its definition
   * rewritten by `disks`, its memory copied, and it arrives there in the same state.
   */
  private async migrateInto(
    vm: string,
    target: HypervisorDriver,
    opts: { signal?: AbortSignal },
    how: {
      op: string;
      capability: 'pausedMigration' | 'liveOntoLayers';
      what: string;
      from: 'paused' | 'running';
      notFrom: 'DomainNotPaused' | 'DomainNotRunning';
      disks: (def: FakeDef, there: FakeHost) => void;
    },
  ): Promise<void> {
    if (!(target instanceof FakeDriver) || target.world !== this.world || target.family !== this.family)
      throw new StalledError('DriverMismatch', 'a migration needs fake hosts of one family on both ends');
    if (!this.capabilities[how.capability] || !target.capabilities[how.capability])
      throw new StalledError(fakeReason('CapabilityMissing'), `${how.what} is not offered by both hosts`);
    if (opts.signal?.aborted) throw new VmplaceError('Cancelled', `migration of ${vm} cancelled`);
    await this.op(how.op, () => {
      const v = this.vm(vm);
      if (v.state !== how.from) throw new VmplaceError(how.notFrom, `${vm} is ${v.state}`);
      const there = target.host;
      if (there.vms.get(vm) && there.vms.get(vm)!.state !== 'shutoff')
        throw new VmplaceError(fakeReason('MigrationFailed'), `${vm} is already active on ${there.name}`);
      const def = clone(v.live!);
      how.disks(def, there);
      this.world.clock += def.memoryBytes / this.world.copyBytesPerMs;
      const existing = there.vms.get(vm);
      there.vms.set(vm, {
        ...(existing ?? { name: vm, autostart: false }),
        name: vm,
        state: how.from,
        live: def,
        bootId: v.bootId!,
      });
      this.stop(v);
    });
  }

  resume(vm: string, opts: { knownPaused?: boolean } = {}): Promise<void> {
    void opts;
    return this.op('resume', () => {
      const v = this.host.vms.get(vm);
      if (!v) throw new StalledError('DomainNotFound', `${vm} is not defined on ${this.hostName}`);
      if (v.state === 'paused') v.state = 'running';
    });
  }

  destroy(vm: string): Promise<void> {
    return this.op('destroy', () => {
      const v = this.host.vms.get(vm);
      if (v && v.state !== 'shutoff') this.stop(v);
    });
  }

  setAutostart(vm: string, on: boolean): Promise<void> {
    return this.op('setAutostart', () => {
      const v = this.vm(vm);
      if (!v.persistent)
        throw new VmplaceError(
          fakeReason('DomainNotPersistent'),
          `cannot set autostart of the transient ${vm}`,
        );
      v.autostart = on;
    });
  }

  abortJobs(vm: string): Promise<void> {
    void vm;
    return this.op('abortJobs', () => undefined);
  }

  // ---- fast paths

  async moveDiskLive(
    vm: string,
    target: string,
    destPath: string,
    format: string,
    opts: MoveDiskLiveOptions = {},
  ): Promise<void> {
    if (!this.capabilities.liveStorageMove)
      throw new StalledError(fakeReason('CapabilityMissing'), `${this.hostName} cannot move a disk live`);
    const onDest = await this.op('moveDiskLive.look', () => {
      this.guard(destPath);
      const d = this.vm(vm).live?.disks.find((x) => x.target === target);
      if (!d) throw new VmplaceError('DomainNotRunning', `${vm} does not run with a disk ${target}`);
      return d.path === destPath;
    });
    if (onDest) return;
    const id = await this.fileIdentity(destPath);
    if (opts.claim) {
      if (id !== undefined && !(await opts.claim.owns(id)))
        throw new StalledError(
          'DestinationExists',
          `${destPath} exists but was not created by this migration`,
        );
      if (id === undefined) {
        await opts.claim.intend?.();
        await opts.claim.record(await this.createExclusive(destPath));
      }
    } else if (id !== undefined) {
      throw new StalledError('DestinationExists', `${destPath} exists but ${vm} does not use it`);
    }
    if (opts.signal?.aborted) throw new VmplaceError('Cancelled', `live move of ${vm} ${target} cancelled`);
    await this.op('moveDiskLive.pivot', () => {
      const v = this.vm(vm);
      if (v.state === 'shutoff') throw new VmplaceError('DomainNotRunning', `${vm} stopped`);
      const d = v.live!.disks.find((x) => x.target === target)!;
      if (d.path === destPath) return;
      const src = this.image(d.path);
      const dest = this.host.files.get(destPath) ?? { identity: this.world.newIdentity(), content: src };
      this.requireDir(destPath);
      dest.content = {
        kind: 'image',
        format,
        virtualBlocks: src.virtualBlocks,
        blocks: this.world.dataOf(this.hostName, d.path).blocks,
      };
      this.host.files.set(destPath, dest);
      this.world.clock +=
        (Object.keys(dest.content.blocks).length * this.world.blockBytes) / this.world.copyBytesPerMs;
      // the running definition follows the pivot; the persistent one still names the old path
      const old = d.path;
      Object.assign(d, { path: destPath, format });
      if (this.hyperv) {
        // Move-VMStorage: one configuration follows, and the source file is gone
        const p = v.persistent?.disks.find((x) => x.target === target);
        if (p) Object.assign(p, { path: destPath, format });
        this.removeRaw(old, 'moveDiskLive.pivot');
      }
    });
  }

  async migrateLive(
    vm: string,
    target: HypervisorDriver,
    opts: MigrateLiveOptions,
  ): Promise<{ downtimeMs?: number }> {
    if (!(target instanceof FakeDriver) || target.world !== this.world || target.family !== this.family)
      throw new StalledError(
        'DriverMismatch',
        'a live migration needs fake hosts of one family on both ends',
      );
    if (!this.capabilities.liveMigration || !target.capabilities.liveMigration)
      throw new StalledError(fakeReason('CapabilityMissing'), 'live migration is not offered by both hosts');
    if ((await target.domainState(vm)) === 'running') return { downtimeMs: 5 };
    for (const d of opts.disks) {
      await target.guardPath(d.path);
      await target.makeDir(target.paths.dirname(d.path));
      const claim = opts.claimFor?.(d.path);
      const id = await target.fileIdentity(d.path);
      if (id !== undefined) {
        if (!claim || !(await claim.owns(id)))
          throw new StalledError(
            'FileExists',
            `${d.path} exists on ${target.hostName} and was not created by this migration`,
          );
      } else {
        await claim?.intend?.();
        const made = await target.createExclusive(d.path);
        await claim?.record(made);
      }
    }
    if (opts.signal?.aborted) throw new VmplaceError('Cancelled', `live migration of ${vm} cancelled`);
    await this.op('migrateLive.switch', () => {
      const v = this.vm(vm);
      if (v.state !== 'running') throw new VmplaceError('DomainNotRunning', `${vm} is ${v.state}`);
      const there = target.host;
      const def = clone(v.live!);
      for (const d of def.disks) {
        const to = opts.disks.find((x) => x.target === d.target);
        if (!to) continue;
        const f = there.files.get(to.path);
        if (!f)
          throw new VmplaceError(
            fakeReason('MigrationFailed'),
            `${to.path} was not created on ${there.name}`,
          );
        f.content = {
          kind: 'image',
          format: to.format,
          virtualBlocks: this.image(d.path).virtualBlocks,
          blocks: this.world.dataOf(this.hostName, d.path).blocks,
        };
        this.world.clock +=
          (Object.keys(f.content.blocks).length * this.world.blockBytes) / this.world.copyBytesPerMs;
        Object.assign(d, { path: to.path, format: to.format });
      }
      if (this.hyperv) {
        // Move-VM -IncludeStorage: the VM, its configuration with it, is registered on the
        // target and gone from the source, and so are the source's files of the moved disks
        there.vms.set(vm, {
          name: vm,
          state: 'running',
          live: def,
          persistent: clone(def),
          autostart: v.autostart,
          bootId: v.bootId!,
        });
        const moved = v.live!.disks.filter((d) => opts.disks.some((x) => x.target === d.target));
        this.host.vms.delete(vm);
        for (const d of moved) this.removeRaw(d.path, 'migrateLive.switch');
        return;
      }
      // without --persistent and --undefinesource (as libvirt's driver runs it): transient on
      // the target until Finalizing defines it; the source keeps its definition, inactive
      const existing = there.vms.get(vm);
      there.vms.set(vm, {
        ...(existing ?? { name: vm, autostart: false }),
        name: vm,
        state: 'running',
        live: def,
        bootId: v.bootId!,
      });
      this.stop(v);
    });
    return { downtimeMs: 5 };
  }

  // ---- files

  guardPath(path: string): Promise<void> {
    return this.op('guardPath', () => this.guard(path));
  }

  checksum(path: string): Promise<string> {
    return this.op('checksum', () => checksumOf(this.file(path).content));
  }

  /** Hyper-V flavour: a saved state's main file goes with the other files of the state (and their part files). */
  removeFile(path: string): Promise<void> {
    return this.op('removeFile', () => {
      this.guard(path);
      for (const s of this.host.stateSidecars(path)) {
        this.removeRaw(s, 'removeFile');
        this.removeRaw(s + PART_SUFFIX, 'removeFile');
      }
      this.removeRaw(path, 'removeFile');
    });
  }

  makeDir(path: string): Promise<void> {
    return this.op('makeDir', () => {
      this.guard(path, { allowRoot: true });
      this.world.mkdirs(this.hostName, path);
    });
  }

  removeDirIfEmpty(path: string): Promise<void> {
    return this.op('removeDirIfEmpty', () => {
      this.guard(path);
      const busy =
        [...this.host.files.keys()].some((p) => this.paths.isInside(p, path)) ||
        [...this.host.dirs].some((p) => this.paths.isInside(p, path));
      if (!busy) this.host.dirs.delete(path);
    });
  }

  // ---- ownership and use

  fileIdentity(path: string): Promise<string | undefined> {
    return this.op('fileIdentity', () => {
      this.guard(path);
      return this.host.files.get(path)?.identity;
    });
  }

  createExclusive(path: string): Promise<string> {
    return this.op('createExclusive', () => {
      this.guard(path);
      if (this.host.files.has(path))
        throw new StalledError(
          'FileExists',
          `${path} exists on ${this.hostName}; vmplace writes only files it created`,
        );
      this.requireDir(path);
      const identity = this.world.newIdentity();
      this.host.files.set(path, { identity, content: { kind: 'blob', bytes: 0 } });
      return identity;
    });
  }

  removeIfIdentity(path: string, identity: string): Promise<'removed' | 'absent' | 'other'> {
    return this.op('removeIfIdentity', () => {
      this.guard(path);
      const f = this.host.files.get(path);
      if (!f) return 'absent';
      if (f.identity !== identity) return 'other';
      this.removeRaw(path, 'removeIfIdentity');
      return 'removed';
    });
  }

  filesInUse(): Promise<Map<string, Set<string>>> {
    return this.op('filesInUse', () => {
      const used = new Map<string, Set<string>>();
      for (const v of this.host.vms.values()) {
        for (const def of [v.state !== 'shutoff' ? v.live : undefined, v.persistent]) {
          for (const d of def?.disks ?? []) {
            for (const p of [d.path, ...this.world.chainOf(this.hostName, d.path).paths]) {
              const s = used.get(p) ?? new Set<string>();
              s.add(v.name);
              used.set(p, s);
            }
          }
        }
      }
      return used;
    });
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

// ------------------------------------------------------------------ the transport

/**
 * FAKE transport between two hosts of a `FakeWorld` (or within one): the semantics of
 * transfer/copy-local.ts in three ops: look (a complete copy is only compared; a differing
 * one is refused; a part file of ours is removed; under a claim the part is created
 * exclusively and its identity recorded before a byte is written), the data (into the part
 * file), and the verified link to the final name (never replacing anything).
 */
export class FakeTransport implements Transport {
  readonly name: string;
  constructor(
    private readonly world: FakeWorld,
    private readonly from: FakeHost,
    private readonly to: FakeHost,
    private readonly epoch: number,
  ) {
    this.name = from === to ? 'fake-local' : 'fake-copy';
  }

  private op<T>(name: string, effect: () => T): Promise<T> {
    return this.world.op(this.epoch, `${this.from.name}->${this.to.name}`, name, effect);
  }

  private get dst(): FakeDriver {
    return new FakeDriver(this.world, this.to, this.epoch);
  }

  reachable(): Promise<boolean> {
    return this.op(
      'transport.reachable',
      () => this.from === this.to || this.world.reachable(this.from.name, this.to.name),
    );
  }

  /**
   * Hyper-V flavour: a saved state's main file comes with the other files of the state (copied
   * first, each the same way, so a main file in place means a complete state).
   */
  async copy(src: string, dst: string, opts: TransportCopyOptions = {}): Promise<TransportCopyResult> {
    // the source is still being written: nothing is looked at or read before it ends
    await opts.sourceReady;
    const from = this.from.stateSidecars(src);
    const to = this.to.stateSidecars(dst);
    if (from.length !== to.length)
      throw new StalledError(
        fakeReason('StateFilesDiffer'),
        `a saved state ${src} cannot be copied as ${dst} (its files would not go with it)`,
      );
    const plain: TransportCopyOptions = { ...opts };
    delete plain.claim; // the state is named by the migration, not claimed
    for (let i = 0; i < from.length; i++) await this.copyOne(from[i]!, to[i]!, plain);
    return this.copyOne(src, dst, opts);
  }

  private async copyOne(src: string, dst: string, opts: TransportCopyOptions): Promise<TransportCopyResult> {
    const part = `${dst}${PART_SUFFIX}`;
    const mode: 'local' | 'direct' | 'relay' =
      this.from === this.to
        ? 'local'
        : opts.mode === 'relay' || !this.world.reachable(this.from.name, this.to.name)
          ? 'relay'
          : 'direct';
    const seen = await this.op('copy.look', () => {
      const root = this.to.rootOf(dst);
      if (root === undefined || this.to.same(root, dst))
        throw new StalledError(
          'PathOutsideStorage',
          `${dst} is not inside the declared storage of ${this.to.name}`,
        );
      const s = this.from.files.get(src);
      if (!s)
        throw new VmplaceError('SourceMissing', `copy source ${src} does not exist`, { kind: 'stalled' });
      const d = this.to.files.get(dst);
      return {
        dst: d ? { identity: d.identity, same: checksumOf(d.content) === checksumOf(s.content) } : undefined,
        part: this.to.files.get(part)?.identity,
        digest: checksumOf(s.content),
      };
    });
    // like the real copies: the digest both ends were proven by (unless the world says otherwise)
    const result = (digest: string): TransportCopyResult =>
      this.world.copyDigests ? { mode, sha256: digest } : { mode };
    if (seen.dst) {
      if (opts.claim && !(await opts.claim.owns(seen.dst.identity)))
        throw new StalledError(
          'DestinationExists',
          `${dst} exists on ${this.to.name} and was not created by this migration`,
        );
      if (seen.dst.same) {
        if (seen.part !== undefined)
          await this.op('copy.dropPart', () => this.dst.removeRaw(part, 'copy.dropPart'));
        return result(seen.digest);
      }
      throw new VmplaceError('DestinationDiffers', `${dst} exists and differs from ${src}; not overwriting`, {
        kind: 'stalled',
      });
    }
    if (opts.claim) {
      if (seen.part !== undefined) {
        if (!(await opts.claim.owns(seen.part)))
          throw new StalledError(
            'PartFileNotOwned',
            `${part} exists on ${this.to.name} and was not created by this migration`,
          );
        await this.op('copy.dropPart', () => this.dst.removeRaw(part, 'copy.dropPart'));
      }
      await opts.claim.intend?.();
      await opts.claim.record(await this.dst.createExclusive(part));
    } else if (seen.part !== undefined) {
      await this.op('copy.dropPart', () => this.dst.removeRaw(part, 'copy.dropPart'));
    }
    if (opts.signal?.aborted) throw new VmplaceError('Cancelled', `copy of ${src} cancelled`);
    await this.op('copy.data', () => {
      const s = this.from.files.get(src);
      if (!s) throw new VmplaceError('SourceMissing', `copy source ${src} vanished`);
      if (!this.to.dirs.has(this.to.paths.dirname(part)))
        throw new VmplaceError(
          fakeReason('NoSuchDirectory'),
          `${this.to.paths.dirname(part)} does not exist on ${this.to.name}`,
        );
      const p = this.to.files.get(part) ?? { identity: this.world.newIdentity(), content: s.content };
      p.content = clone(s.content);
      this.to.files.set(part, p);
      const bytes =
        p.content.kind === 'image'
          ? Object.keys(p.content.blocks).length * this.world.blockBytes
          : p.content.bytes;
      this.world.clock += bytes / this.world.copyBytesPerMs;
      opts.onProgress?.(bytes, bytes);
    });
    const digest = await this.op('copy.link', () => {
      const s = this.from.files.get(src);
      const p = this.to.files.get(part);
      if (!s || !p || checksumOf(s.content) !== checksumOf(p.content)) {
        this.dst.removeRaw(part, 'copy.link');
        throw new VmplaceError('CopyVerifyFailed', `the copy of ${src} to ${part} differs from its source`);
      }
      if (this.to.files.has(dst))
        throw new StalledError('DestinationExists', `${dst} appeared during the copy; not replaced`);
      this.to.files.set(dst, p);
      this.to.files.delete(part);
      return checksumOf(p.content);
    });
    return result(digest);
  }
}
