/**
 * Hyper-V's capabilities, run by the machine: Quick Storage Migration only across hosts
 * (`quickWithinHost: false`: a saved VM registers from its copied configuration on another host,
 * never beside itself), so within one host Preflight refuses `quick` with `StrategyUnsupported`
 * before any op that changes the host and `auto` runs live; across hosts `quick` runs (saved,
 * copied with its configuration, registered and restored on the target) and `auto` runs live;
 * a shut-off VM that cannot be defined on another host (`defineOnOtherHost: false`) is refused
 * across hosts and moves cold within its host. And a driver with no quick storage migration at
 * all is refused everywhere. On the Hyper-V-shaped FAKE (test/support/fake-hypervisor.ts) with
 * the real driver's capabilities: a FAKE, labelled as one; the capabilities themselves are
 * pinned by test/unit/drivers/hyperv/driver.test.ts.
 */
import { HYPERV_CAPABILITIES } from '../../../src/drivers/hyperv/definition';
import type { MigrationInput } from '../../../src/machine/types';
import type { FakeWorld } from '../../support/fake-hypervisor';
import { buildHypervScenario, type HypervCase, runMigrationInWorld } from '../../support/machine-harness';

const { family: _family, ...HYPERV_ONES } = HYPERV_CAPABILITIES;

/** Ops that only look (the FAKE's read-only driver and transport ops). */
const LOOKS =
  /^(transport\.)?(getDomain|domainState|listDomains|definition|savedDefinition|imageInfo|probeFormat|fileExists|fileInfo|fsInfo|storageLocations|canRun|cpuInfo|holdsSavedState|reachable|guardPath|statFile|listFiles|diskPathsOf|hostInfo)\b/;

/** Every file on every host with its size and content id, and every VM's state and disks. */
function worldShape(w: FakeWorld): string {
  const out: string[] = [];
  for (const [name, h] of w.hosts) {
    for (const [p, f] of h.files.entries()) out.push(`${name} ${p} ${JSON.stringify(f)}`);
    for (const [vm, v] of h.vms) out.push(`${name} vm ${vm} ${v.state} ${JSON.stringify(v.persistent)}`);
  }
  return out.sort().join('\n');
}

async function run(
  kind: HypervCase,
  strategy: MigrationInput['strategy'],
  capabilities: typeof HYPERV_ONES = HYPERV_ONES,
): Promise<{
  step: string;
  reason?: string;
  message?: string;
  changed: string[];
  before: string;
  after: string;
  ops: string[];
}> {
  const s = buildHypervScenario(kind, { capabilities, strategy });
  // the guest's own writes change its disks; only vmplace's changes are compared here
  if (strategy === 'quick' || kind.startsWith('cold')) s.world.afterOp = undefined;
  const before = worldShape(s.world);
  const r = await runMigrationInWorld(s.world, s.input);
  const ops = s.world.trace.map((o) => o.name);
  return {
    step: r.step,
    ...(r.context.lastError
      ? { reason: r.context.lastError.reason, message: r.context.lastError.message }
      : {}),
    changed: ops.filter((n) => !LOOKS.test(n)),
    before,
    after: worldShape(s.world),
    ops,
  };
}

describe('FAKE Hyper-V with the real driver capabilities (quick only across hosts)', () => {
  test.each<HypervCase>([
    'quick on one host, local to CSV',
    'quick on one host, volume to volume',
    'quick with delta rounds on one host, one disk stays',
  ])('%s, strategy quick: Blocked in Preflight (StrategyUnsupported), nothing changed', async (kind) => {
    const got = await run(kind, 'quick');
    expect(got.step).toBe('Blocked');
    expect(got.reason).toBe('StrategyUnsupported');
    expect(got.message).toMatch(/no quick storage migration within one host/);
    expect(got.changed).toEqual([]);
    expect(got.after).toBe(got.before);
  });

  test.each<HypervCase>([
    'quick across hosts, local to local',
    'quick with delta rounds across hosts, local to local',
  ])(
    '%s, strategy quick: saved, registered on the target from its copied configuration, Completed',
    async (kind) => {
      const got = await run(kind, 'quick');
      expect(got.step).toBe('Completed');
      expect(got.ops).toContain('save');
      expect(got.ops).toContain('restore');
      expect(got.ops).not.toContain('migrateLive.switch');
    },
  );

  test.each<[HypervCase, MigrationInput['strategy']]>([
    ['quick on one host, local to CSV', 'quick'],
    ['quick across hosts, local to local', 'quick'],
  ])(
    'a driver with no quick storage migration at all: %s, strategy %s: Blocked, nothing changed',
    async (kind, strategy) => {
      const none = { ...HYPERV_ONES, quickStorageMigration: false, liveMigration: false };
      const got = await run(kind, strategy, none);
      expect(got.step).toBe('Blocked');
      expect(got.reason).toBe('StrategyUnsupported');
      expect(got.message).toMatch(/no quick storage migration/);
      expect(got.changed).toEqual([]);
      expect(got.after).toBe(got.before);
    },
  );

  test.each<[HypervCase, string]>([
    ['quick on one host, local to CSV', 'moveDiskLive.pivot'],
    ['quick across hosts, local to local', 'migrateLive.switch'],
  ])('%s, strategy auto: runs live (%s) to Completed, never saved', async (kind, liveOp) => {
    const got = await run(kind, 'auto');
    expect(got.step).toBe('Completed');
    expect(got.ops).toContain(liveOp);
    expect(got.ops).not.toContain('save');
    expect(got.ops.some((n) => n.startsWith('freezeDisks'))).toBe(false);
  });

  test('a shut-off VM across hosts: Blocked (StrategyUnsupported), nothing changed', async () => {
    const got = await run('cold across hosts, local to CSV', 'auto');
    expect(got.step).toBe('Blocked');
    expect(got.reason).toBe('StrategyUnsupported');
    expect(got.message).toMatch(/cannot define a VM on another host/);
    expect(got.changed).toEqual([]);
    expect(got.after).toBe(got.before);
  });

  test('a shut-off VM within its host still moves cold', async () => {
    const got = await run('cold on one host, volume to volume', 'auto');
    expect(got.step).toBe('Completed');
    expect(got.ops).not.toContain('save');
  });
});

describe('FAKE Hyper-V: a VM on a checkpoint that is not vmplace (a backup holds one)', () => {
  test.each<MigrationInput['strategy']>(['auto', 'live'])(
    'strategy %s: Blocked in Preflight (DiskHasBackingChain), nothing changed',
    async (strategy) => {
      const s = buildHypervScenario('quick across hosts, local to local', {
        capabilities: HYPERV_ONES,
        strategy,
      });
      s.world.afterOp = undefined;
      // a backup's checkpoint: the disk runs on an .avhdx whose parent is the base
      const host = s.world.host('hv-a');
      const vm = host.vms.get('web')!;
      const disk = vm.persistent!.disks[0]!;
      const base = host.files.get(disk.path)!;
      const avhdx = disk.path.replace(/\.vhdx$/, '_0D8F5C1E-6A39-4E0B-9B5B-2B1D7F6A1C3E.avhdx');
      host.files.set(avhdx, {
        ...base,
        identity: 'fake:backup-layer',
        content: {
          kind: 'image',
          format: 'avhdx',
          parent: disk.path,
          parentFormat: 'vhdx',
          virtualBlocks: 4096,
          blocks: {},
        },
      });
      for (const d of [vm.persistent!.disks[0]!, ...(vm.live ? [vm.live.disks[0]!] : [])]) {
        d.path = avhdx;
        d.format = 'avhdx';
      }
      const before = worldShape(s.world);
      const r = await runMigrationInWorld(s.world, s.input);
      expect(r.step).toBe('Blocked');
      expect(r.context.lastError?.reason).toBe('DiskHasBackingChain');
      expect(worldShape(s.world)).toBe(before);
    },
  );
});
