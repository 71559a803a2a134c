/**
 * Across hosts without shared storage (the state file saved on the source, copied to the
 * target), Saving starts the state file's copy as soon as the save has ended, beside the delta
 * copied during the save, and CopyingDelta takes it as done; Restoring's lookups start during
 * CopyingDelta with the saved definition read from the source's file. Both save round trips
 * inside the VM's pause. On the FAKE hypervisor (test/support/fake-hypervisor.ts): what is
 * proven here is the order of the steps' operations, not libvirt (the cross-host lab test moves
 * a writing VM this way).
 */
import type { OpRecord } from '../../support/fake-hypervisor';
import {
  buildScenario,
  dryRun,
  outcomeProblems,
  runCase,
  runMigrationInWorld,
} from '../../support/machine-harness';

const ops = (trace: OpRecord[], step: string, name: string, host?: string): number =>
  trace.filter((o) => o.step === step && o.name === name && (host === undefined || o.host === host)).length;

describe('quick across hosts, state file copied', () => {
  test('the state file crosses in Saving, once; Saving confirms the early deltas; CopyingDelta hashes nothing', async () => {
    const s = buildScenario('quick across hosts');
    const r = await runMigrationInWorld(s.world, s.input);
    expect(r.step).toBe('Completed');
    const disks = r.context.disks.length;
    expect(r.context.srcStateFile).toBeDefined();
    expect(r.context.srcStateFile).not.toBe(r.context.stateFile);
    // the early delta copies and the state file
    expect(ops(s.world.trace, 'Saving', 'copy.look')).toBe(disks + 1);
    expect(ops(s.world.trace, 'CopyingDelta', 'copy.look')).toBe(0);
    // the early deltas: the source hashed again in Saving once the save had ended and found
    // equal to the digest the copy proved the target by; nothing is hashed in CopyingDelta
    expect(ops(s.world.trace, 'Saving', 'checksum', 'hv-a')).toBe(disks);
    expect(ops(s.world.trace, 'Saving', 'checksum', 'hv-b')).toBe(0);
    expect(ops(s.world.trace, 'CopyingDelta', 'checksum')).toBe(0);
    // the saved definition came from the source's file
    // (Restoring's lookups start in Saving, once the save has ended, beside the copies)
    const defs = s.world.trace.filter((o) => o.name === 'savedDefinition');
    expect(defs.map((o) => o.host)).toEqual(['hv-a']);
    expect(defs[0]!.step).toBe('Saving');
    expect(defs[0]!.n).toBeGreaterThan(s.world.trace.find((o) => o.name === 'save')!.n);
    expect(outcomeProblems(s, r)).toEqual([]);
  });

  test('every early copy is asked for with the save, told to wait (sourceReady): the state file for the save, the deltas for the stop; the state file as growing (streamed); the deltas are relinked in Saving', async () => {
    const s = buildScenario('quick across hosts');
    const calls: { dst: string; sourceReady: boolean; grows: boolean; savesBefore: number; step?: string }[] =
      [];
    const saves = (): number => s.world.trace.filter((o) => o.name === 'save').length;
    const transport = s.world.transport.bind(s.world);
    s.world.transport = (a, b, epoch) => {
      const t = transport(a, b, epoch);
      return (
        t && {
          name: t.name,
          reachable: () => t.reachable(),
          copy: (src, dst, opts = {}) => {
            calls.push({
              dst,
              sourceReady: opts.sourceReady !== undefined,
              grows: opts.sourceGrows === true,
              savesBefore: saves(),
            });
            return t.copy(src, dst, opts);
          },
        }
      );
    };
    const r = await runMigrationInWorld(s.world, s.input);
    expect(r.step).toBe('Completed');
    const disks = r.context.disks.length;
    // asked once each, in Saving, before the save op had run, and told to wait
    const early = calls.filter((c) => c.sourceReady);
    expect(early.map((c) => c.dst).sort()).toEqual(
      [r.context.stateFile, ...r.context.disks.map((d) => d.dstOverlay)].sort(),
    );
    expect(early.every((c) => c.savesBefore === 0)).toBe(true);
    // only the state file is written while it may be read (streamed); a delta is complete at the stop
    expect(calls.filter((c) => c.grows).map((c) => c.dst)).toEqual([r.context.stateFile]);
    // the transport honoured it: nothing was looked at before the save (the fake's stop)
    const save = s.world.trace.find((o) => o.name === 'save')!;
    const looks = s.world.trace.filter((o) => o.step === 'Saving' && o.name === 'copy.look');
    expect(looks.length).toBe(disks + 1);
    expect(looks.every((o) => o.n > save.n)).toBe(true);
    // relinked once each, in Saving; CopyingDelta found them confirmed and left them
    expect(ops(s.world.trace, 'Saving', 'relinkLayer')).toBe(disks);
    expect(ops(s.world.trace, 'CopyingDelta', 'relinkLayer')).toBe(0);
    expect(outcomeProblems(s, r)).toEqual([]);
  });

  test('a crash at the end of Saving forgets the early copies: the state file is copied again (found complete), the deltas again, nothing lost', async () => {
    const dry = await dryRun('quick across hosts');
    // the last op of Saving (CopyingDelta has none of its own when every early copy was confirmed)
    const first = dry.ops.filter((o) => o.step === 'Saving').at(-1);
    expect(first).toBeDefined();
    const c = await runCase('quick across hosts', { kind: 'crash', at: first!.n, phase: 'after' });
    expect(c.r.step).toBe('Completed');
    expect(c.r.crashes).toHaveLength(1);
    // after the restart CopyingDelta looks at every copy itself: the state file is found
    // complete; the deltas, relinked in Saving, differ from their sources now: each is looked
    // at, removed, copied and looked at again, and relinked in CopyingDelta
    const after = c.s.world.trace.filter((o) => o.n >= first!.n);
    const disks = c.r.context.disks.length;
    expect(ops(after, 'CopyingDelta', 'copy.look')).toBe(2 * disks + 1);
    expect(ops(after, 'CopyingDelta', 'relinkLayer')).toBe(disks);
    expect(c.problems).toEqual([]);
  });

  test('a copy proven by byte comparison (no digest): CopyingDelta hashes both ends', async () => {
    const s = buildScenario('quick across hosts');
    s.world.copyDigests = false;
    const r = await runMigrationInWorld(s.world, s.input);
    expect(r.step).toBe('Completed');
    expect(ops(s.world.trace, 'CopyingDelta', 'checksum')).toBe(2 * r.context.disks.length);
    expect(outcomeProblems(s, r)).toEqual([]);
  });

  test('a source overlay written after its early copy (QEMU inactivating the disk) is copied again', async () => {
    // the first hash of a source overlay once the save has ended (Saving's confirmation): the
    // copy of that overlay is done by then; write into every overlay just before it, as QEMU
    // may when it lets go of the disks at the end of the save
    const dry = await dryRun('quick across hosts');
    const first = dry.ops.find((o) => o.step === 'Saving' && o.name === 'checksum' && o.host === 'hv-a')!;
    expect(first).toBeDefined();
    const s = buildScenario('quick across hosts');
    let changed: string | undefined;
    s.world.afterOp = (world, op) => {
      if (op.n !== first.n - 1) return;
      const host = world.hosts.get('hv-a')!;
      for (const [p, f] of host.files.entries()) {
        const disk = s.input.moves.find((m) => p.includes(`.${m.target}.overlay`))?.target;
        if (f.content.kind !== 'image' || !f.content.parent || !disk) continue;
        // a block nothing else wrote, acknowledged: the checks then want it on the target too
        const block = f.content.virtualBlocks - 1;
        f.content.blocks[block] = 'written-at-inactivation';
        world.acked.get(s.input.vm)?.get(disk)?.set(block, 'written-at-inactivation');
        changed = p;
      }
    };
    const r = await runMigrationInWorld(s.world, s.input);
    expect(changed).toBeDefined();
    expect(r.step).toBe('Completed');
    // the digest no longer matched the source: that overlay crossed again (the stale copy
    // found differing, removed, copied anew) and the target has the block
    expect(ops(s.world.trace, 'CopyingDelta', 'copy.look')).toBeGreaterThanOrEqual(1);
    const target = [...s.world.hosts.get('hv-b')!.files.values()].filter(
      (f) =>
        f.content.kind === 'image' && Object.values(f.content.blocks).includes('written-at-inactivation'),
    );
    expect(target.length).toBeGreaterThanOrEqual(1);
    expect(outcomeProblems(s, r)).toEqual([]);
  });
});
