/**
 * Quick across hosts with the memory moved by the hypervisor's migration (`migrateMemory`),
 * on the FAKE hypervisor (test/support/fake-hypervisor.ts; the lab's cross-host tests prove it
 * on libvirt). The crash and lock-loss tables run this path too (`... by migration`); here:
 * what happens when someone else runs the guest while vmplace holds it paused.
 */
import {
  buildScenario,
  outcomeProblems,
  runMigrationInWorld,
  type StrategyCase,
} from '../../support/machine-harness';
import { liveConvergeLimitMs } from '../../../src/machine/steps/pause';
import { LIVE_CONVERGE_MIN_MS } from '../../../src/machine/steps/tuning';
import type { MigrationContext } from '../../../src/machine/types';

describe.each([
  'quick across hosts by paused migration',
  'quick with delta rounds by paused migration',
] as const)('%s', (kind: StrategyCase) => {
  test('someone resumes the paused VM while its last delta is copied, and pauses it again: it stays on the source, nothing lost', async () => {
    const s = buildScenario(kind);
    const guest = s.world.afterOp;
    let meddled = 0;
    s.world.afterOp = (w, op) => {
      guest?.(w, op);
      // after the last delta's copy, before Restoring: resumed, written to, paused again
      if (op.name === 'relinkLayer' && op.host === 'hv-b' && meddled === 0) {
        const v = w.hosts.get('hv-a')!.vms.get('web')!;
        if (v.state !== 'paused') return;
        meddled++;
        v.state = 'running';
        w.guestWrite('web');
        w.guestWrite('web');
        v.state = 'paused';
      }
    };
    const r = await runMigrationInWorld(s.world, s.input);
    expect(meddled).toBe(1);
    // the run rolled back: the guest ran after the pause, its copies may miss writes
    expect({ step: r.step, reason: r.context.lastError?.reason }).toEqual({
      step: 'RolledBack',
      reason: 'GuestRanWhilePaused',
    });
    expect(s.world.activeOn('web')).toEqual(['hv-a']);
    // on the source, from its own memory, every acknowledged write in its disks, nothing of
    // the migration left (the harness's checks of a rolled-back run)
    expect(outcomeProblems(s, r)).toEqual([]);
  });

  test('a guest that does not run while paused moves, nothing lost', async () => {
    const s = buildScenario(kind);
    const r = await runMigrationInWorld(s.world, s.input);
    expect(r.step).toBe('Completed');
    expect(r.context.pausedRunTime).toBeDefined();
    expect(outcomeProblems(s, r)).toEqual([]);
  });
});

describe.each(['quick across hosts by live migration', 'quick with delta rounds by live migration'] as const)(
  '%s',
  (kind: StrategyCase) => {
    test('a guest whose memory never converges: the migration is bounded and finishes paused, nothing lost', async () => {
      const s = buildScenario(kind);
      s.world.liveConverges = false;
      const r = await runMigrationInWorld(s.world, s.input);
      expect(r.step).toBe('Completed');
      expect(s.world.activeOn('web')).toEqual(['hv-b']);
      expect(outcomeProblems(s, r)).toEqual([]);
    });
  },
);

test('the live migration’s bound: at least LIVE_CONVERGE_MIN_MS, longer for memory that takes longer to cross', () => {
  const ctx = { memoryBytes: 256 * 2 ** 20 } as MigrationContext;
  expect(liveConvergeLimitMs(ctx)).toBe(
    Math.max(LIVE_CONVERGE_MIN_MS, Math.round((3 * 256 * 2 ** 20) / 10_000)),
  );
  expect(liveConvergeLimitMs({ ...ctx, deltaRounds: { baseBytesPerMs: 1e9, copiedThrough: 0 } })).toBe(
    LIVE_CONVERGE_MIN_MS,
  );
});
