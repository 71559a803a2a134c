/**
 * Host literals and connection URIs: the pure checks both the manifest loader (on every Host
 * document) and the command runner (again, on every connection it opens) apply. At the bottom
 * of the layers so `exec/` need not import `manifests/`.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { quote } from './text';
import type { SshSpec } from './types';

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

const URI = /^([a-z0-9+]+):\/\/(?:([^@/?#]*)@)?(\[[^\]]*\]|[^:/?#]*)(?::([^/?#]*))?(\/[^?#]*)?([?#].*)?$/;

/** The parts of a connection URI; `host` without IPv6 brackets. */
export interface UriParts {
  scheme: string;
  user?: string;
  host: string;
  port?: number;
  path: string;
}

/** The transports vmplace accepts per scheme: the local socket and ssh (authenticated, host key checked). */
const ACCEPTED = new Set(['qemu', 'qemu+ssh', 'hyperv', 'ssh']);
/** Transports that need a remote host in the URI. */
const NEEDS_HOST = new Set(['qemu+ssh', 'hyperv', 'ssh']);

/**
 * A URI with the password of its user information replaced (`qemu+ssh://u:[REDACTED]@h/...`),
 * for messages: a rejected URI is never echoed with its secret.
 */
export function redactUri(uri: string): string {
  return uri.replace(/^([^:/?#]*:\/\/[^:@/?#]*):[^@/?#]*@/, '$1:[REDACTED]@');
}

/**
 * Split a connection URI into its parts, or say why it is not acceptable. Accepted:
 * `qemu:///system|session` (this machine), `qemu+ssh://[user@]host[:port]/system|session`,
 * and for Hyper-V `hyperv://` / `ssh://`. Refused, whatever the schema let through: any query
 * or fragment (libvirt reads `?command=`, `?netcat=`, `?proxy=`, `?socket=`, `?no_verify=`,
 * `?known_hosts=`, `?keyfile=`..., percent-encoded or not, and each of them can run a program or
 * turn host-key checking off), a password, every other transport (`qemu+tcp` has no
 * authentication, `qemu+tls`/`qemu+libssh2`/`qemu+unix` bypass the ssh options vmplace sets), a
 * host that is not a valid name or address or starts with `-`, a port outside 1-65535.
 */
export function parseConnectionUri(uri: string): { parts: UriParts } | { why: string } {
  const m = URI.exec(uri);
  if (!m) return { why: 'is not a URI of the form scheme://[user@][host][:port]/path' };
  const [, scheme = '', userinfo, rawHost = '', port, path = '', rest] = m;
  if (!ACCEPTED.has(scheme))
    return {
      why: `uses transport ${quote(scheme)}; only qemu:///system (this machine) and qemu+ssh:// are accepted`,
    };
  if (rest !== undefined)
    return {
      why: 'has ?parameters; none are accepted (vmplace adds the key, known_hosts and host-key checking from ssh:)',
    };
  if (userinfo !== undefined && userinfo.includes(':')) return { why: 'contains a password; use ssh keys' };
  if (userinfo !== undefined && !/^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/.test(userinfo))
    return { why: `has an invalid user ${quote(userinfo)}` };
  const bracketed = rawHost.startsWith('[');
  const host = bracketed ? rawHost.slice(1, -1) : rawHost;
  if (bracketed && !isIPv6(host)) return { why: `has an invalid IPv6 host ${quote(host)}` };
  if (host && !bracketed) {
    const why = checkHostLiteral(host);
    if (why) return { why: `has an invalid host ${quote(host)}: ${why}` };
  }
  let portNumber: number | undefined;
  if (port !== undefined) {
    const n = /^[0-9]{1,5}$/.test(port) ? Number(port) : NaN;
    if (!(n >= 1 && n <= 65535)) return { why: `has a port out of range 1-65535 ${quote(port)}` };
    portNumber = n;
  }
  if (NEEDS_HOST.has(scheme) && !host) return { why: `needs a host for transport ${scheme}` };
  if (scheme === 'qemu' && (host || userinfo !== undefined || port !== undefined))
    return { why: 'names a host without a transport; write qemu+ssh://host/system' };
  if (scheme.startsWith('qemu') && path !== '/system' && path !== '/session')
    return { why: 'must end in /system or /session' };
  return {
    parts: {
      scheme,
      ...(userinfo !== undefined ? { user: userinfo } : {}),
      host,
      ...(portNumber !== undefined ? { port: portNumber } : {}),
      path,
    },
  };
}

/** Why a connection URI is not acceptable (see {@link parseConnectionUri}), or `undefined`. */
export function checkUri(uri: string): string | undefined {
  const r = parseConnectionUri(uri);
  return 'why' in r ? r.why : undefined;
}

/** A host name or address in one form: lower case, no trailing dot, IPv6 without brackets, compressed. */
export function sameHostKey(h: string): string {
  const x = h.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  if (!isIPv6(x)) return x.replace(/\.$/, '');
  try {
    return new URL(`http://[${x}]/`).hostname.slice(1, -1);
  } catch {
    return x;
  }
}

/** Host names compare case-insensitively, IPv6 literals by value. */
export function sameHost(a: string, b: string): boolean {
  return sameHostKey(a) === sameHostKey(b);
}

/**
 * Why a (well-formed) URI does not fit the host's `ssh:`, or `undefined`: virsh and the file
 * operations must reach one and the same machine as the same user. A remote URI needs `ssh:`
 * (without it the file operations would run on the management box), its host must be
 * `ssh.host`, and a user or port given in both places must agree.
 */
export function checkUriAgainstSsh(uri: string, ssh: Partial<SshSpec> | undefined): string | undefined {
  const r = parseConnectionUri(uri);
  if ('why' in r) return undefined; // reported by checkUri
  const u = r.parts;
  if (!u.host) return undefined; // this machine, or through ssh: when given
  if (!ssh || typeof ssh.host !== 'string')
    return `names the remote host ${quote(u.host)} but spec.ssh is missing; file operations would run on the management box`;
  if (!sameHost(u.host, ssh.host))
    return `names host ${quote(u.host)} but spec.ssh.host is ${quote(ssh.host)}; virsh and the file operations must reach the same machine`;
  if (u.user !== undefined && typeof ssh.user === 'string' && u.user !== ssh.user)
    return `logs in as ${quote(u.user)} but spec.ssh.user is ${quote(ssh.user)}`;
  if (u.port !== undefined && typeof ssh.port === 'number' && u.port !== ssh.port)
    return `uses port ${u.port} but spec.ssh.port is ${ssh.port}`;
  return undefined;
}
