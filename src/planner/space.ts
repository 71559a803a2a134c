/**
 * One space model for `vmplace plan` and the migration's Preflight, so that the two never
 * disagree on whether a move fits. Pure: locations are opaque keys (the planner's location
 * keys, Preflight's directories).
 *
 * What a migration writes, by the strategy it executes:
 * - quick: on the target the copied bases, the copied overlays (estimated at
 *   `headroomRatio` x virtual size) and the memory state where it is saved; on the source the
 *   overlays (the same estimate) and, across hosts without shared storage, the memory state
 *   saved there before it is copied.
 * - cold (a shut-off VM): on the target the copied bases; nothing on the source.
 * - live (a mirror on one host, or a live migration with storage): on the target the copied
 *   bases; no memory state, no overlays.
 * Every target location that receives anything also keeps `marginBytes` free.
 */
import type { Strategy } from '../types';

/** The strategy a migration executes (Preflight decides it from the VM's state). */
export type ExecutedStrategy = 'quick' | 'cold' | 'live';

/**
 * What a migration of a VM will execute: `cold` for a shut-off VM or `strategy: cold`, `live`
 * for `live` and `auto` (auto falls back to quick only when the hosts cannot reach each other,
 * which Preflight finds out), else `quick`. `running` undefined (state not observed) counts as
 * running: the larger need.
 */
export function executedStrategy(
  declared: Strategy | undefined,
  running: boolean | undefined,
): ExecutedStrategy {
  if (running === false || declared === 'cold') return 'cold';
  if (declared === 'live' || declared === 'auto') return 'live';
  return 'quick';
}

/** A disk whose data moves, by the locations it leaves and reaches. */
export interface SpaceDisk {
  from: string;
  to: string;
  virtualBytes: number;
  allocatedBytes: number;
}

export interface SpaceInput {
  strategy: ExecutedStrategy;
  disks: readonly SpaceDisk[];
  memoryBytes: number;
  /** where the memory state is saved for the restore (quick only): a target location or shared storage */
  stateAt?: string;
  /** where the source saves it first, when it is copied across hosts afterwards (quick only) */
  stateFirstAt?: string;
  marginBytes: number;
  headroomRatio: number;
}

export interface TargetNeed {
  disks: number;
  overlays: number;
  memory: number;
  margin: number;
}

export interface SourceNeed {
  /** room for the differencing disks (overlays) */
  headroom: number;
  /** virtual bytes behind `headroom` */
  headroomVirtual: number;
  memory: number;
}

export interface SpaceNeeds {
  target: Map<string, TargetNeed>;
  source: Map<string, SourceNeed>;
}

/** The bytes a target location needs free: everything it receives plus the margin. */
export const targetTotal = (n: TargetNeed): number => n.disks + n.overlays + n.memory + n.margin;

/** The bytes a source location needs free while the migration runs. */
export const sourceTotal = (n: SourceNeed): number => n.headroom + n.memory;

/** What each location needs free for one migration (see the file comment). */
export function spaceNeeds(input: SpaceInput): SpaceNeeds {
  const target = new Map<string, TargetNeed>();
  const source = new Map<string, SourceNeed>();
  const onTarget = (k: string): TargetNeed => {
    let n = target.get(k);
    if (!n) target.set(k, (n = { disks: 0, overlays: 0, memory: 0, margin: input.marginBytes }));
    return n;
  };
  const onSource = (k: string): SourceNeed => {
    let n = source.get(k);
    if (!n) source.set(k, (n = { headroom: 0, headroomVirtual: 0, memory: 0 }));
    return n;
  };
  const quick = input.strategy === 'quick';
  for (const d of input.disks) {
    const overlay = quick ? Math.ceil(d.virtualBytes * input.headroomRatio) : 0;
    const t = onTarget(d.to);
    t.disks += d.allocatedBytes;
    t.overlays += overlay;
    if (quick) {
      const s = onSource(d.from);
      s.headroom += overlay;
      s.headroomVirtual += d.virtualBytes;
    }
  }
  if (quick && input.memoryBytes > 0) {
    if (input.stateAt !== undefined) onTarget(input.stateAt).memory += input.memoryBytes;
    if (input.stateFirstAt !== undefined) onSource(input.stateFirstAt).memory += input.memoryBytes;
  }
  return { target, source };
}
