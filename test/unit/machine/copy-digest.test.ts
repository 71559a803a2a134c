/**
 * The base copy's checksum comes from the copy itself (transport.ts `TransportCopyResult`): the
 * copy hashed the source while reading it and the target before renaming it into place, so
 * CopyingBase does not read both files again (between two hosts that second read cost as much
 * as the copy). A copy that answers without a digest (proven by byte comparison) is hashed on
 * both ends as before. On the FAKE hypervisor (test/support/fake-hypervisor.ts).
 */
import {
  buildScenario,
  outcomeProblems,
  runMigrationInWorld,
  type StrategyCase,
} from '../../support/machine-harness';

const checksumsIn = (trace: { name: string; step?: string }[], step: string): number =>
  trace.filter((o) => o.name === 'checksum' && o.step === step).length;

describe.each(['quick on one host', 'quick across hosts', 'quick with delta rounds'] as const)(
  '%s',
  (kind: StrategyCase) => {
    test('the base copy’s digest is the base checksum: no file is hashed again in CopyingBase', async () => {
      const s = buildScenario(kind);
      const r = await runMigrationInWorld(s.world, s.input);
      expect(r.step).toBe('Completed');
      expect(checksumsIn(s.world.trace, 'CopyingBase')).toBe(0);
      // the checksum still guards the source's removal (CleaningUp compares the source with it)
      expect(r.context.disks.every((d) => /^[0-9a-f]+$/.test(d.baseChecksum ?? ''))).toBe(true);
      expect(outcomeProblems(s, r)).toEqual([]);
    });

    test('a copy without a digest: both ends hashed after it, as before', async () => {
      const s = buildScenario(kind);
      s.world.copyDigests = false;
      const r = await runMigrationInWorld(s.world, s.input);
      expect(r.step).toBe('Completed');
      expect(checksumsIn(s.world.trace, 'CopyingBase')).toBe(2 * r.context.disks.length);
      expect(outcomeProblems(s, r)).toEqual([]);
    });
  },
);
