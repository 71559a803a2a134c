/**
 * Checks on single values that a JSON Schema pattern cannot express well: IP literal ranges,
 * URI authority parts, port ranges. The schema patterns run first and keep out the characters
 * that matter for safety; these checks refine what is left. The checks of one value live in
 * `src/connection-uri.ts`, shared with `exec/`.
 */
import { checkHostLiteral, checkUri, checkUriAgainstSsh, redactUri } from '../connection-uri';
import type { DataPath, SchemaFinding } from './schemas';
import { quote } from './schemas';

/** Value checks for one Host document that passed (or partly passed) its schema. */
export function checkHostValues(data: unknown, skip: (p: DataPath) => boolean): SchemaFinding[] {
  const out: SchemaFinding[] = [];
  const spec = (data as { spec?: unknown }).spec;
  if (typeof spec !== 'object' || spec === null) return out;
  const s = spec as Record<string, unknown>;
  const check = (p: DataPath, value: unknown, fn: (v: string) => string | undefined, label: string): void => {
    if (typeof value !== 'string' || skip(p)) return;
    const why = fn(value);
    if (why)
      out.push({ path: p, atKey: false, message: `${label}: ${why} (got ${quote(redactUri(value))})` });
  };
  check(['spec', 'uri'], s.uri, (v) => checkUri(v), 'spec.uri');
  check(['spec', 'transferAddress'], s.transferAddress, checkHostLiteral, 'spec.transferAddress');
  const ssh = s.ssh;
  if (typeof ssh === 'object' && ssh !== null) {
    check(['spec', 'ssh', 'host'], (ssh as Record<string, unknown>).host, checkHostLiteral, 'spec.ssh.host');
  }
  if (typeof s.uri === 'string' && !skip(['spec', 'uri']) && !out.some((f) => f.path[1] === 'uri')) {
    const why = checkUriAgainstSsh(s.uri, typeof ssh === 'object' && ssh !== null ? ssh : undefined);
    if (why)
      out.push({
        path: ['spec', 'uri'],
        atKey: false,
        message: `spec.uri: ${why} (got ${quote(redactUri(s.uri))})`,
      });
  }
  return out;
}
