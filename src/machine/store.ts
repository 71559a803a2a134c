import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { fsyncDir, writeFileAtomic } from '../atomic-file';
import { MACHINE_VERSION } from './migration-machine';

/**
 * One file per migration under `<stateDir>/migrations/`: the machine's persisted snapshot, the
 * machine version, and the VM it belongs to. Written atomically (temp file, fsync, rename,
 * fsync of the directory) after every transition, so a crash at any moment leaves either the
 * previous or the next snapshot, never a torn one. Finished migrations move to
 * `<stateDir>/done/`. All migration state is per VM and lives here, so a later lease per VM
 * (git or etcd) can hand a VM and its file to another daemon.
 */
/** A file a migration created, by host, path and identity (`dev:ino`). */
export interface OwnedFile {
  host: string;
  path: string;
  identity: string;
}

export interface StoredMigration {
  version: number;
  vm: string;
  id: string;
  updatedAt: string;
  snapshot: unknown;
}

/**
 * Where migrations keep their state: the files of one daemon ({@link MigrationStore}) or etcd
 * for several replicas (`coord/etcd/store.ts`, whose writes are fenced by the VM's lock).
 */
export interface MigrationRecords {
  init(): Promise<void>;
  markIntent(vm: string, id: string, what: string): Promise<void>;
  recordOwned(vm: string, id: string, rec: OwnedFile): Promise<void>;
  listOwned(vm: string, id: string): Promise<OwnedFile[]>;
  intentAt(vm: string, id: string, what: string): Promise<number | undefined>;
  hasIntent(vm: string, id: string, what: string): Promise<boolean>;
  save(vm: string, id: string, snapshot: unknown): Promise<void>;
  finish(vm: string, id: string): Promise<void>;
  listActive(): Promise<{ records: StoredMigration[]; problems: { file: string; message: string }[] }>;
  lastDone(vm: string): Promise<StoredMigration | undefined>;
}

export class MigrationStore implements MigrationRecords {
  readonly activeDir: string;
  readonly doneDir: string;
  readonly intentDir: string;

  constructor(readonly stateDir: string) {
    this.activeDir = path.join(stateDir, 'migrations');
    this.doneDir = path.join(stateDir, 'done');
    this.intentDir = path.join(stateDir, 'intents');
  }

  async init(): Promise<void> {
    await fs.mkdir(this.activeDir, { recursive: true, mode: 0o700 });
    await fs.mkdir(this.doneDir, { recursive: true, mode: 0o700 });
    await fs.mkdir(this.intentDir, { recursive: true, mode: 0o700 });
  }

  /**
   * Write-ahead record that a step is about to do something that cannot be seen when the
   * other host does not answer (a restore or a define there). Durable before it returns.
   */
  async markIntent(vm: string, id: string, what: string): Promise<void> {
    await writeFileAtomic(path.join(this.intentDir, `${vm}.${id}.${what}`), new Date().toISOString() + '\n');
  }

  /**
   * Write-ahead proof of ownership: this migration created the file `path` on `host`, whose
   * identity (`dev:ino`) is `identity`. Recorded before any data is written into the file, so
   * a rollback deletes a file only when it is still that one. One durable file per record.
   */
  async recordOwned(vm: string, id: string, rec: OwnedFile): Promise<void> {
    const key = createHash('sha256')
      .update(`${rec.host}\0${rec.path}\0${rec.identity}`)
      .digest('hex')
      .slice(0, 24);
    await writeFileAtomic(path.join(this.intentDir, `${vm}.${id}.owned-${key}`), JSON.stringify(rec) + '\n');
  }

  /** Every file this migration recorded as created by it. */
  async listOwned(vm: string, id: string): Promise<OwnedFile[]> {
    const prefix = `${vm}.${id}.owned-`;
    const out: OwnedFile[] = [];
    for (const n of await fs.readdir(this.intentDir).catch(() => [] as string[])) {
      if (!n.startsWith(prefix)) continue;
      try {
        const rec = JSON.parse(await fs.readFile(path.join(this.intentDir, n), 'utf8')) as OwnedFile;
        if (typeof rec.host === 'string' && typeof rec.path === 'string' && typeof rec.identity === 'string')
          out.push(rec);
      } catch {
        // a record torn by a crash before its rename cannot exist (atomic write); skip junk
      }
    }
    return out;
  }

  /** When the intent was marked (ms since epoch), or undefined when it was not. */
  async intentAt(vm: string, id: string, what: string): Promise<number | undefined> {
    try {
      const t = Date.parse(
        (await fs.readFile(path.join(this.intentDir, `${vm}.${id}.${what}`), 'utf8')).trim(),
      );
      return Number.isFinite(t) ? t : undefined;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async hasIntent(vm: string, id: string, what: string): Promise<boolean> {
    return fs.access(path.join(this.intentDir, `${vm}.${id}.${what}`)).then(
      () => true,
      () => false,
    );
  }

  private fileFor(dir: string, vm: string, id: string): string {
    return path.join(dir, `${vm}.${id}.json`);
  }

  /** Persist a snapshot atomically. */
  async save(vm: string, id: string, snapshot: unknown): Promise<void> {
    const record: StoredMigration = {
      version: MACHINE_VERSION,
      vm,
      id,
      updatedAt: new Date().toISOString(),
      snapshot,
    };
    await writeFileAtomic(this.fileFor(this.activeDir, vm, id), JSON.stringify(record, null, 1) + '\n');
  }

  /** Move a finished migration out of the active set. */
  async finish(vm: string, id: string): Promise<void> {
    const from = this.fileFor(this.activeDir, vm, id);
    await fs.rename(from, this.fileFor(this.doneDir, vm, id)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
    await fsyncDir(this.activeDir);
    const prefix = `${vm}.${id}.`;
    for (const n of await fs.readdir(this.intentDir).catch(() => [] as string[]))
      if (n.startsWith(prefix)) await fs.rm(path.join(this.intentDir, n), { force: true });
  }

  /** Every migration that has not finished, oldest first. Unreadable files are reported, not thrown. */
  async listActive(): Promise<{ records: StoredMigration[]; problems: { file: string; message: string }[] }> {
    const records: StoredMigration[] = [];
    const problems: { file: string; message: string }[] = [];
    let names: string[] = [];
    try {
      names = (await fs.readdir(this.activeDir)).filter((n) => n.endsWith('.json')).sort();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    for (const name of names) {
      const file = path.join(this.activeDir, name);
      try {
        const rec = JSON.parse(await fs.readFile(file, 'utf8')) as StoredMigration;
        if (rec.version !== MACHINE_VERSION) {
          problems.push({ file, message: `machine version ${rec.version} is not ${MACHINE_VERSION}` });
          continue;
        }
        records.push(rec);
      } catch (err) {
        problems.push({ file, message: (err as Error).message });
      }
    }
    records.sort((a, b) => a.updatedAt.localeCompare(b.updatedAt));
    return { records, problems };
  }

  /** The most recent finished migration of a VM, if any. */
  async lastDone(vm: string): Promise<StoredMigration | undefined> {
    let names: string[];
    try {
      names = (await fs.readdir(this.doneDir)).filter((n) => n.startsWith(`${vm}.`) && n.endsWith('.json'));
    } catch {
      return undefined;
    }
    let best: StoredMigration | undefined;
    for (const n of names) {
      try {
        const rec = JSON.parse(await fs.readFile(path.join(this.doneDir, n), 'utf8')) as StoredMigration;
        if (rec.vm === vm && (!best || rec.updatedAt > best.updatedAt)) best = rec;
      } catch {
        // a damaged record of a finished migration is history only
      }
    }
    return best;
  }
}
