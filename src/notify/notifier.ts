/**
 * The daemon's notifier: turns what the daemon sees (a migration started or finished, a VM the
 * plan blocks, git failing, a host unreachable) into {@link Notification}s with stable ids, and
 * hands them to the {@link Outbox}. Every method returns at once: nothing here waits for a
 * receiver. Only the replica that owns a VM reports its events (the caller asks
 * `coordination.owns`); host events come from the elected replica, git events from each replica
 * for its own clone.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from '../atomic-file';
import type { Logger } from 'pino';
import { describeError } from '../errors';
import type { TrustContext } from '../manifests/trust';
import type { MigrationContext } from '../machine/types';
import type { NotificationEventName, NotificationReceiver } from '../settings';
import type { PlannedMigration } from '../types';
import { migrationKey, planBlockId, type Notification } from './message';
import { Outbox, type OutboxOptions } from './outbox';
import { resolveReceiver, type ResolvedReceiver } from './secret-file';

export interface NotifierOptions extends Omit<OutboxOptions, 'file'> {
  stateDir: string;
  /** `--replica-id`, `solo` for one daemon */
  replica: string;
  now?: () => number;
}

/** Final steps of a migration and the event each one sends. */
const FINAL: Record<string, NotificationEventName> = {
  Completed: 'migration.completed',
  Failed: 'migration.failed',
  Blocked: 'migration.blocked',
  RolledBack: 'migration.rolledBack',
};

export class Notifier {
  readonly outbox: Outbox;
  private readonly log: Logger;
  /** the last configuration problem per receiver, so each is logged once */
  private readonly problems = new Map<string, string>();
  private readonly now: () => number;
  private readonly receiversFile: string;
  private lastConfig = '';

  constructor(private readonly o: NotifierOptions) {
    this.log = o.logger;
    this.now = o.now ?? Date.now;
    this.outbox = new Outbox({ ...o, file: path.join(o.stateDir, 'notifications', 'outbox.json') });
    this.receiversFile = path.join(o.stateDir, 'notifications', 'receivers.json');
  }

  /**
   * Load the outbox, and the receivers last configured (their file paths only, never a URL), so
   * a daemon that restarts while git is unreachable can still say so.
   */
  async start(trust: TrustContext): Promise<void> {
    await this.outbox.load();
    let last: unknown;
    try {
      last = JSON.parse(await fs.readFile(this.receiversFile, 'utf8'));
    } catch {
      return; // none yet, or unreadable: the first pass configures
    }
    if (Array.isArray(last)) this.configure(last as NotificationReceiver[], trust);
  }

  close(): Promise<void> {
    return this.outbox.close();
  }

  /**
   * The receivers of `vmplace.yaml` (already checked against the trust rules). Their URL and
   * secret files are read again on every call (a rotated secret is used at the next pass); a
   * receiver whose files cannot be read is left out, and said so once (file and errno, never
   * the content).
   */
  configure(receivers: readonly NotificationReceiver[], trust: TrustContext): void {
    const ok: ResolvedReceiver[] = [];
    const seen = new Set<string>();
    for (const r of receivers) {
      seen.add(r.name);
      try {
        ok.push(resolveReceiver(r, trust));
        if (this.problems.delete(r.name))
          this.log.info({ receiver: r.name }, 'notification receiver usable again');
      } catch (err) {
        const d = describeError(err);
        if (this.problems.get(r.name) !== d.message)
          this.log.error(
            { receiver: r.name, reason: d.reason },
            `notification receiver left out: ${d.message}`,
          );
        this.problems.set(r.name, d.message);
      }
    }
    for (const name of [...this.problems.keys()]) if (!seen.has(name)) this.problems.delete(name);
    this.outbox.configure(ok);
    const config = JSON.stringify(receivers);
    if (config !== this.lastConfig) {
      this.lastConfig = config;
      // names, events and file paths: nothing secret (the URLs stay in their files)
      void fs
        .mkdir(path.dirname(this.receiversFile), { recursive: true, mode: 0o700 })
        .then(() => writeFileAtomic(this.receiversFile, config))
        .catch((err: NodeJS.ErrnoException) =>
          this.log.error(
            { file: this.receiversFile, code: err.code },
            'cannot write the notification receivers',
          ),
        );
    }
  }

  /** A migration this replica started. */
  migrationStarted(m: PlannedMigration, id: string, labels?: Record<string, string>): void {
    this.outbox.emit(
      {
        ...this.base('migration.started', migrationKey('migration.started', m.vm, id)),
        vm: m.vm,
        migration: id,
        from: { host: m.from.host, storage: unique(m.disks.map((d) => d.from)) },
        to: { host: m.to.host, storage: unique(m.disks.map((d) => d.to)) },
        strategy: m.strategy,
      },
      labels,
    );
  }

  /** A migration of this replica reached a final step (others, and shutdown stops, send nothing). */
  migrationFinished(step: string, c: MigrationContext, labels?: Record<string, string>): void {
    const event = FINAL[step];
    if (!event) return;
    const e = c.lastError;
    this.outbox.emit(
      {
        ...this.base(event, migrationKey(event, c.vm, c.id)),
        vm: c.vm,
        migration: c.id,
        from: { host: c.fromHost, storage: unique(c.moves.map((m) => m.fromStorage)) },
        to: { host: c.toHost, storage: unique(c.moves.map((m) => m.toStorage)) },
        strategy: c.effectiveStrategy ?? c.strategy,
        ...(step === 'Completed' && c.pauseMs !== undefined ? { pauseMs: c.pauseMs } : {}),
        ...(step !== 'Completed' && e ? { reason: e.reason, message: e.message } : {}),
        ...(step === 'Blocked' && !e && c.blockedReason ? { reason: c.blockedReason } : {}),
      },
      labels,
    );
  }

  /**
   * A VM the plan blocks before any migration starts: one message per (VM, target, reasons),
   * however many passes see it.
   */
  planBlocked(m: PlannedMigration, labels?: Record<string, string>): void {
    const errors = m.findings.filter((f) => f.severity === 'error');
    const reasons = errors.map((f) => f.reason);
    const id = planBlockId(`${m.to.host}/${m.disks.map((d) => d.to).join(',')}`, reasons);
    this.outbox.emit(
      {
        ...this.base('migration.blocked', migrationKey('migration.blocked', m.vm, id)),
        vm: m.vm,
        migration: id,
        from: { host: m.from.host, storage: unique(m.disks.map((d) => d.from)) },
        to: { host: m.to.host, storage: unique(m.disks.map((d) => d.to)) },
        strategy: m.strategy,
        ...(reasons.length ? { reason: reasons.join(',') } : {}),
        ...(errors.length ? { message: errors.map((f) => f.message).join('; ') } : {}),
      },
      labels,
    );
  }

  /** The result of this replica's git sync: the first failure after a success sends one message. */
  gitSync(err?: unknown): void {
    const since = this.outbox.episode(`git/${this.o.replica}`, err !== undefined, this.iso());
    if (since === undefined || err === undefined) return;
    const d = describeError(err);
    this.outbox.emit({
      ...this.base('git.syncFailed', `git.syncFailed/${this.o.replica}/${since}`),
      reason: d.reason,
      message: d.message,
    });
  }

  /** The hosts of a pass: one message when a host becomes unreachable, none while it stays so. */
  hostsObserved(
    hosts: readonly string[],
    unreachable: ReadonlyMap<string, { reason: string; message: string }>,
  ): void {
    for (const host of hosts) {
      const why = unreachable.get(host);
      const since = this.outbox.episode(`host/${host}`, why !== undefined, this.iso());
      if (since === undefined || !why) continue;
      this.outbox.emit({
        ...this.base('host.unreachable', `host.unreachable/${host}/${since}`),
        host,
        reason: why.reason,
        message: why.message,
      });
    }
  }

  private base(event: NotificationEventName, id: string): Notification {
    return {
      apiVersion: 'vmplace.dev/v1alpha1',
      kind: 'Notification',
      id,
      event,
      time: this.iso(),
      replica: this.o.replica,
    };
  }

  private iso(): string {
    return new Date(this.now()).toISOString();
  }
}

function unique(xs: string[]): string[] {
  return [...new Set(xs)];
}
