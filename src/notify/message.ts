/**
 * What a notification says, and how each receiver type wants it said. Pure: no I/O.
 *
 * A {@link Notification} is the generic webhook's body (documented in the README) and the
 * source of the Slack and Teams texts. Its `id` is the de-duplication key: one message per
 * (event, VM, migration id), or per (event, host, episode) and (event, episode) for the events
 * without a VM. Receivers may de-duplicate on it too: delivery is at least once.
 */
import { createHash } from 'node:crypto';
import type { NotificationEventName } from '../settings';

/** The generic webhook's JSON body. */
export interface Notification {
  apiVersion: 'vmplace.dev/v1alpha1';
  kind: 'Notification';
  /** the de-duplication key, also sent as `X-Vmplace-Delivery` */
  id: string;
  event: NotificationEventName;
  /** when vmplace saw it (ISO 8601) */
  time: string;
  /** the daemon replica that sent it (`--replica-id`; `solo` for one daemon) */
  replica: string;
  vm?: string;
  /** the migration's id; for a VM the plan blocks before any migration starts, `plan-<hash>` */
  migration?: string;
  from?: { host: string; storage: string[] };
  to?: { host: string; storage: string[] };
  strategy?: string;
  /** migration.completed: how long the VM did not run */
  pauseMs?: number;
  /** failed, blocked, rolled back, unreachable, git: the reason (a PascalCase constant) */
  reason?: string;
  /** a human sentence (redacted like every vmplace error message) */
  message?: string;
  /** host.unreachable */
  host?: string;
}

/** The de-duplication key of a migration event. */
export function migrationKey(event: NotificationEventName, vm: string, migration: string): string {
  return `${event}/${vm}/${migration}`;
}

/** A stable id for a VM the plan blocks: the same target and reasons give the same id. */
export function planBlockId(target: string, reasons: readonly string[]): string {
  const h = createHash('sha256')
    .update(JSON.stringify([target, [...reasons].sort()]))
    .digest('hex');
  return `plan-${h.slice(0, 12)}`;
}

const VERB: Record<NotificationEventName, string> = {
  'migration.started': 'started',
  'migration.completed': 'completed',
  'migration.failed': 'FAILED',
  'migration.blocked': 'is BLOCKED',
  'migration.rolledBack': 'was rolled back',
  'git.syncFailed': 'cannot sync git',
  'host.unreachable': 'is unreachable',
};

/** One line for a person: `vmplace: migration of web-01 completed (hv-a → hv-b, quick, pause 812 ms)`. */
export function summaryLine(n: Notification): string {
  if (n.event === 'git.syncFailed') return `vmplace (${n.replica}): ${VERB[n.event]}: ${n.reason ?? ''}`;
  if (n.event === 'host.unreachable')
    return `vmplace: host ${n.host ?? '?'} ${VERB[n.event]} (${n.reason ?? 'unknown'})`;
  const where =
    n.from && n.to
      ? `${n.from.host}${n.from.storage.length ? `/${n.from.storage.join(',')}` : ''} → ${n.to.host}${n.to.storage.length ? `/${n.to.storage.join(',')}` : ''}`
      : '';
  const parts = [where, n.strategy, n.pauseMs !== undefined ? `pause ${n.pauseMs} ms` : undefined, n.reason]
    .filter((x): x is string => Boolean(x))
    .join(', ');
  return `vmplace: migration of ${n.vm ?? '?'} ${VERB[n.event]}${parts ? ` (${parts})` : ''}`;
}

/** The request body for a receiver type. */
export function bodyFor(type: 'webhook' | 'slack' | 'teams', n: Notification): string {
  if (type === 'webhook') return JSON.stringify(n);
  const text = summaryLine(n);
  const detail = n.message ? `${text}\n${n.message}` : text;
  if (type === 'slack') {
    // Slack and Mattermost incoming webhooks: `text` is the fallback, `blocks` the rendering
    return JSON.stringify({
      text,
      blocks: [{ type: 'section', text: { type: 'mrkdwn', text: escapeSlack(detail) } }],
    });
  }
  // Teams (Workflows "post to a channel when a webhook request is received"): an Adaptive Card
  return JSON.stringify({
    type: 'message',
    summary: text,
    attachments: [
      {
        contentType: 'application/vnd.microsoft.card.adaptive',
        content: {
          $schema: 'http://adaptivecards.io/schemas/adaptive-card.json',
          type: 'AdaptiveCard',
          version: '1.4',
          body: [
            { type: 'TextBlock', text, wrap: true, weight: 'Bolder' },
            ...(n.message ? [{ type: 'TextBlock', text: n.message, wrap: true }] : []),
          ],
        },
      },
    ],
  });
}

/** Slack's three control characters; a VM name or message cannot mention `@channel`. */
function escapeSlack(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
