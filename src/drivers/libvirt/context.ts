/**
 * What every part of the libvirt driver shares: where commands run (the host's `exec`, the
 * management box's `virshExec` with the host's URI), the logged command runner, the path guard
 * and the driver's settings. `LibvirtDriver` builds one per host; the functions in
 * `observe.ts`, `chain.ts`, `lifecycle.ts` and `files.ts` take it as their first argument.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { Logger } from 'pino';

import { VmplaceError } from '../../errors';
import type { HostExec } from '../../exec/types';
import { assertInside } from '../paths';

/** How long a path that passed the host-side guard stays trusted (see `guard`). */
const GUARD_TTL_MS = 10_000;

export type RunResult = { stdout: string; stderr: string; exitCode: number };

export interface LibvirtContextInit {
  hostName: string;
  /** runs file operations on the host */
  exec: HostExec;
  /** runs virsh (on the management box) */
  virshExec: HostExec;
  /** the URI virsh is given (may contain paths of keys, never secrets) */
  uri: string;
  /** absolute roots the driver may write, copy to or delete inside (already checked) */
  roots: string[];
  log: Logger | undefined;
  /** timeout of observation commands and quick changes */
  quickMs: number;
  /** how often to poll jobs left over from an interrupted run */
  pollMs: number;
}

export class LibvirtContext {
  readonly hostName: string;
  readonly exec: HostExec;
  readonly virshExec: HostExec;
  readonly uri: string;
  readonly roots: string[];
  readonly log: Logger | undefined;
  readonly quickMs: number;
  readonly pollMs: number;
  /** path -> when it last passed the host-side guard */
  private readonly guarded = new Map<string, number>();
  /** whether this virsh knows `undefine --keep-tpm`, asked once (see `virshKeepsTpm` in lifecycle.ts) */
  keepTpm: Promise<boolean> | undefined;

  constructor(init: LibvirtContextInit) {
    this.hostName = init.hostName;
    this.exec = init.exec;
    this.virshExec = init.virshExec;
    this.uri = init.uri;
    this.roots = init.roots;
    this.log = init.log;
    this.quickMs = init.quickMs;
    this.pollMs = init.pollMs;
  }

  /** `argv` through `exec`, logged at debug level with its duration. */
  async run(
    exec: HostExec,
    argv: string[],
    opts: { input?: string; timeoutMs?: number; allowExitCodes?: number[]; signal?: AbortSignal } = {},
  ): Promise<RunResult> {
    const t0 = Date.now();
    try {
      const r = await exec.run(argv, opts);
      this.log?.debug({ exec: exec.label, argv: argv.slice(0, 6), ms: Date.now() - t0 }, 'command finished');
      return r;
    } catch (err) {
      this.log?.debug(
        { exec: exec.label, argv: argv.slice(0, 6), ms: Date.now() - t0, err },
        'command failed',
      );
      throw err;
    }
  }

  /** `virsh -c URI ARGS...` on the management box; C locale so output parses the same everywhere. */
  virsh(
    args: string[],
    opts: { input?: string; timeoutMs?: number | null; allowExitCodes?: number[]; signal?: AbortSignal } = {},
  ): Promise<RunResult> {
    const { timeoutMs, ...rest } = opts;
    return this.run(this.virshExec, ['env', 'LC_ALL=C', 'virsh', '-c', this.uri, ...args], {
      ...rest,
      ...(timeoutMs === null ? {} : { timeoutMs: timeoutMs ?? this.quickMs }),
    });
  }

  /** Run virsh with `xml` in a private local temp file whose path replaces `{XML}` in `args`. */
  async virshWithXmlFile(
    args: string[],
    xml: string,
    opts: { timeoutMs?: number | null; allowExitCodes?: number[]; signal?: AbortSignal } = {},
  ): Promise<RunResult> {
    const dir = await mkdtemp(join(tmpdir(), 'vmplace-xml-'));
    try {
      const file = join(dir, 'domain.xml');
      await writeFile(file, xml, { mode: 0o600 });
      return await this.virsh(
        args.map((a) => (a === '{XML}' ? file : a)),
        opts,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /**
   * Lexical check, then the same check on the host after resolving symlinks. A path that
   * passed on the host is trusted for {@link GUARD_TTL_MS} more (the steps inside a VM's pause
   * touch the same few paths several times, and each check is a round trip); the lexical check
   * runs every time. Returns the normalized path.
   */
  async guard(path: string, opts: { allowRoot?: boolean } = {}): Promise<string> {
    const p = assertInside(path, this.roots, opts);
    const key = `${opts.allowRoot ? 'root:' : ''}${p}`;
    const at = this.guarded.get(key);
    if (at !== undefined && Date.now() - at < GUARD_TTL_MS) return p;
    const r = await this.run(this.exec, ['realpath', '-m', '-z', '--', p, ...this.roots], {
      timeoutMs: this.quickMs,
    });
    const [resolved, ...resolvedRoots] = r.stdout.split('\0').filter((s) => s !== '');
    if (resolved === undefined || resolvedRoots.length !== this.roots.length) {
      throw new VmplaceError(
        'UnexpectedOutput',
        `realpath printed ${JSON.stringify(r.stdout.slice(0, 200))}`,
      );
    }
    assertInside(resolved, resolvedRoots, opts);
    if (this.guarded.size > 1000) this.guarded.clear();
    this.guarded.set(key, Date.now());
    return p;
  }
}
