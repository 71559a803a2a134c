/**
 * The JSON Schemas in `schemas/`, compiled once per process with ajv (draft 2020-12), and the
 * translation of ajv errors into short, field-named messages.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import Ajv2020, { type ErrorObject, type ValidateFunction } from 'ajv/dist/2020';
import addFormats from 'ajv-formats';
import { redact } from '../errors';
import { quote } from '../text';

/** {@link quote} moved to `src/text.ts` (shared below `manifests/`); re-exported for the loaders. */
export { quote };

/** The directory holding the schema files; resolves the same from `src/manifests` and `dist/manifests`. */
export const SCHEMA_DIR = path.resolve(__dirname, '../../schemas');

/** Base of every schema `$id`. */
export const SCHEMA_ID_BASE = 'https://vmplace.dev/schemas/';

/** The schema files owned by this module, by the `kind` they validate. */
export const SCHEMA_FILES = {
  Host: 'host.schema.json',
  Cluster: 'cluster.schema.json',
  VirtualMachine: 'virtualmachine.schema.json',
  VirtualMachineStatus: 'virtualmachinestatus.schema.json',
  HostStatus: 'hoststatus.schema.json',
} as const;

export type SchemaKind = keyof typeof SCHEMA_FILES;

/** A path into a document: map keys and sequence indexes. */
export type DataPath = (string | number)[];

/** One schema violation, located by data path. */
export interface SchemaFinding {
  path: DataPath;
  /** point at the key of the last path segment rather than at its value */
  atKey: boolean;
  message: string;
}

let ajv: Ajv2020 | undefined;
const validators = new Map<SchemaKind, ValidateFunction>();

/**
 * The compiled validator for `kind`. Each schema is compiled on its first use (so `validate`
 * never pays for the status schemas) and reused for the life of the process: compiling costs
 * tens of milliseconds per schema, validating a document a few microseconds. The schemas only
 * refer to their own `$defs`, so compiling one never needs another.
 */
export function getValidator(kind: SchemaKind): ValidateFunction {
  let validate = validators.get(kind);
  if (!validate) {
    ajv ??= newAjv();
    const schema = JSON.parse(fs.readFileSync(path.join(SCHEMA_DIR, SCHEMA_FILES[kind]), 'utf8')) as object;
    validate = ajv.compile(schema);
    validators.set(kind, validate);
  }
  return validate;
}

function newAjv(): Ajv2020 {
  const instance = new Ajv2020({
    allErrors: true,
    strict: true,
    // verbose: errors carry the failing data and parent schema, for "got ..." and patternErrorMessage
    verbose: true,
    // an annotation editors (VS Code, yaml-language-server) show instead of the raw regex
    keywords: ['patternErrorMessage'],
    // ajv's optimising pass over the generated code costs a third of the compile time and, for
    // these schemas, makes validation no faster (measured on 10,000 status documents)
    code: { optimize: false },
  });
  addFormats(instance);
  return instance;
}

/** Validate `data` against the schema of `kind`; returns every violation (empty when valid). */
export function validateAgainstSchema(kind: SchemaKind, data: unknown): SchemaFinding[] {
  const validate = getValidator(kind);
  if (validate(data)) return [];
  return (validate.errors ?? []).flatMap((e) => {
    const f = translateAjvError(e);
    return f ? [f] : [];
  });
}

function decodePointer(pointer: string): DataPath {
  if (pointer === '') return [];
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((s) => (/^(0|[1-9][0-9]*)$/.test(s) ? Number(s) : s));
}

/**
 * `spec.storage[0].path`; keys that are not identifiers are quoted: `metadata.labels["a b"]`.
 * Control characters are escaped, so hostile keys cannot forge output lines.
 */
export function displayPath(p: DataPath): string {
  if (p.length === 0) return 'document';
  let out = '';
  for (const seg of p) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_-]*$/.test(seg)) out += out ? `.${seg}` : seg;
    else out += `[${quote(seg)}]`;
  }
  return out;
}

function got(data: unknown): string {
  if (data === null) return ' (got null)';
  if (Array.isArray(data)) return ' (got a list)';
  if (typeof data === 'object') return ' (got a mapping)';
  // a URI's password is never echoed (`qemu+ssh://u:[REDACTED]@h/system`)
  return ` (got ${quote(typeof data === 'string' ? redact(data) : data)})`;
}

function translateAjvError(e: ErrorObject): SchemaFinding | undefined {
  const at = decodePointer(e.instancePath);
  const params = e.params as Record<string, unknown>;
  const parent = (e.parentSchema ?? {}) as Record<string, unknown>;
  // wrapper errors: the interesting error is reported separately
  if (e.keyword === 'if' || e.keyword === 'propertyNames') return undefined;
  const propertyName = (e as { propertyName?: string }).propertyName;
  if (propertyName !== undefined) {
    const why = typeof parent.patternErrorMessage === 'string' ? parent.patternErrorMessage : e.message;
    return {
      path: [...at, propertyName],
      atKey: true,
      message: `${displayPath(at)}: key ${quote(propertyName)} is not allowed: ${why}`,
    };
  }
  switch (e.keyword) {
    case 'additionalProperties': {
      const key = String(params.additionalProperty);
      const p = [...at, key];
      return { path: p, atKey: true, message: `${displayPath(p)}: unknown field` };
    }
    case 'required': {
      const p = [...at, String(params.missingProperty)];
      return { path: at, atKey: false, message: `${displayPath(p)}: missing required field` };
    }
    case 'type':
      return {
        path: at,
        atKey: false,
        message: `${displayPath(at)}: must be ${String(params.type)}${got(e.data)}`,
      };
    case 'enum': {
      const allowed = (params.allowedValues as unknown[]).map((v) => String(v)).join(', ');
      return {
        path: at,
        atKey: false,
        message: `${displayPath(at)}: must be one of ${allowed}${got(e.data)}`,
      };
    }
    case 'const':
      return {
        path: at,
        atKey: false,
        message: `${displayPath(at)}: must be ${quote(params.allowedValue)}${got(e.data)}`,
      };
    case 'pattern': {
      const why = typeof parent.patternErrorMessage === 'string' ? parent.patternErrorMessage : e.message;
      return { path: at, atKey: false, message: `${displayPath(at)}: ${why}${got(e.data)}` };
    }
    default:
      return {
        path: at,
        atKey: false,
        message: `${displayPath(at)}: ${e.message ?? e.keyword}${typeof e.data === 'object' ? '' : got(e.data)}`,
      };
  }
}
