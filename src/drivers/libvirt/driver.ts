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
 *
 * This class only wires: the work is in `context.ts` (the command runners and the path guard),
 * `observe.ts`, `chain.ts` (overlays, block jobs, qemu-img), `lifecycle.ts` (save, restore,
 * definitions, live migration) and `files.ts` (copies, removal, identities); each method's
 * documentation is on the function it calls.
 */
import type { Logger } from 'pino';

import { StalledError } from '../../errors';
import type { HostSpec } from '../../types';
import { posix } from 'node:path';
import type { HostExec } from '../../exec/types';
import {
  type CpuInfo,
  type DomainInfo,
  type DomainState,
  type DriverCapabilities,
  type FsInfo,
  type HypervisorDriver,
  type ImageInfo,
  type OwnFileKind,
  ownFileBaseName,
  type PathSemantics,
  POSIX_PATHS,
  type VmDefinition,
  type MigrateLiveOptions,
  type MigratePausedOptions,
  type MigrateOntoLayersOptions,
  type MoveDiskLiveOptions,
} from '../driver';
import { LocalExec, SshExec, libvirtUriWithSsh } from '../../exec/exec';
import { assertInside } from '../paths';
import * as chain from './chain';
import { LibvirtContext, type RunResult } from './context';
import * as files from './files';
import * as lifecycle from './lifecycle';
import * as observe from './observe';
import { type ParsedDisk, parseDomainXml, rewriteDiskPaths } from './xml';
import { domainXmlOf, LIBVIRT_CAPABILITIES, libvirtDefinition } from './definition';

export { domainXmlOf, LIBVIRT_CAPABILITIES, libvirtDefinition } from './definition';

export { escapeDiskspecValue } from './chain';

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

export class LibvirtDriver implements HypervisorDriver {
  readonly hostName: string;
  readonly capabilities: DriverCapabilities = LIBVIRT_CAPABILITIES;
  readonly paths: PathSemantics = POSIX_PATHS;
  readonly exec: HostExec;
  readonly virshExec: HostExec;
  /** the URI virsh is given (may contain paths of keys, never secrets) */
  readonly uri: string;
  private readonly ctx: LibvirtContext;

  constructor(hostName: string, spec: HostSpec, opts: LibvirtDriverOptions) {
    if (spec.driver !== 'libvirt')
      throw new TypeError(`host ${hostName}: driver ${spec.driver} is not libvirt`);
    this.hostName = hostName;
    const roots = [...opts.allowedRoots, ...(opts.stateDir !== undefined ? [opts.stateDir] : [])];
    // checked before anything is opened: a bad root throws with nothing to clean up
    const allowed = [...new Set(roots.map((r) => assertInside(r, ['/'], { allowRoot: true })))];
    const ssh = spec.ssh ? new SshExec(spec.ssh) : undefined;
    this.exec = opts.exec ?? ssh ?? new LocalExec();
    this.virshExec = opts.virshExec ?? new LocalExec();
    const wrapper = this.exec instanceof SshExec ? this.exec.libvirtSshCommand() : undefined;
    this.uri = libvirtUriWithSsh(spec.uri, spec.ssh, wrapper ? { command: wrapper } : {});
    this.ctx = new LibvirtContext({
      hostName,
      exec: this.exec,
      virshExec: this.virshExec,
      uri: this.uri,
      roots: allowed,
      log: opts.logger,
      quickMs: opts.quickTimeoutMs ?? 120_000,
      pollMs: opts.blockJobPollMs ?? 500,
    });
    // an SshExec we made but do not use (exec was injected) must not leak its control dir;
    // detached (a constructor cannot wait): a control dir that could not be removed is only litter
    if (ssh && this.exec !== ssh) void ssh.close().catch(() => undefined);
  }

  /** `virsh -c URI ARGS...` on the management box; C locale so output parses the same everywhere. */
  virsh(
    args: string[],
    opts: { input?: string; timeoutMs?: number | null; allowExitCodes?: number[]; signal?: AbortSignal } = {},
  ): Promise<RunResult> {
    return this.ctx.virsh(args, opts);
  }

  // ---------------------------------------------------------------- the contract's own words

  ownFile(dir: string, vm: string, migration: string, kind: OwnFileKind): string {
    return posix.join(dir, ownFileBaseName(vm, migration, kind));
  }

  diskPathsOf(def: VmDefinition): Record<string, string | undefined> {
    return Object.fromEntries(parseDomainXml(domainXmlOf(def)).disks.map((d) => [d.target, d.path]));
  }

  /** A disk without a format is one of our qcow2 overlays. */
  withDiskPaths(def: VmDefinition, disks: Record<string, { path: string; format?: string }>): VmDefinition {
    const entries = Object.entries(disks);
    return libvirtDefinition(
      rewriteDiskPaths(
        domainXmlOf(def),
        Object.fromEntries(entries.map(([t, d]) => [t, d.path])),
        Object.fromEntries(entries.map(([t, d]) => [t, d.format ?? 'qcow2'])),
      ),
    );
  }

  canRun(def: VmDefinition): Promise<{ compatible: boolean; message: string }> {
    const xml = domainXmlOf(def);
    return this.compareCpu(xml, parseDomainXml(xml).domainType ?? 'kvm');
  }

  /** External qcow2 overlays (snapshotDisks); returns each layer with the image below it. */
  async freezeDisks(
    vm: string,
    layers: { target: string; layer: string }[],
  ): Promise<{ target: string; layer: string; below: string }[]> {
    await this.snapshotDisks(
      vm,
      layers.map((l) => ({ target: l.target, path: l.layer })),
    );
    const disks = parseDomainXml(await this.dumpXml(vm)).disks;
    return layers.map((l) => ({
      ...l,
      below: disks.find((d) => d.target === l.target)?.backingPaths[0] ?? '',
    }));
  }

  mergeLayers(vm: string, target: string, opts: { top?: string } = {}): Promise<void> {
    return this.blockCommit(vm, target, opts.top !== undefined ? { overlay: opts.top } : {});
  }

  mergeLayerOffline(layer: string): Promise<void> {
    return this.commitOffline(layer);
  }

  /** qemu-img create -b; a parent without a format is one of our qcow2 overlays. */
  createLayer(layer: string, parent: string, parentFormat?: string): Promise<void> {
    return chain.createLayer(this.ctx, layer, parent, parentFormat ?? 'qcow2');
  }

  /** qemu-img rebase -u; a parent without a format is one of our qcow2 overlays. */
  relinkLayer(layer: string, parent: string, parentFormat?: string): Promise<void> {
    return this.rebaseUnsafe(layer, parent, parentFormat ?? 'qcow2');
  }

  async savedDefinition(stateFile: string): Promise<VmDefinition> {
    return libvirtDefinition(await this.savedStateXml(stateFile));
  }

  async definition(vm: string, opts: { inactive?: boolean } = {}): Promise<VmDefinition> {
    return libvirtDefinition(await this.dumpXml(vm, opts));
  }

  moveDiskLive(
    vm: string,
    target: string,
    destPath: string,
    format: string,
    opts: MoveDiskLiveOptions = {},
  ): Promise<void> {
    return this.blockCopy(vm, target, destPath, format, opts);
  }

  // ---------------------------------------------------------------- observation (observe.ts)

  domainState(name: string): Promise<DomainState | undefined> {
    return observe.domainState(this.ctx, name);
  }

  listDomains(): Promise<string[]> {
    return observe.listDomains(this.ctx);
  }

  getDomain(name: string): Promise<DomainInfo | undefined> {
    return observe.getDomain(this.ctx, name);
  }

  /** Without a format: one of our qcow2 overlays. */
  imageInfo(path: string, opts: { format?: string; forceShare?: boolean } = {}): Promise<ImageInfo> {
    return observe.imageInfo(this.ctx, path, { ...opts, format: opts.format ?? 'qcow2' });
  }

  probeFormat(path: string): Promise<string | undefined> {
    return observe.probeFormat(this.ctx, path);
  }

  fsInfo(path: string): Promise<FsInfo> {
    return observe.fsInfo(this.ctx, path);
  }

  storageLocations(): Promise<{ name: string; path: string }[]> {
    return observe.storageLocations(this.ctx);
  }

  compareCpu(domainXml: string, virtType: string): Promise<{ compatible: boolean; message: string }> {
    return observe.compareCpu(this.ctx, domainXml, virtType);
  }

  hostCpu(): Promise<CpuInfo> {
    return observe.hostCpu(this.ctx);
  }

  fileExists(path: string): Promise<boolean> {
    return observe.fileExists(this.ctx, path);
  }

  fileSize(path: string): Promise<number | undefined> {
    return observe.fileSize(this.ctx, path);
  }

  filesInUse(): Promise<Map<string, Set<string>>> {
    return observe.filesInUse(this.ctx);
  }

  // ---------------------------------------------------------------- disk chain operations (chain.ts)

  snapshotDisks(domain: string, overlays: { target: string; path: string }[]): Promise<void> {
    return chain.snapshotDisks(this.ctx, domain, overlays);
  }

  /** The block job on `target`, if any (`blockjob --info --raw`). */
  blockJob(domain: string, target: string): Promise<{ type: string; cur: number; end: number } | undefined> {
    return chain.blockJob(this.ctx, domain, target);
  }

  blockCommit(domain: string, target: string, opts: { overlay?: string } = {}): Promise<void> {
    return chain.blockCommit(this.ctx, domain, target, opts);
  }

  blockCopy(
    domain: string,
    target: string,
    destPath: string,
    format: string,
    opts: MoveDiskLiveOptions = {},
  ): Promise<void> {
    return chain.blockCopy(this.ctx, domain, target, destPath, format, opts);
  }

  rebaseUnsafe(overlay: string, newBacking: string, backingFormat: string): Promise<void> {
    return chain.rebaseUnsafe(this.ctx, overlay, newBacking, backingFormat);
  }

  commitOffline(overlay: string): Promise<void> {
    return chain.commitOffline(this.ctx, overlay);
  }

  checkImage(path: string, format: string): Promise<string[]> {
    return chain.checkImage(this.ctx, path, format);
  }

  // ---------------------------------------------------------------- lifecycle (lifecycle.ts)

  waitForSaveJob(domain: string): Promise<boolean> {
    return lifecycle.waitForSaveJob(this.ctx, domain);
  }

  holdsSavedState(stateFile: string, domain: string): Promise<boolean> {
    return lifecycle.holdsSavedState(this.ctx, stateFile, domain);
  }

  save(domain: string, stateFile: string, opts: { knownActive?: boolean } = {}): Promise<void> {
    return lifecycle.save(this.ctx, domain, stateFile, opts);
  }

  savedStateXml(stateFile: string): Promise<string> {
    return lifecycle.savedStateXml(this.ctx, stateFile);
  }

  restore(
    stateFile: string,
    def?: VmDefinition | string,
    opts: { knownInactive?: boolean } = {},
  ): Promise<void> {
    const xml = typeof def === 'string' ? def : def ? domainXmlOf(def) : undefined;
    return lifecycle.restore(this.ctx, stateFile, xml, opts);
  }

  dumpXml(domain: string, opts: { inactive?: boolean } = {}): Promise<string> {
    return lifecycle.dumpXml(this.ctx, domain, opts);
  }

  define(def: VmDefinition | string): Promise<void> {
    return lifecycle.define(this.ctx, typeof def === 'string' ? def : domainXmlOf(def));
  }

  undefine(domain: string): Promise<void> {
    return lifecycle.undefine(this.ctx, domain);
  }

  start(domain: string): Promise<void> {
    return lifecycle.start(this.ctx, domain);
  }

  resume(domain: string, opts: { knownPaused?: boolean } = {}): Promise<void> {
    return lifecycle.resume(this.ctx, domain, opts);
  }

  pause(domain: string, opts: { knownRunning?: boolean } = {}): Promise<void> {
    return lifecycle.suspend(this.ctx, domain, opts);
  }

  waitForMigrationJob(domain: string): Promise<boolean> {
    return lifecycle.waitForMigrationJob(this.ctx, domain);
  }

  guestRunTime(domain: string): Promise<string | undefined> {
    return lifecycle.guestRunTime(this.ctx, domain);
  }

  destroy(domain: string): Promise<void> {
    return lifecycle.destroy(this.ctx, domain);
  }

  setAutostart(domain: string, on: boolean): Promise<void> {
    return lifecycle.setAutostart(this.ctx, domain, on);
  }

  abortJobs(domain: string): Promise<void> {
    return lifecycle.abortJobs(this.ctx, domain);
  }

  /** Needs libvirt on both hosts (`DriverMismatch` otherwise); see `lifecycle.migrateLive`. */
  async migrateLive(
    domain: string,
    target: HypervisorDriver,
    opts: MigrateLiveOptions,
  ): Promise<{ downtimeMs?: number }> {
    if (!(target instanceof LibvirtDriver))
      throw new StalledError('DriverMismatch', 'live migration needs libvirt on both hosts');
    return lifecycle.migrateLive(this.ctx, domain, target, target.ctx, opts);
  }

  /** Needs libvirt on both hosts (`DriverMismatch` otherwise); see `lifecycle.migrateOntoLayers`. */
  async migrateOntoLayers(
    domain: string,
    target: HypervisorDriver,
    opts: MigrateOntoLayersOptions,
  ): Promise<{ downtimeMs?: number }> {
    if (!(target instanceof LibvirtDriver))
      throw new StalledError('DriverMismatch', 'a migration needs libvirt on both hosts');
    return lifecycle.migrateOntoLayers(this.ctx, domain, target.ctx, opts);
  }

  /** Needs libvirt on both hosts (`DriverMismatch` otherwise); see `lifecycle.migratePaused`. */
  async migratePaused(domain: string, target: HypervisorDriver, opts: MigratePausedOptions): Promise<void> {
    if (!(target instanceof LibvirtDriver))
      throw new StalledError('DriverMismatch', 'a migration needs libvirt on both hosts');
    return lifecycle.migratePaused(this.ctx, domain, target.ctx, opts);
  }

  // ---------------------------------------------------------------- files and ownership (files.ts)

  guardPath(path: string): Promise<void> {
    return files.guardPath(this.ctx, path);
  }

  checksum(path: string): Promise<string> {
    return files.checksum(this.ctx, path);
  }

  removeFile(path: string): Promise<void> {
    return files.removeFile(this.ctx, path);
  }

  makeDir(path: string): Promise<void> {
    return files.makeDir(this.ctx, path);
  }

  removeDirIfEmpty(path: string): Promise<void> {
    return files.removeDirIfEmpty(this.ctx, path);
  }

  fileIdentity(path: string): Promise<string | undefined> {
    return files.fileIdentity(this.ctx, path);
  }

  createExclusive(path: string): Promise<string> {
    return files.createExclusive(this.ctx, path);
  }

  removeIfIdentity(path: string, identity: string): Promise<'removed' | 'absent' | 'other'> {
    return files.removeIfIdentity(this.ctx, path, identity);
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.exec.close(), this.virshExec.close()]);
  }
}
