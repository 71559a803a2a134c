/**
 * Runs one migration through the real machine (src/machine/runner.ts, the real steps from
 * `createStepActors`, the real persistence path) against a FAKE world (fake-hypervisor.ts), and
 * survives crashes the way the daemon does: when the world says the vmplace process died, every
 * thing in memory is dropped (step actors, their memo, drivers, transports) and the migration
 * resumes from what the store holds, as `Reconciler.resumeInterrupted` does after a restart.
 *
 * The store is a `MigrationStore` whose "disk" is memory (`MemoryStore`): the same interface the
 * runner and the steps use, deterministic and fast. What it holds survives a crash; once the
 * process has died it takes no more writes (they throw `Crash`), so nothing the dead process did
 * after the crash is remembered.
 *
 * Scenarios: `buildScenario` (libvirt-shaped FAKE hosts, POSIX paths) and `buildHypervScenario`
 * (Hyper-V-shaped FAKE hosts: Windows paths, checkpoints of every disk, background merges,
 * saved states as several files; never proof about Hyper-V).
 */
import { MACHINE_VERSION } from '../../src/machine/migration-machine';
import { startMigration, type RunResult } from '../../src/machine/runner';
import { createStepActors, type StepDeps, storeRecords } from '../../src/machine/steps';
import { MigrationStore, type OwnedFile, type StoredMigration } from '../../src/machine/store';
import type { MigrationContext, MigrationInput } from '../../src/machine/types';
import {
  Crash,
  type FakeDef,
  type FakeHostOptions,
  FakeDriver,
  FakeWorld,
  type OpPlan,
  type OpRecord,
  decodeDef,
} from './fake-hypervisor';

const clone = <T>(x: T): T => JSON.parse(JSON.stringify(x)) as T;

/** FAKE durable storage for the machine's snapshots, intents and ownership records (see the header). */
export class MemoryStore extends MigrationStore {
  private readonly active = new Map<string, StoredMigration>();
  private readonly done = new Map<string, StoredMigration>();
  private readonly intents = new Map<string, number>();
  private readonly owned = new Map<string, OwnedFile[]>();

  constructor(private readonly world: FakeWorld) {
    super('/nonexistent/vmplace-memory-store');
  }

  private write(what: string): void {
    if (this.world.dead) throw new Crash(`the vmplace process is gone (store ${what})`);
  }

  override init(): Promise<void> {
    return Promise.resolve();
  }

  override async markIntent(vm: string, id: string, what: string): Promise<void> {
    await Promise.resolve();
    this.write('markIntent');
    this.intents.set(`${vm}.${id}.${what}`, this.world.clock);
  }

  override async recordOwned(vm: string, id: string, rec: OwnedFile): Promise<void> {
    await Promise.resolve();
    this.write('recordOwned');
    const key = `${vm}.${id}`;
    const list = this.owned.get(key) ?? [];
    if (!list.some((r) => r.host === rec.host && r.path === rec.path && r.identity === rec.identity))
      list.push({ ...rec });
    this.owned.set(key, list);
  }

  override async listOwned(vm: string, id: string): Promise<OwnedFile[]> {
    await Promise.resolve();
    return clone(this.owned.get(`${vm}.${id}`) ?? []);
  }

  override async intentAt(vm: string, id: string, what: string): Promise<number | undefined> {
    await Promise.resolve();
    return this.intents.get(`${vm}.${id}.${what}`);
  }

  override async hasIntent(vm: string, id: string, what: string): Promise<boolean> {
    await Promise.resolve();
    return this.intents.has(`${vm}.${id}.${what}`);
  }

  override async save(vm: string, id: string, snapshot: unknown): Promise<void> {
    await Promise.resolve();
    this.write('save');
    this.active.set(`${vm}.${id}`, {
      version: MACHINE_VERSION,
      vm,
      id,
      updatedAt: new Date(this.world.clock).toISOString(),
      snapshot: clone(snapshot),
    });
  }

  override async finish(vm: string, id: string): Promise<void> {
    await Promise.resolve();
    this.write('finish');
    const key = `${vm}.${id}`;
    const rec = this.active.get(key);
    if (rec) this.done.set(key, rec);
    this.active.delete(key);
    for (const k of [...this.intents.keys()]) if (k.startsWith(`${key}.`)) this.intents.delete(k);
    this.owned.delete(key);
  }

  override async listActive(): Promise<{
    records: StoredMigration[];
    problems: { file: string; message: string }[];
  }> {
    await Promise.resolve();
    return { records: [...this.active.values()].map(clone), problems: [] };
  }

  override async lastDone(vm: string): Promise<StoredMigration | undefined> {
    await Promise.resolve();
    return [...this.done.values()].filter((r) => r.vm === vm).map(clone)[0];
  }
}

export interface HarnessResult extends RunResult {
  world: FakeWorld;
  /** the ops at which the process crashed (and was restarted) */
  crashes: OpRecord[];
  /** the steps each process went through, one list per process */
  runs: string[][];
}

export interface HarnessOptions {
  /** most restarts before the harness gives up (a crash plan crashes once) */
  maxRestarts?: number;
  /** extra step deps (defaults: no logger, retryBaseMs 1, hostSpecFor with the host's name) */
  deps?: Partial<StepDeps>;
}

/**
 * Run the migration `input` in `world` to a final step, restarting after every crash. Date.now
 * is the world's clock meanwhile (the delta rounds time their copies by it).
 */
export async function runMigrationInWorld(
  world: FakeWorld,
  input: MigrationInput,
  opts: HarnessOptions = {},
): Promise<HarnessResult> {
  const store = new MemoryStore(world);
  const crashes: OpRecord[] = [];
  const runs: string[][] = [];
  const startedAt = new Date(world.clock).toISOString();
  const realNow = Date.now;
  Date.now = () => world.clock;
  try {
    let start: Parameters<typeof startMigration>[0] = { input, startedAt };
    for (let restart = 0; ; restart++) {
      const epoch = world.epoch;
      const drivers = new Map<string, FakeDriver>();
      const deps: StepDeps = {
        driverFor: (h) => {
          let d = drivers.get(h);
          if (!d) drivers.set(h, (d = new FakeDriver(world, world.host(h), epoch)));
          return d;
        },
        transportFor: (a, b) => world.transport(a, b, epoch),
        hostSpecFor: (h) => ({
          driver: world.host(h).flavour,
          uri: `fake://${h}`,
          transferAddress: h,
        }),
        retryBaseMs: 1,
        now: () => world.clock,
        ...storeRecords(store),
        ...opts.deps,
      };
      const steps: string[] = [];
      runs.push(steps);
      const handle = startMigration(start, {
        actors: createStepActors(deps),
        store,
        onTransition: (step) => {
          steps.push(step);
        },
      });
      world.observe = () => ({ step: handle.step(), committed: handle.context().committed });
      const outcome = await handle.done.then(
        (r) => ({ r }),
        (e: unknown) => ({ e }),
      );
      world.observe = undefined;
      if (world.crashedAt === undefined || world.epoch !== epoch) {
        if ('e' in outcome) throw outcome.e;
        return { ...outcome.r, world, crashes, runs };
      }
      // the process died: what it did after the crash went nowhere (dead world, dead store)
      crashes.push(world.crashedAt);
      if (restart >= (opts.maxRestarts ?? 3)) throw new Error(`still crashing after ${restart} restarts`);
      world.restart();
      const rec = (await store.listActive()).records.find((r) => r.id === input.id);
      start = rec ? { snapshot: rec.snapshot } : { input, startedAt };
    }
  } finally {
    Date.now = realNow;
  }
}

// ------------------------------------------------------------------ scenarios

export interface Scenario {
  name: string;
  world: FakeWorld;
  input: MigrationInput;
  vm: string;
  /** the VM as it was before the migration (on `input.fromHost`) */
  before: { running: boolean; def: FakeDef; autostart: boolean; bootId?: string };
}

/** What went wrong in the world after a migration ended with `result` (empty: nothing). */
export function outcomeProblems(
  s: Scenario,
  result: { step: string; context: MigrationContext },
  opts: { acceptReported?: boolean } = {},
): string[] {
  const w = s.world;
  const out = [...w.violations];
  const { fromHost, toHost } = s.input;
  const vm = s.vm;
  // with acceptReported: a file the rollback could not prove its own and said so ("left behind: ...")
  const reported = (p: string): boolean =>
    opts.acceptReported === true &&
    (result.context.lastError?.message ?? '').includes(`left behind: `) &&
    (result.context.lastError?.message ?? '').includes(p);
  const ours = w.migrationFiles().filter((f) => !reported(f.slice(f.indexOf(':') + 1)));
  if (ours.length) out.push(`files of the migration left: ${ours.join(', ')}`);
  // the hypervisor's background work (Hyper-V-shaped merges) the migration started is over
  if (w.jobs.length)
    out.push(`still running in the background: ${w.jobs.map((j) => `${j.host}:${j.key}`).join(', ')}`);
  const expectOnly = (host: string): void => {
    const active = w.activeOn(vm);
    const wantActive = s.before.running ? [host] : [];
    if (JSON.stringify(active) !== JSON.stringify(wantActive))
      out.push(`${vm} is active on [${active.join(',')}], expected [${wantActive.join(',')}]`);
    const defined = w.definedOn(vm);
    if (JSON.stringify(defined) !== JSON.stringify([host]))
      out.push(`${vm} is defined on [${defined.join(',')}], expected [${host}]`);
    const v = w.hosts.get(host)?.vms.get(vm);
    if (!v) return;
    if (s.before.running && v.bootId !== s.before.bootId)
      out.push(`${vm} runs with boot ${v.bootId ?? 'none'}, not ${s.before.bootId}: its memory was lost`);
    if (v.autostart !== s.before.autostart)
      out.push(`${vm} autostart is ${v.autostart}, was ${s.before.autostart}`);
    if (!v.persistent) out.push(`${vm} is not defined persistently on ${host}`);
  };
  const checkDisks = (host: string, pathOf: (target: string, original: string) => string): void => {
    const v = w.hosts.get(host)?.vms.get(vm);
    for (const d of s.before.def.disks) {
      const p = pathOf(d.target, d.path);
      for (const [which, def] of [
        ['persistent', v?.persistent],
        ['running', v?.state !== 'shutoff' ? v?.live : undefined],
      ] as const) {
        if (!def) continue;
        const x = def.disks.find((y) => y.target === d.target);
        if (x?.path !== p || x.format !== d.format)
          out.push(
            `${which} definition on ${host}: ${d.target} is ${x?.path} (${x?.format}), expected ${p} (${d.format})`,
          );
      }
      const f = w.hosts.get(host)?.files.get(p)?.content;
      if (f?.kind === 'image' && f.parent !== undefined)
        out.push(`${host}:${p} still has a parent ${f.parent}`);
      const missing = w.missingData(host, p, w.expectedData(vm, d.target));
      if (missing.length) out.push(`${host}:${p} lost data: ${missing.slice(0, 3).join('; ')}`);
    }
  };
  if (result.step === 'Completed') {
    expectOnly(toHost);
    const moved = new Map(result.context.disks.map((d) => [d.target, d]));
    checkDisks(toHost, (t, p) => moved.get(t)?.dstPath ?? p);
    for (const d of result.context.disks) {
      if (w.hosts.get(fromHost)?.files.has(d.srcPath))
        out.push(`the source ${fromHost}:${d.srcPath} is still there`);
    }
  } else if (result.step === 'RolledBack' || result.step === 'Blocked') {
    expectOnly(fromHost);
    checkDisks(fromHost, (_, p) => p);
    for (const m of s.input.moves) {
      const d = s.before.def.disks.find((x) => x.target === m.target);
      const paths = w.host(toHost).paths;
      const dst = paths.join(m.toPath, vm, d ? w.host(fromHost).paths.basename(d.path) : '');
      if (w.hosts.get(toHost)?.files.has(dst) && !reported(dst))
        out.push(`the target copy ${toHost}:${dst} was left behind`);
    }
  } else {
    out.push(
      `ended ${result.step}: ${result.context.lastError?.reason ?? '?'} ${result.context.lastError?.message ?? ''}`,
    );
  }
  return out;
}

/** Snapshot of the VM before a scenario runs (see `Scenario.before`). */
export function vmBefore(world: FakeWorld, host: string, vm: string): Scenario['before'] {
  const v = world.host(host).vms.get(vm)!;
  return {
    running: v.state === 'running',
    def: clone(v.persistent!),
    autostart: v.autostart,
    ...(v.bootId ? { bootId: v.bootId } : {}),
  };
}

export { decodeDef };

/** The strategies the crash and failure tests run, each a world and a migration. */
export const STRATEGIES = [
  'quick on one host',
  'quick across hosts',
  'quick across hosts by paused migration',
  'quick across hosts by live migration',
  'quick with delta rounds',
  'quick with delta rounds by paused migration',
  'quick with delta rounds by live migration',
  'cold across hosts',
  'cold on one host',
  'live on one host',
  'live across hosts',
] as const;
export type StrategyCase = (typeof STRATEGIES)[number];

/**
 * A fresh world for one strategy: host hv-a with storage /pool/a and /pool/b, host hv-b with
 * /pool/b; VM `web` on hv-a with two disks (vda qcow2, vdb raw) in /pool/a/web, running (shut
 * off for cold), autostart on; its guest writes a block after every op while it runs.
 * The migration moves both disks to /pool/b (on hv-a or hv-b).
 */
export function buildScenario(kind: StrategyCase, opts: { targetFamily?: string } = {}): Scenario {
  const world = new FakeWorld();
  const cross = kind.includes('across') || kind.includes('rounds');
  // 'by migration': the paused VM's memory goes by the hypervisor's migration, no state file
  // 'by live migration': live onto the copied layers (paused migration offered too)
  const caps = kind.endsWith('by paused migration')
    ? { capabilities: { pausedMigration: true } }
    : kind.endsWith('by live migration')
      ? { capabilities: { pausedMigration: true, liveOntoLayers: true } }
      : {};
  world.addHost('hv-a', { roots: { '/pool/a': undefined, '/pool/b': undefined }, ...caps });
  world.addHost('hv-b', {
    roots: { '/pool/b': undefined },
    ...(opts.targetFamily ? { family: opts.targetFamily } : {}),
    ...caps,
  });
  const cold = kind.startsWith('cold');
  world.addVm('hv-a', {
    name: 'web',
    state: cold ? 'shutoff' : 'running',
    autostart: true,
    disks: [
      { target: 'vda', path: '/pool/a/web/vda.qcow2', format: 'qcow2', blocks: 12 },
      { target: 'vdb', path: '/pool/a/web/vdb.img', format: 'raw', blocks: 6 },
    ],
  });
  world.afterOp = (w) => w.guestWrite('web');
  const toHost = cross ? 'hv-b' : 'hv-a';
  const input: MigrationInput = {
    id: 'm1',
    vm: 'web',
    strategy: kind.startsWith('live') ? 'live' : kind.startsWith('cold') ? 'cold' : 'quick',
    fromHost: 'hv-a',
    toHost,
    moves: ['vda', 'vdb'].map((target) => ({ target, fromStorage: 'a', toStorage: 'b', toPath: '/pool/b' })),
    targetMarginBytes: 0,
    sourceHeadroomRatio: 0.1,
    maxForwardAttempts: 3,
    ...(kind.includes('rounds') ? { maxRounds: 3, maxPauseMs: 1000 } : {}),
    ...(kind.endsWith('by live migration') ? { quickMemory: 'live' as const } : {}),
    ...(kind.endsWith('by paused migration') ? { quickMemory: 'paused' as const } : {}),
  };
  return { name: kind, world, input, vm: 'web', before: vmBefore(world, 'hv-a', 'web') };
}

/**
 * The Hyper-V-shaped strategies (FAKE hosts, see fake-hypervisor.ts; never proof about Hyper-V):
 * every way Hyper-V's capabilities allow (quick in one round and in delta rounds, a live storage
 * move on one host, a live migration with storage across hosts, cold), between a local volume,
 * another volume and a Cluster Shared Volume's path, on one host and across hosts.
 */
export const HYPERV_STRATEGIES = [
  'quick on one host, local to CSV',
  'quick on one host, volume to volume',
  'quick on one host, one disk stays',
  'quick on one host, the target written in another case',
  'quick across hosts, local to local',
  'quick with delta rounds on one host, one disk stays',
  'quick with delta rounds across hosts, local to local',
  'live on one host, local to CSV',
  'live across hosts, local to local',
  'cold on one host, volume to volume',
  'cold across hosts, local to CSV',
] as const;
export type HypervCase = (typeof HYPERV_STRATEGIES)[number];
// a case's name says which world it runs in (runCase): no name in both lists
if (STRATEGIES.some((k) => (HYPERV_STRATEGIES as readonly string[]).includes(k)))
  throw new Error('machine-harness: a strategy name is both libvirt- and Hyper-V-shaped');

/** A local volume, another volume, and a Cluster Shared Volume's path (a root of each host here). */
export const HYPERV_ROOTS = {
  local: 'D:\\VMs',
  volume: 'E:\\VMs',
  csv: 'C:\\ClusterStorage\\Volume1',
} as const;

/**
 * A fresh Hyper-V-shaped FAKE world for one case: host hv-a with D:\VMs, E:\VMs and
 * C:\ClusterStorage\Volume1, host hv-b with D:\VMs and C:\ClusterStorage\Volume1 (its own: the
 * FAKE shares no storage between hosts); VM `web` on hv-a with two disks (sda and sdb,
 * vhdx) in D:\VMs\web, running (shut off for cold), autostart on, its guest writing a block
 * after every op while it runs. The case says where its disks go.
 */
export function buildHypervScenario(
  kind: HypervCase,
  opts: { capabilities?: FakeHostOptions['capabilities']; strategy?: MigrationInput['strategy'] } = {},
): Scenario {
  const world = new FakeWorld();
  const cross = kind.includes('across');
  const { local, volume, csv } = HYPERV_ROOTS;
  const capabilities = opts.capabilities ? { capabilities: opts.capabilities } : {};
  world.addHost('hv-a', {
    flavour: 'hyperv',
    roots: { [local]: undefined, [volume]: undefined, [csv]: undefined },
    ...capabilities,
  });
  world.addHost('hv-b', {
    flavour: 'hyperv',
    roots: { [local]: undefined, [csv]: undefined },
    ...capabilities,
  });
  const cold = kind.startsWith('cold');
  world.addVm('hv-a', {
    name: 'web',
    state: cold ? 'shutoff' : 'running',
    autostart: true,
    disks: [
      { target: 'sda', path: `${local}\\web\\web-os.vhdx`, format: 'vhdx', blocks: 12 },
      { target: 'sdb', path: `${local}\\web\\web-data.vhdx`, format: 'vhdx', blocks: 6 },
    ],
  });
  world.afterOp = (w) => w.guestWrite('web');
  const to: string = kind.endsWith('volume to volume')
    ? volume
    : kind.endsWith('local to local')
      ? local
      : kind.includes('another case')
        ? csv.toLowerCase()
        : csv;
  const targets = kind.includes('one disk stays') ? ['sda'] : ['sda', 'sdb'];
  const input: MigrationInput = {
    id: 'm1',
    vm: 'web',
    strategy: opts.strategy ?? (kind.startsWith('live') ? 'live' : cold ? 'cold' : 'quick'),
    fromHost: 'hv-a',
    toHost: cross ? 'hv-b' : 'hv-a',
    moves: targets.map((target) => ({ target, fromStorage: 'local', toStorage: 'target', toPath: to })),
    targetMarginBytes: 0,
    sourceHeadroomRatio: 0.1,
    maxForwardAttempts: 3,
    ...(kind.includes('rounds') ? { maxRounds: 3, maxPauseMs: 1000 } : {}),
  };
  return { name: kind, world, input, vm: 'web', before: vmBefore(world, 'hv-a', 'web') };
}

/** Either family of scenarios by its name. */
export type AnyCase = StrategyCase | HypervCase;
const isHyperv = (kind: AnyCase): kind is HypervCase =>
  (HYPERV_STRATEGIES as readonly string[]).includes(kind);

/** One run of a strategy's scenario with `plan` (none: the dry run), and what went wrong. */
export async function runCase(
  kind: AnyCase,
  plan?: OpPlan,
  opts: { targetFamily?: string; acceptReported?: boolean; durableTransitions?: boolean } = {},
): Promise<{ s: Scenario; r: HarnessResult; problems: string[] }> {
  const s = isHyperv(kind) ? buildHypervScenario(kind) : buildScenario(kind, opts);
  if (plan) s.world.plan = plan;
  if (opts.durableTransitions === false) s.world.durableTransitions = false;
  const r = await runMigrationInWorld(s.world, s.input);
  return { s, r, problems: outcomeProblems(s, r, opts) };
}

/** A case of the crash and failure tables: what happens at which op. */
export interface OpCase {
  kind: StrategyCase;
  /** the op as the dry run saw it */
  op: OpRecord;
  plan: OpPlan;
}

/** The dry run of a strategy: its ops in order (the same in every run up to the planned op). */
export async function dryRun(kind: AnyCase): Promise<{ ops: OpRecord[]; step: string; problems: string[] }> {
  const c = await runCase(kind);
  return { ops: [...c.s.world.trace], step: c.r.step, problems: c.problems };
}

/** `op 12 (save on hv-a, in Saving)` */
export function describeOp(o: OpRecord | undefined): string {
  return o
    ? `op ${o.n} (${o.name} on ${o.host}${o.step ? `, in ${o.step}` : ''}${o.committed ? ', committed' : ''})`
    : 'op ?';
}
