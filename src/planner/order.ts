/**
 * Order migrations so that each one, when it starts, finds the space it needs given that every
 * earlier one has completed. Moves that free space on a location therefore run before moves
 * that need it. Generic over location keys; knows nothing about VMs beyond their names.
 */
import { MinHeap } from './heap';

/** What one migration needs, takes and gives back on one location. */
export interface SpaceNeed {
  /** location key (see `locationKey`) */
  key: string;
  /** free bytes required on the location when the migration starts (including margins) */
  need: number;
  /** bytes permanently taken once the migration completes (disks copied in) */
  consume: number;
  /** bytes permanently freed once the migration completes (source disks removed) */
  release: number;
}

/** One migration to order; `needs` lists each location at most once. */
export interface OrderItem {
  vm: string;
  needs: SpaceNeed[];
}

/** Why a location cannot provide what a migration needs even if every other move completed. */
export interface Shortfall {
  key: string;
  need: number;
  /** the most that location can ever have free for this migration */
  best: number;
}

export type OrderOutcome =
  /** runs at 1-based `position` */
  | { kind: 'ordered'; position: number }
  /** never fits, whatever else runs */
  | { kind: 'insufficient'; shortfalls: Shortfall[] }
  /** part of a space dependency cycle; `cycle` starts and ends with the same VM */
  | { kind: 'cycle'; cycle: string[] }
  /** would fit once moves that are themselves blocked complete */
  | { kind: 'dependency'; waitingOn: string[] };

interface Waiter {
  idx: number;
  need: number;
}

/**
 * Greedy topological ordering by space. `items` must be in tie-break order (by VM name); `free`
 * holds the currently free bytes of every location whose size is known; needs on other
 * locations are ignored (nothing can be checked there). A migration that fits now runs (lowest
 * index first); after it, the locations it frees wake the migrations queued on them, each
 * queue a min-heap by the bytes needed there. Near-linear: each wake-up is caused by a
 * completion that raised free space above the waiter's need.
 *
 * Items left over are classified: short of space even if every other leftover completed
 * (`insufficient`), caught in a cycle of waiting on each other (`cycle`), or waiting on one of
 * those (`dependency`).
 */
export function orderBySpace(items: readonly OrderItem[], free: ReadonlyMap<string, number>): OrderOutcome[] {
  const n = items.length;
  const freeNow = new Map(free);
  const outcomes: (OrderOutcome | undefined)[] = new Array<OrderOutcome | undefined>(n).fill(undefined);
  const ready = new MinHeap<number>((a, b) => a < b);
  const waiting = new Map<string, MinHeap<Waiter>>();
  for (let i = 0; i < n; i++) ready.push(i);

  const firstShortfall = (idx: number): SpaceNeed | undefined => {
    for (const need of items[idx]!.needs) {
      const f = freeNow.get(need.key);
      if (f !== undefined && f < need.need) return need;
    }
    return undefined;
  };

  let position = 0;
  while (ready.size > 0) {
    const idx = ready.pop()!;
    const short = firstShortfall(idx);
    if (short) {
      let queue = waiting.get(short.key);
      if (!queue) {
        queue = new MinHeap<Waiter>((a, b) => a.need < b.need || (a.need === b.need && a.idx < b.idx));
        waiting.set(short.key, queue);
      }
      queue.push({ idx, need: short.need });
      continue;
    }
    position += 1;
    outcomes[idx] = { kind: 'ordered', position };
    for (const need of items[idx]!.needs) {
      const f = freeNow.get(need.key);
      if (f === undefined) continue;
      const after = f - need.consume + need.release;
      freeNow.set(need.key, after);
      if (after <= f) continue;
      const queue = waiting.get(need.key);
      while (queue && queue.size > 0 && queue.peek()!.need <= after) ready.push(queue.pop()!.idx);
    }
  }

  classifyLeftovers(items, freeNow, outcomes);
  return outcomes as OrderOutcome[];
}

function classifyLeftovers(
  items: readonly OrderItem[],
  freeNow: ReadonlyMap<string, number>,
  outcomes: (OrderOutcome | undefined)[],
): void {
  const stuck: number[] = [];
  for (let i = 0; i < items.length; i++) if (outcomes[i] === undefined) stuck.push(i);
  if (stuck.length === 0) return;

  // Optimistic bound: everything a leftover could ever free on each location.
  const stuckRelease = new Map<string, number>();
  const releasers = new Map<string, number[]>();
  for (const i of stuck) {
    for (const need of items[i]!.needs) {
      if (need.release <= 0 || !freeNow.has(need.key)) continue;
      stuckRelease.set(need.key, (stuckRelease.get(need.key) ?? 0) + need.release);
      const list = releasers.get(need.key);
      if (list) list.push(i);
      else releasers.set(need.key, [i]);
    }
  }

  const depKeys = new Map<number, string[]>();
  for (const i of stuck) {
    const shortfalls: Shortfall[] = [];
    const waits: string[] = [];
    for (const need of items[i]!.needs) {
      const f = freeNow.get(need.key);
      if (f === undefined || f >= need.need) continue;
      const best = f + (stuckRelease.get(need.key) ?? 0) - need.release;
      if (best < need.need) shortfalls.push({ key: need.key, need: need.need, best });
      else waits.push(need.key);
    }
    if (shortfalls.length > 0) outcomes[i] = { kind: 'insufficient', shortfalls };
    else depKeys.set(i, waits);
  }
  if (depKeys.size === 0) return;

  // Bipartite wait-for graph: migration -> location it is short on -> leftover freeing it.
  const locIds = new Map<string, number>();
  const locNames: string[] = [];
  const n = items.length;
  const locId = (key: string): number => {
    let id = locIds.get(key);
    if (id === undefined) {
      id = n + locNames.length;
      locIds.set(key, id);
      locNames.push(key);
    }
    return id;
  };
  const migSucc = new Map<number, number[]>();
  for (const [i, keys] of depKeys) migSucc.set(i, keys.map(locId));
  const succ = (v: number): readonly number[] =>
    v < n ? (migSucc.get(v) ?? []) : (releasers.get(locNames[v - n]!) ?? []);

  const sccOf = tarjan(n + locNames.length, [...depKeys.keys()], succ);
  const members = new Map<number, number[]>();
  for (const i of depKeys.keys()) {
    const id = sccOf.get(i)!;
    const list = members.get(id);
    if (list) list.push(i);
    else members.set(id, [i]);
  }

  for (const list of members.values()) {
    if (list.length < 2) continue;
    list.sort((a, b) => a - b);
    const inScc = new Set(list);
    const cycle = findCycle(list[0]!, inScc, depKeys, releasers, items);
    const onCycle = cycle.slice(0, -1);
    const positionOnCycle = new Map(onCycle.map((j, k) => [j, k]));
    for (const i of list) {
      const at = positionOnCycle.get(i) ?? -1;
      const rotated = at < 0 ? onCycle : [...onCycle.slice(at), ...onCycle.slice(0, at)];
      outcomes[i] = { kind: 'cycle', cycle: [...rotated, rotated[0]!].map((j) => items[j]!.vm) };
    }
  }
  for (const [i, keys] of depKeys) {
    if (outcomes[i] !== undefined) continue;
    const names = new Set<string>();
    for (const key of keys) for (const p of releasers.get(key) ?? []) if (p !== i) names.add(items[p]!.vm);
    outcomes[i] = { kind: 'dependency', waitingOn: [...names].sort() };
  }
}

/**
 * A shortest cycle through `start` among migrations of one strongly connected component, as
 * indices `[start, ..., start]`. A migration waiting on a location it frees itself is not a
 * cycle, so the edge back to `start` is only taken from another migration.
 */
function findCycle(
  start: number,
  inScc: ReadonlySet<number>,
  depKeys: ReadonlyMap<number, string[]>,
  releasers: ReadonlyMap<string, number[]>,
  items: readonly OrderItem[],
): number[] {
  const startReleases = new Set(items[start]!.needs.filter((nd) => nd.release > 0).map((nd) => nd.key));
  const parent = new Map<number, number>();
  const seenLoc = new Set<string>();
  const queue = [start];
  const seen = new Set([start]);
  for (let head = 0; head < queue.length; head++) {
    const x = queue[head]!;
    for (const key of depKeys.get(x) ?? []) {
      if (x !== start && startReleases.has(key)) {
        const path = [x];
        for (let p = parent.get(x); p !== undefined; p = parent.get(p)) path.push(p);
        path.reverse();
        return [...path, start];
      }
      if (seenLoc.has(key)) continue;
      seenLoc.add(key);
      for (const p of releasers.get(key) ?? []) {
        if (!inScc.has(p) || seen.has(p)) continue;
        seen.add(p);
        parent.set(p, x);
        queue.push(p);
      }
    }
  }
  // Unreachable for a component of two or more migrations; keep the output well-formed anyway.
  return [start, start];
}

/** Iterative Tarjan: component id of every node reachable from `roots`. */
function tarjan(
  size: number,
  roots: readonly number[],
  succ: (v: number) => readonly number[],
): Map<number, number> {
  const index = new Int32Array(size).fill(-1);
  const low = new Int32Array(size);
  const onStack = new Uint8Array(size);
  const stack: number[] = [];
  const comp = new Map<number, number>();
  let counter = 0;
  let compCount = 0;
  for (const root of roots) {
    if (index[root] !== -1) continue;
    const frames: { v: number; edges: readonly number[]; pos: number }[] = [];
    const open = (v: number) => {
      index[v] = low[v] = counter++;
      stack.push(v);
      onStack[v] = 1;
      frames.push({ v, edges: succ(v), pos: 0 });
    };
    open(root);
    while (frames.length > 0) {
      const frame = frames[frames.length - 1]!;
      if (frame.pos < frame.edges.length) {
        const w = frame.edges[frame.pos++]!;
        if (index[w] === -1) open(w);
        else if (onStack[w]) low[frame.v] = Math.min(low[frame.v]!, index[w]!);
        continue;
      }
      frames.pop();
      const v = frame.v;
      const up = frames[frames.length - 1];
      if (up) low[up.v] = Math.min(low[up.v]!, low[v]!);
      if (low[v] === index[v]) {
        let w: number;
        do {
          w = stack.pop()!;
          onStack[w] = 0;
          comp.set(w, compCount);
        } while (w !== v);
        compCount += 1;
      }
    }
  }
  return comp;
}
