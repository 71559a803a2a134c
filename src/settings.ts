import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import Ajv2020 from 'ajv/dist/2020';
import { LineCounter, parseDocument } from 'yaml';
import { DEFAULT_POLICY, type PlanPolicy, type Problem } from './types';

/** Settings from the optional `vmplace.yaml` at the repository root. */
export interface Settings {
  policy: PlanPolicy;
}

const schema = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: 'https://vmplace.dev/schemas/vmplace-settings.schema.json',
  type: 'object',
  additionalProperties: false,
  properties: {
    policy: {
      type: 'object',
      additionalProperties: false,
      properties: {
        targetMarginBytes: { type: 'integer', minimum: 0 },
        sourceHeadroomRatio: { type: 'number', minimum: 0, maximum: 10 },
      },
    },
  },
} as const;

const validate = new Ajv2020({ allErrors: true, strict: true }).compile(schema);

/** Read `vmplace.yaml`; a missing file means defaults. Problems are returned, not thrown. */
export async function loadSettings(repo: string): Promise<{ settings: Settings; problems: Problem[] }> {
  const file = 'vmplace.yaml';
  const defaults: Settings = { policy: { ...DEFAULT_POLICY } };
  let text: string;
  try {
    text = await fs.readFile(path.join(repo, file), 'utf8');
  } catch {
    return { settings: defaults, problems: [] };
  }
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, uniqueKeys: true });
  const at = (offset: number) => lc.linePos(offset);
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
  const value: unknown = doc.toJS({ maxAliasCount: 100 }) ?? {};
  if (!validate(value)) {
    return {
      settings: defaults,
      problems: (validate.errors ?? []).map((e) => {
        const keys = e.instancePath.split('/').filter(Boolean);
        const node = doc.getIn(keys, true) as { range?: [number, number] } | undefined;
        const pos = node?.range ? at(node.range[0]) : { line: 1, col: 1 };
        const field =
          keys.join('.') || (e.params as { additionalProperty?: string }).additionalProperty || '(root)';
        return { file, line: pos.line, col: pos.col, message: `${field}: ${e.message ?? 'invalid'}` };
      }),
    };
  }
  const v = value as { policy?: Partial<PlanPolicy> };
  return { settings: { policy: { ...DEFAULT_POLICY, ...v.policy } }, problems: [] };
}
