/**
 * The whole migration machine against a Hyper-V-shaped FAKE (test/support/fake-hypervisor.ts,
 * `flavour: 'hyperv'`), behind the driver contract: Windows paths compared case-insensitively, a
 * checkpoint that layers every disk of the VM, merges that run in the background (and go on when
 * the vmplace process dies), a saved state written as several files. It is a FAKE written from
 * Hyper-V's documented behaviour: never proof about Hyper-V, which only a real host gives.
 *
 * Every strategy Hyper-V's capabilities allow runs to Completed with nothing lost (the VM on the
 * target from its own memory, every acknowledged guest write in its disk, no file of the
 * migration left, none of the hypervisor's layers left, no merge still running); then the crash
 * table of crash-every-await.test.ts on the same worlds: a crash before and after every driver
 * and transport op, resumed from the store, each checked the same way; and the fault table of
 * failure-injection.test.ts (a transient error before or after every op, a stalled one before
 * every op up to the point of no return): Completed or rolled back, with nothing lost.
 */
import { StalledError, VmplaceError } from '../../../src/errors';
import { FakeWorld, type OpPlan, type OpRecord, fakeReason, isCrash } from '../../support/fake-hypervisor';
import {
  HYPERV_ROOTS,
  HYPERV_STRATEGIES,
  type HypervCase,
  buildHypervScenario,
  describeOp,
  dryRun,
  outcomeProblems,
  runCase,
  runMigrationInWorld,
} from '../../support/machine-harness';

type Phase = 'before' | 'after';

/** What is wrong after a crash at `op` (empty: resumed to Completed with nothing lost). */
async function crashCase(kind: HypervCase, phase: Phase, op: OpRecord): Promise<string[]> {
  const c = await runCase(kind, { kind: 'crash', at: op.n, phase });
  const problems = [...c.problems];
  if (c.r.step !== 'Completed')
    problems.unshift(
      `ended ${c.r.step} (${c.r.context.lastError?.reason ?? ''}: ${c.r.context.lastError?.message ?? ''})`,
    );
  if (c.r.crashes.length !== 1) problems.push(`crashed ${c.r.crashes.length} times, not once`);
  return problems;
}

type Fault = 'transient before' | 'transient after' | 'stalled before';
const FAULTS: readonly Fault[] = ['transient before', 'transient after', 'stalled before'];

const faultPlan = (fault: Fault, op: OpRecord): OpPlan => ({
  kind: 'fail',
  at: op.n,
  phase: fault.endsWith('before') ? 'before' : 'after',
  error: (name) =>
    fault.startsWith('stalled')
      ? new StalledError(fakeReason('InjectedStall'), `injected at ${name}`)
      : new VmplaceError(fakeReason('Injected'), `injected at ${name}`),
});

/** What is wrong after an error at `op` (empty: Completed or back on the source, nothing lost); see failure-injection.test.ts. */
async function faultCase(kind: HypervCase, fault: Fault, op: OpRecord): Promise<string[]> {
  const c = await runCase(kind, faultPlan(fault, op), { acceptReported: true });
  const problems = [...c.problems];
  const allowed =
    fault.startsWith('stalled') || op.step === 'Preflight'
      ? ['RolledBack', 'Blocked', 'Completed']
      : ['RolledBack', 'Completed'];
  if (!allowed.includes(c.r.step))
    problems.unshift(
      `ended ${c.r.step} (${c.r.context.lastError?.reason ?? ''}: ${c.r.context.lastError?.message ?? ''})`,
    );
  return problems;
}

const { local, csv } = HYPERV_ROOTS;

describe('the Hyper-V-shaped FAKE itself', () => {
  const world = (): FakeWorld => {
    const w = new FakeWorld();
    w.addHost('hv', { flavour: 'hyperv', roots: { [local]: undefined, [csv]: undefined } });
    w.addVm('hv', {
      name: 'web',
      state: 'running',
      disks: [
        { target: 'sda', path: `${local}\\web\\web-os.vhdx`, format: 'vhdx' },
        { target: 'sdb', path: `${local}\\web\\web-data.vhdx`, format: 'vhdx' },
      ],
    });
    return w;
  };

  test('FAKE: Windows paths, compared case-insensitively; the guard refuses what Windows path rules refuse', async () => {
    const w = world();
    const drv = w.driver('hv');
    expect(drv.paths.style).toBe('windows');
    expect(drv.capabilities).toMatchObject({
      family: 'fake-hyperv',
      liveStorageMove: true,
      liveMigration: true,
      pausedMigration: false,
      liveOntoLayers: false,
      stateOnSharedStorage: true,
    });
    expect(await drv.fileExists('d:\\vms\\WEB\\Web-OS.VHDX')).toBe(true);
    await drv.makeDir('c:\\clusterstorage\\volume1\\web');
    expect(w.host('hv').dirs.has(`${csv}\\web`)).toBe(true);
    for (const bad of [
      `${local}/web/x.avhdx`,
      `${local}\\web\\..\\x.avhdx`,
      `${local}\\web\\x.avhdx:s`,
      'F:\\x',
    ])
      await expect(drv.removeFile(bad)).rejects.toMatchObject({ reason: 'PathOutsideStorage' });
  });

  test('FAKE: a checkpoint asked for one disk layers every disk, returns every layer, and again the same', async () => {
    const w = world();
    const drv = w.driver('hv');
    const layer = `${local}\\web\\web.sda.overlay.vmplace-m1.avhdx`;
    const made = await drv.freezeDisks('web', [{ target: 'sda', layer }]);
    expect(made).toEqual([
      { target: 'sda', layer, below: `${local}\\web\\web-os.vhdx` },
      {
        target: 'sdb',
        layer: `${local}\\web\\web-data_fake-checkpoint-1.avhdx`,
        below: `${local}\\web\\web-data.vhdx`,
      },
    ]);
    const dom = (await drv.getDomain('web'))!;
    expect(dom.disks.map((d) => [d.path, d.hasBackingStore])).toEqual([
      [layer, true],
      [`${local}\\web\\web-data_fake-checkpoint-1.avhdx`, true],
    ]);
    expect(await drv.freezeDisks('web', [{ target: 'sda', layer }])).toEqual(made);
    // a layer must lie beside its parent: Hyper-V puts it there
    const w2 = world();
    await expect(
      w2.driver('hv').freezeDisks('web', [{ target: 'sda', layer: `${csv}\\x.avhdx` }]),
    ).rejects.toMatchObject({ reason: 'LayerPlacement' });
  });

  test('FAKE: a merge runs in the background; it completes after a crash, and a re-run waits for it or finds it done', async () => {
    const w = world();
    const layer = `${local}\\web\\web.sda.overlay.vmplace-m1.avhdx`;
    await w.driver('hv').freezeDisks('web', [{ target: 'sda', layer }]);
    w.afterOp = (x) => x.guestWrite('web');
    w.plan = { kind: 'crash', at: w.opCount + 1, phase: 'after' };
    const crashed = await w
      .driver('hv')
      .mergeLayers('web', 'sda', { top: layer })
      .catch((e: unknown) => e);
    expect(isCrash(crashed)).toBe(true);
    expect(w.jobs).toHaveLength(1);
    w.restart();
    const drv = w.driver('hv');
    // still on the layer while the merge runs
    expect((await drv.getDomain('web'))!.disks[0]!.path).toBe(layer);
    await drv.mergeLayers('web', 'sda', { top: layer });
    expect(w.trace.map((o) => o.name).filter((n) => n.startsWith('mergeLayers'))).toEqual([
      'mergeLayers',
      'mergeLayers',
      'mergeLayers.wait',
    ]);
    const dom = (await drv.getDomain('web'))!;
    expect(dom.disks[0]).toMatchObject({ path: `${local}\\web\\web-os.vhdx`, hasBackingStore: false });
    expect(await drv.fileExists(layer)).toBe(false);
    expect(w.missingData('hv', `${local}\\web\\web-os.vhdx`, w.expectedData('web', 'sda'))).toEqual([]);
    expect(w.violations).toEqual([]);
  });

  test('FAKE: a saved state is two files, complete only together, removed together', async () => {
    const w = world();
    const drv = w.driver('hv');
    const state = drv.ownFile(csv, 'web', 'm1', { what: 'state' });
    expect(state).toBe(`${csv}\\web.state.vmplace-m1.vmrs`);
    await drv.save('web', state);
    expect(await drv.holdsSavedState(state, 'web')).toBe(true);
    expect(await drv.fileExists(`${csv}\\web.state.vmplace-m1.vmgs`)).toBe(true);
    w.host('hv').files.delete(`${csv}\\web.state.vmplace-m1.vmgs`);
    expect(await drv.holdsSavedState(state, 'web')).toBe(false);
    await expect(drv.restore(state)).rejects.toMatchObject({ reason: 'StateUnreadable' });
    await drv.removeFile(state);
    expect(w.migrationFiles()).toEqual([]);
  });
});

const counts: Record<string, { ops: number; cases: number; faults: number; ms: number }> = {};
afterAll(() => {
  // the numbers the report quotes: ops per strategy, cases run, time
  console.log(
    Object.entries(counts)
      .map(
        ([k, c]) =>
          `FAKE Hyper-V, ${k}: ${c.ops} ops, ${c.cases} crash cases, ${c.faults} fault cases, ${c.ms} ms`,
      )
      .join('\n'),
  );
});

describe.each(HYPERV_STRATEGIES)('FAKE Hyper-V: %s', (kind) => {
  test('runs to Completed with nothing lost', async () => {
    const dry = await dryRun(kind);
    expect(dry.problems).toEqual([]);
    expect(dry.step).toBe('Completed');
    const names = new Set(dry.ops.map((o) => o.name));
    if (kind.startsWith('quick')) {
      // the merges on the target run in the background and are waited for
      expect(names).toContain('mergeLayers.wait');
      expect(names).toContain('save');
      expect(names).not.toContain('migratePaused');
      expect(names).not.toContain('migrateOntoLayers');
    }
    if (kind.startsWith('live'))
      expect(names).toContain(kind.includes('across') ? 'migrateLive.switch' : 'moveDiskLive.pivot');
  });

  test('a crash before or after any op resumes to Completed with nothing lost', async () => {
    const t0 = Date.now();
    const dry = await dryRun(kind);
    expect(dry.step).toBe('Completed');
    const failures: string[] = [];
    let cases = 0;
    for (const op of dry.ops) {
      for (const phase of ['before', 'after'] as const) {
        cases++;
        const problems = await crashCase(kind, phase, op);
        if (problems.length) failures.push(`crash ${phase} ${describeOp(op)}: ${problems.join(' | ')}`);
      }
    }
    counts[kind] = { ops: dry.ops.length, cases, faults: counts[kind]?.faults ?? 0, ms: Date.now() - t0 };
    expect(failures).toEqual([]);
  }, 120_000);

  test('a transient or stalled error at any op ends Completed or rolled back, with nothing lost', async () => {
    const t0 = Date.now();
    const dry = await dryRun(kind);
    const failures: string[] = [];
    let faults = 0;
    for (const op of dry.ops) {
      for (const fault of FAULTS) {
        // stalled errors only before the point of no return, as in failure-injection.test.ts
        if (fault.startsWith('stalled') && op.committed) continue;
        faults++;
        const problems = await faultCase(kind, fault, op);
        if (problems.length) failures.push(`${fault} ${describeOp(op)}: ${problems.join(' | ')}`);
      }
    }
    const c = counts[kind] ?? { ops: dry.ops.length, cases: 0, faults: 0, ms: 0 };
    counts[kind] = { ...c, faults, ms: c.ms + Date.now() - t0 };
    expect(failures).toEqual([]);
  }, 120_000);
});

describe('FAKE Hyper-V: a disk that stays is layered by the checkpoint too', () => {
  test.each([
    'quick on one host, one disk stays',
    'quick with delta rounds on one host, one disk stays',
  ] as const)('%s: its layer is merged back at once, and it ends on its own image', async (kind) => {
    const c = await runCase(kind);
    expect(c.problems).toEqual([]);
    const made = c.s.world.hypervisorMade.map((m) => m.path);
    expect(made.length).toBeGreaterThan(0);
    for (const p of made) expect(p).toMatch(/^D:\\VMs\\web\\web-data_fake-checkpoint-\d+\.avhdx$/);
    const v = c.s.world.host('hv-a').vms.get('web')!;
    expect(v.live!.disks.find((d) => d.target === 'sdb')!.path).toBe(`${local}\\web\\web-data.vhdx`);
  });
});

describe('FAKE Hyper-V: names compare case-insensitively', () => {
  test('a disk another VM uses under another spelling is not moved (Blocked: DiskUsedByOtherDomain)', async () => {
    const s = buildHypervScenario('quick on one host, local to CSV');
    const w = s.world;
    // another VM's differencing disk over web's data disk, its parent recorded in another case
    const clone = `${local}\\clone\\clone.avhdx`;
    w.putImage('hv-a', clone, {
      format: 'avhdx',
      parent: 'd:\\vms\\WEB\\WEB-DATA.VHDX',
      parentFormat: 'vhdx',
      virtualBlocks: 4096,
      blocks: {},
    });
    w.host('hv-a').vms.set('clone', {
      name: 'clone',
      state: 'shutoff',
      autostart: false,
      persistent: {
        name: 'clone',
        memoryBytes: 2 ** 20,
        disks: [{ target: 'sda', path: clone, format: 'avhdx' }],
      },
    });
    const r = await runMigrationInWorld(w, s.input);
    expect(r.context.lastError?.reason).toBe('DiskUsedByOtherDomain');
    expect(r.step).toBe('Blocked');
    expect(outcomeProblems(s, r)).toEqual([]);
  });
});
