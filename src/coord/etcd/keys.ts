/**
 * Where everything lives in etcd, below one prefix (`--etcd-prefix`, default `/vmplace/`).
 * Names are URI-encoded (VM names are DNS labels already; this keeps any other value from
 * reaching into another key's range).
 *
 * | key | value | attached to |
 * |---|---|---|
 * | `members/<replica>` | who the replica is (JSON) | its lease |
 * | `locks/<vm>` | the replica holding the VM | its lease |
 * | `leader` | the replica writing hosts' status and the summary | its lease |
 * | `claims/<vm>` | a migration in flight, for the fleet-wide limits (JSON) | nothing |
 * | `claims-token` | bumped by every claim (its mod revision orders claims) | nothing |
 * | `migrations/<vm>/<id>` | the machine's snapshot (JSON, as in the state dir) | nothing |
 * | `records/<vm>/<id>/intent/<what>`, `.../owned/<hash>` | write-ahead intents and ownership | nothing |
 * | `done/<vm>` | the VM's last finished migration | nothing |
 *
 * The migration state is not attached to a lease: it must outlive its replica, so that another
 * resumes the migration from its persisted step.
 */
export class EtcdKeys {
  readonly prefix: string;

  constructor(prefix: string) {
    this.prefix = prefix.endsWith('/') ? prefix : `${prefix}/`;
  }

  members(): string {
    return `${this.prefix}members/`;
  }
  member(replica: string): string {
    return `${this.members()}${enc(replica)}`;
  }
  locks(): string {
    return `${this.prefix}locks/`;
  }
  lock(vm: string): string {
    return `${this.locks()}${enc(vm)}`;
  }
  leader(): string {
    return `${this.prefix}leader`;
  }
  claims(): string {
    return `${this.prefix}claims/`;
  }
  claim(vm: string): string {
    return `${this.claims()}${enc(vm)}`;
  }
  claimsToken(): string {
    return `${this.prefix}claims-token`;
  }
  migrations(): string {
    return `${this.prefix}migrations/`;
  }
  migration(vm: string, id: string): string {
    return `${this.migrations()}${enc(vm)}/${enc(id)}`;
  }
  records(vm: string, id: string): string {
    return `${this.prefix}records/${enc(vm)}/${enc(id)}/`;
  }
  intent(vm: string, id: string, what: string): string {
    return `${this.records(vm, id)}intent/${enc(what)}`;
  }
  owned(vm: string, id: string, hash: string): string {
    return `${this.records(vm, id)}owned/${enc(hash)}`;
  }
  done(vm: string): string {
    return `${this.prefix}done/${enc(vm)}`;
  }

  /** The last name of a key below `dir` (`members/`, `locks/`, `claims/`), decoded. */
  nameIn(dir: string, key: string): string | undefined {
    if (!key.startsWith(dir)) return undefined;
    const rest = key.slice(dir.length);
    if (rest === '' || rest.includes('/')) return undefined;
    try {
      return decodeURIComponent(rest);
    } catch {
      return undefined;
    }
  }
}

function enc(s: string): string {
  return encodeURIComponent(s);
}
