import { StalledError, VmplaceError } from '../../errors';
import type { DiskMove, MigrationContext } from '../types';
import type { Step, StepDeps } from './deps';
import { claimFor, ownedHere, removeOwned } from './ownership';
import {
  allSettled,
  copyAcross,
  diskOf,
  dstOverlayAt,
  freezeRound,
  lastPossibleRound,
  mustGetDomain,
  roundOnSource,
  srcOverlayAt,
  sum,
  throwIfCancelled,
} from './common';
import {
  DEFAULT_MAX_PAUSE_MS,
  DELTA_SHRINK_FACTOR,
  FIRST_DELTA_TRUSTED_BYTES,
  MIN_COPY_RATE_BYTES_PER_MS,
  MIN_DELTA_BUDGET_MS,
  PAUSE_FIXED_COST_MS,
  PAUSE_RELAY_BELOW_BYTES,
} from './tuning';

// ------------------------------------------------------------------ quick: forward steps

export const snapshotDisks: Step = async (ctx, deps) => {
  if (ctx.disks.length === 0) return {};
  const drv = deps.driverFor(ctx.fromHost);
  const dom = await mustGetDomain(drv, ctx);
  const onOverlay = ctx.disks.filter((d) => diskOf(dom, d.target)?.path === d.srcOverlay);
  if (onOverlay.length > 0 && onOverlay.length < ctx.disks.length)
    throw new StalledError('InconsistentSnapshot', `only some of ${ctx.vm}'s disks run on overlays`);
  // A leftover layer file (ours by its name) from a freeze that failed must not make the hypervisor refuse.
  if (onOverlay.length === 0) for (const d of ctx.disks) await drv.removeFile(d.srcOverlay);
  // frozen already (a re-run): asked again, so the layers of other disks are merged back
  await freezeRound(ctx, drv, 1);
  return {};
};

export const copyBase: Step = async (ctx, deps) => {
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
    await dst.makeDir(dst.paths.dirname(d.dstPath));
    const copied = await copyAcross(
      ctx,
      deps,
      d.srcPath,
      d.dstPath,
      (n) => deps.onProgress?.(ctx, before + Math.min(n, d.allocatedBytes), ctx.bytesTotal),
      claim ? { claim } : {},
    );
    // The copy hashed the source while reading it and the target before renaming it into place
    // (transport.ts): its digest is the base's checksum. Reading both 1 GiB files again cost
    // as much as the copy itself between two hosts. Only a copy proven otherwise is hashed here.
    const [a, b] = copied.sha256
      ? [copied.sha256, copied.sha256]
      : await Promise.all([src.checksum(d.srcPath), dst.checksum(d.dstPath)]);
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
    // on to the delta rounds (state DeltaRound), each measured on its own copy
    const baseBytesPerMs = Math.max(done / elapsed, MIN_COPY_RATE_BYTES_PER_MS);
    return { disks, bytesDone: done, deltaRounds: { baseBytesPerMs, copiedThrough: 0 } };
  }
  return { disks, bytesDone: done };
};

/** Copy round `r`'s (read-only) overlays to the target and rebase them onto the layer below. */
export async function copyRound(ctx: MigrationContext, deps: StepDeps, r: number): Promise<void> {
  const dst = deps.driverFor(ctx.toHost);
  await allSettled(
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
      // round 1's parent is the disk's own image; later rounds sit on our own layer below
      if (r === 1) await dst.relinkLayer(to, d.dstPath, d.format);
      else await dst.relinkLayer(to, dstOverlayAt(ctx, d, r - 1));
    }),
  );
}

/**
 * One iteration of the delta rounds (beyond the seed; state DeltaRound, visited once per
 * round): while the VM runs, freeze the active overlay under a new one and copy it, until the
 * delta left for the pause is predicted to fit the pause budget, stops shrinking, or the round
 * limit is reached. Resumable: the active round is read from the domain, and a round frozen by
 * an interrupted run whose copy did not finish is copied first. The measurements go from round
 * to round in the context (`deltaRounds`); `rounds` is the active round, the one CopyingDelta
 * copies during the pause.
 */
export const deltaRound: Step = async (ctx, deps) => {
  const src = deps.driverFor(ctx.fromHost);
  const log = deps.logger;
  const st = ctx.deltaRounds ?? { baseBytesPerMs: MIN_COPY_RATE_BYTES_PER_MS, copiedThrough: 0 };
  const dom = await mustGetDomain(src, ctx);
  const r = roundOnSource(ctx, ctx.disks[0]!, diskOf(dom, ctx.disks[0]!.target)?.path) ?? 1;
  // frozen by an interrupted run (its round not copied yet): asked again, so the layers of
  // other disks are merged back
  if (r > st.copiedThrough + 1) await freezeRound(ctx, src, r);
  for (let k = st.copiedThrough + 1; k < r; k++) await copyRound(ctx, deps, k);
  // fixed costs of the pause: save and restore, and copying the memory state between hosts
  const fixedMs = PAUSE_FIXED_COST_MS + (ctx.copyState ? ctx.memoryBytes / st.baseBytesPerMs : 0);
  const budgetMs = Math.max(MIN_DELTA_BUDGET_MS, (ctx.maxPauseMs ?? DEFAULT_MAX_PAUSE_MS) - fixedMs);
  const sizes = await Promise.all(
    ctx.disks.map((d) =>
      src.imageInfo(srcOverlayAt(ctx, d, r), { forceShare: true }).then((i) => i.allocatedBytes),
    ),
  );
  const delta = sum(sizes);
  // What a delta costs to copy is measured on the rounds themselves, which copy the way the
  // pause does (small files through the management box, see PAUSE_RELAY_BELOW_BYTES): the base
  // copy's rate says little about it (a base may be mostly zeros, compressed away on the link).
  // Before any round only a tiny delta is trusted to fit.
  const predictedMs =
    st.msPerByte !== undefined
      ? delta * st.msPerByte
      : delta <= FIRST_DELTA_TRUSTED_BYTES
        ? delta / Math.max(st.baseBytesPerMs / 2, MIN_COPY_RATE_BYTES_PER_MS)
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
  const previous = st.previousDelta ?? Infinity;
  if (predictedMs <= budgetMs || r >= lastPossibleRound(ctx) || delta > DELTA_SHRINK_FACTOR * previous)
    return { rounds: r, deltaRounds: { ...st, copiedThrough: r - 1, done: true } };
  throwIfCancelled(deps, 'the delta rounds');
  await freezeRound(ctx, src, r + 1);
  const t0 = Date.now();
  await copyRound(ctx, deps, r);
  return {
    rounds: r + 1,
    deltaRounds: {
      ...st,
      msPerByte: (Date.now() - t0) / Math.max(delta, 1),
      previousDelta: delta,
      copiedThrough: r,
    },
  };
};
