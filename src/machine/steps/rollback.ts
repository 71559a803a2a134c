import { StalledError } from '../../errors';
import type { DomainInfo, HypervisorDriver } from '../../drivers/driver';
import { PART_SUFFIX } from '../../transfer/copy-local';
import type { Step } from './deps';
import { removeOwned } from './ownership';
import {
  diskOf,
  dstOverlayAt,
  freezeRound,
  lastPossibleRound,
  mustGetDomain,
  roundOnSource,
  srcOverlayAt,
} from './common';

// ------------------------------------------------------------------ rollback

/**
 * Back to the start, by looking at the world: the VM runs on the source again (restored from
 * its state file if it was saved), every overlay is merged back into the source base, the
 * persistent definition names the source paths, nothing of it is defined on another target
 * host, and every file this migration made on the target is removed. Source data is never
 * touched except by merging our own overlay into it.
 */
export const rollBack: Step = async (ctx, deps) => {
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
    // The step that failed had passed the point of no return after all (its effect happened,
    // its caller saw an error): the machine goes forward from here (see migration-machine.ts).
    if (seen && onTarget && onTarget.state !== 'shutoff')
      throw new StalledError('AlreadyOnTarget', `${ctx.vm} already runs on ${ctx.toHost}; it cannot go back`);
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
      // The saved state's own definition names the source overlays, whose backing is the source base.
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
      // A driver that layered other disks too (a checkpoint covers every disk): asked again for
      // the round the moved disks run on, it names those layers, merged back (a failure came
      // between a freeze and that merge)
      const seen = dom;
      const rounds = ctx.disks.map((d) => roundOnSource(ctx, d, diskOf(seen, d.target)?.path));
      if (rounds[0] !== undefined && rounds.every((r) => r === rounds[0]))
        await freezeRound(ctx, src, rounds[0]);
      for (const d of ctx.disks) {
        const disk = diskOf(dom, d.target);
        const r = roundOnSource(ctx, d, disk?.path);
        // the whole chain of our overlays goes back into the source base
        if (r !== undefined) await src.mergeLayers(ctx.vm, d.target, { top: srcOverlayAt(ctx, d, r) });
        else if (
          !cross &&
          (disk?.path === d.dstPath ||
            Array.from({ length: lastPossibleRound(ctx) }, (_, i) => dstOverlayAt(ctx, d, i + 1)).includes(
              disk?.path ?? '',
            ))
        )
          throw new StalledError(
            'AlreadyOnTarget',
            `${ctx.vm} already runs from the target; it cannot go back`,
          );
      }
    } else {
      // Shut off with overlays in its definition (e.g. it stopped after the snapshot): merge offline.
      const paths = src.diskPathsOf(await src.definition(ctx.vm, { inactive: true }));
      for (const d of ctx.disks) {
        if (roundOnSource(ctx, d, paths[d.target]) === undefined) continue;
        // top down: each overlay into the layer below it, the last into the base
        for (let r = lastPossibleRound(ctx); r >= 1; r--) {
          const ov = srcOverlayAt(ctx, d, r);
          if (await src.fileExists(ov)) await src.mergeLayerOffline(ov);
        }
      }
    }
    if (ctx.disks.length) {
      const inactive = await src.definition(ctx.vm, { inactive: true });
      const paths = src.diskPathsOf(inactive);
      if (ctx.disks.some((d) => paths[d.target] !== d.srcPath)) {
        await src.define(
          src.withDiskPaths(
            inactive,
            Object.fromEntries(ctx.disks.map((d) => [d.target, { path: d.srcPath, format: d.format }])),
          ),
        );
      }
    }
    // Never boot a guest afresh: a VM that ran at Preflight and is shut off now lost its
    // memory (a saved state gone) or was shut down by someone; either way not ours to start.
    if (dom.state === 'shutoff' && ctx.wasRunning && ctx.effectiveStrategy !== 'cold') {
      if (!deps.intents || (await deps.intents.has(ctx, 'save')))
        throw new StalledError(
          'SavedStateLost',
          ctx.migrateMemory
            ? `${ctx.vm} was shut off on ${ctx.fromHost} while paused for its move: its memory is gone; vmplace does not boot it afresh`
            : `${ctx.vm} is shut off on ${ctx.fromHost} and its saved state is gone; vmplace does not boot it afresh`,
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
  for (const dir of new Set(ctx.disks.map((d) => dst.paths.dirname(d.dstPath))))
    if (dst.paths.basename(dir) === ctx.vm) await dst.removeDirIfEmpty(dir).catch(() => undefined);
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
