import { NO_FENCE, type Fence } from '../machine/fence';
import type { MigrationRecords } from '../machine/store';

export type { Fence } from '../machine/fence';

/**
 * How daemon replicas share one fleet. A replica acts on a VM (starts, resumes or cancels its
 * migration, writes its status file) only while it owns the VM; every side effect of a step is
 * fenced (see {@link Fence}). One daemon without etcd is {@link SOLO}: it owns every VM and
 * nothing is shared. With etcd (`EtcdCoordination`), VMs are divided among the live replicas by
 * rendezvous hashing, each VM's ownership is a lock key attached to its owner's lease, and the
 * migration state lives in etcd next to the lock.
 */
export interface Coordination {
  /** this replica's name (`--replica-id`) */
  readonly replicaId: string;
  /** false for the single daemon without etcd */
  readonly shared: boolean;
  /** Begin: join the fleet (in the background until etcd answers). */
  start?(): void;
  /**
   * Take the locks of the VMs this replica should own now and give back the ones it should not
   * (only those for which `busy` is false: a migration in flight keeps its lock). `vms` is every
   * VM of the fleet: the desired ones and those with a migration in flight.
   *
   * @returns the VMs whose lock this replica took since the last call, and those it lost
   */
  balance(
    vms: readonly string[],
    busy: (vm: string) => boolean,
  ): Promise<{ acquired: string[]; lost: string[] }>;
  /** True while this replica holds the VM's lock. */
  owns(vm: string): boolean;
  /** The fence of one migration run, bound to the VM's lock as held now. */
  fenceFor(vm: string): Fence;
  /**
   * The migrations in flight in the whole fleet (for the limits of vmplace.yaml, which are
   * fleet-wide), and a token to claim a start against.
   */
  fleetMigrations(): Promise<{ migrations: MigrationClaim[]; token: string }>;
  /**
   * Claim the start of a migration: succeeds only when no replica claimed or started one since
   * `token` was read (and this replica still holds the VM's lock).
   *
   * @returns the token for the next claim of this pass, or undefined when the fleet changed
   */
  claim(c: MigrationClaim, token: string): Promise<string | undefined>;
  /** True on the one replica that writes the hosts' status and the summary. */
  isLeader(): boolean;
  /** Whether this replica can start new work, and why not. */
  health(): { ready: boolean; why?: string };
  /** What `/metrics` and `/v1/replica` show. */
  stats(): ReplicaStats;
  /** Called when the members or the locks changed (a pass should run). */
  onChange(listener: () => void): void;
  /** Called at once with the VMs whose locks this replica lost (their runs must stop now). */
  onLost?(listener: (vms: string[]) => void): void;
  /** Where migration state lives: the given file store alone, or etcd. */
  store(local: MigrationRecords): MigrationRecords;
  /** Give everything back (the lease is revoked: the locks are free at once). */
  close(): Promise<void>;
}

/** A migration as the fleet-wide limits count it. */
export interface MigrationClaim {
  vm: string;
  id: string;
  fromHost: string;
  toHost: string;
  moves: { fromStorage: string; toStorage: string }[];
  /** the replica that claimed it (filled by the coordination) */
  replica?: string;
}

export interface ReplicaStats {
  replica: string;
  members: string[];
  owned: number;
  leader: boolean;
  leaseOk: boolean;
  /** seconds since the last successful keepalive was sent (0 for the single daemon) */
  leaseAgeSeconds: number;
  /** state writes refused by the fence, since start */
  fencedWrites: number;
}

/** The single daemon: owns every VM, shares nothing, fences nothing. */
export const SOLO: Coordination = {
  replicaId: 'solo',
  shared: false,
  balance: () => Promise.resolve({ acquired: [], lost: [] }),
  owns: () => true,
  fenceFor: () => NO_FENCE,
  fleetMigrations: () => Promise.resolve({ migrations: [], token: '' }),
  claim: (_c, token) => Promise.resolve(token),
  isLeader: () => true,
  health: () => ({ ready: true }),
  stats: () => ({
    replica: 'solo',
    members: ['solo'],
    owned: 0,
    leader: true,
    leaseOk: true,
    leaseAgeSeconds: 0,
    fencedWrites: 0,
  }),
  onChange: () => undefined,
  store: (local) => local,
  close: () => Promise.resolve(),
};
