import { StalledError, VmplaceError } from '../../errors';
import { type DomainInfo, type HypervisorDriver, ownFileBaseName, POSIX_PATHS } from '../../drivers/driver';
import { type Transport, type TransportCopyResult, transferSshOf } from '../../transfer/transport';
import type { SshSpec } from '../../types';
import type { CopyClaim } from '../../transfer/copy-local';
import type { DiskMove, MigrationContext } from '../types';
import type { StepDeps } from './deps';

/** Stop here when the migration was cancelled (between the parts of a long step). */
export function throwIfCancelled(deps: StepDeps, what: string): void {
  if (deps.signal?.aborted) throw new VmplaceError('Cancelled', `cancelled during ${what}`);
}

/**
 * The source layer of round `r` (round 1 is the one Snapshotting made), as the source's driver
 * named it at Preflight. A migration persisted before the names were recorded gets the names
 * libvirt's driver gave then (the same function, see ownFileBaseName).
 */
export function srcOverlayAt(ctx: MigrationContext, d: DiskMove, r: number): string {
  if (r <= 1) return d.srcOverlay;
  return d.srcLayers?.[r - 1] ?? legacyLayer(ctx, d.srcOverlay, d.target, r);
}

/** The target copy of the source layer of round `r`. */
export function dstOverlayAt(ctx: MigrationContext, d: DiskMove, r: number): string {
  if (r <= 1) return d.dstOverlay;
  return d.dstLayers?.[r - 1] ?? legacyLayer(ctx, d.dstOverlay, d.target, r);
}

function legacyLayer(ctx: MigrationContext, first: string, disk: string, r: number): string {
  return POSIX_PATHS.join(
    POSIX_PATHS.dirname(first),
    ownFileBaseName(ctx.vm, ctx.id, { what: 'layer', disk, round: r }),
  );
}

/**
 * Freeze the moved disks onto round `r`'s layers. A driver may layer more disks than it was
 * asked to (a Hyper-V checkpoint covers every disk of the VM): those layers, named by the
 * hypervisor, are merged back at once, so only the moved disks run on layers. Idempotent: with
 * the moved disks on their layers already (a re-run), the driver names the layers it made again
 * and whatever is left of the others is merged.
 */
export async function freezeRound(ctx: MigrationContext, drv: HypervisorDriver, r: number): Promise<void> {
  const made = await drv.freezeDisks(
    ctx.vm,
    ctx.disks.map((d) => ({ target: d.target, layer: srcOverlayAt(ctx, d, r) })),
  );
  for (const x of made)
    if (!ctx.disks.some((d) => d.target === x.target))
      await drv.mergeLayers(ctx.vm, x.target, { top: x.layer });
}

/** The highest round any overlay of this migration can have. */
export const lastPossibleRound = (ctx: MigrationContext): number => Math.max(1, ctx.maxRounds ?? 1);

/** The round of the source overlay the disk runs on, if it runs on one of ours. */
export function roundOnSource(ctx: MigrationContext, d: DiskMove, p: string | undefined): number | undefined {
  for (let r = 1; r <= lastPossibleRound(ctx); r++) if (p === srcOverlayAt(ctx, d, r)) return r;
  return undefined;
}

export function diskOf(dom: DomainInfo, target: string): DomainInfo['disks'][number] | undefined {
  return dom.disks.find((d) => d.target === target);
}

export const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);

/** How the source host reaches `host` for copies: its transfer address, with the source host's own ssh identity. */
export function transferSsh(deps: StepDeps, host: string): SshSpec {
  const ssh = transferSshOf(deps.hostSpecFor?.(host));
  if (!ssh)
    throw new StalledError('NoTransferAddress', `host ${host} has neither transferAddress nor ssh.host`);
  return ssh;
}

/** Copy a file from the source host to the target (the same host or another), verified. */
export async function copyAcross(
  ctx: MigrationContext,
  deps: StepDeps,
  from: string,
  to: string,
  onProgress?: (n: number) => void,
  opts: {
    relayBelowBytes?: number;
    claim?: CopyClaim;
    channel?: 'ssh' | 'tcp';
    /** the source is still being written: see TransportCopyOptions.sourceReady */
    sourceReady?: Promise<unknown>;
    /** the source is written while `sourceReady` is pending: see TransportCopyOptions.sourceGrows */
    sourceGrows?: boolean;
  } = {},
): Promise<TransportCopyResult> {
  return transportOf(ctx, deps).copy(from, to, {
    ...(opts.sourceReady ? { sourceReady: opts.sourceReady } : {}),
    ...(opts.sourceGrows ? { sourceGrows: true } : {}),
    ...(opts.channel === 'tcp' ? { channel: 'tcp' as const } : {}),
    ...(opts.claim ? { claim: opts.claim } : {}),
    ...(deps.signal ? { signal: deps.signal } : {}),
    mode: ctx.transferMode ?? 'direct',
    ...(opts.relayBelowBytes ? { relayBelowBytes: opts.relayBelowBytes } : {}),
    ...(onProgress ? { onProgress } : {}),
    ...(deps.bwlimitKiBps ? { bwlimitKiBps: deps.bwlimitKiBps } : {}),
  });
}

/** The transport of the migration's host pair; a pair without one was blocked at Preflight. */
export function transportOf(ctx: MigrationContext, deps: StepDeps): Transport {
  const t = deps.transportFor(ctx.fromHost, ctx.toHost);
  if (!t)
    throw new StalledError(
      'NoTransport',
      `no way to copy files from ${ctx.fromHost} to ${ctx.toHost} (hosts of different hypervisors?)`,
    );
  return t;
}

export async function mustGetDomain(drv: HypervisorDriver, ctx: MigrationContext): Promise<DomainInfo> {
  const dom = await drv.getDomain(ctx.vm);
  if (!dom) throw new VmplaceError('DomainNotFound', `${ctx.vm} is not defined on ${drv.hostName}`);
  return dom;
}

/**
 * Like `Promise.all`, but settles only once every branch has settled, then rejects with the
 * first failure. A step's parallel copies never outlive the step: when one fails (a copy
 * refused by the fence, a cancel), the others finish or fail before the step reports, so a
 * resumed run (here, or on the replica that took the VM over) never races a branch of the
 * run before it.
 */
export async function allSettled<T>(branches: readonly Promise<T>[]): Promise<T[]> {
  const results = await Promise.allSettled(branches);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return results.map((r) => (r as PromiseFulfilledResult<T>).value);
}
