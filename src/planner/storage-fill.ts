/**
 * How full each storage location a plan touches is before and after it: the observed free space
 * (host status), minus the disks copied in, plus the disks copied out. Only unblocked moves
 * count. Pure; for the pull-request comment.
 */
import type { ActualState, DesiredState, Plan } from '../types';
import { describeLocation, Topology, type Location } from './topology';

export interface LocationFill {
  /** `csv2 (cluster east)` */
  location: string;
  /** undefined when no host status reports it */
  capacityBytes?: number;
  freeBeforeBytes?: number;
  freeAfterBytes?: number;
  /** bytes copied in and out by the plan */
  inBytes: number;
  outBytes: number;
}

/** Every location a disk of an unblocked migration leaves or reaches, sorted by name. */
export function storageFill(plan: Plan, desired: DesiredState, actual: ActualState): LocationFill[] {
  const topology = new Topology(desired, actual);
  const rows = new Map<string, { loc: Location; host: string; in: number; out: number }>();
  const touch = (loc: Location | undefined, host: string) => {
    if (!loc) return undefined;
    let r = rows.get(loc.key);
    if (!r) rows.set(loc.key, (r = { loc, host, in: 0, out: 0 }));
    return r;
  };
  for (const m of plan.migrations) {
    if (m.blocked) continue;
    for (const d of m.disks) {
      const from = touch(topology.resolve(m.from.host, d.from), m.from.host);
      const to = touch(topology.resolve(m.to.host, d.to), m.to.host);
      if (d.bytes === 0 || from === to) continue;
      if (from) from.out += d.bytes;
      if (to) to.in += d.bytes;
    }
  }
  const out: LocationFill[] = [];
  for (const r of rows.values()) {
    const free = topology.freeBytes(r.loc);
    const capacity = capacityOf(actual, r.loc, r.host);
    out.push({
      location: describeLocation(r.loc),
      ...(capacity !== undefined ? { capacityBytes: capacity } : {}),
      ...(free !== undefined ? { freeBeforeBytes: free, freeAfterBytes: free - r.in + r.out } : {}),
      inBytes: r.in,
      outBytes: r.out,
    });
  }
  return out.sort((a, b) => (a.location < b.location ? -1 : a.location > b.location ? 1 : 0));
}

function capacityOf(actual: ActualState, loc: Location, host: string): number | undefined {
  const hosts = loc.scope === 'host' ? [loc.owner] : [host];
  for (const h of hosts) {
    const s = actual.hosts.get(h)?.storage.find((x) => x.name === loc.name);
    if (s) return s.capacityBytes;
  }
  return undefined;
}
