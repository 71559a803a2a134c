import * as os from 'node:os';
import { performance } from 'node:perf_hooks';
import { EtcdLeaseInvalidError, type Etcd3, type Lease, type Watcher } from 'etcd3';
import type { Logger } from 'pino';
import { FencedError } from '../../errors';
import type { MigrationRecords } from '../../machine/store';
import type { Coordination, Fence, MigrationClaim, ReplicaStats } from '../coordination';
import { ownerOf } from '../rendezvous';
import { EtcdKeys } from './keys';
import { etcdClient, type EtcdOptions } from './options';
import { EtcdMigrationStore, type LockTable } from './store';

/** How many lock transactions one pass runs at once. */
const LOCK_CONCURRENCY = 16;

/** How many members one keepalive tries (within TTL/3) before the tick counts as failed. */
const KEEPALIVE_TRIES = 4;

/**
 * Several daemons sharing one fleet on etcd. Each replica has one lease (TTL `--lease-ttl`),
 * kept alive every TTL/3, and a member key on it; every VM is owned by one live member
 * (rendezvous hashing over the member keys), which holds the VM's lock key, attached to its
 * lease, while it owns it. When a replica dies its lease expires, etcd deletes its member and
 * lock keys at once, the others see it through their watches, take the locks and resume the
 * migrations from the state they find in etcd.
 *
 * Fencing: a lock is not mutual exclusion by itself (a stopped process wakes up after its lease
 * expired). Every state write is a transaction that requires the lock's create revision (see
 * EtcdMigrationStore), and a run starts no side effect when its lock is gone or when this
 * replica's last successful keepalive was sent more than TTL/2 ago (see {@link fenceFor}).
 */
export class EtcdCoordination implements Coordination, LockTable {
  readonly shared = true;
  readonly replicaId: string;
  private readonly client: Etcd3;
  private readonly keys: EtcdKeys;
  private readonly ttlMs: number;
  private lease: Lease | undefined;
  /** the id of `lease` (a lock taken with an older lease is not this replica's any more) */
  private leaseId = '';
  /** when the last keepalive (or grant) that succeeded was sent (monotonic ms) */
  private okSentAt = Number.NEGATIVE_INFINITY;
  private members: string[] = [];
  /** VM → the create revision of its lock, while this replica holds it */
  private readonly held = new Map<string, string>();
  private leader = false;
  private acquiredQueue: string[] = [];
  private lostQueue: string[] = [];
  private lastError: string | undefined = 'not registered with etcd yet';
  private fencedWrites = 0;
  private timer: NodeJS.Timeout | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  private readonly lostListeners: ((vms: string[]) => void)[] = [];
  private watchers: Watcher[] = [];
  private readonly listeners: (() => void)[] = [];
  private closed = false;
  /** the registration in progress (a pass waits for it) */
  private ticking: Promise<void> = Promise.resolve();
  /** keepalives in flight (close waits for them) */
  private readonly renewals = new Set<Promise<void>>();

  constructor(
    private readonly opts: EtcdOptions,
    private readonly log: Logger,
    client?: Etcd3,
  ) {
    this.replicaId = opts.replicaId;
    this.ttlMs = opts.leaseTtlMs;
    this.keys = new EtcdKeys(opts.prefix);
    this.client = client ?? etcdClient(opts);
  }

  /** Register (in the background until etcd answers) and start watching members and locks. */
  start(): void {
    this.schedule(0);
    void this.watch();
    // A lease whose last successful keepalive was sent 3/4 of the TTL ago is given up here, a
    // quarter TTL before etcd can let it expire and another replica take its locks: its runs
    // are stopped at once (their copies killed), not at the next pass. A process woken from a
    // stop runs this before anything else it had pending.
    this.watchdog = setInterval(
      () => {
        if (this.lease && performance.now() - this.okSentAt > (this.ttlMs * 3) / 4)
          this.leaseLost('no successful keepalive for 3/4 of the lease TTL');
      },
      Math.max(20, Math.floor(this.ttlMs / 40)),
    );
  }

  /** Called with the VMs whose locks are lost, at once (not at the next pass). */
  onLost(listener: (vms: string[]) => void): void {
    this.lostListeners.push(listener);
  }

  // ------------------------------------------------------------------ lease and membership

  /**
   * Keepalives go every TTL/3 whether or not the previous one was answered: under load an
   * answer takes over a second (measured on a busy 2-core machine), and a period counted from
   * the answer, or a deadline of TTL/3 on it, used up the 3/4-TTL budget and gave up leases
   * whose etcd was slow but working. So each keepalive may take until TTL/2 and the next one
   * does not wait for it (at most two in flight); whichever succeeds proves the lease from when
   * it was sent. Registering is never done twice at once.
   */
  private schedule(ms: number): void {
    if (this.closed) return;
    this.timer = setTimeout(() => {
      const lease = this.lease;
      if (lease) {
        const renewal = this.renew(lease).finally(() => this.renewals.delete(renewal));
        this.renewals.add(renewal);
        this.schedule(Math.floor(this.ttlMs / 3));
      } else {
        this.ticking = this.registerOnce().finally(() => this.schedule(Math.floor(this.ttlMs / 3)));
      }
    }, ms);
  }

  /**
   * One keepalive, tried again on another member while time is left: etcd3 opens the keepalive
   * stream on one member picked at random and does not retry it elsewhere, so with one member
   * of three down a third of the keepalives failed at once (measured: ECONNREFUSED on the
   * killed member) and two in a row gave the lease up. Resolves with when the keepalive that
   * succeeded was sent (the lease's age counts from there).
   */
  private async keepalive(lease: Lease): Promise<{ ttl: number; sentAt: number }> {
    const deadline = Date.now() + Math.floor(this.ttlMs / 2);
    for (let attempt = 1; ; attempt++) {
      const sentAt = performance.now();
      try {
        const res = await lease.keepaliveOnce({ deadline });
        return { ttl: Number(res.TTL), sentAt };
      } catch (err) {
        if (err instanceof EtcdLeaseInvalidError || attempt >= KEEPALIVE_TRIES || Date.now() >= deadline - 10)
          throw err;
        this.log.debug({ err: (err as Error).message, attempt }, 'etcd keepalive failed; trying again');
      }
    }
  }

  /** Keep `lease` alive once; what it learns counts only while `lease` is still this replica's. */
  private async renew(lease: Lease): Promise<void> {
    try {
      const { ttl, sentAt } = await this.keepalive(lease);
      if (this.lease !== lease) return;
      if (ttl <= 0) {
        this.leaseLost('etcd says the lease expired');
        return;
      }
      this.okSentAt = Math.max(this.okSentAt, sentAt);
      this.lastError = undefined;
    } catch (err) {
      if (this.lease !== lease) return;
      this.lastError = `etcd unreachable: ${(err as Error).message}`;
      if (err instanceof EtcdLeaseInvalidError) this.leaseLost('etcd says the lease is gone');
      else if (performance.now() - this.okSentAt > this.ttlMs) this.leaseLost('no keepalive for a whole TTL');
      this.log.warn({ err: (err as Error).message }, 'etcd keepalive failed');
    }
  }

  private async registerOnce(): Promise<void> {
    try {
      await this.register();
      this.lastError = undefined;
    } catch (err) {
      this.lastError = `etcd unreachable: ${(err as Error).message}`;
      this.log.warn(
        { err: (err as Error).message },
        'etcd registration failed (lease or member key); trying again',
      );
    }
  }

  private async register(): Promise<void> {
    const lease = this.client.lease(Math.ceil(this.ttlMs / 1000), { autoKeepAlive: false });
    lease.on('lost', () => undefined);
    const id = await lease.grant();
    try {
      await this.join(lease, id);
    } catch (err) {
      // a lease granted but not joined is given back (or expires on its own)
      void lease.revoke().catch(() => undefined);
      throw err;
    }
  }

  private async join(lease: Lease, id: string): Promise<void> {
    const me = {
      replica: this.replicaId,
      host: os.hostname(),
      pid: process.pid,
      since: new Date().toISOString(),
      ...(this.opts.advertise ? { url: this.opts.advertise } : {}),
    };
    await this.client.put(this.keys.member(this.replicaId)).value(JSON.stringify(me)).lease(id);
    // a fresh proof before the lease counts: the grant may have taken several tries (a call
    // retries other members), and the lease's age is counted from when its proof was sent
    const { ttl, sentAt } = await this.keepalive(lease);
    if (ttl <= 0) throw new Error('the new lease expired before it was used');
    this.lease = lease;
    this.leaseId = id;
    this.okSentAt = sentAt;
    await this.refreshMembers();
    this.log.info({ replica: this.replicaId, lease: id, ttlMs: this.ttlMs }, 'joined the fleet');
    this.notify();
  }

  /** The lease is gone (or may be): every lock with it. Register again at the next tick. */
  private leaseLost(why: string): void {
    const old = this.lease;
    this.lease = undefined;
    this.leaseId = '';
    this.okSentAt = Number.NEGATIVE_INFINITY;
    this.leader = false;
    const vms = [...this.held.keys()];
    this.held.clear();
    this.lostQueue.push(...vms);
    this.log.error(
      { replica: this.replicaId, vms: vms.length, why },
      'lease lost: this replica gives up its VMs',
    );
    for (const l of this.lostListeners) l(vms);
    // when etcd answers again, free the locks at once instead of at the lease's expiry
    if (old) void old.revoke().catch(() => undefined);
    this.notify();
  }

  private fresh(): boolean {
    return performance.now() - this.okSentAt <= this.ttlMs / 2;
  }

  private async watch(): Promise<void> {
    const watchOne = async (
      prefix: string,
      on: (key: string, deleted: boolean, revision: string) => void,
    ): Promise<void> => {
      for (;;) {
        if (this.closed) return;
        try {
          const w = await this.client.watch().prefix(prefix).create();
          if (this.closed) {
            await w.cancel();
            return;
          }
          w.on('put', (kv) => on(kv.key.toString(), false, kv.mod_revision));
          w.on('delete', (kv) => on(kv.key.toString(), true, kv.mod_revision));
          w.on('connected', () => on('', false, '0'));
          w.on('error', () => undefined);
          this.watchers.push(w);
          return;
        } catch {
          await new Promise((r) => setTimeout(r, 500));
        }
      }
    };
    await Promise.all([
      watchOne(this.keys.members(), () => {
        void this.refreshMembers().then(
          () => this.notify(),
          () => undefined,
        );
      }),
      watchOne(this.keys.locks(), (key, deleted, revision) => {
        if (!deleted) return;
        const vm = this.keys.nameIn(this.keys.locks(), key);
        const mine = vm === undefined ? undefined : this.held.get(vm);
        // ours deleted without our release: by a human, or our lease expired under us. A watch
        // that lags (it reconnected after an etcd leader died) can deliver the delete of an
        // earlier lock of the VM after this replica took the lock anew: only a delete after our
        // lock's creation is ours (seen: a migration stuck for minutes, its live lock "lost")
        if (vm !== undefined && mine !== undefined && BigInt(revision) > BigInt(mine)) {
          this.held.delete(vm);
          this.lostQueue.push(vm);
          this.log.error({ vm }, 'lock deleted under this replica');
          for (const l of this.lostListeners) l([vm]);
        }
        this.notify();
      }),
    ]);
  }

  private async refreshMembers(): Promise<void> {
    const keys = await this.client.getAll().prefix(this.keys.members()).keys();
    const names: string[] = [];
    for (const k of keys) {
      const n = this.keys.nameIn(this.keys.members(), k);
      if (n !== undefined) names.push(n);
    }
    this.members = names.sort();
  }

  private notify(): void {
    for (const l of this.listeners) l();
  }

  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  // ------------------------------------------------------------------ ownership

  async balance(
    vms: readonly string[],
    busy: (vm: string) => boolean,
  ): Promise<{ acquired: string[]; lost: string[] }> {
    await this.ticking;
    // a lease whose proof is older than TTL/2 (an etcd that answers slowly: its keepalive is in
    // flight) is waited for, up to TTL/2, rather than skipping the pass: a takeover that waited
    // for a later pass came 8.7 s after a kill with a 3 s TTL (measured under load)
    const waitUntil = performance.now() + this.ttlMs / 2;
    while (this.lease && !this.fresh() && performance.now() < waitUntil && !this.closed)
      await new Promise((r) => setTimeout(r, 50));
    const lease = this.lease;
    if (lease && this.fresh()) {
      const leaseId = await lease.grant();
      const members = this.members.includes(this.replicaId)
        ? this.members
        : [...this.members, this.replicaId];
      const fleet = new Set(vms);
      const jobs: (() => Promise<void>)[] = [];
      for (const vm of vms) {
        const mine = ownerOf(vm, members) === this.replicaId;
        if (mine && !this.held.has(vm)) jobs.push(() => this.acquire(vm, leaseId));
        else if (!mine && this.held.has(vm) && !busy(vm)) jobs.push(() => this.release(vm));
      }
      for (const vm of this.held.keys()) if (!fleet.has(vm) && !busy(vm)) jobs.push(() => this.release(vm));
      await runLimited(jobs, LOCK_CONCURRENCY);
      await this.elect(leaseId);
    }
    const out = { acquired: this.acquiredQueue, lost: this.lostQueue };
    this.acquiredQueue = [];
    this.lostQueue = [];
    return out;
  }

  private async acquire(vm: string, leaseId: string): Promise<void> {
    const key = this.keys.lock(vm);
    try {
      const res = await this.client
        .if(key, 'Create', '==', 0)
        .then(this.client.put(key).value(this.replicaId).lease(leaseId))
        .else(this.client.get(key))
        .commit();
      // taken with a lease given up meanwhile: it goes with that lease, it is not ours
      if (this.leaseId !== leaseId) return;
      let revision: string;
      if (res.succeeded) revision = String(res.header.revision);
      else {
        // a lock on this very lease that this process forgot (it judged it lost): ours again
        const kv = res.responses[0]?.response_range?.kvs[0];
        if (!kv || String(kv.lease) !== leaseId || kv.value.toString() !== this.replicaId) return;
        revision = String(kv.create_revision);
        this.log.warn({ vm }, 'took back a lock this replica still held in etcd');
      }
      this.held.set(vm, revision);
      this.acquiredQueue.push(vm);
    } catch (err) {
      this.log.warn({ vm, err: (err as Error).message }, 'could not take the lock');
    }
  }

  private async release(vm: string): Promise<void> {
    const revision = this.held.get(vm);
    if (revision === undefined) return;
    this.held.delete(vm);
    await this.client
      .if(this.keys.lock(vm), 'Create', '==', revision)
      .then(this.client.delete().key(this.keys.lock(vm)))
      .commit()
      .catch(() => undefined); // it goes with the lease anyway
  }

  private async elect(leaseId: string): Promise<void> {
    const key = this.keys.leader();
    try {
      const res = await this.client
        .if(key, 'Create', '==', 0)
        .then(this.client.put(key).value(this.replicaId).lease(leaseId))
        .else(this.client.get(key))
        .commit();
      if (res.succeeded) this.leader = this.leaseId === leaseId;
      else {
        const kv = res.responses[0]?.response_range?.kvs[0];
        this.leader = kv?.value.toString() === this.replicaId && String(kv.lease) === leaseId;
      }
    } catch {
      // keep what we knew; the next pass asks again
    }
  }

  owns(vm: string): boolean {
    return this.held.has(vm) && this.lease !== undefined;
  }

  revisionOf(vm: string): string | undefined {
    return this.lease ? this.held.get(vm) : undefined;
  }

  refused(vm: string, revision: string): void {
    this.fencedWrites++;
    if (this.held.get(vm) === revision) {
      this.held.delete(vm);
      this.lostQueue.push(vm);
    }
    this.notify();
  }

  fenceFor(vm: string): Fence {
    const revision = this.held.get(vm) ?? 'none';
    const held = (): boolean => this.lease !== undefined && this.held.get(vm) === revision;
    return {
      revision,
      held,
      // while the lease is unproven (an etcd leader election), wait; once the lock is gone, refuse
      ready: async () => {
        while (held() && !this.fresh()) await new Promise((r) => setTimeout(r, 50));
        if (!held())
          throw new FencedError(
            `replica ${this.replicaId} no longer holds the lock of VM ${vm}: nothing started`,
          );
      },
      check: () => {
        if (this.lease === undefined || this.held.get(vm) !== revision)
          throw new FencedError(
            `replica ${this.replicaId} no longer holds the lock of VM ${vm}: nothing started`,
          );
        const age = performance.now() - this.okSentAt;
        if (age > this.ttlMs / 2)
          throw new FencedError(
            `replica ${this.replicaId}: the last keepalive was sent ${Math.round(age)} ms ago, ` +
              `more than half the lease TTL (${this.ttlMs} ms): nothing started on VM ${vm}`,
          );
      },
    };
  }

  // ------------------------------------------------------------------ fleet-wide limits

  async fleetMigrations(): Promise<{ migrations: MigrationClaim[]; token: string }> {
    const tokenKv = (await this.client.get(this.keys.claimsToken()).exec()).kvs[0];
    const token = tokenKv ? String(tokenKv.mod_revision) : '0';
    const all = await this.client.getAll().prefix(this.keys.claims()).strings();
    const migrations: MigrationClaim[] = [];
    for (const text of Object.values(all)) {
      try {
        migrations.push(JSON.parse(text) as MigrationClaim);
      } catch {
        // not ours to judge: a claim is written whole by one transaction
      }
    }
    return { migrations, token };
  }

  async claim(c: MigrationClaim, token: string): Promise<string | undefined> {
    const revision = this.revisionOf(c.vm);
    if (revision === undefined || !this.fresh()) return undefined;
    const res = await this.client
      .if(this.keys.lock(c.vm), 'Create', '==', revision)
      .and(this.keys.claimsToken(), 'Mod', '==', token)
      .then(
        this.client.put(this.keys.claimsToken()).value(c.vm),
        this.client.put(this.keys.claim(c.vm)).value(JSON.stringify({ ...c, replica: this.replicaId })),
      )
      .commit();
    return res.succeeded ? String(res.header.revision) : undefined;
  }

  // ------------------------------------------------------------------ the rest

  isLeader(): boolean {
    return this.leader && this.lease !== undefined;
  }

  health(): { ready: boolean; why?: string } {
    if (!this.lease) return { ready: false, why: this.lastError ?? 'not registered with etcd' };
    if (!this.fresh())
      return {
        ready: false,
        why: `${this.lastError ?? 'etcd unreachable'}; last keepalive ${Math.round(performance.now() - this.okSentAt)} ms ago`,
      };
    return { ready: true };
  }

  stats(): ReplicaStats {
    const age = this.lease ? (performance.now() - this.okSentAt) / 1000 : Number.POSITIVE_INFINITY;
    return {
      replica: this.replicaId,
      members: [...this.members],
      owned: this.lease ? this.held.size : 0,
      leader: this.isLeader(),
      leaseOk: this.lease !== undefined && this.fresh(),
      leaseAgeSeconds: age,
      fencedWrites: this.fencedWrites,
    };
  }

  store(_local: MigrationRecords): MigrationRecords {
    return new EtcdMigrationStore(this.client, this.keys, this, this.log);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.watchdog) clearInterval(this.watchdog);
    await this.ticking;
    await Promise.all([...this.renewals]);
    await Promise.all(this.watchers.map((w) => w.cancel().catch(() => undefined)));
    const lease = this.lease;
    this.lease = undefined;
    this.held.clear();
    if (lease) await lease.revoke().catch(() => undefined);
    this.client.close();
  }
}

async function runLimited(jobs: (() => Promise<void>)[], limit: number): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < jobs.length) await jobs[next++]!();
  };
  await Promise.all(Array.from({ length: Math.min(limit, jobs.length) }, worker));
}
