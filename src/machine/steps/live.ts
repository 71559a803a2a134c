import type { MigrationContext, StepOutput } from '../types';
import type { Step, StepDeps } from './deps';
import { claimFor } from './ownership';
import { diskOf, mustGetDomain, throwIfCancelled, transferSsh } from './common';
import { LIVE_DOWNTIME_MS } from './tuning';

/**
 * live (state LiveMigrating): on one host mirror each disk to its target path and pivot
 * (`blockcopy`); across hosts a live migration with storage. No memory state, no overlays.
 */
export const liveMigrate: Step = (ctx, deps) => mirrorDisks(ctx, deps);

export async function mirrorDisks(ctx: MigrationContext, deps: StepDeps): Promise<StepOutput> {
  if (ctx.fromHost !== ctx.toHost) return migrateLive(ctx, deps);
  const drv = deps.driverFor(ctx.fromHost);
  let committed = ctx.committed;
  let done = 0;
  for (const d of ctx.disks) {
    // before the first pivot a cancel rolls back; after it the VM runs partly from the target
    if (!committed) throwIfCancelled(deps, 'the live mirror');
    const dom = await mustGetDomain(drv, ctx);
    if (diskOf(dom, d.target)?.path !== d.dstPath) {
      await drv.makeDir(drv.paths.dirname(d.dstPath));
      const claim = claimFor(ctx, deps, ctx.toHost, d.dstPath);
      await drv.moveDiskLive(ctx.vm, d.target, d.dstPath, d.format, {
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
 * Live across hosts: QEMU streams memory and disks to the target (libvirt's migration with
 * storage); the VM pauses only for the final switch-over. From the moment the migration may
 * have started the target could run the VM: a write-ahead intent keeps a rollback honest.
 */
export async function migrateLive(ctx: MigrationContext, deps: StepDeps): Promise<StepOutput> {
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
  // a rerun after the switch-over finds no VM on the source (undefined there by the migration)
  if (ctx.sourceAutostart && dom) await src.setAutostart(ctx.vm, false);
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
