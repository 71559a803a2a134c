import { orderBySpace, type OrderItem, type OrderOutcome, type SpaceNeed } from '../../../src/planner/order';

/** `need('L', 5, { consume: 4 })` */
function need(key: string, bytes: number, opts: { consume?: number; release?: number } = {}): SpaceNeed {
  return { key, need: bytes, consume: opts.consume ?? 0, release: opts.release ?? 0 };
}

/** A move of `size` bytes from location `from` to location `to` (margin 1). */
function move(vm: string, from: string, to: string, size = 4): OrderItem {
  return { vm, needs: [need(to, size + 1, { consume: size }), need(from, 0, { release: size })] };
}

describe('orderBySpace', () => {
  it.each<[string, OrderItem[], Record<string, number>, OrderOutcome[]]>([
    ['nothing to order', [], {}, []],
    [
      'fits in index order',
      [move('a', 'S', 'T'), move('b', 'S', 'T')],
      { S: 0, T: 10 },
      [
        { kind: 'ordered', position: 1 },
        { kind: 'ordered', position: 2 },
      ],
    ],
    [
      'locations of unknown size are not checked',
      [move('a', 'S', 'T', 1000)],
      { S: 0 },
      [{ kind: 'ordered', position: 1 }],
    ],
    [
      'a waiting move wakes when another frees its target',
      [move('a', 'X', 'L'), move('b', 'L', 'Y')],
      { L: 1, X: 0, Y: 100 },
      [
        { kind: 'ordered', position: 2 },
        { kind: 'ordered', position: 1 },
      ],
    ],
    [
      'a move that fits at first can lose its space to earlier ones',
      [move('a', 'S', 'T', 4), move('b', 'S', 'T', 4)],
      { S: 0, T: 6 },
      [
        { kind: 'ordered', position: 1 },
        { kind: 'insufficient', shortfalls: [{ key: 'T', need: 5, best: 2 }] },
      ],
    ],
    [
      'insufficient counts what other leftovers could free',
      [move('a', 'L', 'M', 4), move('b', 'M', 'L', 2)],
      { L: 0, M: 0 },
      [
        { kind: 'insufficient', shortfalls: [{ key: 'M', need: 5, best: 2 }] },
        { kind: 'dependency', waitingOn: ['a'] },
      ],
    ],
    [
      'two-move cycle',
      [move('a', 'L', 'M'), move('b', 'M', 'L')],
      { L: 1, M: 1 },
      [
        { kind: 'cycle', cycle: ['a', 'b', 'a'] },
        { kind: 'cycle', cycle: ['b', 'a', 'b'] },
      ],
    ],
    [
      'waiting on a location it frees itself is not a cycle of one',
      [
        { vm: 'a', needs: [need('L', 5, { release: 4 }), need('N', 0, { release: 4 })] },
        { vm: 'c', needs: [need('N', 5, { consume: 4 }), need('L', 0, { release: 4 })] },
      ],
      { L: 1, N: 1 },
      [
        { kind: 'cycle', cycle: ['a', 'c', 'a'] },
        { kind: 'cycle', cycle: ['c', 'a', 'c'] },
      ],
    ],
    [
      'figure eight: a member off the shortest cycle still reports it',
      [move('a', 'LA', 'LB'), move('b', 'LB', 'LA'), move('c', 'LA', 'LB')],
      { LA: 1, LB: 1 },
      [
        { kind: 'cycle', cycle: ['a', 'b', 'a'] },
        { kind: 'cycle', cycle: ['b', 'a', 'b'] },
        { kind: 'cycle', cycle: ['a', 'b', 'a'] },
      ],
    ],
  ])('%s', (_title, items, free, expected) => {
    expect(orderBySpace(items, new Map(Object.entries(free)))).toEqual(expected);
  });

  it('handles a ring of 5,000 moves without deep recursion', () => {
    const n = 5000;
    const items = Array.from({ length: n }, (_, i) => move(`vm-${i}`, `L${i}`, `L${(i + 1) % n}`));
    const free = new Map(items.map((_, i) => [`L${i}`, 1]));
    const out = orderBySpace(items, free);
    expect(out.every((o) => o.kind === 'cycle')).toBe(true);
    const first = out[0] as Extract<OrderOutcome, { kind: 'cycle' }>;
    expect(first.cycle).toHaveLength(n + 1);
    expect(first.cycle.slice(0, 3)).toEqual(['vm-0', 'vm-1', 'vm-2']);
    expect((out[7] as Extract<OrderOutcome, { kind: 'cycle' }>).cycle[0]).toBe('vm-7');
  });

  it('orders a long chain where each move frees the next one', () => {
    // vm-i moves L(i) -> L(i+1); only the last location has room, so the order runs backwards.
    const n = 3000;
    const items = Array.from({ length: n }, (_, i) => move(`vm-${i}`, `L${i}`, `L${i + 1}`));
    const free = new Map(Array.from({ length: n + 1 }, (_, i) => [`L${i}`, i === n ? 5 : 1]));
    const out = orderBySpace(items, free);
    expect(out.map((o) => (o.kind === 'ordered' ? o.position : -1))).toEqual(items.map((_, i) => n - i));
  });
});
