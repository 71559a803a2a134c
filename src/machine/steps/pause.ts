import { StalledError, VmplaceError } from '../../errors';
import type { DomainInfo, VmDefinition } from '../../drivers/driver';
import type { TransportCopyResult } from '../../transfer/transport';
import type { MigrationContext } from '../types';
import type { RunDeps, Step } from './deps';
import {
  allSettled,
  copyAcross,
  diskOf,
  dstOverlayAt,
  mustGetDomain,
  srcOverlayAt,
  transferSsh,
} from './common';
import {
  EARLY_COPY_FRESH_MS,
  LIVE_CONVERGE_MIN_MS,
  LIVE_DOWNTIME_MS,
  MIN_COPY_RATE_BYTES_PER_MS,
  PAUSE_RELAY_BELOW_BYTES,
  PREFETCH_FRESH_MS,
} from './tuning';

/** What Saving sees of the VM on the source (see {@link decideSave}). */
export interface SaveObservation {
  state: DomainInfo['state'];
  /** the state file holds a complete saved state of this VM (the driver's holdsSavedState) */
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

/**
 * What Saving does when the memory moves by migration (`migrateMemory`), from what it sees
 * (pure). Running: pause it. Paused after this migration's pause (a write-ahead intent): paused
 * already. Anything else (paused by someone before us, shut off, gone): `notRunning`, back to
 * the source (the rollback resumes a VM paused by a migration that ran and never starts a
 * stopped one).
 */
export function decidePause(o: {
  state: DomainInfo['state'];
  pauseIssued: boolean;
}): 'pause' | 'paused' | 'notRunning' {
  if (o.state === 'running') return 'pause';
  if (o.state === 'paused' && o.pauseIssued) return 'paused';
  return 'notRunning';
}

/**
 * Saving, when the memory moves by the hypervisor's migration: pause the VM (its disks drained
 * and flushed); the memory stays in the source's RAM until Restoring moves it.
 */
async function pauseVm(ctx: MigrationContext, deps: RunDeps): Promise<{ pausedAt: number }> {
  const drv = deps.driverFor(ctx.fromHost);
  const now = deps.now ?? Date.now;
  const issuedAt = await deps.intents?.at(ctx, 'save');
  const dom = await mustGetDomain(drv, ctx);
  const decision = decidePause({
    state: dom.state,
    pauseIssued: deps.intents ? issuedAt !== undefined : true,
  });
  if (decision === 'paused') return { pausedAt: ctx.pausedAt ?? issuedAt ?? now() };
  if (decision === 'notRunning')
    throw new VmplaceError('DomainNotRunning', `${ctx.vm} is ${dom.state}, expected running`);
  // a source host that reboots once the VM runs on the target must not start it again
  if (ctx.sourceAutostart) await drv.setAutostart(ctx.vm, false);
  await deps.intents?.mark(ctx, 'save');
  const pausedAt = now();
  const t0 = Date.now();
  await drv.pause(ctx.vm, { knownRunning: true });
  deps.logger?.debug({ ms: Date.now() - t0 }, 'pause part: pause');
  return { pausedAt };
}

export const saveVm: Step = async (ctx, deps) => {
  // live: nothing stops here; the migration's switch-over is the only pause
  if (ctx.migrateMemory === 'live') return {};
  if (ctx.migrateMemory === 'paused') return pauseVm(ctx, deps);
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
  const t0 = Date.now();
  const saving = drv.save(ctx.vm, stateFile, { knownActive: true });
  const early = ctx.effectiveStrategy === 'quick' ? copyDeltaEarly(ctx, deps, saving) : undefined;
  // the state file crosses hosts: its copy prepares the target now (the tcp channel's daemon)
  // and reads the file as soon as the save has ended, beside the delta still being copied
  const earlyState = stateCrosses(ctx) ? copyStateEarly(ctx, deps, saving) : undefined;
  try {
    await saving;
    deps.logger?.debug({ ms: Date.now() - t0 }, 'pause part: save');
    // the VM is saved: what Restoring will ask of both hosts is asked now, beside the copies
    prefetchRestore(ctx, deps);
  } finally {
    // settled before anything else (a rollback) touches the target's files
    await Promise.all([early, earlyState]);
  }
  return { pausedAt };
};

/** The state file is saved on the source and copied to the target (hosts that share no storage for it). */
function stateCrosses(ctx: MigrationContext): boolean {
  const from = ctx.srcStateFile;
  return !!from && !ctx.migrateMemory && (!!ctx.copyState || from !== ctx.stateFile);
}

/**
 * Options of every copy inside the pause (the last deltas, the state file): small files through
 * the management box's open connections, the others by `policy.pauseTransfer`'s channel.
 */
function pauseCopyOptions(ctx: MigrationContext): { relayBelowBytes: number; channel?: 'tcp' } {
  return {
    relayBelowBytes: PAUSE_RELAY_BELOW_BYTES,
    ...(ctx.pauseTransfer === 'tcp' ? { channel: 'tcp' as const } : {}),
  };
}

function logStateCopy(deps: RunDeps, r: TransportCopyResult, t0: number): void {
  deps.logger?.debug({ ms: Date.now() - t0, channel: r.channel ?? r.mode }, 'pause part: state transfer');
  if (r.channel === 'tcp') deps.logger?.info('state file crossed through the tcp channel');
  if (r.channelFallback !== undefined)
    deps.logger?.info({ why: r.channelFallback }, 'state file went through ssh, not the tcp channel');
  if (r.streamed) deps.logger?.info('state file crossed while it was being saved');
  if (r.streamFallback !== undefined)
    deps.logger?.info({ why: r.streamFallback }, 'state file copied after the save, not streamed');
}

/**
 * Beyond the seed: copy the state file to the target as soon as the save has ended, instead of
 * after the early delta copy (Saving waits for both). Started with the save: what the copy does
 * on the target alone (the path guard, the look at the target, the tcp channel's one-shot
 * daemon) runs while the memory is written; it reads the file only once `saving` has resolved
 * (`sourceReady`). The saved file no longer changes and the copy is verified on both ends, so
 * CopyingDelta takes it as done (no second hash). Best effort: a failure, or a restart that
 * forgot it, leaves the copy to CopyingDelta; a failed save leaves nothing to copy.
 */
async function copyStateEarly(ctx: MigrationContext, deps: RunDeps, saving: Promise<void>): Promise<void> {
  const from = ctx.srcStateFile!;
  const to = ctx.stateFile!;
  // the part of the pause it takes: from the end of the save
  let savedAt = Date.now();
  saving.then(
    () => (savedAt = Date.now()),
    () => undefined,
  );
  try {
    const r = await copyAcross(ctx, deps, from, to, undefined, {
      ...pauseCopyOptions(ctx),
      sourceReady: saving,
      sourceGrows: true,
    });
    deps.memo.earlyState.set(ctx.id, { at: Date.now(), from, to });
    logStateCopy(deps, r, savedAt);
  } catch (err) {
    const saved = await saving.then(
      () => true,
      () => false,
    );
    if (saved) deps.logger?.info({ err }, 'early state copy failed; CopyingDelta copies it');
  }
}

/**
 * Beyond the seed: `virsh save` stops the VM's CPUs first (QEMU drains and flushes the disks
 * then) and writes the memory state after; the overlays do not change from the stop on. So
 * copy them to the target while the memory is being written, instead of after. The copies are
 * asked for at once, with the stop as their `sourceReady`: what they do on the target alone (the
 * path guard, the look at the target, the tcp channel's daemon) runs while the stop is awaited.
 * A copy proven by its digest is relinked onto the target's layer below right away (`qemu-img
 * rebase -u`: its header only), and once the save has ended its source is hashed again (QEMU
 * may write a layer's header when it lets go of the disk, at the end of the save): equal to
 * what was copied, the copy is confirmed and CopyingDelta has nothing left to do for it. Best
 * effort: CopyingDelta compares every copy not confirmed (its source with what was copied) and
 * copies again (and relinks) whatever differs (a header written at inactivation, a failed save
 * after which the VM ran on); it only finds the work done.
 */
export async function copyDeltaEarly(
  ctx: MigrationContext,
  deps: RunDeps,
  saving: Promise<void>,
): Promise<void> {
  const src = deps.driverFor(ctx.fromHost);
  const dst = deps.driverFor(ctx.toHost);
  let saved = false;
  const done = saving.then(
    () => (saved = true),
    () => (saved = true),
  );
  const noStop = new Error('the save ended without a stop');
  // resolves once the VM's disks are quiet; rejects with `noStop` when the save failed before
  const stopped = (async () => {
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
          throw noStop;
        return;
      }
      if (state !== 'running') return; // paused by the save (or shut off by it): disks quiet
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  stopped.catch(() => undefined); // each copy awaits it
  const r = ctx.rounds ?? 1;
  const digests = new Map<string, string>();
  const relinked = new Set<string>();
  const confirmed = new Set<string>();
  let t0 = Date.now();
  stopped.then(
    () => (t0 = Date.now()),
    () => undefined,
  );
  try {
    await allSettled(
      ctx.disks.map(async (d) => {
        const to = dstOverlayAt(ctx, d, r);
        const c = await copyAcross(ctx, deps, srcOverlayAt(ctx, d, r), to, undefined, {
          ...pauseCopyOptions(ctx),
          sourceReady: stopped,
        });
        if (!c.sha256) return; // proven another way: CopyingDelta compares both files, then relinks
        digests.set(to, c.sha256);
        const relinking = dst.relinkLayer(
          to,
          r === 1 ? d.dstPath : dstOverlayAt(ctx, d, r - 1),
          r === 1 ? d.format : undefined,
        );
        // The save has ended (succeeded): the source layer is final, whatever QEMU wrote into it
        // when it let go of the disk included. Hashed again now, beside the state file's copy,
        // not in CopyingDelta; equal to what was copied: confirmed.
        const final = saving.then(
          () => src.checksum(srcOverlayAt(ctx, d, r)),
          () => undefined,
        );
        final.catch(() => undefined); // awaited below
        await relinking;
        relinked.add(to);
        if ((await final.catch(() => undefined)) === c.sha256) confirmed.add(to);
      }),
    );
    deps.memo.earlyCopies.set(ctx.id, {
      at: Date.now(),
      paths: new Set(ctx.disks.map((d) => dstOverlayAt(ctx, d, r))),
      digests,
      relinked,
      confirmed,
    });
    deps.logger?.debug({ ms: Date.now() - t0 }, 'pause part: delta during save');
    deps.logger?.info('delta copied while the memory state was being saved');
  } catch (err) {
    if (err === noStop) return;
    deps.logger?.info({ err }, 'early delta copy failed; CopyingDelta copies it');
  }
}

/**
 * This migration's entry of a memo map, removed from it, and every other entry older than
 * `maxAgeMs` dropped (hints of migrations that never came back for them).
 */
function takeAndPrune<T extends { at: number }>(
  memo: Map<string, T>,
  id: string,
  maxAgeMs: number,
): T | undefined {
  const mine = memo.get(id);
  memo.delete(id);
  for (const [other, e] of memo) if (Date.now() - e.at > maxAgeMs) memo.delete(other);
  return mine;
}

/**
 * CopyingDelta when the memory goes by live migration: on the target, each disk's top layer is
 * made empty over the layers copied below it; the migration mirrors the source's top layer
 * into it. A VM already running from it (a run that died after the migration) keeps it.
 */
async function prepareTopLayers(ctx: MigrationContext, deps: RunDeps): ReturnType<Step> {
  const dst = deps.driverFor(ctx.toHost);
  const r = ctx.rounds ?? 1;
  const inUse = await dst.filesInUse();
  await allSettled(
    ctx.disks.map(async (d) => {
      const top = dstOverlayAt(ctx, d, r);
      if (inUse.has(top)) return;
      // ours by its name (the migration's id): a half-made one of an interrupted run goes
      await dst.removeFile(top);
      if (r === 1) await dst.createLayer(top, d.dstPath, d.format);
      else await dst.createLayer(top, dstOverlayAt(ctx, d, r - 1));
    }),
  );
  return {};
}

/**
 * Restoring's lookups, started now if they are not under way already (Saving starts them as
 * soon as the save has ended, CopyingDelta after a restart): when the state file crosses, its
 * saved definition is read from the source's file (the copy is byte for byte the same,
 * verified), beside the copy. By id, in memory only (see takePrefetchedRestore).
 */
function prefetchRestore(ctx: MigrationContext, deps: RunDeps): void {
  if (ctx.effectiveStrategy === 'cold' || ctx.migrateMemory) return;
  const from = ctx.srcStateFile;
  const stateInPlace = !from || (!ctx.copyState && from === ctx.stateFile);
  if (!stateInPlace && !stateCrosses(ctx)) return;
  const prefetched = deps.memo.prefetchedRestore;
  for (const [id, p] of prefetched) if (Date.now() - p.at >= PREFETCH_FRESH_MS) prefetched.delete(id); // never taken
  if (prefetched.has(ctx.id)) return; // started by Saving, still fresh
  const lookups = restoreLookups(ctx, deps, stateInPlace ? undefined : { host: ctx.fromHost, path: from });
  lookups.catch(() => undefined); // Restoring awaits it (or asks again)
  prefetched.set(ctx.id, { at: Date.now(), lookups });
}

export const copyDelta: Step = async (ctx, deps) => {
  if (ctx.migrateMemory === 'live') return prepareTopLayers(ctx, deps);
  const src = deps.driverFor(ctx.fromHost);
  const dst = deps.driverFor(ctx.toHost);
  // The VM is paused from here to the restore: copy everything at once; every copy is
  // verified by sha256 on both ends, so a copy found complete is only compared, never redone
  // (the copy itself looks first: no round trip of its own here).
  // small files (the last delta of iterative rounds) through the connections already open
  const small = pauseCopyOptions(ctx);
  const early = takeAndPrune(deps.memo.earlyCopies, ctx.id, EARLY_COPY_FRESH_MS);
  /** copy `from` to `to`, verified; true when the early copy was found complete (nothing copied now) */
  const copyOne = async (from: string, to: string): Promise<boolean> => {
    // its source hashed again by Saving once the save had ended: equal to what was copied
    if (early?.confirmed?.has(to)) return true;
    if (early?.paths.has(to)) {
      // copied while the memory was saved: compare now that the save is over (one round trip).
      // The copy proved the target equal to what it read on the source (`digests`): the source
      // hashed again is enough; without that digest, both are hashed
      const known = early.digests?.get(to);
      const [a, b] = await Promise.all([src.checksum(from), known ?? dst.checksum(to)]).catch(() => [
        '',
        '-',
      ]);
      if (a === b) return true;
    }
    try {
      await copyAcross(ctx, deps, from, to, undefined, small);
    } catch (err) {
      if (!(err instanceof VmplaceError && err.reason === 'DestinationDiffers')) throw err;
      // Partial, or relinked by an interrupted run: copied again. Unless a VM runs on it: a run
      // that died after the restore (before Restoring was stored) left the VM running on this
      // layer, written since. Then the restore happened: Restoring is next (the machine goes
      // forward from the rollback, which finds the VM on the target).
      if ((await dst.filesInUse()).has(to))
        throw new StalledError('DestinationInUse', `${to} on ${ctx.toHost} is in use by a running VM; kept`);
      await dst.removeFile(to);
      await copyAcross(ctx, deps, from, to, undefined, small);
    }
    return false;
  };
  const from = ctx.srcStateFile;
  const to = ctx.stateFile!;
  const earlyState = takeAndPrune(deps.memo.earlyState, ctx.id, EARLY_COPY_FRESH_MS);
  // copied by Saving once the save had ended (verified then; the source's file is final)
  const stateCopied =
    !!earlyState &&
    earlyState.from === from &&
    earlyState.to === to &&
    Date.now() - earlyState.at <= EARLY_COPY_FRESH_MS;
  prefetchRestore(ctx, deps); // unless Saving started them
  // migrateMemory: the guest's run time now that it is paused, read while the delta is copied
  const runTime = ctx.migrateMemory === 'paused' ? src.guestRunTime(ctx.vm) : undefined;
  runTime?.catch(() => undefined); // awaited below
  await allSettled([
    ...ctx.disks.map(async (d) => {
      const r = ctx.rounds ?? 1;
      const t0 = Date.now();
      const to = dstOverlayAt(ctx, d, r);
      const confirmed = await copyOne(srcOverlayAt(ctx, d, r), to);
      const t1 = Date.now();
      // relinked by the early copy, which the check just confirmed: nothing more to do
      const relinkedEarly = confirmed && early?.relinked?.has(to) === true;
      if (!relinkedEarly)
        await dst.relinkLayer(
          to,
          r === 1 ? d.dstPath : dstOverlayAt(ctx, d, r - 1),
          r === 1 ? d.format : undefined,
        );
      deps.logger?.debug(
        { ms: t1 - t0, relinkMs: Date.now() - t1, relinkedEarly, disk: d.target },
        'pause part: delta',
      );
    }),
    ...(from && (ctx.copyState || from !== to) && !stateCopied
      ? [
          (async () => {
            const t0 = Date.now();
            await copyOne(from, to);
            deps.logger?.debug({ ms: Date.now() - t0 }, 'pause part: state transfer');
          })(),
        ]
      : []),
  ]);
  const pausedRunTime = await runTime;
  return pausedRunTime !== undefined ? { pausedRunTime } : {};
};

export interface RestoreLookups {
  dom: DomainInfo | undefined;
  onSource: DomainInfo | undefined;
  saved: { def: VmDefinition } | { err: unknown };
}

/**
 * What Restoring asks before it restores: the VM on both hosts and the saved definition. The VM
 * is paused: ask both hosts and read the saved definition at once (each call over ssh is a round
 * trip); an unreadable state file only matters if a restore is still needed.
 */
export function restoreLookups(
  ctx: MigrationContext,
  deps: RunDeps,
  savedAt?: { host: string; path: string },
): Promise<RestoreLookups> {
  const drv = deps.driverFor(ctx.toHost);
  const cross = ctx.fromHost !== ctx.toHost;
  const savedDef = savedAt
    ? deps.driverFor(savedAt.host).savedDefinition(savedAt.path)
    : drv.savedDefinition(ctx.stateFile!);
  return Promise.all([
    drv.getDomain(ctx.vm),
    cross ? deps.driverFor(ctx.fromHost).getDomain(ctx.vm) : Promise.resolve(undefined),
    savedDef.then(
      (def) => ({ def }),
      (err: unknown) => ({ err }),
    ),
  ]).then(([dom, onSource, saved]) => ({ dom, onSource, saved }));
}

/**
 * Restore lookups started during CopyingDelta (the saved definition read where the state file
 * already is: the target's, or the source's while it crosses): by id, in memory only (the saved
 * definition holds secrets), taken once by Restoring if still fresh. The VM is saved before
 * CopyingDelta starts, so what they see is the state after the pause began.
 */
export function takePrefetchedRestore(
  ctx: MigrationContext,
  deps: RunDeps,
): Promise<RestoreLookups> | undefined {
  const p = deps.memo.prefetchedRestore.get(ctx.id);
  deps.memo.prefetchedRestore.delete(ctx.id);
  return p && Date.now() - p.at < PREFETCH_FRESH_MS ? (p.lookups as Promise<RestoreLookups>) : undefined;
}

/**
 * Restoring, when the memory moves by migration: the paused VM goes to the target onto the
 * copied layers (its top layer per disk), then runs there. Looks at both hosts first: a run that
 * died during the migration may have left it arrived (paused or running), in flight (the source
 * still has its job: waited for), or not started.
 */
async function arriveByMigration(ctx: MigrationContext, deps: RunDeps): ReturnType<Step> {
  const src = deps.driverFor(ctx.fromHost);
  const dst = deps.driverFor(ctx.toHost);
  const now = deps.now ?? Date.now;
  const live = ctx.migrateMemory === 'live';
  const top = (d: MigrationContext['disks'][number]): string => dstOverlayAt(ctx, d, ctx.rounds ?? 1);
  const onTarget = (x: DomainInfo): boolean =>
    ctx.disks.every((d) => {
      const p = diskOf(x, d.target)?.path;
      return p === top(d) || p === d.dstPath;
    });
  const done = async (state: DomainInfo['state'] | 'arrived', downtimeMs?: number): ReturnType<Step> => {
    // arrived: paused as it left (libvirt may have resumed it already: resume says so); a live
    // migration lands running, unless the VM was paused meanwhile (left as it is then)
    const t = Date.now();
    if (state !== 'running' && !live) await dst.resume(ctx.vm, { knownPaused: true });
    deps.logger?.debug({ ms: Date.now() - t }, 'pause part: resume');
    const resumedAt = ctx.resumedAt ?? now();
    const pauseMs = live ? (downtimeMs ?? ctx.pauseMs) : ctx.pausedAt ? resumedAt - ctx.pausedAt : undefined;
    deps.logger?.info({ pauseMs }, 'VM resumed on the target');
    return { committed: true, resumedAt, pauseMs };
  };
  const t0 = Date.now();
  for (let look = 0; ; look++) {
    const [dom, onSource, ranFor] = await Promise.all([
      dst.getDomain(ctx.vm),
      src.getDomain(ctx.vm),
      ctx.pausedRunTime !== undefined ? src.guestRunTime(ctx.vm) : undefined,
    ]);
    const sourceActive = onSource !== undefined && onSource.state !== 'shutoff';
    if (dom && dom.state !== 'shutoff') {
      if (!onTarget(dom))
        throw new VmplaceError(
          'DomainRunningOnSource',
          `${ctx.vm} runs on ${ctx.toHost}, but not from the target's disks`,
        );
      // arrived; the source QEMU ends when the migration completes
      if (!sourceActive) return done(dom.state);
      // both active: a migration an interrupted run started is still going on, or ending
      if (look < 3 && ((await src.waitForMigrationJob(ctx.vm)) || look === 0)) continue;
      throw new VmplaceError(
        'DomainRunningOnSource',
        `${ctx.vm} is ${onSource.state} on ${ctx.fromHost} and ${dom.state} on ${ctx.toHost}; never on both`,
      );
    }
    const expected = live ? 'running' : 'paused';
    if (!onSource || onSource.state !== expected)
      throw new VmplaceError(
        live
          ? 'DomainNotRunning'
          : onSource?.state === 'running'
            ? 'DomainRunningOnSource'
            : 'DomainNotPaused',
        `${ctx.vm} is ${onSource?.state ?? 'not defined'} on ${ctx.fromHost}, expected ${expected} for its move`,
      );
    // Someone resumed and paused it again while its last delta was copied: the copies miss what
    // the guest wrote meanwhile, and its memory (which goes now) knows of those writes. Back to
    // the source (the rollback resumes it); a later run starts afresh.
    if (ctx.pausedRunTime !== undefined && ranFor !== ctx.pausedRunTime)
      throw new VmplaceError(
        'GuestRanWhilePaused',
        `${ctx.vm} ran on ${ctx.fromHost} after vmplace paused it (its CPU time grew from ${ctx.pausedRunTime} to ${ranFor ?? 'unknown'}); its copied disks may miss writes, not moving it`,
      );
    break;
  }
  deps.logger?.debug({ ms: Date.now() - t0 }, 'pause part: arrival lookups');
  await deps.intents?.mark(ctx, 'restore');
  // a source host that reboots once the VM runs on the target must not start it again
  if (live && ctx.sourceAutostart) await src.setAutostart(ctx.vm, false);
  const t1 = Date.now();
  const how = {
    // each disk from our top layer (a layer: the driver's own format)
    disks: ctx.disks.map((d) => ({ target: d.target, path: top(d) })),
    address: transferSsh(deps, ctx.toHost).host,
    ...(deps.signal ? { signal: deps.signal } : {}),
  };
  if (live) {
    const res = await src.migrateOntoLayers(ctx.vm, dst, {
      ...how,
      maxDowntimeMs: Math.min(ctx.maxPauseMs ?? LIVE_DOWNTIME_MS, LIVE_DOWNTIME_MS),
      suspendAfterMs: liveConvergeLimitMs(ctx),
      ...(deps.bwlimitKiBps ? { bandwidthMiBps: Math.max(1, deps.bwlimitKiBps / 1024) } : {}),
    });
    deps.logger?.info(
      { ms: Date.now() - t1, downtimeMs: res.downtimeMs },
      'VM live-migrated onto the copied layers (top layer mirrored, no state file)',
    );
    return done('arrived', res.downtimeMs);
  }
  await src.migratePaused(ctx.vm, dst, how);
  deps.logger?.info({ ms: Date.now() - t1 }, 'paused VM moved to the target by migration (no state file)');
  return done('arrived');
}

/** How long a live migration of the memory may run before it is finished paused (see LIVE_CONVERGE_MIN_MS). */
export function liveConvergeLimitMs(ctx: MigrationContext): number {
  const rate = Math.max(ctx.deltaRounds?.baseBytesPerMs ?? 0, MIN_COPY_RATE_BYTES_PER_MS);
  return Math.max(LIVE_CONVERGE_MIN_MS, Math.round((3 * ctx.memoryBytes) / rate));
}

export const restoreVm: Step = async (ctx, deps) => {
  if (ctx.migrateMemory) return arriveByMigration(ctx, deps); // live or paused
  const drv = deps.driverFor(ctx.toHost);
  const now = deps.now ?? Date.now;
  const cross = ctx.fromHost !== ctx.toHost;
  const t0 = Date.now();
  const prefetched = takePrefetchedRestore(ctx, deps);
  // a state file that crossed hosts: its saved definition is read where it was saved (the copy
  // is byte for byte the same, verified; a driver may read it only where the VM is registered)
  const savedAt = stateCrosses(ctx) ? { host: ctx.fromHost, path: ctx.srcStateFile! } : undefined;
  const { dom, onSource, saved } = await (prefetched ?? restoreLookups(ctx, deps, savedAt));
  deps.logger?.debug({ ms: Date.now() - t0, prefetched: !!prefetched }, 'pause part: restore lookups');
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
  const rewritten = drv.withDiskPaths(
    saved.def,
    // each disk runs from our top layer (a layer: the driver's own format)
    Object.fromEntries(ctx.disks.map((d) => [d.target, { path: dstOverlayAt(ctx, d, ctx.rounds ?? 1) }])),
  );
  const t1 = Date.now();
  await drv.restore(ctx.stateFile!, rewritten, {
    knownInactive: dom === undefined || dom.state === 'shutoff',
  });
  deps.logger?.debug({ ms: Date.now() - t1 }, 'pause part: restore');
  const resumedAt = now();
  const pauseMs = ctx.pausedAt ? resumedAt - ctx.pausedAt : undefined;
  deps.logger?.info({ pauseMs }, 'VM resumed on the target');
  return { committed: true, resumedAt, pauseMs };
};
