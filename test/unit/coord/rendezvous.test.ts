/**
 * Rendezvous hashing (src/coord/rendezvous.ts), pure: how VMs are divided among the live
 * replicas, and what moves when a replica leaves or joins. The fleet is the 200 VMs the lab's
 * scale test uses (`vm-000` ... `vm-199`) over replicas `replica-1..3`. With 200 keys and 3
 * members one member's share has a standard deviation of about 6.7 VMs, so "within 20 % of the
 * mean" (±13) is about two deviations: the test pins these names, it is not a promise for every
 * fleet (see the spread over many fleets below).
 */
import { assign, ownerOf, weight } from '../../../src/coord/rendezvous';

const vms = Array.from({ length: 200 }, (_, i) => `vm-${String(i).padStart(3, '0')}`);
const three = ['replica-1', 'replica-2', 'replica-3'];

function counts(a: Map<string, string[]>): Record<string, number> {
  return Object.fromEntries([...a].map(([m, ks]) => [m, ks.length]));
}

describe('rendezvous ownership', () => {
  it('divides 200 VMs over 3 replicas within 20 % of the mean', () => {
    const a = assign(vms, three);
    const mean = vms.length / three.length;
    expect([...a.keys()].sort()).toEqual(three);
    for (const ks of a.values()) {
      expect(Math.abs(ks.length - mean) / mean).toBeLessThanOrEqual(0.2);
    }
    // every VM has exactly one owner
    expect([...a.values()].flat().sort()).toEqual(vms);
  });

  it('is deterministic: the same owner whatever the order of members, on every call', () => {
    for (const vm of vms) {
      const o = ownerOf(vm, three);
      expect(ownerOf(vm, [...three].reverse())).toBe(o);
      expect(ownerOf(vm, ['replica-2', 'replica-3', 'replica-1'])).toBe(o);
    }
    expect(counts(assign(vms, three))).toEqual(counts(assign([...vms].reverse(), three)));
    expect(weight('replica-1', 'vm-000')).toBe(weight('replica-1', 'vm-000'));
    expect(weight('replica-1', 'vm-000')).not.toBe(weight('replica-1', 'vm-001'));
    // the separator keeps (member, key) pairs from colliding by concatenation
    expect(weight('a', 'bc')).not.toBe(weight('ab', 'c'));
  });

  it('has no owner without members', () => {
    expect(ownerOf('vm-000', [])).toBeUndefined();
    expect(assign(vms, []).size).toBe(0);
  });

  it.each(three)('when %s leaves, only its VMs move, spread over both others', (gone) => {
    const before = assign(vms, three);
    const rest = three.filter((m) => m !== gone);
    const after = new Map(vms.map((vm) => [vm, ownerOf(vm, rest)!]));
    const owner = new Map([...before].flatMap(([m, ks]) => ks.map((k) => [k, m] as const)));
    const moved = vms.filter((vm) => owner.get(vm) !== after.get(vm));
    expect(moved.sort()).toEqual([...before.get(gone)!].sort());
    // each survivor takes a share of the orphans: about half each (binomial, ±3 deviations)
    const n = moved.length;
    for (const m of rest) {
      const got = moved.filter((vm) => after.get(vm) === m).length;
      expect(got).toBeGreaterThanOrEqual(Math.floor(n / 2 - 3 * Math.sqrt(n / 4)));
      expect(got).toBeLessThanOrEqual(Math.ceil(n / 2 + 3 * Math.sqrt(n / 4)));
    }
  });

  it('when a member joins, only about 1/N of the VMs move, all of them to the newcomer', () => {
    const four = [...three, 'replica-4'];
    const moved = vms.filter((vm) => ownerOf(vm, three) !== ownerOf(vm, four));
    for (const vm of moved) expect(ownerOf(vm, four)).toBe('replica-4');
    // expected 200/4 = 50, standard deviation about 6.1
    expect(moved.length).toBeGreaterThanOrEqual(50 - 19);
    expect(moved.length).toBeLessThanOrEqual(50 + 19);
  });

  it('stays within 20 % for most fleets of 200 (the spread of the hash, not a pinned sample)', () => {
    let within = 0;
    const fleets = 200;
    for (let f = 0; f < fleets; f++) {
      const names = Array.from({ length: 200 }, (_, i) => `fleet${f}-vm-${i}`);
      const mean = names.length / 3;
      const worst = Math.max(
        ...[...assign(names, three).values()].map((ks) => Math.abs(ks.length - mean) / mean),
      );
      if (worst <= 0.2) within++;
    }
    // 90.5 % of these 200 fleets stay within 20 % on all three members (a uniform hash: about 90 %)
    expect(within / fleets).toBeGreaterThan(0.75);
  });
});
