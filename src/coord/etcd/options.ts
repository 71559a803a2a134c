import { readFileSync, statSync } from 'node:fs';
import { noop } from 'cockatiel';
import { Etcd3, type IOptions } from 'etcd3';
import { StalledError } from '../../errors';

/** How a replica reaches etcd and who it is (`vmplace daemon --etcd-*`). */
export interface EtcdOptions {
  endpoints: string[];
  /** every key below it; replicas with the same prefix share a fleet (default `/vmplace/`) */
  prefix: string;
  /** this replica's name, unique among the replicas (default: host name and pid) */
  replicaId: string;
  /** the lease's TTL (default 3 s); keepalives go every TTL/3 */
  leaseTtlMs: number;
  /** PEM files for TLS: the CA, and a client certificate and key */
  tls?: { ca: string; cert?: string; key?: string };
  /** a file holding `USER:PASSWORD` on its first line (never in arguments, never logged) */
  authFile?: string;
  /** what this replica shows others in its member key (its HTTP address) */
  advertise?: string;
}

export const DEFAULT_ETCD_PREFIX = '/vmplace/';
export const DEFAULT_LEASE_TTL_MS = 3000;
/** etcd's smallest TTL is about 1.5 election timeouts; below 2 s a lease can expire in a re-election */
export const MIN_LEASE_TTL_MS = 2000;

/**
 * `http://a:2379,https://b:2379`: each must be an http(s) URL with a host and a port, nothing
 * else (no path, no credentials: those go in `--etcd-auth-file`).
 *
 * @throws StalledError `InvalidCoordinationOptions`
 */
export function parseEndpoints(text: string): string[] {
  const out: string[] = [];
  for (const raw of text.split(',').map((s) => s.trim())) {
    if (raw === '') continue;
    let u: URL;
    try {
      u = new URL(raw);
    } catch {
      throw new StalledError(
        'InvalidCoordinationOptions',
        `--etcd-endpoints: ${JSON.stringify(raw)} is not a URL`,
      );
    }
    if ((u.protocol !== 'http:' && u.protocol !== 'https:') || !u.hostname || !u.port)
      throw new StalledError(
        'InvalidCoordinationOptions',
        `--etcd-endpoints: ${JSON.stringify(raw)} must be http(s)://HOST:PORT`,
      );
    if (u.username || u.password)
      throw new StalledError(
        'InvalidCoordinationOptions',
        '--etcd-endpoints: no credentials in URLs; use --etcd-auth-file',
      );
    if ((u.pathname !== '/' && u.pathname !== '') || u.search || u.hash)
      throw new StalledError(
        'InvalidCoordinationOptions',
        `--etcd-endpoints: ${JSON.stringify(raw)} has a path`,
      );
    out.push(`${u.protocol}//${u.host}`);
  }
  if (out.length === 0)
    throw new StalledError('InvalidCoordinationOptions', '--etcd-endpoints: no endpoint given');
  return out;
}

/** A replica name: what goes into keys and metrics labels. */
export function checkReplicaId(id: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(id))
    throw new StalledError(
      'InvalidCoordinationOptions',
      `--replica-id ${JSON.stringify(id)}: letters, digits, '.', '_' and '-', at most 63, starting with a letter or digit`,
    );
  return id;
}

/**
 * `USER:PASSWORD` from the first line of a file that only its owner may read.
 *
 * @throws StalledError `InvalidCoordinationOptions` (the password is never in the message)
 */
export function readAuthFile(file: string): { username: string; password: string } {
  let text: string;
  try {
    const st = statSync(file);
    if ((st.mode & 0o077) !== 0)
      throw new StalledError(
        'InvalidCoordinationOptions',
        `--etcd-auth-file ${file}: readable by others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`,
      );
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if (err instanceof StalledError) throw err;
    throw new StalledError('InvalidCoordinationOptions', `--etcd-auth-file ${file}: cannot read it`);
  }
  const line = text.split('\n')[0]!.replace(/\r$/, '');
  const i = line.indexOf(':');
  if (i <= 0 || i === line.length - 1)
    throw new StalledError(
      'InvalidCoordinationOptions',
      `--etcd-auth-file ${file}: the first line must be USER:PASSWORD`,
    );
  return { username: line.slice(0, i), password: line.slice(i + 1) };
}

/**
 * The etcd client: every unary call has a deadline (a cut network must fail a call, not hang
 * it: without one a put hung through a whole partition); watches have none.
 */
export function etcdClient(o: EtcdOptions): Etcd3 {
  const callMs = Math.max(500, Math.floor(o.leaseTtlMs / 3));
  const opts: IOptions = {
    hosts: o.endpoints,
    dialTimeout: callMs,
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + callMs }),
    // etcd3's default opens a circuit per member for 5 s after 3 failures: after the etcd leader
    // died, every call failed at once for 6 s (measured), longer than a 3 s lease. The global
    // policy still retries another member on a recoverable error.
    faultHandling: { host: () => noop },
    // one connection pool per client: a shared pool kept a dead member's connection in backoff
    // reconnect within a second: with gRPC's default backoff (1 s growing to 120 s) a replica
    // woken from SIGSTOP waited 50 s "for LB pick" before a keepalive got through (measured)
    grpcOptions: {
      'grpc.use_local_subchannel_pool': 1,
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1000,
    },
  };
  if (o.tls) {
    opts.credentials = {
      rootCertificate: readFileSync(o.tls.ca),
      ...(o.tls.key ? { privateKey: readFileSync(o.tls.key) } : {}),
      ...(o.tls.cert ? { certChain: readFileSync(o.tls.cert) } : {}),
    };
  }
  if (o.authFile) opts.auth = readAuthFile(o.authFile);
  return new Etcd3(opts);
}
