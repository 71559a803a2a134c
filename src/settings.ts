import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import Ajv2020 from 'ajv/dist/2020';
import { LineCounter, parseDocument } from 'yaml';
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

/** Settings from the optional `vmplace.yaml` at the repository root. */
export interface Settings {
  policy: PlanPolicy;
  limits: Limits;
  /** true: vmplace starts no migration anywhere (one in flight finishes) */
  suspend: boolean;
  maintenanceWindows: MaintenanceWindow[];
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
  };
}

/** Read `vmplace.yaml`; a missing file means defaults. Problems are returned, not thrown. */
export async function loadSettings(repo: string): Promise<{ settings: Settings; problems: Problem[] }> {
  const file = 'vmplace.yaml';
  const defaults = defaultSettings();
  let text: string;
  try {
    text = await fs.readFile(path.join(repo, file), 'utf8');
  } catch {
    return { settings: defaults, problems: [] };
  }
  if (text.length > 256 * 1024) {
    return {
      settings: defaults,
      problems: [{ file, line: 1, col: 1, message: 'file is larger than 256 KiB' }],
    };
  }
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, uniqueKeys: true });
  if (doc.errors.length) {
    return {
      settings: defaults,
      problems: doc.errors.map((e) => ({
        file,
        line: e.linePos?.[0].line ?? 1,
        col: e.linePos?.[0].col ?? 1,
        message: e.message,
      })),
    };
  }
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 100 }) ?? {};
  } catch (err) {
    return { settings: defaults, problems: [{ file, line: 1, col: 1, message: (err as Error).message }] };
  }
  const problems: Problem[] = [];
  if (!validate(value)) {
    for (const e of validate.errors ?? []) {
      const keys = e.instancePath.split('/').filter(Boolean);
      const node = doc.getIn(
        keys.map((k) => (/^[0-9]+$/.test(k) ? Number(k) : k)),
        true,
      ) as { range?: [number, number] } | undefined;
      const pos = node?.range ? lc.linePos(node.range[0]) : { line: 1, col: 1 };
      const extra = (e.params as { additionalProperty?: string }).additionalProperty;
      const field = [...keys, ...(extra ? [extra] : [])].join('.') || '(root)';
      problems.push({
        file,
        line: pos.line,
        col: pos.col,
        message: `${field}: ${extra ? 'unknown field' : e.message}`,
      });
    }
    return { settings: defaults, problems };
  }
  const v = value as {
    suspend?: boolean;
    policy?: Partial<PlanPolicy>;
    limits?: Partial<Omit<Limits, 'bandwidthBytesPerSecond'>> & { bandwidth?: string };
    maintenanceWindows?: MaintenanceWindow[];
  };
  for (const [i, w] of (v.maintenanceWindows ?? []).entries()) {
    try {
      new Intl.DateTimeFormat('en-GB', { timeZone: w.timezone ?? 'UTC' });
    } catch {
      const node = doc.getIn(['maintenanceWindows', i, 'timezone'], true) as
        { range?: [number, number] } | undefined;
      const pos = node?.range ? lc.linePos(node.range[0]) : { line: 1, col: 1 };
      problems.push({
        file,
        ...pos,
        message: `maintenanceWindows.${i}.timezone: unknown time zone ${w.timezone}`,
      });
    }
  }
  if (problems.length) return { settings: defaults, problems };
  const { bandwidth, ...limits } = v.limits ?? {};
  return {
    settings: {
      policy: { ...DEFAULT_POLICY, ...v.policy },
      limits: {
        ...DEFAULT_LIMITS,
        ...limits,
        ...(bandwidth ? { bandwidthBytesPerSecond: parseBandwidth(bandwidth) } : {}),
      },
      suspend: v.suspend ?? false,
      maintenanceWindows: v.maintenanceWindows ?? [],
    },
    problems: [],
  };
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
