/**
 * `HypervisorDriver` for libvirt/QEMU.
 *
 * Where things run:
 * - `virsh` runs on the management box (where vmplace runs), with the host's URI. For a host
 *   with `ssh:` the URI becomes `qemu+ssh://...` carrying the same key, known_hosts and (via a
 *   small ssh wrapper given as `command=`) the same ControlMaster socket as the file
 *   operations, so libvirt's transport reuses the connection `SshExec` opened.
 * - file operations (qemu-img, cp, openssl or sha256sum, df, rm, stat, realpath) run on the host through
 *   its `HostExec` (`SshExec` for a host with `ssh:`, else `LocalExec`).
 * - XML that virsh must read (`define`, `restore --xml`) is read by the virsh *client*, so it is
 *   written to a file in a private (0700) temp dir on the management box and removed right
 *   after. (`/dev/stdin` does not work: Node gives children a socketpair, which cannot be
 *   opened by path — ENXIO.) A `virshExec` must therefore share the local filesystem.
 *
 * Paths that are written, copied to or deleted pass `assertInside` twice: lexically, and after
 * `realpath -m` on the host (symlinks resolved) against the resolved roots.
 *
 * Idempotency: every method that changes the world first looks at the world and returns when
 * the change is already there (see each method). Where it cannot tell its own leftovers from
 * someone else's file it stops with a `StalledError` rather than deleting (`OverlayExists`,
 * `DestinationExists`): the caller, which knows what it created, removes such files.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';

const dirname = (p: string): string => posix.dirname(p);

import type { Logger } from 'pino';

import { CommandError, StalledError, VmplaceError } from '../../errors';
import type { HostSpec, SshSpec } from '../../types';
import { copyBetweenHosts } from '../../transfer/between-hosts';
import {
  type CopyClaim,
  copyLocal,
  createExclusive,
  fileIdentity,
  sha256,
  statSize,
} from '../../transfer/copy-local';
import type {
  CpuInfo,
  DomainInfo,
  DomainState,
  FsInfo,
  HostExec,
  HypervisorDriver,
  ImageInfo,
  ProgressFn,
} from '../driver';
import { LocalExec, SshExec, libvirtUriWithSsh } from '../../exec/exec';
import { assertInside } from '../paths';
import {
  parseBlockJobRaw,
  parseCapabilitiesCpu,
  parseDf,
  parseDomInfo,
  parseDomJobInfo,
  parseDomState,
  HEADER_PROBE_BYTES,
  imageFormatOfHeader,
  parseNameList,
  parseOdHex,
  parseQemuImgCheck,
  parseQemuImgInfo,
} from './parsers';
import { type ParsedDisk, parseDomainXml, referencedFiles, rewriteDiskPaths } from './xml';

export interface LibvirtDriverOptions {
  /** absolute paths the driver may write, copy to or delete inside: storage locations + state dir */
  allowedRoots: string[];
  /** one more directory added to `allowedRoots` (tests); vmplace's CLI and daemon give none */
  stateDir?: string;
  /** used as given: pass a child logger that already names the host */
  logger?: Logger;
  /** runs file operations on the host; default `SshExec(spec.ssh)` or `LocalExec` */
  exec?: HostExec;
  /** runs virsh; default `LocalExec` (virsh on the management box) */
  virshExec?: HostExec;
  /** timeout of observation commands and quick changes; default 120 s */
  quickTimeoutMs?: number;
  /** how often to poll block jobs left over from an interrupted run; default 500 ms */
  blockJobPollMs?: number;
}

/** The disk of a domain, as `getDomain` returns it (the contract's `DomainDisk` plus details). */
export type LibvirtDisk = ParsedDisk;

const ACTIVE: readonly DomainState[] = ['running', 'paused', 'pmsuspended'];

/** How long a path that passed the host-side guard stays trusted (see `guard`). */
const GUARD_TTL_MS = 10_000;

/** `qemu-img check`'s exit code for a format that has no consistency checks (raw). */
const NO_CHECKS = 63;

/** virsh's `--diskspec` splits on `,`; a literal comma in a value is written `,,`. */
export function escapeDiskspecValue(v: string): string {
  return v.replace(/,/g, ',,');
}

export class LibvirtDriver implements HypervisorDriver {
  readonly hostName: string;
  readonly exec: HostExec;
  readonly virshExec: HostExec;
  /** the URI virsh is given (may contain paths of keys, never secrets) */
  readonly uri: string;
  private readonly roots: string[];
  private readonly log: Logger | undefined;
  private readonly quickMs: number;
  /** path -> when it last passed the host-side guard */
  private readonly guarded = new Map<string, number>();
  private readonly pollMs: number;

  constructor(hostName: string, spec: HostSpec, opts: LibvirtDriverOptions) {
    if (spec.driver !== 'libvirt')
      throw new TypeError(`host ${hostName}: driver ${spec.driver} is not libvirt`);
    this.hostName = hostName;
    const roots = [...opts.allowedRoots, ...(opts.stateDir !== undefined ? [opts.stateDir] : [])];
    this.roots = [...new Set(roots.map((r) => assertInside(r, ['/'], { allowRoot: true })))];
    this.log = opts.logger;
    this.quickMs = opts.quickTimeoutMs ?? 120_000;
    this.pollMs = opts.blockJobPollMs ?? 500;
    const ssh = spec.ssh ? new SshExec(spec.ssh) : undefined;
    this.exec = opts.exec ?? ssh ?? new LocalExec();
    this.virshExec = opts.virshExec ?? new LocalExec();
    const wrapper = this.exec instanceof SshExec ? this.exec.libvirtSshCommand() : undefined;
    this.uri = libvirtUriWithSsh(spec.uri, spec.ssh, wrapper ? { command: wrapper } : {});
    // an SshExec we made but do not use (exec was injected) must not leak its control dir;
    // detached (a constructor cannot wait): a control dir that could not be removed is only litter
    if (ssh && this.exec !== ssh) void ssh.close().catch(() => undefined);
  }

  // ---------------------------------------------------------------- plumbing

  private async run(
    exec: HostExec,
    argv: string[],
    opts: { input?: string; timeoutMs?: number; allowExitCodes?: number[]; signal?: AbortSignal } = {},
  ): Promise<{ stdout: string; stderr: string; exitCode: number }> {
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
  ): Promise<{ stdout: string; stderr: string; exitCode: number }> {
    const { timeoutMs, ...rest } = opts;
    return this.run(this.virshExec, ['env', 'LC_ALL=C', 'virsh', '-c', this.uri, ...args], {
      ...rest,
      ...(timeoutMs === null ? {} : { timeoutMs: timeoutMs ?? this.quickMs }),
    });
  }

  /** Run virsh with `xml` in a private local temp file whose path replaces `{XML}` in `args`. */
  private async virshWithXmlFile(
    args: string[],
    xml: string,
    opts: { timeoutMs?: number | null; allowExitCodes?: number[]; signal?: AbortSignal } = {},
  ): Promise<{ stdout: string; stderr: string; exitCode: number }> {
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
   * runs every time.
   */
  private async guard(path: string, opts: { allowRoot?: boolean } = {}): Promise<string> {
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

  async domainState(name: string): Promise<DomainState | undefined> {
    const r = await this.virsh(['domstate', '--domain', name], { allowExitCodes: [1] });
    if (r.exitCode === 0) return parseDomState(r.stdout);
    // an error: no such domain, or something else (then say so)
    if (!(await this.listDomains()).includes(name)) return undefined;
    throw new CommandError('CommandFailed', ['virsh', 'domstate', '--domain', name], r.exitCode, r.stderr);
  }

  private async domState(name: string): Promise<DomainState | undefined> {
    const names = await this.listDomains();
    if (!names.includes(name)) return undefined;
    return parseDomState((await this.virsh(['domstate', '--domain', name])).stdout);
  }

  private async liveDisks(domain: string): Promise<ParsedDisk[]> {
    return parseDomainXml((await this.virsh(['dumpxml', '--domain', domain])).stdout).disks;
  }

  private findDisk(disks: ParsedDisk[], domain: string, target: string): ParsedDisk {
    const d = disks.find((x) => x.target === target);
    if (!d) throw new StalledError('DiskNotFound', `domain ${domain} has no disk ${target}`);
    return d;
  }

  // ---------------------------------------------------------------- observation

  async listDomains(): Promise<string[]> {
    return parseNameList((await this.virsh(['list', '--all', '--name'])).stdout);
  }

  /**
   * Name, state, persistence, memory, vcpus and disks. Disks of every kind are returned as
   * they are (block, network, volume, empty cdrom); nothing here opens the image files.
   * `xml` is the plain `dumpxml` (no `--security-info`: safe to log or store).
   */
  async getDomain(name: string): Promise<DomainInfo | undefined> {
    let infoText = '';
    let xml = '';
    for (let attempt = 1; ; attempt++) {
      try {
        [infoText, xml] = await Promise.all([
          this.virsh(['dominfo', '--domain', name]).then((r) => r.stdout),
          this.virsh(['dumpxml', '--domain', name]).then((r) => r.stdout),
        ]);
        break;
      } catch (err) {
        // route on the world, not on virsh's message: is the domain there at all?
        if (err instanceof CommandError && !(await this.listDomains()).includes(name)) return undefined;
        // listed but not found a moment ago: it was being created or removed (a restore, an
        // incoming migration, an undefine); look again before calling it an error
        if (err instanceof CommandError && attempt < 3) {
          await new Promise((r) => setTimeout(r, 200 * attempt));
          continue;
        }
        throw err;
      }
    }
    const info = parseDomInfo(infoText);
    const dom = parseDomainXml(xml);
    return {
      name: dom.name || info.name,
      uuid: dom.uuid || info.uuid,
      state: info.state,
      persistent: info.persistent,
      memoryBytes: dom.memoryBytes,
      vcpus: dom.vcpus,
      ...(dom.domainType ? { domainType: dom.domainType } : {}),
      ...(info.autostart !== undefined ? { autostart: info.autostart } : {}),
      disks: dom.disks,
      ...(dom.nvram !== undefined ? { nvram: dom.nvram } : {}),
      ...(dom.uefi ? { uefi: true } : {}),
      ...(dom.tpms.length ? { tpms: dom.tpms } : {}),
      xml,
    };
  }

  /**
   * `qemu-img info --output=json -f FORMAT` plus `stat` for the apparent size. The format is
   * always the one libvirt declares (or qcow2 for vmplace's overlays), never guessed from the
   * contents, and the backing chain is not followed (`--backing-chain` would open whatever
   * file a header names): `backingFile` is what the image records.
   * `forceShare` defaults to TRUE (`-U`): observation must work on disks of running VMs,
   * which hold qcow2 write locks; allocation figures may then lag by QEMU's unflushed
   * metadata. Pass `forceShare: false` to get an error when someone holds the image.
   */
  async imageInfo(path: string, opts: { format: string; forceShare?: boolean }): Promise<ImageInfo> {
    const argv = [
      'qemu-img',
      'info',
      '--output=json',
      '-f',
      opts.format,
      ...(opts.forceShare === false ? [] : ['-U']),
      '--',
      path,
    ];
    const [r, size] = await Promise.all([
      this.run(this.exec, argv, { timeoutMs: this.quickMs }),
      statSize(this.exec, path),
    ]);
    return parseQemuImgInfo(r.stdout, path, size);
  }

  /** `od` of the first {@link HEADER_PROBE_BYTES} bytes, matched by {@link imageFormatOfHeader}. */
  async probeFormat(path: string): Promise<string | undefined> {
    const r = await this.run(
      this.exec,
      ['od', '-An', '-v', '-tx1', '-N', String(HEADER_PROBE_BYTES), '--', path],
      {
        timeoutMs: this.quickMs,
      },
    );
    return imageFormatOfHeader(parseOdHex(r.stdout));
  }

  async fsInfo(path: string): Promise<FsInfo> {
    const r = await this.run(this.exec, ['df', '-B1', '--output=size,avail', '--', path], {
      timeoutMs: this.quickMs,
    });
    return parseDf(r.stdout);
  }

  async compareCpu(domainXml: string, virtType: string): Promise<{ compatible: boolean; message: string }> {
    const r = await this.virshWithXmlFile(
      ['hypervisor-cpu-compare', '--file', '{XML}', '--virttype', virtType],
      domainXml,
      {
        allowExitCodes: [1],
      },
    );
    const text = `${r.stdout}\n${r.stderr}`.trim();
    if (r.exitCode !== 0 && /does not contain any <cpu> element/.test(text)) {
      // no CPU requirement in the definition: the hypervisor's default model runs anywhere
      return { compatible: true, message: 'the domain asks for no particular CPU' };
    }
    if (r.exitCode !== 0) throw new VmplaceError('CpuCompareFailed', text.slice(0, 500));
    return { compatible: !/incompatible/i.test(text), message: text.split('\n')[0] ?? text };
  }

  async migrateLive(
    domain: string,
    target: HypervisorDriver,
    opts: {
      disks: { target: string; path: string; format: string; virtualBytes: number }[];
      address: string;
      bandwidthMiBps?: number;
      maxDowntimeMs?: number;
      claimFor?: (path: string) => CopyClaim;
      signal?: AbortSignal;
    },
  ): Promise<{ downtimeMs?: number }> {
    if (!(target instanceof LibvirtDriver))
      throw new StalledError('DriverMismatch', 'live migration needs libvirt on both hosts');
    const there = await target.getDomain(domain);
    if (there?.state === 'running') return { downtimeMs: await target.incomingDowntime(domain) };
    // Target images: created by this migration under names nothing had (identity recorded
    // before QEMU writes a byte), or found again as ours on a re-run; never someone's file.
    for (const d of opts.disks) {
      await target.guardPath(d.path);
      await target.makeDir(dirname(d.path));
      const claim = opts.claimFor?.(d.path);
      const id = await target.fileIdentity(d.path);
      if (id !== undefined) {
        if (!claim || !(await claim.owns(id)))
          throw new StalledError(
            'FileExists',
            `${d.path} exists on ${target.hostName} and was not created by this migration; not writing into it`,
          );
      } else {
        await claim?.intend?.();
        const made = await target.createExclusive(d.path);
        await claim?.record(made);
      }
      await target.run(
        target.exec,
        ['qemu-img', 'create', '-q', '-f', d.format, '--', d.path, String(d.virtualBytes)],
        { timeoutMs: this.quickMs },
      );
    }
    const live = (await this.virsh(['dumpxml', '--domain', domain, '--migratable', '--security-info']))
      .stdout;
    const xml = rewriteDiskPaths(live, Object.fromEntries(opts.disks.map((d) => [d.target, d.path])));
    if (opts.maxDowntimeMs !== undefined) {
      // QEMU switches over once it predicts the rest fits this (its default: 300 ms); settable
      // before the migration starts since libvirt 1.2.9
      await this.virsh([
        'migrate-setmaxdowntime',
        '--domain',
        domain,
        '--downtime',
        String(Math.max(1, Math.round(opts.maxDowntimeMs))),
      ]);
    }
    const job = new AbortController();
    const onAbort = (): void => {
      // libvirt keeps the job when the virsh client dies: abort it there, then stop waiting;
      // detached (an abort listener cannot wait): a failed abort is dropped, the wait stops anyway
      void this.virsh(['domjobabort', '--domain', domain], { allowExitCodes: [1] })
        .catch(() => undefined)
        .finally(() => job.abort());
    };
    if (opts.signal?.aborted) throw new VmplaceError('Cancelled', `live migration of ${domain} cancelled`);
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    const migrating = this.virshWithXmlFile(
      [
        'migrate',
        '--live',
        '--persistent',
        '--undefinesource',
        '--copy-storage-all',
        '--domain',
        domain,
        '--desturi',
        target.uri,
        '--migrateuri',
        `tcp://${opts.address}`,
        '--xml',
        '{XML}',
        ...(opts.bandwidthMiBps ? ['--bandwidth', String(Math.max(1, Math.floor(opts.bandwidthMiBps)))] : []),
      ],
      xml,
      { timeoutMs: null, signal: job.signal },
    );
    try {
      await migrating;
    } catch (err) {
      if (!opts.signal?.aborted) throw err;
      // cancelled: a migration that completed before the abort landed runs on the target
      if ((await target.domainState(domain)) === 'running')
        return { downtimeMs: await target.incomingDowntime(domain) };
      throw new VmplaceError('Cancelled', `live migration of ${domain} cancelled`, { cause: err });
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
    }
    return { downtimeMs: await target.incomingDowntime(domain) };
  }

  /** `Total downtime` of the last completed incoming migration, as QEMU measured it. */
  private async incomingDowntime(domain: string): Promise<number | undefined> {
    const r = await this.virsh(['domjobinfo', '--domain', domain, '--completed'], { allowExitCodes: [1] });
    const line = r.stdout.split('\n').find((l) => l.trim().startsWith('Total downtime:'));
    const n = line ? Number(line.split(':')[1]?.trim().split(/\s+/)[0]) : NaN;
    return Number.isFinite(n) ? n : undefined;
  }

  async guardPath(path: string): Promise<void> {
    await this.guard(path);
  }

  async copyToHost(
    target: HypervisorDriver,
    src: string,
    dst: string,
    opts: {
      onProgress?: ProgressFn;
      bwlimitKiBps?: number;
      targetSsh: SshSpec;
      mode?: 'direct' | 'relay' | 'auto';
      relayBelowBytes?: number;
      claim?: CopyClaim;
      signal?: AbortSignal;
    },
  ): Promise<{ mode: 'direct' | 'relay'; bytesSent: number }> {
    const r = await copyBetweenHosts(this.exec, target.exec, src, dst, {
      ...(opts.claim ? { claim: opts.claim } : {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
      guard: () => target.guardPath(dst),
      targetSsh: opts.targetSsh,
      mode: opts.mode ?? 'auto',
      ...(opts.relayBelowBytes ? { relayBelowBytes: opts.relayBelowBytes } : {}),
      ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
      ...(opts.bwlimitKiBps ? { bwlimitKiBps: opts.bwlimitKiBps } : {}),
    });
    return { mode: r.mode, bytesSent: r.bytesSent };
  }

  async hostCpu(): Promise<CpuInfo> {
    return parseCapabilitiesCpu((await this.virsh(['capabilities'])).stdout);
  }

  async fileExists(path: string): Promise<boolean> {
    const r = await this.run(this.exec, ['test', '-e', path], {
      allowExitCodes: [1],
      timeoutMs: this.quickMs,
    });
    return r.exitCode === 0;
  }

  fileSize(path: string): Promise<number | undefined> {
    return statSize(this.exec, path);
  }

  // ---------------------------------------------------------------- disk chain operations

  /**
   * `snapshot-create-as --disk-only --no-metadata --atomic` with an external qcow2 overlay for
   * each listed disk and `snapshot=no` for every other disk (cdroms, shared disks...).
   * Idempotent: when every listed disk already has its overlay as active layer it returns.
   * Stops with `SnapshotPartial` if only some do (cannot happen with --atomic), and with
   * `OverlayExists` when an overlay file exists but the domain does not use it (a leftover:
   * the caller removes it if it is its own).
   */
  async snapshotDisks(domain: string, overlays: { target: string; path: string }[]): Promise<void> {
    if (overlays.length === 0) return;
    for (const o of overlays) await this.guard(o.path);
    const disks = await this.liveDisks(domain);
    const done = overlays.filter((o) => this.findDisk(disks, domain, o.target).path === o.path);
    if (done.length === overlays.length) return;
    if (done.length > 0) {
      throw new StalledError(
        'SnapshotPartial',
        `domain ${domain}: ${done.map((o) => o.target).join(',')} already on overlays but not the others`,
      );
    }
    for (const o of overlays) {
      const disk = this.findDisk(disks, domain, o.target);
      if (disk.type !== 'file')
        throw new StalledError('DiskNotFile', `domain ${domain}: disk ${o.target} is type=${disk.type}`);
      if (await this.fileExists(o.path)) {
        throw new StalledError(
          'OverlayExists',
          `overlay ${o.path} exists but domain ${domain} does not use it`,
        );
      }
    }
    const listed = new Set(overlays.map((o) => o.target));
    const specs: string[] = [];
    for (const o of overlays) {
      specs.push(
        '--diskspec',
        `${o.target},snapshot=external,driver=qcow2,file=${escapeDiskspecValue(o.path)}`,
      );
    }
    for (const d of disks) {
      if (d.target && !listed.has(d.target)) specs.push('--diskspec', `${d.target},snapshot=no`);
    }
    await this.virsh([
      'snapshot-create-as',
      '--domain',
      domain,
      '--disk-only',
      '--no-metadata',
      '--atomic',
      ...specs,
    ]);
  }

  /** The block job on `target`, if any (`blockjob --info --raw`). */
  async blockJob(
    domain: string,
    target: string,
  ): Promise<{ type: string; cur: number; end: number } | undefined> {
    return parseBlockJobRaw(
      (await this.virsh(['blockjob', '--domain', domain, '--path', target, '--info', '--raw'])).stdout,
    );
  }

  /** A job left by an interrupted run (virsh killed while `--wait`ing): wait until ready, then pivot. */
  private async finishLeftoverJob(domain: string, target: string, kind: 'Commit' | 'Copy'): Promise<boolean> {
    let job = await this.blockJob(domain, target);
    if (!job) return false;
    if (!job.type.includes(kind)) {
      throw new StalledError(
        'BlockJobBusy',
        `domain ${domain} disk ${target} runs another block job: ${job.type}`,
      );
    }
    while (job && !(job.end > 0 && job.cur === job.end)) {
      await new Promise((r) => setTimeout(r, this.pollMs));
      job = await this.blockJob(domain, target);
    }
    if (job)
      await this.virsh(['blockjob', '--domain', domain, '--path', target, '--pivot'], { timeoutMs: null });
    return true;
  }

  /**
   * `blockcommit --active --pivot --wait`. Idempotent: returns when the disk has no backing
   * chain, or — with `opts.overlay`, which the machine should pass — when the active layer is
   * no longer that overlay (so a disk that legitimately sits on a base image is never merged
   * into it by a re-run). A commit job left by an interrupted run is finished and pivoted.
   */
  async blockCommit(domain: string, target: string, opts: { overlay?: string } = {}): Promise<void> {
    if (await this.finishLeftoverJob(domain, target, 'Commit')) return;
    const disk = this.findDisk(await this.liveDisks(domain), domain, target);
    if (!disk.hasBackingStore) return;
    if (opts.overlay !== undefined && disk.path !== opts.overlay) return;
    await this.virsh(['blockcommit', '--domain', domain, '--path', target, '--active', '--pivot', '--wait'], {
      timeoutMs: null,
    });
  }

  /**
   * `blockcopy --pivot --wait --transient-job --format FMT`: a full copy (no `--shallow`: the
   * destination is self-contained even when the source sits on a base image), created by
   * libvirt (no `--reuse-external`). Idempotent: returns when the disk already uses
   * `destPath`; finishes a copy job left by an interrupted run; stops with
   * `DestinationExists` when `destPath` exists but is not in use. Afterwards the persistent
   * definition still names the old path: redefine from `dumpXml` as after a restore.
   */
  async blockCopy(
    domain: string,
    target: string,
    destPath: string,
    format: string,
    opts: { signal?: AbortSignal; claim?: CopyClaim; virtualBytes?: number; bandwidthMiBps?: number } = {},
  ): Promise<void> {
    await this.guard(destPath);
    if (await this.finishLeftoverJob(domain, target, 'Copy')) return;
    const disk = this.findDisk(await this.liveDisks(domain), domain, target);
    if (disk.path === destPath) return;
    let reuse = false;
    if (opts.claim && opts.virtualBytes !== undefined) {
      // our own destination, made before libvirt writes to it: a rollback can prove it is ours
      const id = await this.fileIdentity(destPath);
      if (id !== undefined && !(await opts.claim.owns(id)))
        throw new StalledError(
          'DestinationExists',
          `${destPath} exists but was not created by this migration`,
        );
      if (id === undefined) {
        await opts.claim.intend?.();
        await opts.claim.record(await this.createExclusive(destPath));
      }
      await this.run(
        this.exec,
        ['qemu-img', 'create', '-q', '-f', format, '--', destPath, String(opts.virtualBytes)],
        {
          timeoutMs: this.quickMs,
        },
      );
      reuse = true;
    } else if (await this.fileExists(destPath)) {
      throw new StalledError('DestinationExists', `${destPath} exists but domain ${domain} does not use it`);
    }
    if (opts.signal?.aborted)
      throw new VmplaceError('Cancelled', `block copy of ${domain} ${target} cancelled`);
    const job = new AbortController();
    const onAbort = (): void => {
      // the job lives in libvirtd: abort it there (no pivot: the disk stays on its source);
      // detached (an abort listener cannot wait): a failed abort is dropped, the wait stops anyway
      void this.virsh(['blockjob', '--domain', domain, '--path', target, '--abort'], {
        allowExitCodes: [1],
        timeoutMs: null,
      })
        .catch(() => undefined)
        .finally(() => job.abort());
    };
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await this.virsh(
        [
          'blockcopy',
          '--domain',
          domain,
          '--path',
          target,
          '--dest',
          destPath,
          '--format',
          format,
          ...(reuse ? ['--reuse-external'] : []),
          ...(opts.bandwidthMiBps
            ? ['--bandwidth', String(Math.max(1, Math.floor(opts.bandwidthMiBps)))]
            : []),
          '--pivot',
          '--wait',
          '--transient-job',
        ],
        { timeoutMs: null, signal: job.signal },
      );
    } catch (err) {
      if (!opts.signal?.aborted) throw err;
      // a pivot that happened before the abort landed: the disk runs from the copy
      if (this.findDisk(await this.liveDisks(domain), domain, target).path === destPath) return;
      throw new VmplaceError('Cancelled', `block copy of ${domain} ${target} cancelled`, { cause: err });
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
    }
  }

  /** `qemu-img rebase -u -f qcow2 -F FMT -b NEW OVERLAY`: rewrites a header field; idempotent. */
  async rebaseUnsafe(overlay: string, newBacking: string, backingFormat: string): Promise<void> {
    await this.guard(overlay);
    await this.run(
      this.exec,
      ['qemu-img', 'rebase', '-u', '-f', 'qcow2', '-F', backingFormat, '-b', newBacking, '--', overlay],
      {
        timeoutMs: this.quickMs,
      },
    );
  }

  /**
   * `qemu-img commit -f qcow2`: the overlay stays (emptied); re-running writes the same data
   * again. The backing image is opened as the format the overlay records (libvirt and
   * `rebaseUnsafe` always record one); an overlay without one stops with
   * `BackingFormatUnknown` instead of letting qemu-img guess what to write into.
   */
  async commitOffline(overlay: string): Promise<void> {
    await this.guard(overlay);
    const info = await this.imageInfo(overlay, { format: 'qcow2', forceShare: false });
    if (info.backingFile !== undefined) await this.guard(info.backingFile);
    if (info.backingFile !== undefined && info.backingFormat === undefined)
      throw new StalledError(
        'BackingFormatUnknown',
        `${overlay} does not record the format of ${info.backingFile}`,
      );
    await this.run(this.exec, ['qemu-img', 'commit', '-f', 'qcow2', '--', overlay]);
  }

  /**
   * `qemu-img check --output=json -f FORMAT`. An image a running VM holds cannot be opened
   * normally (exit 1, lock); it is then checked with `-U`, and leaks are not reported: on a live
   * image clusters being allocated look leaked, and leaks lose no data. Corruptions and check
   * errors are always reported. A format without checks (raw: exit 63) has nothing to report.
   * Returns problems; empty when clean.
   */
  async checkImage(path: string, format: string): Promise<string[]> {
    const base = ['qemu-img', 'check', '--output=json', '-f', format];
    const r = await this.run(this.exec, [...base, '--', path], { allowExitCodes: [1, 2, 3, NO_CHECKS] });
    if (r.exitCode === NO_CHECKS) return [];
    if (r.exitCode !== 1) return parseQemuImgCheck(r.stdout);
    const u = await this.run(this.exec, [...base, '-U', '--', path], { allowExitCodes: [2, 3, NO_CHECKS] });
    if (u.exitCode === NO_CHECKS) return [];
    return parseQemuImgCheck(u.stdout, { ignoreLeaks: true });
  }

  // ---------------------------------------------------------------- lifecycle

  /**
   * Wait while libvirt runs a save job of `domain` (`domjobinfo`: an active job whose operation
   * is `Save`). A save is a job of libvirtd: when the `virsh save` that asked for it dies (the
   * daemon or `vmplace apply` killed with its process group), libvirtd still finishes it and
   * the domain ends shut off (saved); measured on libvirt 9.0, see the lab test
   * restart-during-save. Resolves true when there was such a job (it has ended by then).
   */
  async waitForSaveJob(domain: string): Promise<boolean> {
    let waited = false;
    for (;;) {
      const r = await this.virsh(['domjobinfo', '--domain', domain], { allowExitCodes: [1] });
      // exit 1: the domain is not active (or gone): no job
      const job = r.exitCode === 0 ? parseDomJobInfo(r.stdout) : undefined;
      if (!job?.active || (job.operation !== undefined && job.operation !== 'Save')) return waited;
      if (!waited)
        this.log?.info({ domain }, 'a save of an interrupted run is still running: waiting for it');
      waited = true;
      await new Promise((res) => setTimeout(res, this.pollMs));
    }
  }

  /**
   * True when `stateFile` holds a complete saved state of `domain`: it exists and
   * `save-image-dumpxml` reads it (libvirt writes the header magic `LibvirtQemudPart` while it
   * saves and `LibvirtQemudSave` only once the save is complete, and refuses to read an
   * unfinished image) and names the domain.
   */
  async holdsSavedState(stateFile: string, domain: string): Promise<boolean> {
    await this.guard(stateFile);
    if (!(await this.fileExists(stateFile))) return false;
    try {
      return parseDomainXml(await this.savedStateXml(stateFile)).name === domain;
    } catch (err) {
      if (err instanceof CommandError) return false;
      throw err;
    }
  }

  /**
   * `virsh save` with neither `--running` nor `--paused`: restore brings the domain back in the
   * state it had (a running VM resumes running; one the user had paused stays paused).
   * Idempotent: when the domain is no longer active and `stateFile` holds a complete save of
   * it (libvirt marks incomplete saves, so `save-image-dumpxml` refuses them), it returns. A
   * save job still running from an interrupted run is waited for first (unless `knownActive`).
   */
  async save(domain: string, stateFile: string, opts: { knownActive?: boolean } = {}): Promise<void> {
    await this.guard(stateFile);
    let state = opts.knownActive ? 'running' : await this.domState(domain);
    // a save of an interrupted run that libvirt still finishes: wait for it, then look again
    if (
      !opts.knownActive &&
      state !== undefined &&
      ACTIVE.includes(state) &&
      (await this.waitForSaveJob(domain))
    )
      state = await this.domState(domain);
    if (state !== undefined && ACTIVE.includes(state)) {
      await this.virsh(['save', '--domain', domain, '--file', stateFile], { timeoutMs: null });
      return;
    }
    if (await this.holdsSavedState(stateFile, domain)) return;
    throw new StalledError(
      'DomainNotRunning',
      `domain ${domain} is ${state ?? 'not defined'} and ${stateFile} holds no save of it`,
    );
  }

  /**
   * The domain XML inside a saved state, WITH security info (e.g. VNC passwords) so that a
   * restore with rewritten XML keeps them: do not log or store this XML.
   */
  async savedStateXml(stateFile: string): Promise<string> {
    return (await this.virsh(['save-image-dumpxml', '--file', stateFile, '--security-info'])).stdout;
  }

  /**
   * `virsh restore STATE [--xml FILE]` (FILE: a private local temp file). Idempotent: returns when the domain named in the
   * XML is already active.
   */
  async restore(stateFile: string, xml?: string, opts: { knownInactive?: boolean } = {}): Promise<void> {
    const name = parseDomainXml(xml ?? (await this.savedStateXml(stateFile))).name;
    const state = opts.knownInactive ? undefined : await this.domState(name);
    if (state !== undefined && ACTIVE.includes(state)) return;
    if (xml === undefined) await this.virsh(['restore', '--file', stateFile], { timeoutMs: null });
    else
      await this.virshWithXmlFile(['restore', '--file', stateFile, '--xml', '{XML}'], xml, {
        timeoutMs: null,
      });
  }

  /**
   * `dumpxml --security-info [--inactive]`: complete enough to `define` again without losing
   * passwords. Contains secrets: do not log or store it.
   */
  async dumpXml(domain: string, opts: { inactive?: boolean } = {}): Promise<string> {
    return (
      await this.virsh([
        'dumpxml',
        '--domain',
        domain,
        '--security-info',
        ...(opts.inactive ? ['--inactive'] : []),
      ])
    ).stdout;
  }

  /** `define --file FILE` (a private local temp file): defining the same XML again changes nothing. */
  async define(xml: string): Promise<void> {
    await this.virshWithXmlFile(['define', '--file', '{XML}'], xml);
  }

  /**
   * `undefine --keep-nvram --keep-tpm`: UEFI variables and an emulated TPM's state are data
   * (keys, sealed secrets, boot entries) and are never removed implicitly. A virsh without
   * `--keep-tpm` (before libvirt 8.9, whose undefine removes an emulated TPM's state) undefines
   * only a domain without a TPM, and stops with `TpmStateAtRisk` otherwise. A domain that
   * is not defined is fine. An active persistent domain becomes transient (it keeps running).
   */
  async undefine(domain: string): Promise<void> {
    if (!(await this.listDomains()).includes(domain)) return;
    const info = parseDomInfo((await this.virsh(['dominfo', '--domain', domain])).stdout);
    if (!info.persistent) return;
    const keepTpm = await this.virshKeepsTpm();
    if (!keepTpm && parseDomainXml(await this.dumpXml(domain, { inactive: true })).tpms.length > 0)
      throw new StalledError(
        'TpmStateAtRisk',
        `domain ${domain} has a TPM and this virsh has no undefine --keep-tpm: undefining it would delete the TPM's state`,
      );
    await this.virsh(['undefine', '--domain', domain, '--keep-nvram', ...(keepTpm ? ['--keep-tpm'] : [])]);
  }

  private keepTpm: Promise<boolean> | undefined;

  /** Does this virsh know `undefine --keep-tpm`? (`virsh help undefine`, asked once) */
  private virshKeepsTpm(): Promise<boolean> {
    this.keepTpm ??= this.virsh(['help', 'undefine']).then(
      (r) => /(^|\s)--keep-tpm(\s|$)/m.test(r.stdout),
      (err: unknown) => {
        this.keepTpm = undefined;
        throw err;
      },
    );
    return this.keepTpm;
  }

  async start(domain: string): Promise<void> {
    const state = await this.domState(domain);
    if (state === undefined) throw new StalledError('DomainNotFound', `domain ${domain} is not defined`);
    if (ACTIVE.includes(state)) return;
    await this.virsh(['start', '--domain', domain]);
  }

  async resume(domain: string): Promise<void> {
    const state = await this.domState(domain);
    if (state === undefined) throw new StalledError('DomainNotFound', `domain ${domain} is not defined`);
    if (state !== 'paused') return;
    await this.virsh(['resume', '--domain', domain]);
  }

  async destroy(domain: string): Promise<void> {
    const state = await this.domState(domain);
    if (state === undefined || !ACTIVE.includes(state)) return;
    await this.virsh(['destroy', '--domain', domain]);
  }

  // ---------------------------------------------------------------- files

  /** `copyLocal` (sparse cp to DST.vmplace-part, sync, sha256 both, rename); see transfer/. */
  async copyFile(
    src: string,
    dst: string,
    onProgress?: ProgressFn,
    opts: { bwlimitKiBps?: number; claim?: CopyClaim; signal?: AbortSignal } = {},
  ): Promise<void> {
    await this.guard(dst);
    await copyLocal(this.exec, src, dst, {
      ...(opts.claim ? { claim: opts.claim } : {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(onProgress ? { onProgress } : {}),
      ...(opts.bwlimitKiBps ? { bwlimitKiBps: opts.bwlimitKiBps } : {}),
    });
  }

  checksum(path: string): Promise<string> {
    return sha256(this.exec, path);
  }

  /** `rm -f`: a missing file is fine; a directory is an error. */
  async removeFile(path: string): Promise<void> {
    const p = await this.guard(path);
    await this.run(this.exec, ['rm', '-f', '--', p], { timeoutMs: this.quickMs });
  }

  /** `mkdir -p`; a storage root itself is allowed here. */
  async makeDir(path: string): Promise<void> {
    const p = await this.guard(path, { allowRoot: true });
    await this.run(this.exec, ['mkdir', '-p', '--', p], { timeoutMs: this.quickMs });
  }

  /** `rmdir --ignore-fail-on-non-empty`: an empty directory goes, anything else stays. */
  async removeDirIfEmpty(path: string): Promise<void> {
    const p = await this.guard(path);
    await this.run(this.exec, ['rmdir', '--ignore-fail-on-non-empty', '--', p], {
      timeoutMs: this.quickMs,
      allowExitCodes: [1],
    });
  }

  // ---------------------------------------------------------------- ownership and use

  async fileIdentity(path: string): Promise<string | undefined> {
    return fileIdentity(this.exec, await this.guard(path));
  }

  async createExclusive(path: string): Promise<string> {
    return createExclusive(this.exec, await this.guard(path));
  }

  /**
   * Remove `path` only when its identity (`dev:ino`) is `identity`, in one command on the host
   * (the identity is compared right before `rm`).
   */
  async removeIfIdentity(path: string, identity: string): Promise<'removed' | 'absent' | 'other'> {
    const p = await this.guard(path);
    const r = await this.run(
      this.exec,
      [
        'sh',
        '-c',
        'id=$(stat -c %d:%i -- "$1" 2>/dev/null) || exit 3\n[ "$id" = "$2" ] || exit 4\nexec rm -f -- "$1"',
        'vmplace-rm-own',
        p,
        identity,
      ],
      { allowExitCodes: [3, 4], timeoutMs: this.quickMs },
    );
    return r.exitCode === 0 ? 'removed' : r.exitCode === 3 ? 'absent' : 'other';
  }

  /**
   * Every domain's live XML (sources, the chain libvirt shows, block-job mirrors) and, for
   * persistent ones, the inactive XML too; for the file disks of the inactive definitions the
   * backing chain is read from the images (`qemu-img info -U --backing-chain` with the format
   * the definition declares), so the base of a shut-off linked clone counts as in use. An
   * image that cannot be read adds nothing beyond its own path.
   */
  async filesInUse(): Promise<Map<string, Set<string>>> {
    const used = new Map<string, Set<string>>();
    const add = (p: string, dom: string): void => {
      const set = used.get(p) ?? new Set<string>();
      set.add(dom);
      used.set(p, set);
    };
    const names = await this.listDomains();
    const chains = new Map<string, Promise<string[]>>();
    const chainOf = (file: string, format: string): Promise<string[]> => {
      const key = `${format}\0${file}`;
      let c = chains.get(key);
      if (!c) {
        c = this.run(
          this.exec,
          ['qemu-img', 'info', '--output=json', '--backing-chain', '-U', '-f', format, '--', file],
          {
            timeoutMs: this.quickMs,
            allowExitCodes: [1],
          },
        ).then(
          (r) => (r.exitCode === 0 ? chainFilesOf(r.stdout) : []),
          () => [],
        );
        chains.set(key, c);
      }
      return c;
    };
    await mapLimit(names, 8, async (name) => {
      const live = await this.virsh(['dumpxml', '--domain', name], { allowExitCodes: [1] });
      if (live.exitCode !== 0) return; // gone meanwhile
      for (const p of referencedFiles(live.stdout)) add(p, name);
      const inactive = await this.virsh(['dumpxml', '--domain', name, '--inactive'], { allowExitCodes: [1] });
      if (inactive.exitCode !== 0) return;
      for (const p of referencedFiles(inactive.stdout)) add(p, name);
      for (const d of parseDomainXml(inactive.stdout).disks) {
        if (d.type !== 'file' || !d.path || d.format !== 'qcow2') continue;
        for (const p of await chainOf(d.path, d.format)) add(p, name);
      }
    });
    return used;
  }

  async setAutostart(domain: string, on: boolean): Promise<void> {
    await this.virsh(['autostart', '--domain', domain, ...(on ? [] : ['--disable'])]);
  }

  /** `blockjob --abort` on every disk with a job, and `domjobabort` (no job: nothing to do). */
  async abortJobs(domain: string): Promise<void> {
    // jobs exist only on an active domain (a saved or shut-off one has none)
    const state = await this.domainState(domain);
    if (state === undefined || !ACTIVE.includes(state)) return;
    for (const d of await this.liveDisks(domain)) {
      if (!d.target || !(await this.blockJob(domain, d.target))) continue;
      await this.virsh(['blockjob', '--domain', domain, '--path', d.target, '--abort'], {
        allowExitCodes: [1],
        timeoutMs: null,
      });
    }
    await this.virsh(['domjobabort', '--domain', domain], { allowExitCodes: [1] });
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.exec.close(), this.virshExec.close()]);
  }
}

/** The file names of a `qemu-img info --backing-chain --output=json` answer (an array, or one object). */
function chainFilesOf(json: string): string[] {
  try {
    const v = JSON.parse(json) as unknown;
    const list = Array.isArray(v) ? v : [v];
    return list
      .map((x) => (x as { filename?: unknown })?.filename)
      .filter((f): f is string => typeof f === 'string' && f.startsWith('/'));
  } catch {
    return [];
  }
}

/** Run `fn` over `items`, at most `limit` at once. */
async function mapLimit<T>(items: readonly T[], limit: number, fn: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}
