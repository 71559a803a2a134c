/**
 * The outbox: notifications waiting for their receivers, kept in the state directory so a
 * restart loses none, with the keys already sent so a restart repeats none.
 *
 * - **De-duplication**: a notification's `id` is sent to a receiver once. The keys
 *   (receiver, id) are kept (the newest {@link OutboxOptions.maxSeen}) and persisted with the
 *   queues; {@link Outbox.emit} of a known key does nothing, so callers may emit on every pass.
 * - **At least once**: a message leaves its queue only after a 2xx answer (or a permanent
 *   refusal: a 4xx other than 408, 425, 429; or after {@link OutboxOptions.maxAgeMs}). A crash
 *   between the answer and the write of the queue sends it again; the body's `id` (and the
 *   `X-Vmplace-Delivery` header) let a receiver drop the repeat.
 * - **Per receiver, in order**: each receiver has its own queue and its own loop; its head
 *   is retried with exponential backoff and jitter ({@link backoffDelay}) until it goes, and only
 *   then the next one. A slow, dead or hanging receiver (every attempt is bounded by a connect
 *   and a total timeout) delays only its own queue: `emit` never waits for the network, and the
 *   state file is written in the background.
 *
 * The file holds notifications and receiver names, never a URL or a secret.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { writeFileAtomic } from '../atomic-file';
import { backoffDelay } from '../backoff';
import type { Notification } from './message';
import { bodyFor } from './message';
import { postJson, type PostResult } from './post';
import type { ResolvedReceiver } from './secret-file';

export interface OutboxOptions {
  /** the state file (`STATE_DIR/notifications/outbox.json`) */
  file: string;
  logger: Logger;
  /** how one message is sent (default {@link postJson} with the timeouts below) */
  post?: (r: ResolvedReceiver, body: string, headers: Record<string, string>) => Promise<PostResult>;
  /** first retry after about this long (default 1 s), doubling up to `retryMaxMs` (default 5 min) */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** per attempt: connecting (default 5 s), the whole request (default 15 s; a receiver's `timeout` wins) */
  connectTimeoutMs?: number;
  timeoutMs?: number;
  /** messages waiting per receiver; beyond, the oldest is dropped (default 1,000) */
  maxQueue?: number;
  /** (receiver, id) keys remembered (default 10,000) */
  maxSeen?: number;
  /** a message not delivered after this long is dropped (default 24 h) */
  maxAgeMs?: number;
  now?: () => number;
  random?: () => number;
}

interface Queued {
  n: Notification;
  /** ms since epoch when it was queued */
  at: number;
  attempts: number;
}

interface StateFile {
  version: 1;
  seen: string[];
  queues: Record<string, Queued[]>;
  episodes: Record<string, string>;
}

/** Receiver and id in one key (a NUL cannot occur in either). */
const seenKey = (receiver: string, id: string): string => `${receiver}\u0000${id}`;

export class Outbox {
  private readonly log: Logger;
  private readonly receivers = new Map<string, ResolvedReceiver>();
  private readonly queues = new Map<string, Queued[]>();
  private readonly seen = new Set<string>();
  private episodes: Record<string, string> = {};
  private readonly running = new Set<string>();
  private readonly sleepers = new Map<string, () => void>();
  private closed = false;
  private writing?: Promise<void>;
  private dirty = false;
  private readonly o: Required<Omit<OutboxOptions, 'post' | 'logger' | 'file'>>;
  private readonly post: NonNullable<OutboxOptions['post']>;

  constructor(private readonly opts: OutboxOptions) {
    this.log = opts.logger;
    this.o = {
      retryBaseMs: opts.retryBaseMs ?? 1000,
      retryMaxMs: opts.retryMaxMs ?? 300_000,
      connectTimeoutMs: opts.connectTimeoutMs ?? 5000,
      timeoutMs: opts.timeoutMs ?? 15_000,
      maxQueue: opts.maxQueue ?? 1000,
      maxSeen: opts.maxSeen ?? 10_000,
      maxAgeMs: opts.maxAgeMs ?? 24 * 3600_000,
      now: opts.now ?? Date.now,
      random: opts.random ?? Math.random,
    };
    this.post =
      opts.post ??
      ((r, body, headers) =>
        postJson(r.url, body, {
          connectTimeoutMs: Math.min(this.o.connectTimeoutMs, r.timeoutMs ?? Infinity),
          timeoutMs: r.timeoutMs ?? this.o.timeoutMs,
          headers,
          ...(r.secret ? { secret: r.secret } : {}),
        }));
  }

  /** Read the state file (a missing one is an empty outbox; an unreadable one is logged and replaced). */
  async load(): Promise<void> {
    let text: string;
    try {
      text = await fs.readFile(this.opts.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        this.log.error(
          { file: this.opts.file, code: (err as NodeJS.ErrnoException).code },
          'cannot read the notification outbox; starting empty',
        );
      return;
    }
    try {
      const s = JSON.parse(text) as StateFile;
      if (s.version !== 1) throw new Error('unknown version');
      for (const k of s.seen) this.seen.add(k);
      for (const [name, q] of Object.entries(s.queues)) this.queues.set(name, q);
      this.episodes = { ...s.episodes };
    } catch {
      this.log.error({ file: this.opts.file }, 'notification outbox is not valid; starting empty');
    }
  }

  /**
   * Send to these receivers from now on. A new one starts with an empty queue (it gets what is
   * emitted from now on). The queue of a receiver no longer configured is kept, unsent, until
   * its messages are older than `maxAgeMs` (a `vmplace.yaml` that comes back, or a daemon that
   * restarts before it can read it, loses nothing).
   */
  configure(receivers: readonly ResolvedReceiver[]): void {
    const before = new Map(this.receivers);
    this.receivers.clear();
    for (const r of receivers) {
      this.receivers.set(r.name, r);
      // a new or changed URL: the head is tried again now, not after the old URL's backoff
      if (before.get(r.name)?.url.href !== r.url.href) this.sleepers.get(r.name)?.();
    }
    const now = this.o.now();
    for (const [name, q] of this.queues) {
      if (this.receivers.has(name) || q.length === 0) continue;
      if (q.every((m) => now - m.at > this.o.maxAgeMs)) {
        this.log.warn(
          { receiver: name, dropped: q.length },
          'notification receiver gone for long: its queue is dropped',
        );
        this.queues.delete(name);
        this.persist();
      }
    }
    for (const name of this.receivers.keys()) this.kick(name);
  }

  /**
   * Queue `n` for every receiver that wants its event and whose selector matches `labels` (for a
   * VM event), unless that receiver already had this id. Never waits.
   *
   * @returns the receivers it was queued for
   */
  emit(n: Notification, labels?: Record<string, string>): string[] {
    if (this.closed) return [];
    const to: string[] = [];
    for (const r of this.receivers.values()) {
      if (!r.events.has(n.event)) continue;
      if (n.vm !== undefined && r.matchLabels && !matchesLabels(r.matchLabels, labels)) continue;
      const key = seenKey(r.name, n.id);
      if (this.seen.has(key)) continue;
      this.remember(key);
      const q = this.queues.get(r.name) ?? [];
      this.queues.set(r.name, q);
      q.push({ n, at: this.o.now(), attempts: 0 });
      if (q.length > this.o.maxQueue) {
        const old = q.splice(0, q.length - this.o.maxQueue);
        this.log.warn(
          { receiver: r.name, dropped: old.map((d) => d.n.id) },
          'notification queue full: oldest dropped',
        );
      }
      to.push(r.name);
      this.kick(r.name);
    }
    if (to.length) {
      this.log.info({ id: n.id, event: n.event, receivers: to }, 'notification queued');
      this.persist();
    }
    return to;
  }

  /**
   * An episode (a host unreachable, git failing): `open` while it lasts. Returns the episode's
   * start (the id of its one message) when it just opened, `undefined` otherwise. Persisted, so
   * an episode that lasts through a restart is announced once.
   */
  episode(key: string, open: boolean, now: string): string | undefined {
    const was = this.episodes[key];
    if (open && was === undefined) {
      this.episodes[key] = now;
      this.persist();
      return now;
    }
    if (!open && was !== undefined) {
      delete this.episodes[key];
      this.persist();
    }
    return undefined;
  }

  /** Messages waiting, per receiver. */
  pending(): Record<string, number> {
    return Object.fromEntries([...this.queues].filter(([, q]) => q.length).map(([k, q]) => [k, q.length]));
  }

  /**
   * Stop sending (an attempt in flight is not waited for: its message stays queued and is sent
   * again after a restart) and write the state file.
   */
  async close(): Promise<void> {
    this.closed = true;
    for (const wake of [...this.sleepers.values()]) wake();
    this.persist();
    while (this.writing) await this.writing;
  }

  // ------------------------------------------------------------------ internals

  private remember(key: string): void {
    this.seen.add(key);
    // a Set iterates in insertion order: the first keys are the oldest
    const over = this.seen.size - this.o.maxSeen;
    if (over > 0) {
      let i = 0;
      for (const k of this.seen) {
        if (i++ >= over) break;
        this.seen.delete(k);
      }
    }
  }

  private kick(name: string): void {
    if (this.closed || this.running.has(name) || !this.queues.get(name)?.length) return;
    this.running.add(name);
    void this.pump(name).finally(() => this.running.delete(name));
  }

  /** Send the receiver's queue, head first; the head is retried until it goes or is dropped. */
  private async pump(name: string): Promise<void> {
    for (;;) {
      if (this.closed) return;
      const r = this.receivers.get(name);
      const q = this.queues.get(name);
      const head = q?.[0];
      if (!r || !q || !head) return;
      const log = { receiver: name, id: head.n.id, event: head.n.event };
      if (this.o.now() - head.at > this.o.maxAgeMs) {
        q.shift();
        this.log.error({ ...log, attempts: head.attempts }, 'notification dropped: not delivered in time');
        this.persist();
        continue;
      }
      head.attempts++;
      const t0 = this.o.now();
      let res: PostResult;
      try {
        res = await this.post(r, bodyFor(r.type, head.n), {
          'x-vmplace-event': head.n.event,
          'x-vmplace-delivery': head.n.id,
        });
      } catch {
        res = { ok: false, retry: true, code: 'SendFailed' };
      }
      // reconfigured or closed meanwhile: the queue decides again
      if (this.closed || this.queues.get(name)?.[0] !== head) continue;
      if (res.ok) {
        q.shift();
        this.log.info(
          { ...log, attempts: head.attempts, status: res.status, ms: this.o.now() - t0 },
          'notification delivered',
        );
        this.persist();
        continue;
      }
      const failure = {
        ...log,
        attempts: head.attempts,
        code: res.code,
        ...(res.status ? { status: res.status } : {}),
      };
      // the receiver's URL changed during the attempt: try the new one now
      if (res.retry && this.receivers.get(name)?.url.href !== r.url.href) {
        this.log.warn(failure, 'notification not delivered; the receiver changed, trying it now');
        continue;
      }
      if (!res.retry) {
        q.shift();
        this.log.error(failure, 'notification refused by its receiver: dropped');
        this.persist();
        continue;
      }
      const delay = Math.min(
        this.o.retryMaxMs,
        Math.max(
          backoffDelay(head.attempts, this.o.retryBaseMs, this.o.retryMaxMs, this.o.random),
          res.retryAfterMs ?? 0,
        ),
      );
      this.log.warn({ ...failure, retryInMs: Math.round(delay) }, 'notification not delivered; retrying');
      this.persist();
      await this.sleep(name, delay);
    }
  }

  private sleep(name: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(t);
        if (this.sleepers.get(name) === wake) this.sleepers.delete(name);
        resolve();
      };
      const t = setTimeout(wake, ms);
      this.sleepers.set(name, wake);
    });
  }

  /** Write the state file in the background; writes never overlap and the last state wins. */
  private persist(): void {
    this.dirty = true;
    if (this.writing) return;
    this.writing = (async () => {
      while (this.dirty) {
        this.dirty = false;
        const state: StateFile = {
          version: 1,
          seen: [...this.seen],
          queues: Object.fromEntries([...this.queues].filter(([, q]) => q.length)),
          episodes: this.episodes,
        };
        try {
          await fs.mkdir(path.dirname(this.opts.file), { recursive: true, mode: 0o700 });
          await writeFileAtomic(this.opts.file, JSON.stringify(state));
        } catch (err) {
          this.log.error(
            { file: this.opts.file, code: (err as NodeJS.ErrnoException).code },
            'cannot write the notification outbox',
          );
        }
      }
    })().finally(() => {
      this.writing = undefined;
      if (this.dirty) this.persist();
    });
  }
}

function matchesLabels(matchLabels: Record<string, string>, labels?: Record<string, string>): boolean {
  return Object.entries(matchLabels).every(([k, v]) => labels?.[k] === v);
}
