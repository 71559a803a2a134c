import {
  executedStrategy,
  sourceTotal,
  spaceNeeds,
  targetTotal,
  type SpaceInput,
} from '../../../src/planner/space';

const GiB = 1024 ** 3;
const disk = { from: 'src', to: 'dst', virtualBytes: 10 * GiB, allocatedBytes: 2 * GiB };
const base: Omit<SpaceInput, 'strategy'> = {
  disks: [disk],
  memoryBytes: 4 * GiB,
  stateAt: 'dst',
  marginBytes: 1 * GiB,
  headroomRatio: 0.1,
};

describe('one space model for plan and Preflight', () => {
  it.each<[string, SpaceInput, Record<string, number>, Record<string, number>]>([
    [
      'quick on one host: bases, overlays and the memory state on the target; overlays on the source',
      { ...base, strategy: 'quick' },
      { dst: 2 * GiB + Math.ceil(GiB * 1) + 4 * GiB + 1 * GiB },
      { src: Math.ceil(10 * GiB * 0.1) },
    ],
    [
      'quick across hosts without shared storage: the state is saved on the source first',
      { ...base, strategy: 'quick', stateFirstAt: 'src' },
      { dst: 2 * GiB + GiB + 4 * GiB + GiB },
      { src: GiB + 4 * GiB },
    ],
    [
      'quick with the state on shared storage: the memory goes there, with its margin',
      { ...base, strategy: 'quick', stateAt: 'csv' },
      { dst: 2 * GiB + GiB + GiB, csv: 4 * GiB + GiB },
      { src: GiB },
    ],
    [
      'cold: the bases only, no memory state, nothing on the source',
      { ...base, strategy: 'cold' },
      { dst: 3 * GiB },
      {},
    ],
    [
      'live: the bases only, no memory state, nothing on the source',
      { ...base, strategy: 'live' },
      { dst: 3 * GiB },
      {},
    ],
  ])('%s', (_title, input, target, source) => {
    const n = spaceNeeds(input);
    expect(Object.fromEntries([...n.target].map(([k, v]) => [k, targetTotal(v)]))).toEqual(target);
    expect(Object.fromEntries([...n.source].map(([k, v]) => [k, sourceTotal(v)]))).toEqual(source);
  });

  it.each<[Parameters<typeof executedStrategy>[0], boolean | undefined, string]>([
    ['quick', true, 'quick'],
    ['quick', false, 'cold'],
    ['quick', undefined, 'quick'],
    [undefined, true, 'quick'],
    ['cold', true, 'cold'],
    ['live', true, 'live'],
    ['auto', true, 'live'],
    ['live', false, 'cold'],
  ])('declared %s, running %s: executes %s', (declared, running, want) => {
    expect(executedStrategy(declared, running)).toBe(want);
  });
});
