import { sourceTotal, spaceNeeds, targetTotal } from '../../planner/space';
import { StalledError } from '../../errors';
import type { HypervisorDriver } from '../../drivers/driver';
import { pathRulesOfStyle } from '../../drivers/path-rules';
import { namingDiskPaths, targetDiskPath } from '../../planner/target-path';
import { chooseStrategy, type Finding, judgeDisk, judgePair, placeState } from '../preflight-policy';
import { hostStateFindings, judgeDiskFormat } from '../preflight-findings';
import type { DiskMove, MigrationContext } from '../types';
import type { Step } from './deps';
import { usersOf } from './ownership';
import { diskOf, lastPossibleRound, sum } from './common';

// ------------------------------------------------------------------ Preflight

const stalled = (f: Finding): StalledError => new StalledError(f.reason, f.message);

export const preflight: Step = async (ctx, deps) => {
  const src = deps.driverFor(ctx.fromHost);
  const dst = deps.driverFor(ctx.toHost);
  const cross = ctx.fromHost !== ctx.toHost;
  const transport = deps.transportFor(ctx.fromHost, ctx.toHost);
  const pair = judgePair({
    fromHost: ctx.fromHost,
    toHost: ctx.toHost,
    from: src.capabilities,
    to: dst.capabilities,
    hasTransport: transport !== undefined,
  });
  if (pair) throw stalled(pair);
  const dom = await src.getDomain(ctx.vm);
  if (!dom)
    throw new StalledError('DomainNotFound', `no domain ${ctx.vm} is defined on host ${ctx.fromHost}`);
  if (dom.state !== 'running' && dom.state !== 'shutoff') {
    const f = chooseStrategy({
      vm: ctx.vm,
      state: dom.state,
      requested: ctx.strategy,
      cross,
      caps: src.capabilities,
      direct: true,
    });
    if ('finding' in f) throw stalled(f.finding);
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
    const cpu = await dst.canRun(dom.definition);
    if (!cpu.compatible)
      throw new StalledError('CpuIncompatible', `${ctx.toHost} cannot run ${ctx.vm}'s CPU: ${cpu.message}`);
    if (ctx.moves.some((m) => !m.stays)) {
      const reachable = await transport!.reachable();
      const mode = deps.transferMode ?? 'auto';
      if (mode === 'direct' && !reachable)
        throw new StalledError(
          'TargetUnreachable',
          `${ctx.fromHost} cannot reach ${ctx.toHost}'s transfer address`,
        );
      transferMode = mode === 'relay' || !reachable ? 'relay' : 'direct';
      if (transferMode === 'relay')
        deps.logger?.warn(
          { from: ctx.fromHost, to: ctx.toHost },
          'hosts cannot reach each other: copies are relayed by the management box',
        );
    }
  }
  // an emulated (TCG) guest's memory is not live-migrated across hosts without policy.liveEmulated
  const emulatedNoLive = dom.domainType === 'qemu' && ctx.liveEmulated !== true;
  const chosen = chooseStrategy({
    vm: ctx.vm,
    state: dom.state,
    requested: ctx.strategy,
    cross,
    caps: {
      family: src.capabilities.family,
      liveStorageMove: src.capabilities.liveStorageMove,
      liveMigration: src.capabilities.liveMigration && dst.capabilities.liveMigration,
      quickStorageMigration: src.capabilities.quickStorageMigration && dst.capabilities.quickStorageMigration,
      quickWithinHost: dst.capabilities.quickWithinHost,
      defineOnOtherHost: dst.capabilities.defineOnOtherHost,
    },
    direct: transferMode !== 'relay',
    emulatedNoLive,
  });
  if ('finding' in chosen) throw stalled(chosen.finding);
  const effective = chosen.strategy;
  if (chosen.warning) deps.logger?.warn(chosen.warning);

  const disks: DiskMove[] = [];
  // the plan's rules for names and paths, by each host's driver (see planner/target-path.ts)
  const vmDiskPaths = namingDiskPaths(dom.disks, pathRulesOfStyle(src.paths.style));
  // Files of this VM that another domain on the source host uses (a linked clone's base, an
  // image shared read-only): moving them would delete them under that domain.
  const inUse = ctx.moves.some((m) => !m.stays)
    ? await usersOf(
        deps,
        ctx.fromHost,
        dom.disks.flatMap((x) => (x.path ? [x.path] : [])),
      )
    : new Map<string, Set<string>>();
  const rounds = Array.from({ length: lastPossibleRound(ctx) }, (_, i) => i + 1);
  for (const m of ctx.moves) {
    const d = diskOf(dom, m.target);
    const seen = d?.type === 'file' ? d.path : undefined;
    const observed = {
      vm: ctx.vm,
      disk: d,
      target: m.target,
      toPath: m.toPath,
      stays: m.stays === true,
      cross,
      fromHost: ctx.fromHost,
      otherUsers: seen ? [...(inUse.get(seen) ?? [])].filter((n) => n !== ctx.vm) : [],
      paths: src.paths,
    };
    const first = judgeDisk(observed);
    if ('finding' in first) throw stalled(first.finding);
    // opened only as the format the VM declares; the first bytes only decide whether to go on
    const declared = d!.format ?? 'raw';
    const format = judgeDiskFormat(declared, await src.probeFormat(seen!));
    if (!format.ok)
      throw new StalledError(format.reason, `${ctx.vm} disk ${m.target} (${seen}): ${format.message}`);
    if (format.warning) deps.logger?.warn({ disk: m.target, path: seen, declared }, format.warning);
    const info = await src.imageInfo(seen!, { forceShare: true, format: declared });
    const verdict = judgeDisk({
      ...observed,
      ...(info.chainLength > 1 || info.backingFile ? { parent: info.backingFile ?? '' } : {}),
    });
    if ('finding' in verdict) throw stalled(verdict.finding);
    if (verdict.action === 'stay') continue;
    const srcPath = seen!;
    const dstPath = targetDiskPath(
      ctx.vm,
      m.target,
      srcPath,
      m.toPath,
      vmDiskPaths,
      pathRulesOfStyle(dst.paths.style),
    );
    if (await dst.fileExists(dstPath))
      throw new StalledError(
        'TargetFileExists',
        `${dstPath} already exists on ${ctx.toHost}; vmplace never overwrites it`,
      );
    // every layer this migration may create for the disk, named by each host's driver
    const layer = (drv: HypervisorDriver, dir: string, round: number): string =>
      drv.ownFile(dir, ctx.vm, ctx.id, { what: 'layer', disk: m.target, round });
    const srcLayers = rounds.map((r) => layer(src, src.paths.dirname(srcPath), r));
    const dstLayers = rounds.map((r) => layer(dst, m.toPath, r));
    disks.push({
      target: m.target,
      format: declared,
      fromStorage: m.fromStorage,
      toStorage: m.toStorage,
      srcPath,
      dstPath,
      srcOverlay: srcLayers[0]!,
      dstOverlay: dstLayers[0]!,
      ...(rounds.length > 1 ? { srcLayers, dstLayers } : {}),
      virtualBytes: info.virtualBytes,
      allocatedBytes: info.allocatedBytes,
    });
  }
  if (disks.length === 0 && !cross)
    throw new StalledError('NothingToMove', `${ctx.vm}'s disks are already where they should be`);

  const { stateFile, srcStateFile, copyState, migrateMemory } = placeState({
    strategy: effective,
    cross,
    firstTo: ctx.moves[0]!.toPath,
    ...(disks.length > 0 ? { firstSourceDir: src.paths.dirname(disks[0]!.srcPath) } : {}),
    ...(ctx.sharedStatePath ? { sharedStatePath: ctx.sharedStatePath } : {}),
    stateOnSharedStorage: src.capabilities.stateOnSharedStorage && dst.capabilities.stateOnSharedStorage,
    pausedMigration: src.capabilities.pausedMigration && dst.capabilities.pausedMigration,
    // quickMemory live is a live migration too: an emulated guest without the opt-in goes paused
    liveOntoLayers: src.capabilities.liveOntoLayers && dst.capabilities.liveOntoLayers && !emulatedNoLive,
    allDisksMove: !ctx.moves.some((m) => m.stays),
    direct: transferMode !== 'relay',
    ...(ctx.quickMemory ? { quickMemory: ctx.quickMemory } : {}),
    join: (dir) => src.ownFile(dir, ctx.vm, ctx.id, { what: 'state' }),
  });

  // Space, by the one model the planner uses too (planner/space.ts), measured on the storage
  // locations (the VM's directory in one may not exist yet).
  const rootOf = new Map(ctx.moves.map((m) => [m.target, m.toPath]));
  const needs = spaceNeeds({
    strategy: effective,
    disks: disks.map((d) => ({
      from: src.paths.dirname(d.srcPath),
      to: rootOf.get(d.target) ?? dst.paths.dirname(d.dstPath),
      virtualBytes: d.virtualBytes,
      allocatedBytes: d.allocatedBytes,
    })),
    memoryBytes: dom.memoryBytes,
    ...(stateFile ? { stateAt: dst.paths.dirname(stateFile) } : {}),
    ...(copyState && srcStateFile ? { stateFirstAt: src.paths.dirname(srcStateFile) } : {}),
    marginBytes: ctx.targetMarginBytes,
    headroomRatio: ctx.sourceHeadroomRatio,
  });
  for (const [dir, n] of needs.target) {
    const fs = await dst.fsInfo(dir).catch((err: unknown) => {
      throw new StalledError('TargetStorageMissing', `target storage ${dir} on ${ctx.toHost} is not usable`, {
        cause: err,
      });
    });
    if (fs.freeBytes < targetTotal(n))
      throw new StalledError(
        'TargetSpaceInsufficient',
        `${dir} on ${ctx.toHost} has ${fs.freeBytes} bytes free; the move needs ${targetTotal(n) - n.margin} plus a margin of ${n.margin}`,
      );
    await probeWritable(dst, dir, ctx);
  }
  for (const [dir, n] of needs.source) {
    const fs = await src.fsInfo(dir);
    if (fs.freeBytes < sourceTotal(n))
      throw new StalledError(
        'SourceHeadroomInsufficient',
        `${dir} on ${ctx.fromHost} has ${fs.freeBytes} bytes free; the differencing disks may need ${sourceTotal(n)}`,
      );
  }
  const bytesTotal = sum(disks.map((d) => d.allocatedBytes));
  deps.logger?.info({ strategy: effective, disks: disks.length, bytesTotal }, 'preflight passed');
  return {
    effectiveStrategy: effective,
    disks,
    memoryBytes: dom.memoryBytes,
    stateFile,
    srcStateFile,
    copyState,
    ...(migrateMemory ? { migrateMemory } : {}),
    ...(transferMode ? { transferMode } : {}),
    wasRunning: dom.state === 'running',
    ...(cross && dom.autostart ? { sourceAutostart: true } : {}),
    bytesTotal,
    bytesDone: 0,
  };
};

/**
 * Can this migration create a file in `dir`? The probe is created exclusively and removed by
 * its identity. Its name carries the migration's id (ownFile): a probe an interrupted run left
 * is this migration's own, removed before the probe is made again and after a failed attempt.
 */
export async function probeWritable(
  drv: HypervisorDriver,
  dir: string,
  ctx: MigrationContext,
): Promise<void> {
  const probe = drv.ownFile(dir, ctx.vm, ctx.id, { what: 'probe' });
  await drv.removeFile(probe);
  let identity: string;
  try {
    identity = await drv.createExclusive(probe);
  } catch (err) {
    // created after all (the answer was lost), or half made: ours by its name
    await drv.removeFile(probe).catch(() => undefined);
    throw new StalledError('TargetNotWritable', `cannot write to ${dir} on ${ctx.toHost}`, { cause: err });
  }
  if ((await drv.removeIfIdentity(probe, identity).catch(() => 'failed')) === 'failed')
    await drv.removeFile(probe);
}
