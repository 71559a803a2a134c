/**
 * Where status files live and what their text is: `status/vms/<name>.yaml`
 * (VirtualMachineStatus) and `status/hosts/<name>.yaml` (HostStatus), rendered in a fixed key
 * order so identical state gives byte-identical files and git sees no noise.
 */
import { Document } from 'yaml';
import type { HostStatus, VirtualMachineStatus } from '../types';

/** Directory of the status files, relative to the repository root. */
export const STATUS_DIR = 'status';

/** The subdirectory of {@link STATUS_DIR} that holds each kind. */
export const SUBDIRS = { VirtualMachineStatus: 'vms', HostStatus: 'hosts' } as const;
export type StatusKind = keyof typeof SUBDIRS;

/** Key order of each object, as declared in src/types.ts; nested objects by key. */
interface Shape {
  keys: readonly string[];
  nested?: Record<string, Shape>;
}
const WHERE: Shape = { keys: ['host', 'storage'] };
const VM_SHAPE: Shape = {
  keys: [
    'apiVersion',
    'kind',
    'metadata',
    'observedRevision',
    'placement',
    'definedOn',
    'phase',
    'conditions',
    'migration',
  ],
  nested: {
    metadata: { keys: ['name'] },
    placement: {
      keys: ['host', 'memoryBytes', 'running', 'disks'],
      nested: { disks: { keys: ['target', 'path', 'storage', 'format', 'virtualBytes', 'allocatedBytes'] } },
    },
    conditions: { keys: ['type', 'status', 'reason', 'message', 'lastTransitionTime'] },
    migration: {
      keys: [
        'id',
        'strategy',
        'from',
        'to',
        'step',
        'round',
        'bytesDone',
        'bytesTotal',
        'startedAt',
        'finishedAt',
        'pauseMs',
        'attempts',
        'lastError',
      ],
      nested: { from: WHERE, to: WHERE, lastError: { keys: ['reason', 'message'] } },
    },
  },
};
const HOST_SHAPE: Shape = {
  keys: ['apiVersion', 'kind', 'metadata', 'observedAt', 'cpu', 'storage'],
  nested: {
    metadata: { keys: ['name'] },
    cpu: { keys: ['vendor', 'model'] },
    storage: { keys: ['name', 'path', 'capacityBytes', 'freeBytes'] },
  },
};

function ordered(value: unknown, shape: Shape): unknown {
  if (Array.isArray(value)) return value.map((v) => ordered(v, shape));
  if (typeof value !== 'object' || value === null) return value;
  const src = value as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const k of shape.keys) {
    const v = src[k];
    if (v === undefined) continue;
    const sub = shape.nested?.[k];
    out[k] = sub ? ordered(v, sub) : v;
  }
  return out;
}

/**
 * Plain data of a status object in the fixed key order of src/types.ts, without undefined
 * fields and without fields the type does not declare.
 */
export function normaliseStatus<T extends VirtualMachineStatus | HostStatus>(obj: T): T {
  return ordered(obj, obj.kind === 'HostStatus' ? HOST_SHAPE : VM_SHAPE) as T;
}

/**
 * The YAML text of a status object: keys in the order of src/types.ts (not sorted), undefined
 * fields omitted, fields not in the type dropped, no timestamps or comments added, no line
 * folding. Identical input gives byte-identical output, ending with one newline.
 */
export function renderStatusYaml(obj: VirtualMachineStatus | HostStatus): string {
  const doc = new Document(normaliseStatus(obj), { version: '1.2' });
  return doc.toString({ lineWidth: 0, minContentWidth: 0, indentSeq: true, singleQuote: true });
}
