import { createHash } from 'node:crypto';
import type { Etcd3 } from 'etcd3';
import type { Logger } from 'pino';
import { FencedError, isFenced } from '../../errors';
import { MACHINE_VERSION } from '../../machine/migration-machine';
import type { MigrationRecords, OwnedFile, StoredMigration } from '../../machine/store';
import type { EtcdKeys } from './keys';

/** What the store asks the coordination about the VMs' locks. */
export interface LockTable {
  /** the create revision of the VM's lock while this replica holds it */
  revisionOf(vm: string): string | undefined;
  /** a fenced write was refused: the lock of `vm` at `revision` is not this replica's any more */
  refused(vm: string, revision: string): void;
  /** this replica's name, for messages */
  readonly replicaId: string;
}

/**
 * The migration state of a fleet shared by several replicas, in etcd next to the VMs' locks
 * (see {@link EtcdKeys}). Every write is one transaction that requires the VM's lock to have
 * the create revision this replica took it at: a replica that lost the lock (its lease expired
 * while it was stopped or cut off, and another replica took the VM) can never write again, and
 * the refusal abandons its run (`FencedError`). A write that cannot reach etcd is retried for as
 * long as this replica holds the lock (the lease may still be alive), so a short outage delays
 * the next step instead of failing it; the retried transaction is idempotent.
 */
export class EtcdMigrationStore implements MigrationRecords {
  constructor(
    private readonly client: Etcd3,
    private readonly keys: EtcdKeys,
    private readonly locks: LockTable,
    private readonly log: Logger,
  ) {}

  init(): Promise<void> {
    return Promise.resolve();
  }

  async markIntent(vm: string, id: string, what: string): Promise<void> {
    await this.write(vm, () => [
      this.client.put(this.keys.intent(vm, id, what)).value(new Date().toISOString()),
    ]);
  }

  async recordOwned(vm: string, id: string, rec: OwnedFile): Promise<void> {
    const hash = createHash('sha256')
      .update(`${rec.host}\0${rec.path}\0${rec.identity}`)
      .digest('hex')
      .slice(0, 24);
    await this.write(vm, () => [this.client.put(this.keys.owned(vm, id, hash)).value(JSON.stringify(rec))]);
  }

  async listOwned(vm: string, id: string): Promise<OwnedFile[]> {
    const all = await this.client
      .getAll()
      .prefix(`${this.keys.records(vm, id)}owned/`)
      .strings();
    const out: OwnedFile[] = [];
    for (const text of Object.values(all)) {
      try {
        const rec = JSON.parse(text) as OwnedFile;
        if (typeof rec.host === 'string' && typeof rec.path === 'string' && typeof rec.identity === 'string')
          out.push(rec);
      } catch {
        // written whole by one transaction: junk is not ours
      }
    }
    return out;
  }

  async intentAt(vm: string, id: string, what: string): Promise<number | undefined> {
    const text = await this.client.get(this.keys.intent(vm, id, what)).string();
    if (text === null) return undefined;
    const t = Date.parse(text);
    return Number.isFinite(t) ? t : undefined;
  }

  async hasIntent(vm: string, id: string, what: string): Promise<boolean> {
    return (await this.client.get(this.keys.intent(vm, id, what)).string()) !== null;
  }

  async save(vm: string, id: string, snapshot: unknown): Promise<void> {
    const record: StoredMigration = {
      version: MACHINE_VERSION,
      vm,
      id,
      updatedAt: new Date().toISOString(),
      snapshot,
    };
    const text = JSON.stringify(record);
    await this.write(vm, () => [this.client.put(this.keys.migration(vm, id)).value(text)]);
  }

  /** The record becomes the VM's last finished one; its intents, ownership and claim go. */
  async finish(vm: string, id: string): Promise<void> {
    const text = await this.client.get(this.keys.migration(vm, id)).string();
    await this.write(vm, () => [
      ...(text !== null ? [this.client.put(this.keys.done(vm)).value(text)] : []),
      this.client.delete().key(this.keys.migration(vm, id)),
      this.client.delete().prefix(this.keys.records(vm, id)),
      this.client.delete().key(this.keys.claim(vm)),
    ]);
  }

  async listActive(): Promise<{ records: StoredMigration[]; problems: { file: string; message: string }[] }> {
    const all = await this.client.getAll().prefix(this.keys.migrations()).strings();
    const records: StoredMigration[] = [];
    const problems: { file: string; message: string }[] = [];
    for (const [key, text] of Object.entries(all)) {
      try {
        const rec = JSON.parse(text) as StoredMigration;
        if (rec.version !== MACHINE_VERSION) {
          problems.push({ file: key, message: `machine version ${rec.version} is not ${MACHINE_VERSION}` });
          continue;
        }
        records.push(rec);
      } catch (err) {
        problems.push({ file: key, message: (err as Error).message });
      }
    }
    records.sort((a, b) => a.updatedAt.localeCompare(b.updatedAt));
    return { records, problems };
  }

  async lastDone(vm: string): Promise<StoredMigration | undefined> {
    const text = await this.client.get(this.keys.done(vm)).string();
    if (text === null) return undefined;
    try {
      return JSON.parse(text) as StoredMigration;
    } catch {
      return undefined;
    }
  }

  /**
   * One transaction, fenced by the VM's lock. Retried while etcd cannot be reached and the lock
   * is still held here; refused (the lock is another's): `FencedError`, and the lock is dropped.
   */
  private async write(vm: string, ops: () => Parameters<ReturnType<Etcd3['if']>['then']>): Promise<void> {
    let delay = 100;
    for (;;) {
      const revision = this.locks.revisionOf(vm);
      if (revision === undefined)
        throw new FencedError(
          `replica ${this.locks.replicaId} does not hold the lock of VM ${vm}: nothing written`,
        );
      try {
        const res = await this.client
          .if(this.keys.lock(vm), 'Create', '==', revision)
          .then(...ops())
          .commit();
        if (res.succeeded) return;
        this.locks.refused(vm, revision);
        throw new FencedError(
          `replica ${this.locks.replicaId} lost the lock of VM ${vm} (revision ${revision}): the write was refused`,
        );
      } catch (err) {
        if (isFenced(err)) throw err;
        this.log.warn(
          { vm, err: (err as Error).message },
          'etcd write failed; retrying while the lock is held',
        );
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 1000);
      }
    }
  }
}
