/**
 * What every part of the Hyper-V driver shares: the host's name and storage locations, the
 * PowerShell runner with the one place its failures are routed (`run`, `routeError`), the wait
 * for Hyper-V's background work, the path guard (`guardPath`, with the paths it trusted lately),
 * `fileInfo`, the host's information (asked once) and the driver's settings (defaults applied
 * here, see `HyperVDriverOptions`). `HyperVDriver` builds one per host; the functions in
 * `seen.ts`, `observe.ts`, `layers.ts`, `lifecycle.ts`, `migrate.ts` and `files.ts` take it as
 * their first argument.
 */
import type { Logger } from 'pino';

import { CommandError, StalledError, VmplaceError } from '../../errors';
import { WINDOWS_RULES } from '../path-rules';
import { checkWindowsPath, isInsideWindows } from '../windows-paths';
import type { HyperVDriverOptions } from './driver';
import * as parse from './parsers';
import type { HvFileInfo, HvHostInfo } from './parsers';
import { PowerShellError, PowerShellRunner, type RawCommandRunner } from './runner';
import * as scripts from './scripts';

/** How long a path that passed the host-side guard stays trusted (the steps inside a pause touch the same few paths). */
const GUARD_TTL_MS = 10_000;

/** The same Windows path, without regard to case; never for a path that is missing. */
export const same = (a: string | undefined, b: string | undefined): boolean =>
  a !== undefined && b !== undefined && WINDOWS_RULES.key(a) === WINDOWS_RULES.key(b);

const sleepFor = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class HyperVContext {
  readonly hostName: string;
  readonly raw: RawCommandRunner;
  readonly roots: readonly string[];
  readonly log: Logger | undefined;
  readonly quickMs: number;
  readonly pollMs: number;
  readonly maxWaitMs: number;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly ps: PowerShellRunner;
  /** path -> when it last passed the host-side guard */
  private readonly guarded = new Map<string, number>();
  private hostInfoCache: Promise<HvHostInfo> | undefined;

  /** `raw` runs the command lines; `roots` are the declared storage locations, already checked. */
  constructor(
    hostName: string,
    raw: RawCommandRunner,
    roots: readonly string[],
    opts: Pick<HyperVDriverOptions, 'logger' | 'quickTimeoutMs' | 'pollMs' | 'maxWaitMs' | 'sleep'>,
  ) {
    this.hostName = hostName;
    this.raw = raw;
    this.roots = roots;
    this.log = opts.logger;
    this.quickMs = opts.quickTimeoutMs ?? 120_000;
    this.pollMs = opts.pollMs ?? 1000;
    this.maxWaitMs = opts.maxWaitMs ?? 24 * 3600_000;
    this.sleep = opts.sleep ?? sleepFor;
    this.ps = new PowerShellRunner(this.raw);
  }

  /**
   * Run one script of scripts.ts (named `operation` in errors and logs) and read its answer with
   * `read`; errors go through {@link routeError}. `timeoutMs: null`: no timeout (moves, copies).
   */
  async run<T>(
    operation: string,
    script: string,
    read: (result: unknown[]) => T,
    opts: { timeoutMs?: number | null; signal?: AbortSignal } = {},
  ): Promise<T> {
    const t0 = Date.now();
    try {
      const result = await this.ps.run(operation, script, {
        ...(opts.timeoutMs === null ? {} : { timeoutMs: opts.timeoutMs ?? this.quickMs }),
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
      this.log?.debug({ op: operation, ms: Date.now() - t0 }, 'powershell finished');
      return read(result);
    } catch (err) {
      this.log?.debug({ op: operation, ms: Date.now() - t0, err }, 'powershell failed');
      throw this.routeError(err, operation);
    }
  }

  /**
   * The one place a failure of a script becomes what happens next (see the file comment of
   * driver.ts). The ssh client's own failures (exit 255: no connection, refused key, unknown host
   * key) name the host; a script's error ids and categories are the scripts' and Hyper-V's, never
   * its message.
   */
  routeError(err: unknown, operation: string): unknown {
    if (err instanceof PowerShellError) {
      const where = `${operation} on ${this.hostName}`;
      switch (err.errorId) {
        case 'VmNotFound':
          return new VmplaceError('DomainNotFound', `${where}: no VM of that name`, { cause: err });
        case 'VmNameAmbiguous':
          return new StalledError(
            'VmNameAmbiguous',
            `${where}: several VMs have that name; vmplace acts on one VM only`,
            { cause: err },
          );
        case 'VmIsActive':
          return new StalledError('DomainRunning', `${where}: the VM is neither off nor saved`, {
            cause: err,
          });
        case 'FileExists':
          return new StalledError(
            'FileExists',
            `${where}: the name exists; vmplace writes only files it creates`,
            {
              cause: err,
            },
          );
        case 'LinkFailed':
          return new StalledError(
            'NotSupportedByDriver',
            `${where}: the asked name could not be made a hard link of Hyper-V's file (a hard link needs both names on one NTFS or ReFS volume): ${err.message}`,
            { cause: err },
          );
        case 'BadPath':
          return new StalledError('UnsafeScriptValue', `${where}: ${err.message}`, { cause: err });
        default:
          break;
      }
      if (
        err.category === 'PermissionDenied' ||
        /UnauthorizedAccessException$/.test(err.exceptionType) ||
        err.errorId === 'UnauthorizedAccess'
      )
        return new StalledError(
          'AccessDenied',
          `${where}: access denied; the account vmplace logs in as needs Hyper-V Administrators and Administrators (docs/hyperv.md): ${err.stderr}`,
          { cause: err },
        );
      return err;
    }
    if (err instanceof CommandError && err.exitCode === 255 && err.command[0]?.startsWith('ssh:'))
      return new VmplaceError(
        'HostUnreachable',
        `Hyper-V host ${this.hostName} (${this.raw.label}) does not answer over ssh: ${err.stderr || 'no reason given'}`,
        { cause: err },
      );
    return err;
  }

  /** Poll `check` every `pollMs` until it says done; gives up (retried later) after `maxWaitMs`. */
  async waitUntil(what: string, check: () => Promise<boolean>): Promise<void> {
    const t0 = Date.now();
    for (;;) {
      if (await check()) return;
      if (Date.now() - t0 > this.maxWaitMs)
        throw new VmplaceError(
          'CommandTimedOut',
          `${what} on ${this.hostName} still runs after ${this.maxWaitMs} ms`,
        );
      await this.sleep(this.pollMs);
    }
  }

  /**
   * Lexically (windows-paths.ts): a Windows path in normal form strictly inside a declared storage
   * location (`allowRoot`: or the location itself), compared without regard to case. On the host
   * (pathAttributes, one round trip, trusted for 10 s): no existing part of the path below that
   * location is a reparse point (symbolic link, junction, mount point); the location itself and
   * what is above it are the administrator's (a CSV is a mount point). Else `PathOutsideStorage`.
   */
  async guardPath(path: string, opts: { allowRoot?: boolean } = {}): Promise<void> {
    const root = this.rootOf(path, opts);
    const key = `${opts.allowRoot ? 'root:' : ''}${WINDOWS_RULES.key(path)}`;
    const at = this.guarded.get(key);
    if (at !== undefined && Date.now() - at < GUARD_TTL_MS) return;
    const parts = componentsBelow(path, root);
    if (parts.length) {
      const seen = await this.run('guardPath', scripts.pathAttributes(parts), parse.parsePathAttributes);
      const link = seen.find((s) => s.exists && s.reparsePoint);
      if (link)
        throw new StalledError(
          'PathOutsideStorage',
          `${path} on ${this.hostName} goes through ${link.path}, a reparse point (symbolic link, junction or mount point) inside storage ${root}`,
        );
    }
    if (this.guarded.size > 1000) this.guarded.clear();
    this.guarded.set(key, Date.now());
  }

  /** The declared storage location `path` lies inside, lexically; `PathOutsideStorage` when none. */
  private rootOf(path: string, opts: { allowRoot?: boolean }): string {
    const why = checkWindowsPath(path);
    const root =
      why === undefined
        ? this.roots.find((r) => isInsideWindows(path, r) || (opts.allowRoot === true && same(path, r)))
        : undefined;
    if (root === undefined)
      throw new StalledError(
        'PathOutsideStorage',
        `${JSON.stringify(path)} is not inside a declared storage location of ${this.hostName}${why ? ` (it ${why})` : ''}`,
      );
    return root;
  }

  /** What is at `path` (fileInfo: Get-Item, Get-Volume, fsutil): existence, size, identity. Reads only. */
  fileInfo(path: string): Promise<HvFileInfo> {
    return this.run('fileInfo', scripts.fileInfo(path), parse.parseFileInfo);
  }

  /** The host's processors and the configuration versions it runs (hostInfo), asked once per driver; a failed ask is not kept. */
  hostInfo(): Promise<HvHostInfo> {
    this.hostInfoCache ??= this.run('hostInfo', scripts.hostInfo(), parse.parseHostInfo).catch(
      (err: unknown) => {
        this.hostInfoCache = undefined;
        throw err;
      },
    );
    return this.hostInfoCache;
  }
}

/** The vendor of the host's first processor (`GenuineIntel`, `AuthenticAMD`). */
export function cpuInfoVendor(host: HvHostInfo): string | undefined {
  return host.processors[0]?.manufacturer;
}

/**
 * The paths from the first segment below `root` down to `path` (`D:\VMs`, `D:\VMs\web\x.vhdx`
 * -> `D:\VMs\web`, `D:\VMs\web\x.vhdx`); empty for the root itself. Both checked already.
 */
export function componentsBelow(path: string, root: string): string[] {
  if (same(path, root)) return [];
  const rest = path.slice(root.length + (root.endsWith('\\') ? 0 : 1)).split('\\');
  const base = path.slice(0, path.length - rest.join('\\').length);
  const out: string[] = [];
  let cur = base.endsWith('\\') ? base.slice(0, -1) : base;
  for (const seg of rest) {
    cur = `${cur}\\${seg}`;
    out.push(cur);
  }
  return out;
}
