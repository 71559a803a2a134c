import Ajv2020 from 'ajv/dist/2020';
import {
  DEFAULT_LIMITS as DEFAULT_READ_LIMITS,
  newBudget,
  parseYamlFile,
  readRepoFile,
  type ParsedDoc,
} from './manifests/yaml-source';
import { parseDuration } from './duration';
import { notificationFileProblem, type TrustContext } from './manifests/trust';
import { quote } from './text';
import { DEFAULT_POLICY, type PlanPolicy, type Problem } from './types';

/** A maintenance window: migrations start only inside one (one in flight finishes). */
export interface MaintenanceWindow {
  /** days the window starts on (default: every day) */
  days?: Weekday[];
  /** `HH:MM`, 24 h */
  start: string;
  /** `HH:MM`; earlier than `start` means the window runs past midnight */
  end: string;
  /** IANA time zone (default UTC) */
  timezone?: string;
}

export type Weekday = 'mon' | 'tue' | 'wed' | 'thu' | 'fri' | 'sat' | 'sun';

export interface Limits {
  /** migrations at once, overall */
  concurrent: number;
  /** migrations at once touching one host (as source or target) */
  perHost: number;
  /** migrations at once touching one storage location */
  perStorage: number;
  /** bandwidth limit per copy in bytes per second (undefined: none) */
  bandwidthBytesPerSecond?: number;
}

/** What a notification receiver may subscribe to (see `src/notify/`). */
export const NOTIFICATION_EVENTS = [
  'migration.started',
  'migration.completed',
  'migration.failed',
  'migration.blocked',
  'migration.rolledBack',
  'git.syncFailed',
  'host.unreachable',
] as const;
export type NotificationEventName = (typeof NOTIFICATION_EVENTS)[number];

/**
 * One receiver of `notifications:`. The URL is a secret: it is read from `urlFile` (outside the
 * repository, where the trust file allows; see `notificationFileProblem`), never from the
 * repository itself.
 */
export interface NotificationReceiver {
  name: string;
  /** `webhook`: vmplace's JSON, signed with `secretFile`; `slack` (also Mattermost); `teams` */
  type: 'webhook' | 'slack' | 'teams';
  urlFile: string;
  /** webhook only: HMAC-SHA256 key for `X-Vmplace-Signature-256` */
  secretFile?: string;
  events: NotificationEventName[];
  /** VM events only for VMs with all these labels (host and git events are not filtered) */
  selector?: { matchLabels: Record<string, string> };
  /** one attempt's bound, connecting included (`15s` when absent; 1 s to 10 min) */
  timeout?: string;
}

/** Settings from the optional `vmplace.yaml` at the repository root. */
export interface Settings {
  policy: PlanPolicy;
  limits: Limits;
  /** true: vmplace starts no migration anywhere (one in flight finishes) */
  suspend: boolean;
  maintenanceWindows: MaintenanceWindow[];
  notifications: NotificationReceiver[];
}

/** vMotion's limits: 2 per host, 8 per datastore; 4 overall. */
export const DEFAULT_LIMITS: Limits = { concurrent: 4, perHost: 2, perStorage: 8 };

const HHMM = '^([01][0-9]|2[0-3]):[0-5][0-9]$';
const schema = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: 'https://vmplace.dev/schemas/vmplace-settings.schema.json',
  type: 'object',
  additionalProperties: false,
  properties: {
    suspend: { type: 'boolean' },
    policy: {
      type: 'object',
      additionalProperties: false,
      properties: {
        targetMarginBytes: { type: 'integer', minimum: 0 },
        sourceHeadroomRatio: { type: 'number', minimum: 0, maximum: 10 },
        maxDeltaRounds: { type: 'integer', minimum: 1, maximum: 32 },
        quickMemory: { enum: ['live', 'paused', 'stateFile'] },
        pauseTransfer: { enum: ['ssh', 'tcp'] },
        liveEmulated: { type: 'boolean' },
      },
    },
    limits: {
      type: 'object',
      additionalProperties: false,
      properties: {
        concurrent: { type: 'integer', minimum: 1, maximum: 1000 },
        perHost: { type: 'integer', minimum: 1, maximum: 1000 },
        perStorage: { type: 'integer', minimum: 1, maximum: 1000 },
        bandwidth: { type: 'string', pattern: '^[0-9]+(\\.[0-9]+)?\\s*(B|KiB|MiB|GiB|KB|MB|GB)/s$' },
      },
    },
    maintenanceWindows: {
      type: 'array',
      maxItems: 100,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['start', 'end'],
        properties: {
          days: {
            type: 'array',
            uniqueItems: true,
            items: { enum: ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'] },
          },
          start: { type: 'string', pattern: HHMM },
          end: { type: 'string', pattern: HHMM },
          timezone: { type: 'string', pattern: '^[A-Za-z_]+(/[A-Za-z0-9_+-]+)*$', maxLength: 64 },
        },
      },
    },
    notifications: {
      type: 'array',
      maxItems: 20,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'type', 'urlFile', 'events'],
        properties: {
          name: { type: 'string', pattern: '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$' },
          type: { enum: ['webhook', 'slack', 'teams'] },
          urlFile: { type: 'string', pattern: '^/', maxLength: 4096 },
          secretFile: { type: 'string', pattern: '^/', maxLength: 4096 },
          timeout: { type: 'string', pattern: '^[1-9][0-9]{0,5}(?:ms|s|m)$' },
          events: {
            type: 'array',
            minItems: 1,
            uniqueItems: true,
            items: { enum: [...NOTIFICATION_EVENTS] },
          },
          selector: {
            type: 'object',
            additionalProperties: false,
            required: ['matchLabels'],
            properties: {
              matchLabels: {
                type: 'object',
                maxProperties: 64,
                propertyNames: { maxLength: 253 },
                additionalProperties: { type: 'string', maxLength: 63 },
              },
            },
          },
        },
      },
    },
  },
} as const;

const validate = new Ajv2020({ allErrors: true, strict: true }).compile(schema);

const UNITS: Record<string, number> = {
  B: 1,
  KiB: 1024,
  MiB: 1024 ** 2,
  GiB: 1024 ** 3,
  KB: 1e3,
  MB: 1e6,
  GB: 1e9,
};

/** `50MiB/s` → bytes per second. */
export function parseBandwidth(text: string): number {
  const m = /^([0-9]+(?:\.[0-9]+)?)\s*(B|KiB|MiB|GiB|KB|MB|GB)\/s$/.exec(text.trim());
  if (!m) throw new Error(`not a bandwidth like 50MiB/s: ${text}`);
  return Math.round(Number(m[1]) * UNITS[m[2]!]!);
}

export function defaultSettings(): Settings {
  return {
    policy: { ...DEFAULT_POLICY },
    limits: { ...DEFAULT_LIMITS },
    suspend: false,
    maintenanceWindows: [],
    notifications: [],
  };
}

/** The settings file, relative to the repository root. */
export const SETTINGS_FILE = 'vmplace.yaml';

/** Largest `vmplace.yaml` read. */
export const MAX_SETTINGS_BYTES = 256 * 1024;

/** What {@link loadSettings} found. */
export interface LoadedSettings {
  /** the settings; undefined when `vmplace.yaml` is unreadable or invalid (see `problems`) */
  settings: Settings | undefined;
  problems: Problem[];
}

/**
 * Read `vmplace.yaml`; a missing file means defaults. The file is read like manifests (see
 * `readRepoFile`: regular files only, links only inside the repository, at most
 * {@link MAX_SETTINGS_BYTES}) and parsed like them (YAML 1.2 core schema, duplicate keys and
 * alias bombs refused). Any problem, including one reading the file, gives `settings:
 * undefined`, never defaults: the caller must not lift a `suspend: true` it cannot read (a
 * long-running process keeps its last good settings, see {@link SettingsKeeper}; a one-shot
 * command stops). Problems are returned, not thrown.
 */
export async function loadSettings(
  repo: string,
  trust: Omit<TrustContext, 'repoDir'> = {},
): Promise<LoadedSettings> {
  const file = SETTINGS_FILE;
  const problems: Problem[] = [];
  const read = readRepoFile(repo, file, { maxFileBytes: MAX_SETTINGS_BYTES }, problems);
  if (read === 'missing') return { settings: defaultSettings(), problems: [] };
  if (read === undefined) return { settings: undefined, problems };
  const limits = { ...DEFAULT_READ_LIMITS, maxFileBytes: MAX_SETTINGS_BYTES };
  const ctx: TrustContext = { ...trust, repoDir: repo };
  const r = parseYamlFile(read, limits, newBudget(), problems, (docs, p) => checkSettings(docs, p, ctx));
  if (!r.ok || r.result === undefined || problems.length) {
    if (problems.length === 0) problems.push({ file, line: 1, col: 1, message: 'invalid settings' });
    return { settings: undefined, problems };
  }
  return { settings: r.result, problems: [] };
}

/** Check the parsed documents of `vmplace.yaml` (at most one) and build the settings. */
function checkSettings(docs: ParsedDoc[], problems: Problem[], trust: TrustContext): Settings | undefined {
  if (docs.length > 1) {
    problems.push({ ...docs[1]!.locate([]), message: 'vmplace.yaml holds one document; found more' });
    return undefined;
  }
  const doc = docs[0];
  const value: unknown = doc?.data ?? {};
  const at = (p: (string | number)[], atKey = false) =>
    doc ? doc.locate(p, atKey) : { file: SETTINGS_FILE, line: 1, col: 1 };
  if (!validate(value)) {
    for (const e of (validate.errors ?? []).slice(0, 20)) {
      const keys = e.instancePath
        .split('/')
        .filter(Boolean)
        .map((k) => (/^[0-9]+$/.test(k) ? Number(k) : k));
      const extra = (e.params as { additionalProperty?: string }).additionalProperty;
      const field = [...keys, ...(extra ? [extra] : [])].join('.') || '(root)';
      problems.push({
        ...(extra ? at([...keys, extra], true) : at(keys)),
        message: `${field}: ${extra ? 'unknown field' : e.message}`,
      });
    }
    return undefined;
  }
  const v = value as {
    suspend?: boolean;
    policy?: Partial<PlanPolicy>;
    limits?: Partial<Omit<Limits, 'bandwidthBytesPerSecond'>> & { bandwidth?: string };
    maintenanceWindows?: MaintenanceWindow[];
    notifications?: NotificationReceiver[];
  };
  let ok = true;
  const names = new Set<string>();
  for (const [i, n] of (v.notifications ?? []).entries()) {
    const bad = (key: string, message: string): void => {
      problems.push({ ...at(['notifications', i, key]), message: `notifications.${i}.${key}: ${message}` });
      ok = false;
    };
    if (names.has(n.name)) bad('name', `receiver ${n.name} is named twice`);
    names.add(n.name);
    if (n.secretFile !== undefined && n.type !== 'webhook')
      bad('secretFile', `only a webhook receiver signs its messages (this one is ${n.type})`);
    if (n.timeout !== undefined) {
      const ms = parseDuration(n.timeout);
      if (ms < 1000 || ms > 600_000) bad('timeout', `${n.timeout} is outside 1s to 10m`);
    }
    for (const key of ['urlFile', 'secretFile'] as const) {
      const file = n[key];
      if (file === undefined) continue;
      const why = notificationFileProblem(file, trust);
      if (why) bad(key, `${quote(file)} ${why}`);
    }
  }
  for (const [i, w] of (v.maintenanceWindows ?? []).entries()) {
    try {
      new Intl.DateTimeFormat('en-GB', { timeZone: w.timezone ?? 'UTC' });
    } catch {
      problems.push({
        ...at(['maintenanceWindows', i, 'timezone']),
        message: `maintenanceWindows.${i}.timezone: unknown time zone ${w.timezone}`,
      });
      ok = false;
    }
  }
  if (!ok) return undefined;
  const { bandwidth, ...limits } = v.limits ?? {};
  return {
    policy: { ...DEFAULT_POLICY, ...v.policy },
    limits: {
      ...DEFAULT_LIMITS,
      ...limits,
      ...(bandwidth ? { bandwidthBytesPerSecond: parseBandwidth(bandwidth) } : {}),
    },
    suspend: v.suspend ?? false,
    maintenanceWindows: v.maintenanceWindows ?? [],
    notifications: v.notifications ?? [],
  };
}

/**
 * The settings a long-running process applies. While `vmplace.yaml` is unreadable or invalid it
 * keeps the last good settings (so a broken edit cannot lift a `suspend: true`), and before any
 * good read it applies the defaults with `suspend: true`: nothing new starts until the file is
 * fixed. Either way one problem says which settings are in force.
 */
export class SettingsKeeper {
  private lastGood: Settings | undefined;

  /** The settings to apply for `loaded`, and the problems to report (those of `loaded` first). */
  update(loaded: LoadedSettings): { settings: Settings; problems: Problem[] } {
    if (loaded.settings !== undefined && loaded.problems.length === 0) {
      this.lastGood = loaded.settings;
      return { settings: loaded.settings, problems: [] };
    }
    const kept = this.lastGood;
    const settings = kept ?? { ...defaultSettings(), suspend: true };
    const message = kept
      ? `not applied: keeping the last good settings (suspend: ${kept.suspend}) until ${SETTINGS_FILE} is fixed`
      : `not applied: no good settings read yet, so no migration starts (suspend: true) until ${SETTINGS_FILE} is fixed`;
    return {
      settings,
      problems: [...loaded.problems, { file: SETTINGS_FILE, line: 1, col: 1, message }],
    };
  }
}

const WEEKDAYS: Weekday[] = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];

/** True when `now` lies inside a maintenance window, or when none is configured. Pure. */
export function insideMaintenanceWindow(windows: readonly MaintenanceWindow[], now: Date): boolean {
  if (windows.length === 0) return true;
  return windows.some((w) => {
    const parts = new Intl.DateTimeFormat('en-GB', {
      timeZone: w.timezone ?? 'UTC',
      weekday: 'short',
      hour: '2-digit',
      minute: '2-digit',
      hourCycle: 'h23',
    }).formatToParts(now);
    const get = (t: string): string => parts.find((p) => p.type === t)?.value ?? '';
    const minutes = Number(get('hour')) * 60 + Number(get('minute'));
    const day = get('weekday').toLowerCase().slice(0, 3) as Weekday;
    const toMin = (hhmm: string): number => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5));
    const start = toMin(w.start);
    const end = toMin(w.end);
    const days = w.days ?? WEEKDAYS;
    if (start <= end) return days.includes(day) && minutes >= start && minutes < end;
    // past midnight: the part after midnight belongs to the window that started the day before
    const yesterday = WEEKDAYS[(WEEKDAYS.indexOf(day) + 6) % 7]!;
    return (days.includes(day) && minutes >= start) || (days.includes(yesterday) && minutes < end);
  });
}
