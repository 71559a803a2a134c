/**
 * Preflight's decisions, pure: which strategy runs, what happens to each disk, where the memory
 * state goes. Preflight (steps/preflight.ts) looks at the world and hands what it saw to these
 * functions; table tests in test/unit/machine/preflight-policy.test.ts pin every row.
 */
import { quickSupported } from '../drivers/capabilities';
import type { DomainDisk, DomainState, DriverCapabilities, PathSemantics } from '../drivers/driver';
import type { Reason } from '../errors';
import type { Strategy } from '../types';

/** A reason Preflight stops with (a StalledError: the manifests or the world must change). */
export interface Finding {
  reason: Reason;
  message: string;
}

export type Executed = 'quick' | 'cold' | 'live';

/**
 * The strategy that runs, from the VM's state, the requested strategy and what the two hosts
 * offer. A shut-off VM moves cold (across hosts only where the driver defines a VM on another
 * host). A running VM: `cold` is refused; `live` and `auto` run live when the driver has the
 * fast path (a live storage move on one host, live migration across hosts) and the hosts reach
 * each other, else quick (with a warning: the VM pauses); `quick` runs quick. Quick where the
 * driver has no Quick Storage Migration is refused, saying why, before anything changes; so is
 * quick within one host where the driver restores only on another host (Hyper-V). An emulated guest (TCG) is not live-migrated across hosts unless
 * `policy.liveEmulated` allows it: `auto` runs quick, `live` is refused.
 */
export function chooseStrategy(o: {
  vm: string;
  state: DomainState;
  requested: Strategy;
  cross: boolean;
  caps: Pick<
    DriverCapabilities,
    | 'family'
    | 'liveStorageMove'
    | 'liveMigration'
    | 'quickStorageMigration'
    | 'quickWithinHost'
    | 'defineOnOtherHost'
  >;
  /** the hosts reach each other (host to host); always true on one host */
  direct: boolean;
  /**
   * the guest runs emulated (libvirt `type='qemu'`, TCG) and `policy.liveEmulated` is not set:
   * its memory is not live-migrated across hosts (see `chooseStrategy`)
   */
  emulatedNoLive?: boolean;
}): { strategy: Executed; warning?: string } | { finding: Finding } {
  const unsupported = (message: string): { finding: Finding } => ({
    finding: { reason: 'StrategyUnsupported', message },
  });
  if (o.state === 'shutoff') {
    if (o.cross && !o.caps.defineOnOtherHost)
      return unsupported(
        `${o.vm} is shut off and the ${o.caps.family} driver cannot define a VM on another host: move it within its host, or start it to move it live`,
      );
    return { strategy: 'cold' };
  }
  if (o.state !== 'running')
    return {
      finding: {
        reason: 'DomainStateUnsupported',
        message: `${o.vm} is ${o.state}; vmplace moves running or shut-off VMs`,
      },
    };
  if (o.requested === 'cold')
    return {
      finding: { reason: 'DomainRunning', message: `strategy cold needs ${o.vm} shut off; it is running` },
    };
  const quickOk = quickSupported(o.caps, o.cross);
  const noQuick = o.cross
    ? `the ${o.caps.family} driver has no quick storage migration (it cannot restore a saved VM onto copied disks)`
    : `the ${o.caps.family} driver has no quick storage migration within one host (it cannot restore a saved VM onto copies beside its disks)`;
  if (o.requested === 'quick') {
    if (!quickOk) return unsupported(`strategy quick for ${o.vm}: ${noQuick}; use live or auto`);
    return { strategy: 'quick' };
  }
  // live or auto
  if (o.cross && o.emulatedNoLive) {
    // QEMU's live migration damaged emulated guests' memory on the lab (README, policy.liveEmulated)
    const emulated = `${o.vm} runs emulated (TCG, no hardware acceleration), and vmplace does not live-migrate an emulated guest's memory unless policy.liveEmulated is set`;
    if (o.requested === 'live') return unsupported(`strategy live: ${emulated}`);
    if (!quickOk) return unsupported(`${o.vm} cannot move: ${emulated}, and ${noQuick}`);
    return { strategy: 'quick', warning: `${emulated}: using quick` };
  }
  let why: string | undefined;
  if (o.cross && !o.caps.liveMigration) why = 'the hypervisor offers no live migration';
  else if (!o.cross && !o.caps.liveStorageMove) why = 'the hypervisor offers no live storage move';
  else if (o.cross && !o.direct) why = 'the hosts cannot reach each other: live migration is not possible';
  if (why === undefined) return { strategy: 'live' };
  if (!quickOk) return unsupported(`${o.vm} cannot move: ${why}, and ${noQuick}`);
  return { strategy: 'quick', warning: `${why}: using quick` };
}

/** A pair of hosts vmplace can move between: one hypervisor family, and a way to copy files. */
export function judgePair(o: {
  fromHost: string;
  toHost: string;
  from: Pick<DriverCapabilities, 'family'>;
  to: Pick<DriverCapabilities, 'family'>;
  hasTransport: boolean;
}): Finding | undefined {
  if (o.from.family !== o.to.family)
    return {
      reason: 'MixedHypervisors',
      message: `${o.fromHost} runs ${o.from.family} and ${o.toHost} runs ${o.to.family}; vmplace moves VMs only between hosts of one hypervisor`,
    };
  if (!o.hasTransport)
    return { reason: 'NoTransport', message: `no way to copy files from ${o.fromHost} to ${o.toHost}` };
  return undefined;
}

/** What Preflight saw of one disk that has a planned placement. */
export interface DiskObservation {
  vm: string;
  disk: DomainDisk | undefined;
  target: string;
  /** the planned storage path */
  toPath: string;
  /** the disk stays: shared storage both hosts mount at the same path */
  stays: boolean;
  cross: boolean;
  fromHost: string;
  /** other VMs that use the disk's file (a linked clone's base, a shared image) */
  otherUsers: string[];
  /** the image has a parent (read from the image itself) */
  parent?: string;
  paths: Pick<PathSemantics, 'isInside'>;
}

/**
 * What happens to one disk: it is copied, it stays where it is (shared storage, or already on
 * its target storage on this host), or the migration stops with a finding.
 */
export function judgeDisk(o: DiskObservation): { action: 'copy' | 'stay' } | { finding: Finding } {
  const d = o.disk;
  const what = `${o.vm} disk ${o.target}`;
  if (!d) return { finding: { reason: 'DiskNotFound', message: `${o.vm} has no disk ${o.target}` } };
  if (d.type !== 'file' || !d.path)
    return { finding: { reason: 'DiskNotFile', message: `${what} is a ${d.type} disk, not a file` } };
  if (d.device !== 'disk')
    return { finding: { reason: 'DiskNotFile', message: `${what} is a ${d.device}, not a disk` } };
  if (d.shareable && !o.stays)
    return {
      finding: {
        reason: 'DiskShareable',
        message: `${what} is shareable (other VMs may write to it); vmplace does not move shared disks`,
      },
    };
  if (o.otherUsers.length > 0 && !o.stays)
    return {
      finding: {
        reason: 'DiskUsedByOtherDomain',
        message: `${d.path} (${what}) is also used by ${[...o.otherUsers].sort().join(', ')} on ${o.fromHost}`,
      },
    };
  if (d.hasBackingStore)
    return {
      finding: {
        reason: 'DiskHasBackingChain',
        message: `${what} already has a backing chain (an external snapshot?); merge it first`,
      },
    };
  if (o.parent !== undefined)
    return {
      finding: { reason: 'DiskHasBackingChain', message: `${d.path} has a backing file ${o.parent}`.trim() },
    };
  if (o.stays) {
    if (!o.paths.isInside(d.path, o.toPath))
      return {
        finding: {
          reason: 'SharedPathMismatch',
          message: `${d.path} is not on the shared storage ${o.toPath}`,
        },
      };
    return { action: 'stay' };
  }
  // already on the target storage of this host (a resumed or repeated move): nothing to copy
  if (!o.cross && o.paths.isInside(d.path, o.toPath)) return { action: 'stay' };
  return { action: 'copy' };
}

/**
 * Where the memory state of a quick move goes. One host: onto the target storage (the first
 * moved disk's), so nothing is copied in the pause. Across hosts that reach each other, no
 * state file at all (`migrateMemory`): by default (`live`, capability `liveOntoLayers`) the
 * hypervisor's live migration carries the memory and mirrors only each disk's top layer onto
 * the layers vmplace copied (libvirt: `migrate --live --copy-storage-inc`), the VM stops only
 * for the switch-over; with `paused` (capability `pausedMigration`) the VM is paused, vmplace
 * copies the last delta, and QEMU's migration stream moves the paused memory.
 * Hosts that share storage and whose driver restores a state from it: onto that shared
 * storage. Otherwise beside the first source disk, copied over in the pause (`copyState`).
 * Cold and live moves write none. `policy.quickMemory: stateFile` keeps the seed's state file.
 */
export function placeState(o: {
  strategy: Executed;
  cross: boolean;
  /** the directory of the first moved disk's target storage */
  firstTo: string;
  /** the directory of the first copied disk on the source, if any disk is copied */
  firstSourceDir?: string;
  /** a storage location both hosts mount at this path, if any */
  sharedStatePath?: string;
  /** both drivers restore a state another host of the family saved on shared storage */
  stateOnSharedStorage: boolean;
  /** both drivers move a paused VM's memory to the other host themselves */
  pausedMigration?: boolean;
  /** both drivers live-migrate a VM onto layers already copied, mirroring only the top one */
  liveOntoLayers?: boolean;
  /** every disk of the VM is copied (none stays on storage both hosts mount) */
  allDisksMove?: boolean;
  /** the hosts reach each other (host to host) */
  direct?: boolean;
  /** `policy.quickMemory` (default `stateFile`; `live` and `paused` are experimental) */
  quickMemory?: 'live' | 'paused' | 'stateFile';
  /** the state file's own name (the driver's ownFile, without a directory) */
  join: (dir: string) => string;
}): { stateFile?: string; srcStateFile?: string; copyState: boolean; migrateMemory?: 'live' | 'paused' } {
  if (o.strategy !== 'quick') return { copyState: false };
  // stateFile by default: the migrating ways are experimental (see README, policy.quickMemory)
  const want = o.quickMemory ?? 'stateFile';
  if (o.cross && o.direct) {
    // a disk that stays on shared storage would be written by the running source until the
    // switch-over: only a paused VM moves with one
    if (want === 'live' && o.liveOntoLayers && o.allDisksMove !== false)
      return { copyState: false, migrateMemory: 'live' };
    if ((want === 'live' || want === 'paused') && o.pausedMigration)
      return { copyState: false, migrateMemory: 'paused' };
  }
  const shared = o.cross && o.stateOnSharedStorage ? o.sharedStatePath : undefined;
  const stateFile = o.join(shared ?? o.firstTo);
  const copyState = o.cross && !shared && o.firstSourceDir !== undefined;
  const srcStateFile = copyState ? o.join(o.firstSourceDir!) : stateFile;
  return { stateFile, srcStateFile, copyState };
}
