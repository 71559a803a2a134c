import * as path from 'node:path';
import type { Logger } from 'pino';
import { StalledError, VmplaceError } from '../errors';
import type { DomainInfo, HypervisorDriver } from '../drivers/driver';
import { targetReachable } from '../transfer/between-hosts';
import type { HostSpec, SshSpec } from '../types';
import { type CopyClaim, PART_SUFFIX } from '../transfer/copy-local';
import { namingDiskPaths, targetDiskPath } from '../planner/target-path';
import type { OwnedFile } from './store';
import { hostStateFindings, judgeDiskFormat } from './preflight-findings';
import type { StepActorName } from './migration-machine';
import { actorsFromSteps, type StepActors, type StepFn } from './runner';
import type { DiskMove, MigrationContext, StepOutput } from './types';

/** What the real steps need from the world. */
export interface StepDeps {
  /** the driver of a host by manifest name */
  driverFor(host: string): HypervisorDriver;
  /** rewrite the disk sources of a domain XML (by target device); removes stale backing stores */
  rewriteDiskPaths(xml: string, paths: Record<string, string>): string;
  /** disk target → source path of a domain XML (file disks only) */
  diskPathsOf(xml: string): Record<string, string | undefined>;
  logger?: Logger;
  onProgress?(ctx: MigrationContext, bytesDone: number, bytesTotal: number): void;
  now?(): number;
  /** base of the retry backoff after a failed step, ms (default 1000) */
  retryBaseMs?: number;
  /** true once a shutdown began: steps that can wait do not start (the runner checkpoints) */
  stopping?(): boolean;
  /** bandwidth limit for copies, KiB/s */
  bwlimitKiBps?: number;
  /** the other hosts that see the file `path` of `host` (its cluster's shared storage) */
  sharedWith?(host: string, path: string): string[];
  /** a host's manifest spec: how other hosts reach it for copies (transferAddress, ssh) */
  hostSpecFor?(host: string): HostSpec | undefined;
  /** write-ahead intents (see MigrationStore.markIntent); without them rollback trusts only what it sees */
  intents?: {
    mark(ctx: MigrationContext, what: 'restore' | 'define' | 'save'): Promise<void>;
    has(ctx: MigrationContext, what: 'restore' | 'define' | 'save'): Promise<boolean>;
    /** when the intent was marked (ms since epoch), if it was: a save's is when the pause began */
    at(ctx: MigrationContext, what: 'save'): Promise<number | undefined>;
  };
  /** how copies between hosts go (default auto: host to host, relayed only when unreachable) */
  transferMode?: 'direct' | 'relay' | 'auto';
  /**
   * Write-ahead proofs of the files this migration created (see MigrationStore.recordOwned).
   * Without them nothing whose name was not made by this migration is ever deleted.
   */
  owned?: {
    record(ctx: MigrationContext, rec: OwnedFile): Promise<void>;
    list(ctx: MigrationContext): Promise<OwnedFile[]>;
  };
  /**
   * Aborted when the migration is cancelled while this step runs: long effects (copies, block
   * jobs, a live migration, delta rounds) stop, undo what is in flight, and reject with reason
   * `Cancelled`, or resolve when they had already passed the point of no return.
   */
  signal?: AbortSignal;
}

/** An ownership record written before the file is created; its identity is not known yet. */
const PENDING_IDENTITY = 'pending';

/** The proof of ownership of `path` on `host` for this migration's copies (see CopyClaim). */
function claimFor(ctx: MigrationContext, deps: StepDeps, host: string, p: string): CopyClaim | undefined {
  const owned = deps.owned;
  if (!owned) return undefined;
  return {
    intend: () => owned.record(ctx, { host, path: p, identity: PENDING_IDENTITY }),
    record: (identity) => owned.record(ctx, { host, path: p, identity }),
    owns: async (identity) => {
      const recs = (await owned.list(ctx)).filter((r) => r.host === host && r.path === p);
      if (recs.some((r) => r.identity === identity)) return true;
      // created, then the process died before the identity was recorded: adopt (forward only;
      // a rollback removes only recorded identities)
      if (recs.length > 0 && recs.every((r) => r.identity === PENDING_IDENTITY)) {
        await owned.record(ctx, { host, path: p, identity });
        return true;
      }
      return false;
    },
  };
}

/**
 * Who uses each of `paths` of `host`: every domain on that host, and for files on storage the
 * host shares with its cluster, every domain on those hosts too (named `domain@host`).
 */
async function usersOf(
  deps: StepDeps,
  host: string,
  paths: readonly string[],
): Promise<Map<string, Set<string>>> {
  const out = new Map<string, Set<string>>();
  for (const [p, users] of await deps.driverFor(host).filesInUse()) out.set(p, new Set(users));
  const peers = new Set(paths.flatMap((p) => deps.sharedWith?.(host, p) ?? []));
  for (const peer of peers) {
    const seen = await deps.driverFor(peer).filesInUse();
    for (const p of paths) {
      if (!(deps.sharedWith?.(host, p) ?? []).includes(peer)) continue;
      for (const u of seen.get(p) ?? []) out.set(p, new Set([...(out.get(p) ?? []), `${u}@${peer}`]));
    }
  }
  return out;
}

/** Stop here when the migration was cancelled (between the parts of a long step). */
function throwIfCancelled(deps: StepDeps, what: string): void {
  if (deps.signal?.aborted) throw new VmplaceError('Cancelled', `cancelled during ${what}`);
}

type Step = (ctx: MigrationContext, deps: StepDeps) => Promise<StepOutput>;

/** The file name vmplace gives a migration's own files, so leftovers are recognisable. */
export function ownFileName(vm: string, id: string, what: string): string {
  return `${vm}.${what}.vmplace-${id}`;
}

/** The source overlay of round `r` (round 1 is the one Snapshotting made). */
export function srcOverlayAt(ctx: MigrationContext, d: DiskMove, r: number): string {
  return r <= 1
    ? d.srcOverlay
    : path.posix.join(
        path.posix.dirname(d.srcOverlay),
        ownFileName(ctx.vm, ctx.id, `${d.target}.overlay${r}`),
      );
}

/** The target copy of the source overlay of round `r`. */
export function dstOverlayAt(ctx: MigrationContext, d: DiskMove, r: number): string {
  return r <= 1
    ? d.dstOverlay
    : path.posix.join(
        path.posix.dirname(d.dstOverlay),
        ownFileName(ctx.vm, ctx.id, `${d.target}.overlay${r}`),
      );
}

/** The highest round any overlay of this migration can have. */
const lastPossibleRound = (ctx: MigrationContext): number => Math.max(1, ctx.maxRounds ?? 1);

/** The round of the source overlay the disk runs on, if it runs on one of ours. */
function roundOnSource(ctx: MigrationContext, d: DiskMove, p: string | undefined): number | undefined {
  for (let r = 1; r <= lastPossibleRound(ctx); r++) if (p === srcOverlayAt(ctx, d, r)) return r;
  return undefined;
}

function diskOf(dom: DomainInfo, target: string): DomainInfo['disks'][number] | undefined {
  return dom.disks.find((d) => d.target === target);
}

const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);

// ------------------------------------------------------------------ Preflight

const preflight: Step = async (ctx, deps) => {
  const src = deps.driverFor(ctx.fromHost);
  const dst = deps.driverFor(ctx.toHost);
  const cross = ctx.fromHost !== ctx.toHost;
  const dom = await src.getDomain(ctx.vm);
  if (!dom)
    throw new StalledError('DomainNotFound', `no domain ${ctx.vm} is defined on host ${ctx.fromHost}`);

  let effective: 'quick' | 'cold' | 'live';
  if (dom.state === 'shutoff') effective = 'cold';
  else if (dom.state === 'running') {
    if (ctx.strategy === 'cold')
      throw new StalledError('DomainRunning', `strategy cold needs ${ctx.vm} shut off; it is running`);
    // live: a mirror on one host, live migration with storage across hosts; auto: live
    effective = ctx.strategy === 'live' || ctx.strategy === 'auto' ? 'live' : 'quick';
  } else {
    throw new StalledError(
      'DomainStateUnsupported',
      `${ctx.vm} is ${dom.state}; vmplace moves running or shut-off VMs`,
    );
  }

  let transferMode: 'direct' | 'relay' | undefined;
  if (cross) {
    if (await dst.getDomain(ctx.vm))
      throw new StalledError(
        'DomainExistsOnTarget',
        `a domain ${ctx.vm} is already defined on ${ctx.toHost}`,
      );
    // every disk must be a file the target can have: copied, or on storage both hosts mount
    for (const d of dom.disks) {
      if (d.device !== 'disk' && d.device !== 'lun') continue;
      if (d.type !== 'file')
        throw new StalledError(
          'DiskNotFile',
          `${ctx.vm} disk ${d.target} is a ${d.type} disk; only files move between hosts`,
        );
      if (!ctx.moves.some((m) => m.target === d.target))
        throw new StalledError(
          'DiskNotPlanned',
          `${ctx.vm} disk ${d.target} has no planned placement on ${ctx.toHost}`,
        );
    }
    const [hostState] = hostStateFindings(dom);
    if (hostState) throw new StalledError(hostState.reason, `${ctx.vm}: ${hostState.message}`);
    const cpu = await dst.compareCpu(dom.xml, dom.domainType ?? 'kvm');
    if (!cpu.compatible)
      throw new StalledError('CpuIncompatible', `${ctx.toHost} cannot run ${ctx.vm}'s CPU: ${cpu.message}`);
    if (ctx.moves.some((m) => !m.stays)) {
      const reachable = await targetReachable(src.exec, transferSsh(deps, ctx.toHost));
      const mode = deps.transferMode ?? 'auto';
      if (mode === 'direct' && !reachable)
        throw new StalledError(
          'TargetUnreachable',
          `${ctx.fromHost} cannot reach ${ctx.toHost}'s transfer address`,
        );
      transferMode = mode === 'relay' || !reachable ? 'relay' : 'direct';
      if (transferMode === 'relay' && effective === 'live') {
        // a live migration streams host to host: without a path between them, quick it is
        effective = 'quick';
        deps.logger?.warn('the hosts cannot reach each other: live migration is not possible, using quick');
      }
      if (transferMode === 'relay')
        deps.logger?.warn(
          { from: ctx.fromHost, to: ctx.toHost },
          'hosts cannot reach each other: copies are relayed by the management box',
        );
    }
  }

  const disks: DiskMove[] = [];
  const vmDiskPaths = namingDiskPaths(dom.disks);
  // Files of this VM that another domain on the source host uses (a linked clone's base, an
  // image shared read-only): moving them would delete them under that domain.
  const inUse = ctx.moves.some((m) => !m.stays)
    ? await usersOf(
        deps,
        ctx.fromHost,
        dom.disks.flatMap((x) => (x.path ? [x.path] : [])),
      )
    : new Map<string, Set<string>>();
  for (const m of ctx.moves) {
    const d = diskOf(dom, m.target);
    if (!d) throw new StalledError('DiskNotFound', `${ctx.vm} has no disk ${m.target}`);
    if (d.type !== 'file' || !d.path)
      throw new StalledError('DiskNotFile', `${ctx.vm} disk ${m.target} is a ${d.type} disk, not a file`);
    if (d.device !== 'disk')
      throw new StalledError('DiskNotFile', `${ctx.vm} disk ${m.target} is a ${d.device}, not a disk`);
    if (d.shareable && !m.stays)
      throw new StalledError(
        'DiskShareable',
        `${ctx.vm} disk ${m.target} is shareable (other VMs may write to it); vmplace does not move shared disks`,
      );
    const others = [...(inUse.get(d.path) ?? [])].filter((n) => n !== ctx.vm);
    if (others.length > 0 && !m.stays)
      throw new StalledError(
        'DiskUsedByOtherDomain',
        `${d.path} (${ctx.vm} disk ${m.target}) is also used by ${others.sort().join(', ')} on ${ctx.fromHost}`,
      );
    if (d.hasBackingStore)
      throw new StalledError(
        'DiskHasBackingChain',
        `${ctx.vm} disk ${m.target} already has a backing chain (an external snapshot?); merge it first`,
      );
    // opened only as the format libvirt declares; the first bytes only decide whether to go on
    const declared = d.format ?? 'raw';
    const verdict = judgeDiskFormat(declared, await src.probeFormat(d.path));
    if (!verdict.ok)
      throw new StalledError(verdict.reason, `${ctx.vm} disk ${m.target} (${d.path}): ${verdict.message}`);
    if (verdict.warning) deps.logger?.warn({ disk: m.target, path: d.path, declared }, verdict.warning);
    const info = await src.imageInfo(d.path, { forceShare: true, format: declared });
    if (info.chainLength > 1 || info.backingFile)
      throw new StalledError(
        'DiskHasBackingChain',
        `${d.path} has a backing file ${info.backingFile ?? ''}`.trim(),
      );
    // stays: the disk is on storage both hosts mount at the same path
    if (m.stays) {
      if (!isInside(d.path, m.toPath))
        throw new StalledError('SharedPathMismatch', `${d.path} is not on the shared storage ${m.toPath}`);
      continue;
    }
    // already on the target storage of this host (a resumed or repeated move): nothing to copy
    if (!cross && isInside(d.path, m.toPath)) continue;
    const dstPath = targetDiskPath(ctx.vm, m.target, d.path, m.toPath, vmDiskPaths);
    if (await dst.fileExists(dstPath))
      throw new StalledError(
        'TargetFileExists',
        `${dstPath} already exists on ${ctx.toHost}; vmplace never overwrites it`,
      );
    disks.push({
      target: m.target,
      format: declared,
      fromStorage: m.fromStorage,
      toStorage: m.toStorage,
      srcPath: d.path,
      dstPath,
      srcOverlay: path.posix.join(
        path.posix.dirname(d.path),
        ownFileName(ctx.vm, ctx.id, `${m.target}.overlay`),
      ),
      dstOverlay: path.posix.join(m.toPath, ownFileName(ctx.vm, ctx.id, `${m.target}.overlay`)),
      virtualBytes: info.virtualBytes,
      allocatedBytes: info.allocatedBytes,
    });
  }
  if (disks.length === 0 && !cross)
    throw new StalledError('NothingToMove', `${ctx.vm}'s disks are already where they should be`);

  const firstTo = ctx.moves[0]!.toPath;
  const stateName = ownFileName(ctx.vm, ctx.id, 'state');
  // One host: save onto the target storage. Hosts of one cluster: save onto its shared
  // storage, where the target restores it (nothing to copy in the pause). Else save beside the
  // first source disk and copy it over.
  const shared = cross ? ctx.sharedStatePath : undefined;
  const stateFile = effective === 'quick' ? path.posix.join(shared ?? firstTo, stateName) : undefined;
  const srcStateFile =
    stateFile && cross && !shared && disks.length > 0
      ? path.posix.join(path.posix.dirname(disks[0]!.srcPath), stateName)
      : stateFile;

  // Space: the target holds every moved base and overlay (estimated by the headroom ratio)
  // and the memory state, plus the margin; the source holds the overlays.
  const need = new Map<string, number>();
  // measured on the storage location (the VM's directory in it may not exist yet)
  const rootOf = new Map(ctx.moves.map((m) => [m.target, m.toPath]));
  for (const d of disks) {
    const dir = rootOf.get(d.target) ?? path.posix.dirname(d.dstPath);
    const overlay = effective === 'quick' ? Math.ceil(d.virtualBytes * ctx.sourceHeadroomRatio) : 0;
    need.set(dir, (need.get(dir) ?? 0) + d.allocatedBytes + overlay);
  }
  if (stateFile) {
    const dir = path.posix.dirname(stateFile);
    need.set(dir, (need.get(dir) ?? 0) + dom.memoryBytes);
  }
  for (const [dir, bytes] of need) {
    const fs = await dst.fsInfo(dir).catch((err: unknown) => {
      throw new StalledError('TargetStorageMissing', `target storage ${dir} on ${ctx.toHost} is not usable`, {
        cause: err,
      });
    });
    if (fs.freeBytes < bytes + ctx.targetMarginBytes)
      throw new StalledError(
        'TargetSpaceInsufficient',
        `${dir} on ${ctx.toHost} has ${fs.freeBytes} bytes free; the move needs ${bytes} plus a margin of ${ctx.targetMarginBytes}`,
      );
    await probeWritable(dst, dir, ctx);
  }
  if (effective === 'quick') {
    const srcNeed = new Map<string, number>();
    for (const d of disks) {
      const dir = path.posix.dirname(d.srcPath);
      srcNeed.set(dir, (srcNeed.get(dir) ?? 0) + Math.ceil(d.virtualBytes * ctx.sourceHeadroomRatio));
    }
    if (srcStateFile && cross && disks.length > 0) {
      const dir = path.posix.dirname(srcStateFile);
      srcNeed.set(dir, (srcNeed.get(dir) ?? 0) + dom.memoryBytes);
    }
    for (const [dir, bytes] of srcNeed) {
      const fs = await src.fsInfo(dir);
      if (fs.freeBytes < bytes)
        throw new StalledError(
          'SourceHeadroomInsufficient',
          `${dir} on ${ctx.fromHost} has ${fs.freeBytes} bytes free; the differencing disks may need ${bytes}`,
        );
    }
  }
  const bytesTotal = sum(disks.map((d) => d.allocatedBytes));
  deps.logger?.info({ strategy: effective, disks: disks.length, bytesTotal }, 'preflight passed');
  return {
    effectiveStrategy: effective,
    disks,
    memoryBytes: dom.memoryBytes,
    stateFile,
    srcStateFile,
    copyState: Boolean(stateFile && cross && !shared && disks.length > 0),
    ...(transferMode ? { transferMode } : {}),
    wasRunning: dom.state === 'running',
    ...(cross && dom.autostart ? { sourceAutostart: true } : {}),
    bytesTotal,
    bytesDone: 0,
  };
};

/** Does `p` lie inside the directory `root` (lexically; both absolute and normalised)? */
function isInside(p: string, root: string): boolean {
  const r = root.endsWith('/') ? root : `${root}/`;
  return p.startsWith(r);
}

async function probeWritable(drv: HypervisorDriver, dir: string, ctx: MigrationContext): Promise<void> {
  const probe = path.posix.join(dir, ownFileName(ctx.vm, ctx.id, 'probe'));
  try {
    await drv.exec.run(['touch', '--', probe]);
  } catch (err) {
    throw new StalledError('TargetNotWritable', `cannot write to ${dir} on ${ctx.toHost}`, { cause: err });
  }
  await drv.removeFile(probe);
}

// ------------------------------------------------------------------ quick: forward steps

const snapshotDisks: Step = async (ctx, deps) => {
  if (ctx.disks.length === 0) return {};
  const drv = deps.driverFor(ctx.fromHost);
  const dom = await mustGetDomain(drv, ctx);
  const onOverlay = ctx.disks.filter((d) => diskOf(dom, d.target)?.path === d.srcOverlay);
  if (onOverlay.length === ctx.disks.length) return {};
  if (onOverlay.length > 0)
    throw new StalledError('InconsistentSnapshot', `only some of ${ctx.vm}'s disks run on overlays`);
  // A leftover overlay file from a snapshot that failed must not make libvirt refuse.
  for (const d of ctx.disks) await drv.removeFile(d.srcOverlay);
  await drv.snapshotDisks(
    ctx.vm,
    ctx.disks.map((d) => ({ target: d.target, path: d.srcOverlay })),
  );
  return {};
};

/** How the source host reaches `host` for copies: its transfer address, with the source host's own ssh identity. */
function transferSsh(deps: StepDeps, host: string): SshSpec {
  const spec = deps.hostSpecFor?.(host);
  const address = spec?.transferAddress ?? spec?.ssh?.host;
  if (!address)
    throw new StalledError('NoTransferAddress', `host ${host} has neither transferAddress nor ssh.host`);
  return {
    host: address,
    user: spec?.ssh?.user ?? 'root',
    ...(spec?.ssh?.port ? { port: spec.ssh.port } : {}),
  };
}

/** Copy a file from the source host to the target (the same host or another), verified. */
async function copyAcross(
  ctx: MigrationContext,
  deps: StepDeps,
  from: string,
  to: string,
  onProgress?: (n: number) => void,
  opts: { relayBelowBytes?: number; claim?: CopyClaim } = {},
): Promise<void> {
  const src = deps.driverFor(ctx.fromHost);
  const extra = {
    ...(opts.claim ? { claim: opts.claim } : {}),
    ...(deps.signal ? { signal: deps.signal } : {}),
  };
  if (ctx.fromHost === ctx.toHost) {
    await src.copyFile(from, to, onProgress, {
      ...(deps.bwlimitKiBps ? { bwlimitKiBps: deps.bwlimitKiBps } : {}),
      ...extra,
    });
    return;
  }
  await src.copyToHost(deps.driverFor(ctx.toHost), from, to, {
    ...extra,
    targetSsh: transferSsh(deps, ctx.toHost),
    mode: ctx.transferMode ?? 'direct',
    ...(opts.relayBelowBytes ? { relayBelowBytes: opts.relayBelowBytes } : {}),
    ...(onProgress ? { onProgress } : {}),
    ...(deps.bwlimitKiBps ? { bwlimitKiBps: deps.bwlimitKiBps } : {}),
  });
}

const copyBase: Step = async (ctx, deps) => {
  if (ctx.effectiveStrategy === 'live') return mirrorDisks(ctx, deps);
  const src = deps.driverFor(ctx.fromHost);
  const dst = deps.driverFor(ctx.toHost);
  if (ctx.effectiveStrategy === 'cold') {
    const dom = await mustGetDomain(src, ctx);
    if (dom.state !== 'shutoff')
      throw new VmplaceError('DomainStarted', `${ctx.vm} was started during a cold move`);
  }
  const disks: DiskMove[] = [];
  let done = 0;
  const started = Date.now();
  for (const d of ctx.disks) {
    throwIfCancelled(deps, 'the base copy');
    const claim = claimFor(ctx, deps, ctx.toHost, d.dstPath);
    if (
      d.baseChecksum &&
      (await dst.fileExists(d.dstPath)) &&
      (await ownedHere(ctx, deps, ctx.toHost, d.dstPath))
    ) {
      if ((await dst.checksum(d.dstPath)) === d.baseChecksum) {
        done += d.allocatedBytes;
        disks.push(d);
        continue;
      }
    }
    const before = done;
    await dst.makeDir(path.posix.dirname(d.dstPath));
    await copyAcross(
      ctx,
      deps,
      d.srcPath,
      d.dstPath,
      (n) => deps.onProgress?.(ctx, before + Math.min(n, d.allocatedBytes), ctx.bytesTotal),
      claim ? { claim } : {},
    );
    const [a, b] = await Promise.all([src.checksum(d.srcPath), dst.checksum(d.dstPath)]);
    if (a !== b) {
      await removeOwned(ctx, deps, ctx.toHost, d.dstPath);
      throw new VmplaceError(
        'ChecksumMismatch',
        `copy of ${d.srcPath} to ${d.dstPath} differs (sha256 ${a} != ${b})`,
      );
    }
    done += d.allocatedBytes;
    deps.onProgress?.(ctx, done, ctx.bytesTotal);
    disks.push({ ...d, baseChecksum: a });
  }
  const elapsed = Math.max(1, Date.now() - started);
  if (ctx.effectiveStrategy === 'quick' && (ctx.maxRounds ?? 1) > 1 && disks.length > 0) {
    const rounds = await deltaRounds({ ...ctx, disks }, deps, Math.max(done / elapsed, 10_000));
    return { disks, bytesDone: done, rounds };
  }
  return { disks, bytesDone: done };
};

/** Is the file at `p` on `host` the one this migration recorded as created by it? */
async function ownedHere(ctx: MigrationContext, deps: StepDeps, host: string, p: string): Promise<boolean> {
  if (!deps.owned) return false;
  const id = await deps.driverFor(host).fileIdentity(p);
  return (
    id !== undefined &&
    (await deps.owned.list(ctx)).some((r) => r.host === host && r.path === p && r.identity === id)
  );
}

/**
 * Remove `p` (and its part file) on `host` only as far as this migration can prove it created
 * them: by the identity recorded before anything was written. Returns the paths left behind
 * (there, but not provably ours).
 */
async function removeOwned(
  ctx: MigrationContext,
  deps: StepDeps,
  host: string,
  p: string,
): Promise<string[]> {
  const drv = deps.driverFor(host);
  const records = (await deps.owned?.list(ctx)) ?? [];
  const left: string[] = [];
  for (const f of [p, p + PART_SUFFIX]) {
    const mine = records.filter((r) => r.host === host && r.path === p).map((r) => r.identity);
    let gone = false;
    for (const id of mine) {
      const r = await drv.removeIfIdentity(f, id);
      if (r !== 'other') {
        gone = true;
        break;
      }
    }
    if (!gone && (await drv.fileExists(f))) left.push(f);
  }
  return left;
}

/** Copy round `r`'s (read-only) overlays to the target and rebase them onto the layer below. */
async function copyRound(ctx: MigrationContext, deps: StepDeps, r: number): Promise<void> {
  const dst = deps.driverFor(ctx.toHost);
  await Promise.all(
    ctx.disks.map(async (d) => {
      const from = srcOverlayAt(ctx, d, r);
      const to = dstOverlayAt(ctx, d, r);
      // the way the pause will copy (small files through the management box): measured here
      const small = { relayBelowBytes: PAUSE_RELAY_BELOW_BYTES };
      try {
        await copyAcross(ctx, deps, from, to, undefined, small); // a complete copy found there is only compared
      } catch (err) {
        if (!(err instanceof VmplaceError && err.reason === 'DestinationDiffers')) throw err;
        await dst.removeFile(to); // rebased already by an interrupted run: copy again
        await copyAcross(ctx, deps, from, to, undefined, small);
      }
      await dst.rebaseUnsafe(
        to,
        r === 1 ? d.dstPath : dstOverlayAt(ctx, d, r - 1),
        r === 1 ? d.format : 'qcow2',
      );
    }),
  );
}

/**
 * Iterative delta rounds (beyond the seed): while the VM runs, freeze the active overlay under
 * a new one and copy it, until the delta left for the pause is predicted to fit the pause
 * budget, stops shrinking, or the round limit is reached. Resumable: the active round is read
 * from the domain; earlier rounds are copied again only if their copy is not complete.
 * Returns the round active at the end (the one CopyingDelta copies during the pause).
 */
async function deltaRounds(ctx: MigrationContext, deps: StepDeps, bytesPerMs: number): Promise<number> {
  const src = deps.driverFor(ctx.fromHost);
  const log = deps.logger;
  const dom = await mustGetDomain(src, ctx);
  let r = roundOnSource(ctx, ctx.disks[0]!, diskOf(dom, ctx.disks[0]!.target)?.path) ?? 1;
  for (let k = 1; k < r; k++) await copyRound(ctx, deps, k);
  // fixed costs of the pause: save and restore, and copying the memory state between hosts
  const fixedMs = 600 + (ctx.copyState ? ctx.memoryBytes / bytesPerMs : 0);
  const budgetMs = Math.max(50, (ctx.maxPauseMs ?? 1000) - fixedMs);
  // What a delta costs to copy is measured on the rounds themselves, which copy the way the
  // pause does (small files through the management box, see PAUSE_RELAY_BELOW_BYTES): the base
  // copy's rate says little about it (a base may be mostly zeros, compressed away on the link).
  // Before any round only a tiny delta is trusted to fit.
  let msPerByte: number | undefined;
  let previous = Infinity;
  for (;;) {
    const sizes = await Promise.all(
      ctx.disks.map((d) =>
        src
          .imageInfo(srcOverlayAt(ctx, d, r), { forceShare: true, format: 'qcow2' })
          .then((i) => i.allocatedBytes),
      ),
    );
    const delta = sum(sizes);
    const predictedMs =
      msPerByte !== undefined
        ? delta * msPerByte
        : delta <= FIRST_DELTA_TRUSTED_BYTES
          ? delta / Math.max(bytesPerMs / 2, 10_000)
          : Infinity;
    log?.info(
      {
        round: r,
        deltaBytes: delta,
        predictedMs: Number.isFinite(predictedMs) ? Math.round(predictedMs) : null,
        budgetMs: Math.round(budgetMs),
      },
      'delta round',
    );
    if (predictedMs <= budgetMs || r >= lastPossibleRound(ctx) || delta > 0.8 * previous) return r;
    throwIfCancelled(deps, 'the delta rounds');
    await src.snapshotDisks(
      ctx.vm,
      ctx.disks.map((d) => ({ target: d.target, path: srcOverlayAt(ctx, d, r + 1) })),
    );
    const t0 = Date.now();
    await copyRound(ctx, deps, r);
    msPerByte = (Date.now() - t0) / Math.max(delta, 1);
    previous = delta;
    r++;
  }
}

/** A first delta up to this size is copied in the pause without a round to measure first. */
const FIRST_DELTA_TRUSTED_BYTES = 4 * 1024 * 1024;

async function mirrorDisks(ctx: MigrationContext, deps: StepDeps): Promise<StepOutput> {
  if (ctx.fromHost !== ctx.toHost) return migrateLive(ctx, deps);
  const drv = deps.driverFor(ctx.fromHost);
  let committed = ctx.committed;
  let done = 0;
  for (const d of ctx.disks) {
    // before the first pivot a cancel rolls back; after it the VM runs partly from the target
    if (!committed) throwIfCancelled(deps, 'the live mirror');
    const dom = await mustGetDomain(drv, ctx);
    if (diskOf(dom, d.target)?.path !== d.dstPath) {
      await drv.makeDir(path.posix.dirname(d.dstPath));
      const claim = claimFor(ctx, deps, ctx.toHost, d.dstPath);
      await drv.blockCopy(ctx.vm, d.target, d.dstPath, d.format, {
        ...(claim ? { claim, virtualBytes: d.virtualBytes } : {}),
        ...(deps.signal && !committed ? { signal: deps.signal } : {}),
        ...(deps.bwlimitKiBps ? { bandwidthMiBps: Math.max(1, deps.bwlimitKiBps / 1024) } : {}),
      });
    }
    // From the first pivot on the VM runs (partly) from the target: only forward.
    committed = true;
    done += d.allocatedBytes;
    deps.onProgress?.(ctx, done, ctx.bytesTotal);
  }
  return { committed, bytesDone: done, pauseMs: 0 };
}

/**
 * The switch-over QEMU aims at in a live migration across hosts: the measured stop is longer
 * than QEMU's prediction (device state, the block mirror's last writes), so aim well below
 * the 100 ms a live move promises. A VM written faster than the link can carry keeps
 * iterating; libvirt's job can be cancelled and the VM stays on the source.
 */
const LIVE_DOWNTIME_MS = 50;

/**
 * Live across hosts: QEMU streams memory and disks to the target (libvirt's migration with
 * storage); the VM pauses only for the final switch-over. From the moment the migration may
 * have started the target could run the VM: a write-ahead intent keeps a rollback honest.
 */
async function migrateLive(ctx: MigrationContext, deps: StepDeps): Promise<StepOutput> {
  const src = deps.driverFor(ctx.fromHost);
  const dst = deps.driverFor(ctx.toHost);
  const all = ctx.moves.map((m) => {
    const d = ctx.disks.find((x) => x.target === m.target);
    return d;
  });
  const dom = await src.getDomain(ctx.vm);
  // disks that stay on shared storage keep their path; the others get their target path
  const disks = (dom?.disks ?? [])
    .filter((x) => x.device === 'disk' || x.device === 'lun')
    .map((x) => {
      const moved = all.find((d) => d?.target === x.target);
      return moved
        ? { target: x.target, path: moved.dstPath, format: moved.format, virtualBytes: moved.virtualBytes }
        : undefined;
    })
    .filter(
      (x): x is { target: string; path: string; format: string; virtualBytes: number } => x !== undefined,
    );
  await deps.intents?.mark(ctx, 'restore');
  if (ctx.sourceAutostart) await src.setAutostart(ctx.vm, false);
  const owned = deps.owned;
  const res = await src.migrateLive(ctx.vm, dst, {
    disks,
    ...(owned ? { claimFor: (p: string) => claimFor(ctx, deps, ctx.toHost, p)! } : {}),
    ...(deps.signal ? { signal: deps.signal } : {}),
    address: transferSsh(deps, ctx.toHost).host,
    maxDowntimeMs: Math.min(ctx.maxPauseMs ?? LIVE_DOWNTIME_MS, LIVE_DOWNTIME_MS),
    ...(deps.bwlimitKiBps ? { bandwidthMiBps: Math.max(1, deps.bwlimitKiBps / 1024) } : {}),
  });
  deps.onProgress?.(ctx, ctx.bytesTotal, ctx.bytesTotal);
  deps.logger?.info({ downtimeMs: res.downtimeMs }, 'VM live-migrated to the target');
  return { committed: true, bytesDone: ctx.bytesTotal, pauseMs: res.downtimeMs ?? 0 };
}

/** What Saving sees of the VM on the source (see {@link decideSave}). */
export interface SaveObservation {
  state: DomainInfo['state'];
  /** the state file holds a complete saved state of this VM (`save-image-dumpxml` reads it) */
  stateUsable: boolean;
  /** this migration issued a save before (a write-ahead intent); true when unknown */
  saveIssued: boolean;
}

/**
 * What Saving does, from what it sees (pure). Running: save (again: a save that never happened
 * or was aborted left it running). Shut off with a complete saved state: saved already (an
 * interrupted run's save, which libvirt finishes though its virsh died). Shut off without one
 * after this migration's save: the guest's memory is lost; nothing may boot it afresh (that is
 * a different machine to its users): `lost`, a stop for a human. Anything else (paused, or shut
 * off before any save of ours): `notRunning`, back to the source (rollback resumes a paused VM
 * and never starts a stopped one).
 */
export function decideSave(o: SaveObservation): 'save' | 'saved' | 'lost' | 'notRunning' {
  if (o.state === 'running') return 'save';
  if (o.state === 'shutoff' && o.stateUsable) return 'saved';
  if (o.state === 'shutoff' && o.saveIssued) return 'lost';
  return 'notRunning';
}

const saveVm: Step = async (ctx, deps) => {
  const drv = deps.driverFor(ctx.fromHost);
  const stateFile = ctx.srcStateFile ?? ctx.stateFile!;
  const now = deps.now ?? Date.now;
  // Resumed after a save was issued: the pause began then (the persisted time keeps pauseMs
  // whole across a restart), and libvirt may still be writing that save.
  const issuedAt = await deps.intents?.at(ctx, 'save');
  let dom = await mustGetDomain(drv, ctx);
  if (issuedAt !== undefined && dom.state !== 'shutoff' && (await drv.waitForSaveJob(ctx.vm)))
    dom = await mustGetDomain(drv, ctx);
  const decision = decideSave({
    state: dom.state,
    stateUsable: dom.state === 'shutoff' && (await drv.holdsSavedState(stateFile, ctx.vm)),
    saveIssued: deps.intents ? issuedAt !== undefined : true,
  });
  if (decision === 'saved') return { pausedAt: ctx.pausedAt ?? issuedAt ?? now() };
  if (decision === 'lost')
    throw new StalledError(
      'SavedStateLost',
      `${ctx.vm} is shut off on ${ctx.fromHost} after vmplace saved it, but ${stateFile} holds no complete saved state: the guest's memory is lost; vmplace does not boot it afresh, the VM is left as it is`,
    );
  if (decision === 'notRunning')
    throw new VmplaceError('DomainNotRunning', `${ctx.vm} is ${dom.state}, expected running`);
  await drv.removeFile(stateFile); // a partial file from an interrupted save
  // a source host that reboots once the VM runs on the target must not start it again
  if (ctx.sourceAutostart) await drv.setAutostart(ctx.vm, false);
  // durable before the save: a restart finds when the pause began and that a save was issued
  await deps.intents?.mark(ctx, 'save');
  const pausedAt = now();
  const saving = drv.save(ctx.vm, stateFile, { knownActive: true });
  const early = ctx.effectiveStrategy === 'quick' ? copyDeltaEarly(ctx, deps, saving) : undefined;
  try {
    await saving;
  } finally {
    // settled before anything else (a rollback) touches the target's files
    await early;
  }
  return { pausedAt };
};

/** Overlays {@link copyDeltaEarly} copied, by migration id (in memory: a hint, never trusted alone). */
const earlyCopies = new Map<string, { at: number; paths: Set<string> }>();

/**
 * Beyond the seed: `virsh save` stops the VM's CPUs first (QEMU drains and flushes the disks
 * then) and writes the memory state after; the overlays do not change from the stop on. So
 * copy them to the target while the memory is being written, instead of after. Best effort:
 * CopyingDelta still compares each copy with its source (sha256 on both hosts) and copies
 * again whatever differs (a header written when QEMU inactivated the disk, a failed save after
 * which the VM ran on); it only finds the work done.
 */
async function copyDeltaEarly(ctx: MigrationContext, deps: StepDeps, saving: Promise<void>): Promise<void> {
  const src = deps.driverFor(ctx.fromHost);
  let saved = false;
  const done = saving.then(
    () => (saved = true),
    () => (saved = true),
  );
  try {
    for (;;) {
      const asked = src.domainState(ctx.vm);
      asked.catch(() => undefined); // may lose the race below and fail later
      const state = await Promise.race([asked, done.then(() => 'saved' as const)]);
      if (saved || state === 'saved') {
        // the save ended before a stop was seen: copy now only if it succeeded
        if (
          !(await saving.then(
            () => true,
            () => false,
          ))
        )
          return;
        break;
      }
      if (state !== 'running') break; // paused by the save (or shut off by it): disks quiet
      await new Promise((r) => setTimeout(r, 10));
    }
    const small = { relayBelowBytes: PAUSE_RELAY_BELOW_BYTES };
    const r = ctx.rounds ?? 1;
    await Promise.all(
      ctx.disks.map((d) =>
        copyAcross(ctx, deps, srcOverlayAt(ctx, d, r), dstOverlayAt(ctx, d, r), undefined, small),
      ),
    );
    earlyCopies.set(ctx.id, {
      at: Date.now(),
      paths: new Set(ctx.disks.map((d) => dstOverlayAt(ctx, d, r))),
    });
    deps.logger?.info('delta copied while the memory state was being saved');
  } catch (err) {
    deps.logger?.info({ err }, 'early delta copy failed; CopyingDelta copies it');
  }
}

/**
 * Inside the pause, files up to this size cross through the management box over the ssh
 * connections it holds open, instead of rsync's new connection from host to host (~0.2 s of
 * start-up in the lab against ~20 ms).
 */
const PAUSE_RELAY_BELOW_BYTES = 64 * 1024 * 1024;

const copyDelta: Step = async (ctx, deps) => {
  const src = deps.driverFor(ctx.fromHost);
  const dst = deps.driverFor(ctx.toHost);
  // The VM is paused from here to the restore: copy everything at once; every copy is
  // verified by sha256 on both ends, so a copy found complete is only compared, never redone
  // (the copy itself looks first: no round trip of its own here).
  // small files (the last delta of iterative rounds) through the connections already open
  const small = { relayBelowBytes: PAUSE_RELAY_BELOW_BYTES };
  const early = earlyCopies.get(ctx.id);
  earlyCopies.delete(ctx.id);
  for (const [id, e] of earlyCopies) if (Date.now() - e.at > 60_000) earlyCopies.delete(id);
  const copyOne = async (from: string, to: string): Promise<void> => {
    if (early?.paths.has(to)) {
      // copied while the memory was saved: compare now that the save is over (one round trip)
      const [a, b] = await Promise.all([src.checksum(from), dst.checksum(to)]).catch(() => ['', '-']);
      if (a === b) return;
    }
    try {
      await copyAcross(ctx, deps, from, to, undefined, small);
    } catch (err) {
      if (!(err instanceof VmplaceError && err.reason === 'DestinationDiffers')) throw err;
      await dst.removeFile(to); // partial, or already rebased by an interrupted run
      await copyAcross(ctx, deps, from, to, undefined, small);
    }
  };
  const from = ctx.srcStateFile;
  const to = ctx.stateFile!;
  const stateInPlace = !from || (!ctx.copyState && from === to);
  if (stateInPlace && ctx.effectiveStrategy !== 'cold') {
    const lookups = restoreLookups(ctx, deps);
    lookups.catch(() => undefined); // Restoring awaits it (or asks again)
    for (const [id, p] of prefetchedRestore)
      if (Date.now() - p.at >= PREFETCH_FRESH_MS) prefetchedRestore.delete(id); // never taken
    prefetchedRestore.set(ctx.id, { at: Date.now(), lookups });
  }
  await Promise.all([
    ...ctx.disks.map(async (d) => {
      const r = ctx.rounds ?? 1;
      await copyOne(srcOverlayAt(ctx, d, r), dstOverlayAt(ctx, d, r));
      await dst.rebaseUnsafe(
        dstOverlayAt(ctx, d, r),
        r === 1 ? d.dstPath : dstOverlayAt(ctx, d, r - 1),
        r === 1 ? d.format : 'qcow2',
      );
    }),
    ...(from && (ctx.copyState || from !== to) ? [copyOne(from, to)] : []),
  ]);
  return {};
};

interface RestoreLookups {
  dom: DomainInfo | undefined;
  onSource: DomainInfo | undefined;
  saved: { xml: string } | { err: unknown };
}

/**
 * What Restoring asks before it restores: the domain on both hosts and the saved XML. The VM is
 * paused: ask both hosts and read the saved XML at once (each virsh call over ssh is a round
 * trip); an unreadable state file only matters if a restore is still needed.
 */
function restoreLookups(ctx: MigrationContext, deps: StepDeps): Promise<RestoreLookups> {
  const drv = deps.driverFor(ctx.toHost);
  const cross = ctx.fromHost !== ctx.toHost;
  return Promise.all([
    drv.getDomain(ctx.vm),
    cross ? deps.driverFor(ctx.fromHost).getDomain(ctx.vm) : Promise.resolve(undefined),
    drv.savedStateXml(ctx.stateFile!).then(
      (xml) => ({ xml }),
      (err: unknown) => ({ err }),
    ),
  ]).then(([dom, onSource, saved]) => ({ dom, onSource, saved }));
}

/**
 * Restore lookups started during CopyingDelta, when the state file is already where the target
 * reads it (one host, or the cluster's shared storage): by id, in memory only (the saved XML
 * holds secrets), taken once by Restoring if still fresh. The VM is saved before CopyingDelta
 * starts, so what they see is the state after the pause began.
 */
const prefetchedRestore = new Map<string, { at: number; lookups: Promise<RestoreLookups> }>();
const PREFETCH_FRESH_MS = 10_000;

function takePrefetchedRestore(ctx: MigrationContext): Promise<RestoreLookups> | undefined {
  const p = prefetchedRestore.get(ctx.id);
  prefetchedRestore.delete(ctx.id);
  return p && Date.now() - p.at < PREFETCH_FRESH_MS ? p.lookups : undefined;
}

const restoreVm: Step = async (ctx, deps) => {
  const drv = deps.driverFor(ctx.toHost);
  const now = deps.now ?? Date.now;
  const cross = ctx.fromHost !== ctx.toHost;
  const { dom, onSource, saved } = await (takePrefetchedRestore(ctx) ?? restoreLookups(ctx, deps));
  const onTarget = (x: DomainInfo): boolean =>
    ctx.disks.every((d) => {
      const p = diskOf(x, d.target)?.path;
      return p === dstOverlayAt(ctx, d, ctx.rounds ?? 1) || p === d.dstPath;
    });
  if (dom && dom.state === 'running' && onTarget(dom)) {
    const resumedAt = ctx.resumedAt ?? now();
    return { committed: true, resumedAt, pauseMs: ctx.pausedAt ? resumedAt - ctx.pausedAt : undefined };
  }
  if (dom && dom.state === 'running')
    throw new VmplaceError('DomainRunningOnSource', `${ctx.vm} runs, but not from the target's disks`);
  if (onSource && onSource.state !== 'shutoff')
    throw new VmplaceError(
      'DomainRunningOnSource',
      `${ctx.vm} is ${onSource.state} on ${ctx.fromHost}; never on both`,
    );
  if ('err' in saved) throw saved.err;
  if (cross) {
    // the look above may be seconds old (prefetched during the copy): ask again, right now
    const now = await deps.driverFor(ctx.fromHost).domainState(ctx.vm);
    if (now !== undefined && now !== 'shutoff')
      throw new VmplaceError(
        'DomainRunningOnSource',
        `${ctx.vm} is ${now} on ${ctx.fromHost}; never on both`,
      );
    await deps.intents?.mark(ctx, 'restore');
  }
  const rewritten = deps.rewriteDiskPaths(
    saved.xml,
    Object.fromEntries(ctx.disks.map((d) => [d.target, dstOverlayAt(ctx, d, ctx.rounds ?? 1)])),
  );
  await drv.restore(ctx.stateFile!, rewritten, {
    knownInactive: dom === undefined || dom.state === 'shutoff',
  });
  const resumedAt = now();
  const pauseMs = ctx.pausedAt ? resumedAt - ctx.pausedAt : undefined;
  deps.logger?.info({ pauseMs }, 'VM resumed on the target');
  return { committed: true, resumedAt, pauseMs };
};

const mergeOverlays: Step = async (ctx, deps) => {
  const drv = deps.driverFor(ctx.toHost);
  for (const d of ctx.disks) {
    const dom = await mustGetDomain(drv, ctx);
    const disk = diskOf(dom, d.target);
    if (disk?.path === d.dstPath && !disk.hasBackingStore) continue;
    const top = dstOverlayAt(ctx, d, ctx.rounds ?? 1);
    if (disk?.path !== top)
      throw new VmplaceError(
        'UnexpectedDiskSource',
        `${ctx.vm} disk ${d.target} is ${disk?.path}, expected ${top}`,
      );
    // the whole chain (every round's overlay) goes into the base
    await drv.blockCommit(ctx.vm, d.target, { overlay: top });
  }
  return {};
};

const verifyTarget: Step = async (ctx, deps) => {
  const drv = deps.driverFor(ctx.toHost);
  if (ctx.effectiveStrategy === 'cold') {
    // not yet defined on another target host: the source definition must still be shut off
    const dom = await mustGetDomain(deps.driverFor(ctx.fromHost), ctx);
    if (dom.state !== 'shutoff')
      throw new VmplaceError('DomainStarted', `${ctx.vm} was started during a cold move`);
    for (const d of ctx.disks) {
      const sum = await drv.checksum(d.dstPath);
      if (sum !== d.baseChecksum)
        throw new VmplaceError('ChecksumMismatch', `${d.dstPath} changed after its copy`);
    }
  } else {
    const dom = await mustGetDomain(drv, ctx);
    if (dom.state !== 'running')
      throw new VmplaceError('DomainNotRunning', `${ctx.vm} is ${dom.state} on the target`);
    for (const d of ctx.disks) {
      const disk = diskOf(dom, d.target);
      if (disk?.path !== d.dstPath || disk.hasBackingStore)
        throw new VmplaceError(
          'VerifyFailed',
          `${ctx.vm} disk ${d.target} runs from ${disk?.path}, expected ${d.dstPath}`,
        );
    }
  }
  for (const d of ctx.disks) {
    const info = await drv.imageInfo(d.dstPath, { forceShare: true, format: d.format });
    if (info.chainLength !== 1 || info.backingFile)
      throw new VmplaceError('VerifyFailed', `${d.dstPath} still has a backing file`);
    const problems = await drv.checkImage(d.dstPath, d.format);
    if (problems.length) throw new VmplaceError('ImageCheckFailed', `${d.dstPath}: ${problems.join('; ')}`);
  }
  return {};
};

/**
 * The target's persistent definition names the new paths. Running (quick, live): defined from
 * the live XML, which a restore on another host left transient. Shut off (cold): the source's
 * inactive definition with the disk paths rewritten.
 */
const finalizeDefinition: Step = async (ctx, deps) => {
  const drv = deps.driverFor(ctx.toHost);
  const want = Object.fromEntries(ctx.disks.map((d) => [d.target, d.dstPath]));
  const named = (xml: string): boolean => {
    const paths = deps.diskPathsOf(xml);
    return ctx.disks.every((d) => paths[d.target] === d.dstPath);
  };
  const dom = await drv.getDomain(ctx.vm);
  const done = dom?.persistent === true && named(await drv.dumpXml(ctx.vm, { inactive: true }));
  if (!done) {
    let xml: string;
    if (ctx.effectiveStrategy === 'cold') {
      const from = deps.driverFor(dom ? ctx.toHost : ctx.fromHost);
      xml = deps.rewriteDiskPaths(await from.dumpXml(ctx.vm, { inactive: true }), want);
      if (ctx.fromHost !== ctx.toHost) {
        await deps.intents?.mark(ctx, 'define');
        if (ctx.sourceAutostart) await deps.driverFor(ctx.fromHost).setAutostart(ctx.vm, false);
      }
    } else {
      if (!dom) throw new VmplaceError('DomainNotFound', `${ctx.vm} is not running on ${ctx.toHost}`);
      xml = await drv.dumpXml(ctx.vm);
    }
    await drv.define(xml);
    const after = await drv.getDomain(ctx.vm);
    if (!after?.persistent || !named(await drv.dumpXml(ctx.vm, { inactive: true })))
      throw new VmplaceError(
        'DefineFailed',
        `the persistent definition of ${ctx.vm} on ${ctx.toHost} does not name the new paths`,
      );
  }
  // the autostart the source had goes with the VM (set on the target's definition)
  if (ctx.sourceAutostart && (await drv.getDomain(ctx.vm))?.autostart !== true)
    await drv.setAutostart(ctx.vm, true);
  return { committed: true };
};

/**
 * Only now, with the VM defined (and, unless cold, running) on the target from verified
 * copies: undefine it on the source host and remove the source files, overlays and state
 * files. A file that a definition on the same host still uses is never removed.
 */
const cleanUpSource: Step = async (ctx, deps) => {
  const src = deps.driverFor(ctx.fromHost);
  const dst = deps.driverFor(ctx.toHost);
  const cross = ctx.fromHost !== ctx.toHost;
  const dom = await mustGetDomain(dst, ctx);
  if (!dom.persistent)
    throw new VmplaceError('VerifyFailed', `${ctx.vm} is not defined persistently on ${ctx.toHost}`);
  const targetUses = new Set<string>();
  for (const d of dom.disks) if (d.path) targetUses.add(d.path);
  for (const p of Object.values(deps.diskPathsOf(await dst.dumpXml(ctx.vm, { inactive: true }))))
    if (p) targetUses.add(p);
  for (const d of ctx.disks)
    if (!targetUses.has(d.dstPath))
      throw new VmplaceError('VerifyFailed', `${ctx.vm} does not use ${d.dstPath}; source kept`);
  // what the source host still uses: on one host the target's definition, across hosts nothing
  // once the source definition is gone
  if (cross) {
    const onSource = await src.getDomain(ctx.vm);
    if (onSource && onSource.state !== 'shutoff')
      throw new StalledError(
        'DomainRunningOnSource',
        `${ctx.vm} is ${onSource.state} on ${ctx.fromHost} too`,
      );
    if (onSource) await src.undefine(ctx.vm);
  }
  // Right before deleting: every file any domain on the source host refers to (the VM's own
  // definitions there included, on one host) is kept; a shared or linked-clone base stays.
  const rounds0 = Array.from({ length: ctx.rounds ?? 1 }, (_, i) => i + 1);
  const inUse = await usersOf(
    deps,
    ctx.fromHost,
    ctx.disks.flatMap((d) => [d.srcPath, ...rounds0.map((r) => srcOverlayAt(ctx, d, r))]),
  );
  const usedBy = (p: string): string[] => [...(inUse.get(p) ?? [])].sort();
  for (const d of ctx.disks) {
    const users = usedBy(d.srcPath);
    if (users.length)
      throw new StalledError(
        'SourceStillInUse',
        `${d.srcPath} is used by ${users.join(', ')} on ${ctx.fromHost}; kept`,
      );
    // The source must be the data that was copied: unchanged since (no one started the VM in
    // between and wrote to it). A live mirror's source ran on until the pivot: nothing to compare.
    if (d.baseChecksum && (await src.fileExists(d.srcPath))) {
      const now = await src.checksum(d.srcPath);
      if (now !== d.baseChecksum)
        throw new StalledError(
          'SourceChangedAfterCopy',
          `${d.srcPath} on ${ctx.fromHost} changed after it was copied (sha256 ${now}, copied ${d.baseChecksum}); kept`,
        );
    }
  }
  for (const d of ctx.disks) {
    const rounds = Array.from({ length: ctx.rounds ?? 1 }, (_, i) => i + 1);
    for (const p of [d.srcPath, ...rounds.map((r) => srcOverlayAt(ctx, d, r))]) {
      if (usedBy(p).length)
        throw new VmplaceError('SourceStillInUse', `${p} is still in use by ${usedBy(p).join(', ')}`);
      await src.removeFile(p);
    }
    for (const p of rounds.map((r) => dstOverlayAt(ctx, d, r)))
      if (!targetUses.has(p)) await dst.removeFile(p);
  }
  if (ctx.srcStateFile && (ctx.copyState || ctx.srcStateFile !== ctx.stateFile))
    await src.removeFile(ctx.srcStateFile);
  if (ctx.stateFile) await dst.removeFile(ctx.stateFile);
  return {};
};

// ------------------------------------------------------------------ rollback

/**
 * Back to the start, by looking at the world: the VM runs on the source again (restored from
 * its state file if it was saved), every overlay is merged back into the source base, the
 * persistent definition names the source paths, nothing of it is defined on another target
 * host, and every file this migration made on the target is removed. Source data is never
 * touched except by merging our own overlay into it.
 */
const rollBack: Step = async (ctx, deps) => {
  const src = deps.driverFor(ctx.fromHost);
  const dst = deps.driverFor(ctx.toHost);
  const cross = ctx.fromHost !== ctx.toHost;
  const log = deps.logger;
  if (cross) {
    let onTarget: DomainInfo | undefined;
    let seen = true;
    try {
      onTarget = await dst.getDomain(ctx.vm);
    } catch (err) {
      seen = false;
      // Never on both hosts: without an answer from the target, go back only if this
      // migration never restored or defined the VM there (write-ahead intents say so).
      const risky =
        !deps.intents || (await deps.intents.has(ctx, 'restore')) || (await deps.intents.has(ctx, 'define'));
      if (risky)
        throw new StalledError(
          'TargetUnconfirmed',
          `${ctx.toHost} does not answer and ${ctx.vm} may have been restored there; not restarting it on ${ctx.fromHost}`,
          { cause: err },
        );
      log?.warn(
        { err },
        'the target does not answer, but nothing of this VM was started there: rolling back',
      );
    }
    if (seen && onTarget && onTarget.state !== 'shutoff')
      throw new StalledError(
        'RollbackImpossible',
        `${ctx.vm} already runs on ${ctx.toHost}; it cannot go back`,
      );
    // a definition a cold finalize (or a failed restore) left on the target goes
    if (onTarget) await dst.undefine(ctx.vm);
  }
  // A job a cancelled or crashed step left running (a block copy mirroring into the target, a
  // migration) ends before anything else is looked at: afterwards nothing writes our files.
  await src.abortJobs(ctx.vm);
  let dom = await src.getDomain(ctx.vm);
  const saved = ctx.srcStateFile ?? ctx.stateFile;
  if (dom) {
    if (dom.state === 'shutoff' && saved && ctx.wasRunning && (await src.fileExists(saved))) {
      // The state file's own XML names the source overlays, whose backing is the source base.
      log?.warn('restoring the VM on the source from its saved state');
      await src.restore(saved);
      dom = await mustGetDomain(src, ctx);
    }
    if (dom.state === 'paused' && ctx.wasRunning) {
      // e.g. a save that failed on a full target can leave the VM paused
      log?.warn('resuming the VM on the source');
      await src.resume(ctx.vm);
      dom = await mustGetDomain(src, ctx);
    }
    if (dom.state === 'running' || dom.state === 'paused') {
      for (const d of ctx.disks) {
        const disk = diskOf(dom, d.target);
        const r = roundOnSource(ctx, d, disk?.path);
        // the whole chain of our overlays goes back into the source base
        if (r !== undefined) await src.blockCommit(ctx.vm, d.target, { overlay: srcOverlayAt(ctx, d, r) });
        else if (
          !cross &&
          (disk?.path === d.dstPath ||
            Array.from({ length: lastPossibleRound(ctx) }, (_, i) => dstOverlayAt(ctx, d, i + 1)).includes(
              disk?.path ?? '',
            ))
        )
          throw new StalledError(
            'RollbackImpossible',
            `${ctx.vm} already runs from the target; it cannot go back`,
          );
      }
    } else {
      // Shut off with overlays in its definition (e.g. it stopped after the snapshot): merge offline.
      const paths = deps.diskPathsOf(await src.dumpXml(ctx.vm, { inactive: true }));
      for (const d of ctx.disks) {
        if (roundOnSource(ctx, d, paths[d.target]) === undefined) continue;
        // top down: each overlay into the layer below it, the last into the base
        for (let r = lastPossibleRound(ctx); r >= 1; r--) {
          const ov = srcOverlayAt(ctx, d, r);
          if (await src.fileExists(ov)) await src.commitOffline(ov);
        }
      }
    }
    if (ctx.disks.length) {
      const inactive = await src.dumpXml(ctx.vm, { inactive: true });
      const paths = deps.diskPathsOf(inactive);
      if (ctx.disks.some((d) => paths[d.target] !== d.srcPath)) {
        await src.define(
          deps.rewriteDiskPaths(inactive, Object.fromEntries(ctx.disks.map((d) => [d.target, d.srcPath]))),
        );
      }
    }
    // Never boot a guest afresh: a VM that ran at Preflight and is shut off now lost its
    // memory (a saved state gone) or was shut down by someone; either way not ours to start.
    if (dom.state === 'shutoff' && ctx.wasRunning && ctx.effectiveStrategy !== 'cold') {
      if (!deps.intents || (await deps.intents.has(ctx, 'save')))
        throw new StalledError(
          'SavedStateLost',
          `${ctx.vm} is shut off on ${ctx.fromHost} and its saved state is gone; vmplace does not boot it afresh`,
        );
      log?.warn(
        'the VM was shut down during the migration; it stays shut off (vmplace never boots a guest afresh)',
      );
    }
    // the autostart a cross-host move switched off comes back with the VM
    if (ctx.sourceAutostart && (await src.getDomain(ctx.vm))?.autostart !== true)
      await src.setAutostart(ctx.vm, true);
  }
  // Our own files only, and none that any domain uses (its live chain, a mirror, a linked
  // clone's base): files named by this migration (overlays, state files: the id is in the
  // name) and the target copies whose identity was recorded before a byte was written. The VM
  // is safe on the source by now, so a file that cannot be removed is reported, not a failure.
  const inUseSrc = await src.filesInUse();
  // A target whose libvirt does not answer got this far only when nothing of this VM was ever
  // restored or defined there (the intents say so, see above): no domain there can use our
  // files, so its answer is not needed to remove them.
  const inUseDst = cross
    ? await dst.filesInUse().catch((err: unknown) => {
        log?.warn({ err }, 'the target does not say which files its domains use; removing only our own');
        return new Map<string, Set<string>>();
      })
    : inUseSrc;
  const inUse = (drv: HypervisorDriver, p: string): boolean => (drv === src ? inUseSrc : inUseDst).has(p);
  const leftovers: string[] = [];
  const remove = async (drv: HypervisorDriver, p: string): Promise<void> => {
    if (inUse(drv, p)) {
      if (await drv.fileExists(p).catch(() => false)) leftovers.push(p);
      return;
    }
    await drv.removeFile(p).catch((err: unknown) => {
      log?.warn({ err, path: p }, 'could not remove a file of the rolled-back migration');
      leftovers.push(p);
    });
  };
  for (const d of ctx.disks) {
    if (inUse(dst, d.dstPath)) {
      if (await dst.fileExists(d.dstPath).catch(() => false)) leftovers.push(d.dstPath);
    } else {
      const left = await removeOwned(ctx, deps, ctx.toHost, d.dstPath).catch((err: unknown) => {
        log?.warn({ err, path: d.dstPath }, 'could not remove a copy of the rolled-back migration');
        return [d.dstPath];
      });
      leftovers.push(...left);
    }
    const rounds = Array.from({ length: lastPossibleRound(ctx) }, (_, i) => i + 1);
    for (const p of rounds.map((r) => dstOverlayAt(ctx, d, r))) {
      await remove(dst, p);
      await remove(dst, p + PART_SUFFIX);
    }
    for (const r of rounds) await remove(src, srcOverlayAt(ctx, d, r));
  }
  if (ctx.stateFile) {
    await remove(dst, ctx.stateFile);
    await remove(dst, ctx.stateFile + PART_SUFFIX);
  }
  if (ctx.srcStateFile && (ctx.copyState || ctx.srcStateFile !== ctx.stateFile))
    await remove(src, ctx.srcStateFile);
  // the VM's directory on the target storage, when nothing is left in it
  for (const dir of new Set(ctx.disks.map((d) => path.posix.dirname(d.dstPath))))
    if (path.posix.basename(dir) === ctx.vm) await dst.removeDirIfEmpty(dir).catch(() => undefined);
  if (leftovers.length && ctx.lastError) {
    return {
      lastError: {
        ...ctx.lastError,
        message: `${ctx.lastError.message} (left behind: ${leftovers.join(', ')})`,
      },
    };
  }
  return {};
};

async function mustGetDomain(drv: HypervisorDriver, ctx: MigrationContext): Promise<DomainInfo> {
  const dom = await drv.getDomain(ctx.vm);
  if (!dom) throw new VmplaceError('DomainNotFound', `${ctx.vm} is not defined on ${drv.hostName}`);
  return dom;
}

/** Steps that run even during a shutdown: the VM is offline or half-moved while they have not finished. */
const MUST_FINISH_ACTORS: ReadonlySet<string> = new Set(['copyDelta', 'restoreVm', 'rollBack']);

const STEPS: Record<Exclude<StepActorName, 'settleStep'>, Step> = {
  preflight,
  snapshotDisks,
  copyBase,
  saveVm,
  copyDelta,
  restoreVm,
  mergeOverlays,
  verifyTarget,
  finalizeDefinition,
  cleanUpSource,
  rollBack,
};

/**
 * The real step actors. A step that runs again after a failure first waits a backoff that
 * grows with the attempts (the wait lives in the step, not in an `after` timer, because
 * timers do not survive a restore). Each step gets the actor's abort signal (see
 * `actorsFromSteps` for how a cancel waits for it to settle).
 */
export function createStepActors(deps: StepDeps): StepActors {
  const base = deps.retryBaseMs ?? 1000;
  const fns = Object.fromEntries(
    Object.entries(STEPS).map(([name, step]) => [
      name,
      async (input: MigrationContext, signal: AbortSignal): Promise<StepOutput> => {
        if (deps.stopping?.() && !MUST_FINISH_ACTORS.has(name)) {
          // Shutting down: do not start work that can wait; the runner stops at this checkpoint.
          return await new Promise<StepOutput>(() => undefined);
        }
        if (input.attempts > 0) {
          const delay = Math.min(base * 2 ** (input.attempts - 1), 60_000) * (0.5 + Math.random() / 2);
          await new Promise((r) => setTimeout(r, delay));
        }
        const log = deps.logger?.child({ step: name });
        log?.debug('step start');
        try {
          const out = await step(input, { ...deps, logger: log ?? deps.logger, signal });
          log?.debug('step done');
          return out;
        } catch (err) {
          log?.warn({ err }, 'step failed');
          throw err;
        }
      },
    ]),
  ) as Record<Exclude<StepActorName, 'settleStep'>, StepFn>;
  return actorsFromSteps(fns);
}
