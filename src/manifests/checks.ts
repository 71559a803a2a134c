/**
 * Checks on single values that a JSON Schema pattern cannot express well: IP literal ranges,
 * URI authority parts, port ranges, the Windows path rules of Hyper-V storage (reserved device
 * names, 8.3 short names, trailing dots). The schema patterns run first and keep out the
 * characters that matter for safety; these checks refine what is left. The checks of one value
 * live in `src/connection-uri.ts` (shared with `exec/`) and `src/drivers/path-rules.ts` (shared
 * with the planner and the drivers).
 */
import { checkHostLiteral, checkUri, checkUriAgainstSsh, redactUri } from '../connection-uri';
import { pathRulesFor } from '../drivers/path-rules';
import type { DataPath, SchemaFinding } from './schemas';
import { quote } from './schemas';

/**
 * The storage paths of one Host or Cluster document against its driver's path rules (`driver:
 * hyperv`: Windows paths, which the schema's pattern checks only in part). POSIX paths are the
 * schema's alone, exactly as before there were two styles.
 */
export function checkStoragePathValues(data: unknown, skip: (p: DataPath) => boolean): SchemaFinding[] {
  const spec = (data as { spec?: unknown }).spec;
  if (typeof spec !== 'object' || spec === null) return [];
  const s = spec as Record<string, unknown>;
  const rules = pathRulesFor(typeof s.driver === 'string' ? s.driver : undefined);
  if (rules.style === 'posix' || !Array.isArray(s.storage)) return [];
  const out: SchemaFinding[] = [];
  s.storage.forEach((loc: unknown, i) => {
    const p: DataPath = ['spec', 'storage', i, 'path'];
    const value = (loc as { path?: unknown } | null)?.path;
    if (typeof value !== 'string' || skip(p)) return;
    const why = rules.check(value);
    if (why)
      out.push({
        path: p,
        atKey: false,
        message: `spec.storage[${i}].path: must be an absolute Windows path such as ${rules.example}: it ${why} (got ${quote(value)})`,
      });
  });
  return out;
}

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
