import * as path from 'node:path';
import { StalledError, VmplaceError } from '../../errors';
import type { DomainInfo, HypervisorDriver } from '../../drivers/driver';
import type { SshSpec } from '../../types';
import type { CopyClaim } from '../../transfer/copy-local';
import type { DiskMove, MigrationContext } from '../types';
import type { StepDeps } from './deps';

/** Stop here when the migration was cancelled (between the parts of a long step). */
export function throwIfCancelled(deps: StepDeps, what: string): void {
  if (deps.signal?.aborted) throw new VmplaceError('Cancelled', `cancelled during ${what}`);
}

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

/** Does `p` lie inside the directory `root` (lexically; both absolute and normalised)? */
export function isInside(p: string, root: string): boolean {
  const r = root.endsWith('/') ? root : `${root}/`;
  return p.startsWith(r);
}

/** How the source host reaches `host` for copies: its transfer address, with the source host's own ssh identity. */
export function transferSsh(deps: StepDeps, host: string): SshSpec {
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
export async function copyAcross(
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

export async function mustGetDomain(drv: HypervisorDriver, ctx: MigrationContext): Promise<DomainInfo> {
  const dom = await drv.getDomain(ctx.vm);
  if (!dom) throw new VmplaceError('DomainNotFound', `${ctx.vm} is not defined on ${drv.hostName}`);
  return dom;
}
