import { sourceTotal, spaceNeeds, targetTotal } from '../../planner/space';
import * as path from 'node:path';
import { StalledError } from '../../errors';
import type { HypervisorDriver } from '../../drivers/driver';
import { targetReachable } from '../../transfer/between-hosts';
import { namingDiskPaths, targetDiskPath } from '../../planner/target-path';
import { hostStateFindings, judgeDiskFormat } from '../preflight-findings';
import type { DiskMove, MigrationContext } from '../types';
import type { Step } from './deps';
import { usersOf } from './ownership';
import { diskOf, isInside, ownFileName, sum, transferSsh } from './common';

// ------------------------------------------------------------------ Preflight

export const preflight: Step = async (ctx, deps) => {
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

  // Space, by the one model the planner uses too (planner/space.ts), measured on the storage
  // locations (the VM's directory in one may not exist yet).
  const rootOf = new Map(ctx.moves.map((m) => [m.target, m.toPath]));
  const copyState = Boolean(stateFile && cross && !shared && disks.length > 0);
  const needs = spaceNeeds({
    strategy: effective,
    disks: disks.map((d) => ({
      from: path.posix.dirname(d.srcPath),
      to: rootOf.get(d.target) ?? path.posix.dirname(d.dstPath),
      virtualBytes: d.virtualBytes,
      allocatedBytes: d.allocatedBytes,
    })),
    memoryBytes: dom.memoryBytes,
    ...(stateFile ? { stateAt: path.posix.dirname(stateFile) } : {}),
    ...(copyState && srcStateFile ? { stateFirstAt: path.posix.dirname(srcStateFile) } : {}),
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
    ...(transferMode ? { transferMode } : {}),
    wasRunning: dom.state === 'running',
    ...(cross && dom.autostart ? { sourceAutostart: true } : {}),
    bytesTotal,
    bytesDone: 0,
  };
};

export async function probeWritable(
  drv: HypervisorDriver,
  dir: string,
  ctx: MigrationContext,
): Promise<void> {
  const probe = path.posix.join(dir, ownFileName(ctx.vm, ctx.id, 'probe'));
  try {
    await drv.exec.run(['touch', '--', probe]);
  } catch (err) {
    throw new StalledError('TargetNotWritable', `cannot write to ${dir} on ${ctx.toHost}`, { cause: err });
  }
  await drv.removeFile(probe);
}
