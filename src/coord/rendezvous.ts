import { createHash } from 'node:crypto';

/**
 * Rendezvous (highest random weight) hashing: the owner of a key is the member with the highest
 * hash of (member, key). Every replica computes the same owner from the same member list, and
 * when a member leaves only the keys it owned move (each to the member with its next-highest
 * weight), spread over the others. Pure.
 */
export function weight(member: string, key: string): bigint {
  return createHash('sha256').update(member).update('\0').update(key).digest().readBigUInt64BE(0);
}

/** The owner of `key` among `members`, or undefined when there are none. Ties go to the smaller name. */
export function ownerOf(key: string, members: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestWeight = -1n;
  for (const m of members) {
    const w = weight(m, key);
    if (w > bestWeight || (w === bestWeight && best !== undefined && m < best)) {
      best = m;
      bestWeight = w;
    }
  }
  return best;
}

/** The owner of every key: member → its keys (members owning nothing are present, empty). */
export function assign(keys: Iterable<string>, members: readonly string[]): Map<string, string[]> {
  const out = new Map<string, string[]>(members.map((m) => [m, []]));
  for (const k of keys) {
    const o = ownerOf(k, members);
    if (o !== undefined) out.get(o)!.push(k);
  }
  return out;
}
