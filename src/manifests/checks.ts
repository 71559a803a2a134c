/**
 * Checks on single values that a JSON Schema pattern cannot express well: IP literal ranges,
 * URI authority parts, port ranges. The schema patterns run first and keep out the characters
 * that matter for safety; these checks refine what is left.
 */
import { isIPv4, isIPv6 } from 'node:net';
import type { DataPath, SchemaFinding } from './schemas';
import { quote } from './schemas';

/**
 * Why `s` is not a hostname, IPv4 or IPv6 literal, or `undefined` when it is one. Dotted
 * all-digit names must be real IPv4 addresses (`999.1.1.1` is refused); anything with a colon
 * must be an IPv6 address; hostnames are at most 253 characters and never start with `-`.
 */
export function checkHostLiteral(s: string): string | undefined {
  if (s.includes(':')) return isIPv6(s) ? undefined : 'is not a valid IPv6 address';
  if (/^[0-9.]+$/.test(s)) return isIPv4(s) ? undefined : 'is not a valid IPv4 address';
  if (s.length > 253) return 'is longer than 253 characters';
  if (
    !/^[A-Za-z0-9](?:[-A-Za-z0-9]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$/.test(
      s,
    )
  ) {
    return 'is not a valid hostname';
  }
  return undefined;
}

const URI = /^([a-z0-9+]+):\/\/(?:([^@/?]*)@)?(\[[^\]]*\]|[^:/?]*)(?::([^/?]*))?(\/[^?]*)?(\?.*)?$/;

/** Transports that need a remote host in the URI, and those that must not have one. */
const NEEDS_HOST = new Set(['qemu+ssh', 'qemu+tcp', 'qemu+tls', 'qemu+libssh2', 'hyperv', 'ssh']);
const NO_HOST = new Set(['qemu+unix']);

/**
 * Why a connection URI (already matched by the schema pattern for its driver) is not
 * well-formed, or `undefined`: the host part must be a valid hostname/IP and must not start with
 * `-` (it may end up as an ssh argument), the port must be 1-65535, and remote transports need a
 * host while `qemu+unix` must not have one.
 */
export function checkUri(uri: string): string | undefined {
  const m = URI.exec(uri);
  if (!m) return 'is not a URI of the form scheme://[user@][host][:port]/path';
  const [, scheme = '', , rawHost = '', port, ,] = m;
  const host = rawHost.startsWith('[') ? rawHost.slice(1, -1) : rawHost;
  if (rawHost.startsWith('[') && !isIPv6(host)) return `has an invalid IPv6 host ${quote(host)}`;
  if (host && !rawHost.startsWith('[')) {
    const why = checkHostLiteral(host);
    if (why) return `has an invalid host ${quote(host)}: ${why}`;
  }
  if (port !== undefined) {
    const n = /^[0-9]{1,5}$/.test(port) ? Number(port) : NaN;
    if (!(n >= 1 && n <= 65535)) return `has a port out of range 1-65535 ${quote(port)}`;
  }
  if (NEEDS_HOST.has(scheme) && !host) return `needs a host for transport ${scheme}`;
  if (NO_HOST.has(scheme) && host) return `must not name a host for transport ${scheme}`;
  return undefined;
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
    if (why) out.push({ path: p, atKey: false, message: `${label}: ${why} (got ${quote(value)})` });
  };
  check(['spec', 'uri'], s.uri, checkUri, 'spec.uri');
  check(['spec', 'transferAddress'], s.transferAddress, checkHostLiteral, 'spec.transferAddress');
  const ssh = s.ssh;
  if (typeof ssh === 'object' && ssh !== null) {
    check(['spec', 'ssh', 'host'], (ssh as Record<string, unknown>).host, checkHostLiteral, 'spec.ssh.host');
  }
  return out;
}
