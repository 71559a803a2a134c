import { StalledError, VmplaceError } from '../../errors';
import type { VmDefinition } from '../../drivers/driver';
import type { Step } from './deps';
import { usersOf } from './ownership';
import { diskOf, dstOverlayAt, mustGetDomain, srcOverlayAt } from './common';

export const mergeOverlays: Step = async (ctx, deps) => {
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
    await drv.mergeLayers(ctx.vm, d.target, { top });
  }
  return {};
};

export const verifyTarget: Step = async (ctx, deps) => {
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
 * the live definition, which a restore on another host left transient. Shut off (cold): the
 * source's inactive definition with the disk paths rewritten.
 */
export const finalizeDefinition: Step = async (ctx, deps) => {
  const drv = deps.driverFor(ctx.toHost);
  const want = Object.fromEntries(ctx.disks.map((d) => [d.target, { path: d.dstPath, format: d.format }]));
  const named = (def: VmDefinition): boolean => {
    const paths = drv.diskPathsOf(def);
    return ctx.disks.every((d) => paths[d.target] === d.dstPath);
  };
  const dom = await drv.getDomain(ctx.vm);
  const done = dom?.persistent === true && named(await drv.definition(ctx.vm, { inactive: true }));
  if (!done) {
    let def: VmDefinition;
    if (ctx.effectiveStrategy === 'cold') {
      const from = deps.driverFor(dom ? ctx.toHost : ctx.fromHost);
      def = from.withDiskPaths(await from.definition(ctx.vm, { inactive: true }), want);
      if (ctx.fromHost !== ctx.toHost) {
        await deps.intents?.mark(ctx, 'define');
        if (ctx.sourceAutostart) await deps.driverFor(ctx.fromHost).setAutostart(ctx.vm, false);
      }
    } else {
      if (!dom) throw new VmplaceError('DomainNotFound', `${ctx.vm} is not running on ${ctx.toHost}`);
      def = await drv.definition(ctx.vm);
    }
    await drv.define(def);
    const after = await drv.getDomain(ctx.vm);
    if (!after?.persistent || !named(await drv.definition(ctx.vm, { inactive: true })))
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
export const cleanUpSource: Step = async (ctx, deps) => {
  const src = deps.driverFor(ctx.fromHost);
  const dst = deps.driverFor(ctx.toHost);
  const cross = ctx.fromHost !== ctx.toHost;
  const dom = await mustGetDomain(dst, ctx);
  if (!dom.persistent)
    throw new VmplaceError('VerifyFailed', `${ctx.vm} is not defined persistently on ${ctx.toHost}`);
  const targetUses = new Set<string>();
  for (const d of dom.disks) if (d.path) targetUses.add(d.path);
  for (const p of Object.values(dst.diskPathsOf(await dst.definition(ctx.vm, { inactive: true }))))
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
