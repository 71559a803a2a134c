/**
 * What manifests may name, decided outside the repository: the rules that always hold (storage
 * is never a system directory or vmplace's own state, key files never come from the checkout)
 * and the operator's trust file (`/etc/vmplace/trust.yaml` by default, `--trust-file`), which
 * bounds storage paths, ssh key and known_hosts files, and host addresses. A pull request can
 * change the manifests; it cannot change these bounds.
 */
import * as fs from 'node:fs';
import { BlockList, isIP, isIPv4 } from 'node:net';
import * as path from 'node:path';
import { parseDocument } from 'yaml';
import { StalledError } from '../errors';
import { isInside, normaliseAbsolute } from '../drivers/paths';
import { pathRulesFor, WINDOWS_RULES } from '../drivers/path-rules';
import { checkHostLiteral, parseConnectionUri } from '../connection-uri';
import type { DataPath, SchemaFinding } from './schemas';
import { quote } from './schemas';

/** Read when present; `--trust-file` names another. */
export const DEFAULT_TRUST_FILE = '/etc/vmplace/trust.yaml';
/** The daemon's defaults, reserved even when a command is not given them. */
export const DEFAULT_STATE_DIR = '/var/lib/vmplace';
export const DEFAULT_WORKDIR = '/var/lib/vmplace/repo';
/** Where notification URL and secret files live unless the trust file says otherwise. */
export const DEFAULT_NOTIFICATION_DIR = '/etc/vmplace/notifications';
/** Largest trust file read. */
const MAX_TRUST_FILE_BYTES = 64 * 1024;

/** The operator's bounds; a field left out bounds nothing. */
export interface TrustPolicy {
  /** where it was read from, for messages */
  file: string;
  /**
   * storage paths (Host and Cluster `spec.storage[].path`) must be one of these or inside one;
   * POSIX entries bound libvirt storage, Windows entries (`D:\VMs`) bound Hyper-V storage
   */
  storagePaths?: string[];
  /** `ssh.identityFile` and `ssh.knownHostsFile` must be one of these or inside one */
  sshFiles?: string[];
  /**
   * `ssh.host`, the URI's host and `transferAddress` must match one: an IP address, a CIDR
   * (`10.0.1.0/24`, `fd00::/8`), a host name (exact, case-insensitive; names are not resolved),
   * `*.example.net` (any name below), or `localhost` (allows hosts without `ssh:`, i.e. the
   * management box itself). Without `localhost` in the list, a Host without `ssh:` is refused.
   */
  hosts?: string[];
  /**
   * `notifications[].urlFile` and `secretFile` in `vmplace.yaml` must be inside one of these
   * (default {@link DEFAULT_NOTIFICATION_DIR} alone): the files hold webhook URLs and signing
   * secrets, which a pull request must not be able to point at another file (a private key,
   * `/etc/shadow`).
   */
  notificationFiles?: string[];
}

/** Everything the always-on rules and the trust file need to check one load. */
export interface TrustContext {
  /** the checkout being loaded: key files must not be in it, storage must not be in it */
  repoDir: string;
  /** vmplace's state directory (default {@link DEFAULT_STATE_DIR}) */
  stateDir?: string;
  /** the daemon's clone (default {@link DEFAULT_WORKDIR}) */
  workdir?: string;
  policy?: TrustPolicy;
}

/**
 * Directories whose contents belong to the system: a storage path may be none of them and lie
 * inside none of them. (`/var/lib/libvirt/images` is libvirt's default pool and allowed; its
 * siblings hold libvirt's own state: domain save files, NVRAM, TPM state, leases.)
 */
const SYSTEM_TREES = [
  '/etc',
  '/root',
  '/boot',
  '/usr',
  '/bin',
  '/sbin',
  '/lib',
  '/lib32',
  '/lib64',
  '/libx32',
  '/proc',
  '/sys',
  '/dev',
  '/run',
  '/var/run',
  '/var/log',
  '/var/lib/libvirt/qemu',
  '/var/lib/libvirt/swtpm',
  '/var/lib/libvirt/dnsmasq',
  '/var/lib/libvirt/network',
  '/var/lib/libvirt/lxc',
  '/var/lib/libvirt/boot',
  '/var/lib/libvirt/sanlock',
  '/var/lib/libvirt/lockd',
];
/** Directories a storage path may lie inside but must not be or contain. */
const CONTAINERS = ['/home', '/var/lib/libvirt', '/tmp', '/var/tmp', '/srv', '/mnt', '/media', '/opt'];

/**
 * The same on a Hyper-V host, below any volume (Windows need not live on `C:`): folders of the
 * system and of installed programs, and Hyper-V's own configuration under `ProgramData`, are
 * never storage; `ProgramData\Microsoft\Windows\Virtual Hard Disks`, Hyper-V's default
 * folder for disks, is allowed (as libvirt's `images` is).
 */
const WINDOWS_SYSTEM_TREES = [
  'Windows',
  'Program Files',
  'Program Files (x86)',
  'ProgramData',
  'System Volume Information',
  '$Recycle.Bin',
  'Recovery',
  'Boot',
  'EFI',
];
const WINDOWS_ALLOWED_SYSTEM_SUBTREES = ['ProgramData\\Microsoft\\Windows\\Virtual Hard Disks'];
/** Folders a Hyper-V storage path may lie inside but must not be (`C:\ClusterStorage\Volume1`, not `C:\ClusterStorage`). */
const WINDOWS_CONTAINERS = ['Users', 'ClusterStorage'];

/**
 * Findings for one Host or Cluster document (data already passed its schema where `skip` says
 * nothing): the always-on rules, then the trust file's bounds. Each finding names the field.
 */
export function checkTrust(
  kind: 'Host' | 'Cluster',
  data: unknown,
  ctx: TrustContext,
  skip: (p: DataPath) => boolean,
): SchemaFinding[] {
  const out: SchemaFinding[] = [];
  const spec = (data as { spec?: unknown }).spec;
  if (typeof spec !== 'object' || spec === null) return out;
  const s = spec as Record<string, unknown>;
  const add = (p: DataPath, message: string): void => {
    out.push({ path: p, atKey: false, message });
  };
  const policy = ctx.policy;
  const from = policy ? ` (trust file ${policy.file})` : '';
  const windows = pathRulesFor(typeof s.driver === 'string' ? s.driver : undefined).style === 'windows';

  if (Array.isArray(s.storage)) {
    s.storage.forEach((loc: unknown, i) => {
      const p: DataPath = ['spec', 'storage', i, 'path'];
      const value = (loc as { path?: unknown } | null)?.path;
      if (typeof value !== 'string' || skip(p)) return;
      const why = windows ? windowsStorageProblem(value) : storageProblem(value, ctx);
      const allowedBy = (r: string): boolean =>
        windows ? WINDOWS_RULES.isAtOrInside(value, r) : isInside(value, r, { allowRoot: true });
      if (why) add(p, `spec.storage[${i}].path: ${quote(value)} ${why}`);
      else if (policy?.storagePaths && !policy.storagePaths.some(allowedBy))
        add(
          p,
          `spec.storage[${i}].path: ${quote(value)} is outside the storage paths the operator allows${from}: ${policy.storagePaths.join(', ')}`,
        );
    });
  }
  if (kind !== 'Host') return out;

  const ssh = typeof s.ssh === 'object' && s.ssh !== null ? (s.ssh as Record<string, unknown>) : undefined;
  for (const field of ['identityFile', 'knownHostsFile'] as const) {
    const p: DataPath = ['spec', 'ssh', field];
    const value = ssh?.[field];
    if (typeof value !== 'string' || skip(p)) continue;
    if (insideRepo(value, ctx.repoDir))
      add(
        p,
        `spec.ssh.${field}: ${quote(value)} is inside the repository; keys and known_hosts must come from the operator, not from the manifests' checkout`,
      );
    else if (policy?.sshFiles && !policy.sshFiles.some((r) => isInside(value, r, { allowRoot: true })))
      add(
        p,
        `spec.ssh.${field}: ${quote(value)} is outside the ssh files the operator allows${from}: ${policy.sshFiles.join(', ')}`,
      );
  }

  if (policy?.hosts) {
    const allowed = hostMatcher(policy.hosts);
    const names: [DataPath, unknown][] = [
      [['spec', 'ssh', 'host'], ssh?.host],
      [['spec', 'transferAddress'], s.transferAddress],
    ];
    if (typeof s.uri === 'string') {
      const r = parseConnectionUri(s.uri);
      if ('parts' in r && r.parts.host) names.push([['spec', 'uri'], r.parts.host]);
    }
    for (const [p, value] of names) {
      if (typeof value !== 'string' || skip(p)) continue;
      if (!allowed(value))
        add(
          p,
          `${p.join('.')}: host ${quote(value)} is not one the operator allows${from}: ${policy.hosts.join(', ')}`,
        );
    }
    if (!ssh && !skip(['spec', 'uri']) && !allowed('localhost'))
      add(
        ['spec', 'uri'],
        `spec.uri: a Host without ssh: is the management box itself, which the operator does not allow${from} (add localhost to hosts to allow it)`,
      );
  }
  return out;
}

/** Why a storage path is never acceptable, or `undefined`. */
export function storageProblem(value: string, ctx: Omit<TrustContext, 'policy'>): string | undefined {
  const p = normaliseAbsolute(value);
  if (p === undefined) return undefined; // the schema reports it
  if (p === '/') return 'is the root directory';
  for (const t of SYSTEM_TREES) {
    if (isInside(p, t, { allowRoot: true })) return `is a system directory (${t})`;
    if (isInside(t, p)) return `contains the system directory ${t}`;
  }
  for (const c of CONTAINERS) if (p === c) return `is ${c} itself; name a directory inside it`;
  const stateDir = ctx.stateDir ?? DEFAULT_STATE_DIR;
  if (isInside(stateDir, p, { allowRoot: true }))
    return `is or contains vmplace's state directory ${stateDir}`;
  for (const sub of ['migrations', 'done', 'intents', 'notifications']) {
    const own = path.posix.join(stateDir, sub);
    if (isInside(p, own, { allowRoot: true })) return `is inside vmplace's own state (${own})`;
  }
  const workdir = ctx.workdir ?? DEFAULT_WORKDIR;
  for (const [what, dir] of [
    ["the daemon's clone", workdir],
    ['the repository', ctx.repoDir],
  ] as const) {
    for (const form of pathForms(dir)) {
      if (isInside(p, form, { allowRoot: true }) || isInside(form, p)) return `overlaps ${what} (${form})`;
    }
  }
  return undefined;
}

/**
 * Why a Hyper-V storage path (accepted by the Windows path rules) is never acceptable, or
 * `undefined`: a system folder of any volume, a bare container, an administrative share
 * (`\\server\C$` is a whole volume). vmplace's own directories (state, clone, repository) are
 * on the management box, which a Hyper-V host never is: its URI always names a remote host.
 */
export function windowsStorageProblem(value: string): string | undefined {
  if (WINDOWS_RULES.check(value) !== undefined) return undefined; // the path rules report it
  const drive = /^([A-Za-z]:)\\/.exec(value)?.[1];
  if (drive === undefined) {
    const share = value.slice(2).split('\\')[1] ?? '';
    return share.endsWith('$')
      ? `is on the administrative share ${quote(share)}; name a share made for virtual machines`
      : undefined;
  }
  const under = (rel: string): string => `${drive}\\${rel}`;
  if (WINDOWS_ALLOWED_SYSTEM_SUBTREES.some((t) => WINDOWS_RULES.isAtOrInside(value, under(t))))
    return undefined;
  for (const t of WINDOWS_SYSTEM_TREES)
    if (WINDOWS_RULES.isAtOrInside(value, under(t))) return `is a system directory (${under(t)})`;
  for (const c of WINDOWS_CONTAINERS)
    if (WINDOWS_RULES.key(value) === WINDOWS_RULES.key(under(c)))
      return `is ${under(c)} itself; name a directory inside it`;
  return undefined;
}

/** A path and, when it differs, its real path (the checkout may be reached through a symlink). */
function pathForms(dir: string): string[] {
  const abs = path.resolve(dir);
  const forms = [abs];
  try {
    const real = fs.realpathSync(abs);
    if (real !== abs) forms.push(real);
  } catch {
    // missing: the lexical form is all there is
  }
  return forms;
}

function insideRepo(file: string, repoDir: string): boolean {
  const p = normaliseAbsolute(file);
  if (p === undefined) return false;
  const forms = [p];
  try {
    forms.push(fs.realpathSync(p));
  } catch {
    // a missing key file: its lexical place decides
  }
  return pathForms(repoDir).some((r) => forms.some((f) => isInside(f, r, { allowRoot: true })));
}

/**
 * Why `vmplace.yaml` may not name `file` as a notification URL or secret file, or `undefined`.
 * It must be absolute and normalised, inside a directory the operator allows (the trust file's
 * `notificationFiles`, default {@link DEFAULT_NOTIFICATION_DIR}), and neither inside the
 * repository, the daemon's clone nor vmplace's state; when it exists, its real path (after
 * symbolic links) must be allowed too. Nothing of the file is read here.
 */
export function notificationFileProblem(file: string, ctx: TrustContext): string | undefined {
  const p = normaliseAbsolute(file);
  if (p === undefined || p !== file || p === '/') return 'must be an absolute, normalised path';
  const roots = ctx.policy?.notificationFiles ?? [DEFAULT_NOTIFICATION_DIR];
  const from = ctx.policy?.notificationFiles
    ? `the trust file's notificationFiles (${ctx.policy.file})`
    : `the default ${DEFAULT_NOTIFICATION_DIR} (set notificationFiles in the trust file to change it)`;
  const forms = [p];
  try {
    const real = fs.realpathSync(p);
    if (real !== p) forms.push(real);
  } catch {
    // missing: its lexical place decides now; it is checked again when it is read
  }
  const own: [string, string][] = [
    ['the repository', ctx.repoDir],
    ["the daemon's clone", ctx.workdir ?? DEFAULT_WORKDIR],
    ["vmplace's state directory", ctx.stateDir ?? DEFAULT_STATE_DIR],
  ];
  for (const f of forms) {
    for (const [what, dir] of own)
      if (pathForms(dir).some((d) => isInside(f, d, { allowRoot: true })))
        return `is inside ${what}; notification secrets come from the operator, not from a checkout`;
    if (!roots.some((r) => isInside(f, r, { allowRoot: true })))
      return `${f === p ? '' : `(really ${quote(f)}) `}is outside the directories allowed by ${from}: ${roots.join(', ')}`;
  }
  return undefined;
}

/** A predicate for host entries of a trust file (see {@link TrustPolicy.hosts}). */
export function hostMatcher(entries: readonly string[]): (host: string) => boolean {
  const blocks = new BlockList();
  const names = new Set<string>();
  const suffixes: string[] = [];
  for (const e of entries) {
    const cidr = /^(.+)\/(\d{1,3})$/.exec(e);
    if (cidr && isIP(cidr[1]!))
      blocks.addSubnet(cidr[1]!, Number(cidr[2]), isIPv4(cidr[1]!) ? 'ipv4' : 'ipv6');
    else if (isIP(e)) blocks.addAddress(e, isIPv4(e) ? 'ipv4' : 'ipv6');
    else if (e.startsWith('*.')) suffixes.push(e.slice(1).toLowerCase());
    else names.add(e.toLowerCase().replace(/\.$/, ''));
  }
  return (host: string): boolean => {
    const h = host.replace(/^\[(.*)\]$/, '$1');
    if (isIP(h)) return blocks.check(h, isIPv4(h) ? 'ipv4' : 'ipv6');
    const n = h.toLowerCase().replace(/\.$/, '');
    return names.has(n) || suffixes.some((sfx) => n.endsWith(sfx) && n.length > sfx.length);
  };
}

const POLICY_KEYS = new Set(['apiVersion', 'kind', 'storagePaths', 'sshFiles', 'hosts', 'notificationFiles']);

/**
 * Read the trust file: `file` when given (it must exist), else {@link DEFAULT_TRUST_FILE} when
 * present. A file that is not a regular file, is writable by group or others, is larger than
 * 64 KiB or does not parse is an error: the bounds fail closed, never open.
 *
 * @throws StalledError `TrustFileUnreadable`, `TrustFileUnsafe`, `TrustFileInvalid`.
 */
export function loadTrustPolicy(file?: string): TrustPolicy | undefined {
  const f = path.resolve(file ?? DEFAULT_TRUST_FILE);
  let st: fs.Stats;
  try {
    st = fs.statSync(f);
  } catch (err) {
    if (file === undefined && (err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new StalledError('TrustFileUnreadable', `trust file ${f}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (!st.isFile()) throw new StalledError('TrustFileUnsafe', `trust file ${f} is not a regular file`);
  if (st.mode & 0o022)
    throw new StalledError(
      'TrustFileUnsafe',
      `trust file ${f} is writable by group or others; chmod go-w it`,
    );
  if (st.size > MAX_TRUST_FILE_BYTES)
    throw new StalledError(
      'TrustFileInvalid',
      `trust file ${f} is larger than ${MAX_TRUST_FILE_BYTES} bytes`,
    );
  return parseTrustPolicy(fs.readFileSync(f, 'utf8'), f);
}

/** Parse and check a trust file's text. @throws StalledError `TrustFileInvalid`. */
export function parseTrustPolicy(text: string, file: string): TrustPolicy {
  const bad = (msg: string): never => {
    throw new StalledError('TrustFileInvalid', `trust file ${file}: ${msg}`);
  };
  const doc = parseDocument(text, { uniqueKeys: true });
  if (doc.errors.length) bad(doc.errors[0]!.message.split('\n')[0]!);
  const data: unknown = doc.toJS({ maxAliasCount: 0 });
  if (typeof data !== 'object' || data === null || Array.isArray(data)) return bad('must be a mapping');
  const o = data as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!POLICY_KEYS.has(k)) bad(`unknown field ${quote(k)}`);
  if (o.apiVersion !== 'vmplace.dev/v1alpha1') bad('apiVersion must be vmplace.dev/v1alpha1');
  if (o.kind !== 'TrustPolicy') bad('kind must be TrustPolicy');
  const list = (key: string, check: (v: string) => string | undefined): string[] | undefined => {
    const v = o[key];
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || v.length > 1000) return bad(`${key} must be a list (at most 1000 entries)`);
    return v.map((e: unknown, i) => {
      if (typeof e !== 'string') return bad(`${key}[${i}] must be a string`);
      const why = check(e);
      return why ? bad(`${key}[${i}] ${quote(e)} ${why}`) : e;
    });
  };
  const absolute = (v: string): string | undefined =>
    normaliseAbsolute(v) === v && v !== '/' ? undefined : 'must be an absolute, normalised path other than /';
  const hostEntry = (v: string): string | undefined => {
    const cidr = /^(.+)\/(\d{1,3})$/.exec(v);
    if (cidr) {
      const ip = cidr[1]!;
      const max = isIPv4(ip) ? 32 : isIP(ip) ? 128 : -1;
      return max >= 0 && Number(cidr[2]) <= max ? undefined : 'is not a valid CIDR';
    }
    const name = v.startsWith('*.') ? v.slice(2) : v;
    const why = checkHostLiteral(name);
    return why ? `is not an IP address, CIDR, host name or *.domain: ${why}` : undefined;
  };
  // storage may be a Hyper-V host's: a Windows path in normal form bounds Windows storage
  const storageRoot = (v: string): string | undefined => {
    if (!WINDOWS_RULES.isAbsolute(v)) return absolute(v);
    const why = WINDOWS_RULES.check(v);
    return why === undefined ? undefined : `must be an absolute Windows path in normal form: it ${why}`;
  };
  const policy: TrustPolicy = { file };
  const storagePaths = list('storagePaths', storageRoot);
  const sshFiles = list('sshFiles', absolute);
  const hosts = list('hosts', hostEntry);
  const notificationFiles = list('notificationFiles', absolute);
  if (notificationFiles) policy.notificationFiles = notificationFiles;
  if (storagePaths) policy.storagePaths = storagePaths;
  if (sshFiles) policy.sshFiles = sshFiles;
  if (hosts) policy.hosts = hosts;
  return policy;
}
