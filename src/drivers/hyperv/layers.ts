/**
 * Layers, which on Hyper-V are checkpoints: freezing a VM's disks on a checkpoint with the asked
 * names as hard links (`freezeDisks`), merging them back online (`mergeLayers`: Remove-VMCheckpoint)
 * and offline (`mergeLayerOffline`: Merge-VHD), and differencing disks made, relinked and tested.
 * Functions of the Hyper-V driver (see `driver.ts`), each taking the host's {@link HyperVContext}.
 */
import { StalledError, VmplaceError } from '../../errors';
import { WINDOWS_PATHS } from '../windows-paths';
import { checkpointName, ownFilePath, parseCheckpointName, parseOwnLayer } from './names';
import * as parse from './parsers';
import * as scripts from './scripts';
import { type HyperVContext, same } from './context';
import { filesInUse } from './observe';
import { mustSeeVm, type SeenDrive, type SeenVm, seeVm } from './seen';

/**
 * `Checkpoint-VM -SnapshotName vmplace-<migration>[-r<round>]` (checkpointVm: taken only when no
 * checkpoint of that name exists), then for each asked disk a hard link under the asked name
 * to the `.avhdx` it now runs on (hardLink: made only when the name is free; the two names must
 * be one file id, else `OverlayExists`). The names must be those `ownFile` gives for this VM,
 * disk, one migration and one round (the checkpoint's name comes from them).
 *
 * Already done: every asked disk is reported on its asked name (getDomain): returned as is.
 * Half done (the checkpoint taken, a link missing): the checkpoint is found by its name, and
 * a disk is linked only when the `.avhdx` it runs on has as parent the file that checkpoint
 * holds at the disk's place (`UnexpectedDiskSource` otherwise: never a layer of someone else).
 *
 * Refused before anything is done: a VM with a file disk not asked for (`SnapshotPartial`: the
 * checkpoint would layer it, and `Remove-VMCheckpoint` merges a checkpoint's disks together,
 * so it could not be merged back without unfreezing the others), a layer whose directory is not
 * its disk's (Hyper-V puts the `.avhdx` beside its parent; a hard link stays on one volume).
 */
export async function freezeDisks(
  ctx: HyperVContext,
  vm: string,
  layers: { target: string; layer: string }[],
): Promise<{ target: string; layer: string; below: string }[]> {
  if (layers.length === 0) return [];
  const named = layers.map((l) => ({ ...l, name: parseOwnLayer(l.layer, vm, l.target) }));
  const first = named[0]!.name;
  if (!first || named.some((l) => l.name?.migration !== first.migration || l.name.round !== first.round))
    throw new StalledError(
      'NotSupportedByDriver',
      `the layers of ${vm} must be named by ownFile for one migration and round: ${layers.map((l) => l.layer).join(', ')}`,
    );
  await Promise.all(layers.map((l) => ctx.guardPath(l.layer)));
  let seen = await mustSeeVm(ctx, vm);
  const files = seen.drives.filter((d) => d.disk.type === 'file');
  const left = files.filter((d) => !layers.some((l) => l.target === d.disk.target));
  if (left.length)
    throw new StalledError(
      'SnapshotPartial',
      `a Hyper-V checkpoint layers every disk of ${vm} and Remove-VMCheckpoint merges them together; vmplace freezes ${vm} only when all its disks move (${left.map((d) => d.disk.target).join(', ')} would stay)`,
    );
  const driveOf = (s: SeenVm, t: string): SeenDrive => {
    const d = s.drives.find((x) => x.disk.target === t);
    if (!d?.real) throw new StalledError('DiskNotFound', `${vm} on ${ctx.hostName} has no file disk ${t}`);
    return d;
  };
  const done = (s: SeenVm): boolean => layers.every((l) => same(driveOf(s, l.target).disk.path, l.layer));
  if (!done(seen)) {
    for (const l of layers) {
      const d = driveOf(seen, l.target);
      if (!same(WINDOWS_PATHS.dirname(l.layer), WINDOWS_PATHS.dirname(d.real!)))
        throw new StalledError(
          'NotSupportedByDriver',
          `Hyper-V makes the differencing disk of ${vm} ${l.target} beside ${d.real}; the layer ${l.layer} must be in that directory`,
        );
    }
    const cp = checkpointName(first.migration, first.round);
    const taken = await ctx.run(
      `freezeDisks ${vm}`,
      scripts.checkpointVm(vm, cp),
      parse.parseCheckpointTaken,
    );
    ctx.log?.info({ vm, checkpoint: cp, created: taken.created }, 'checkpoint of every disk');
    const [after, checkpoints] = await Promise.all([
      mustSeeVm(ctx, vm),
      ctx.run('getCheckpoints', scripts.getCheckpoints(vm), parse.parseCheckpoints),
    ]);
    const ours = checkpoints.find((c) => c.name === cp);
    if (!ours)
      throw new VmplaceError(
        'UnexpectedOutput',
        `checkpoint ${cp} of ${vm} is not listed after it was taken`,
      );
    for (const l of layers) {
      const d = driveOf(after, l.target);
      if (same(d.disk.path, l.layer)) continue;
      const below = ours.hardDrives.find(
        (h) =>
          h.controllerType === d.drive.controllerType &&
          h.controllerNumber === d.drive.controllerNumber &&
          h.controllerLocation === d.drive.controllerLocation,
      );
      if (d.drive.vhdType !== 'Differencing' || !below?.path || !same(d.drive.parentPath, below.path))
        throw new StalledError(
          'UnexpectedDiskSource',
          `${vm} ${l.target} runs from ${d.real}, which is not the layer of checkpoint ${cp} (its parent is ${d.drive.parentPath ?? 'none'})`,
        );
      const link = await ctx.run('hardLink', scripts.hardLink(l.layer, d.real!), parse.parseHardLink);
      if (link.linkId !== link.targetId)
        throw new StalledError('OverlayExists', `${l.layer} exists on ${ctx.hostName} and is not ${d.real}`);
    }
    seen = await mustSeeVm(ctx, vm);
    if (!done(seen))
      throw new VmplaceError(
        'SnapshotPartial',
        `${vm}: after checkpoint ${cp}, not every disk shows its layer`,
      );
  }
  return layers.map((l) => ({
    target: l.target,
    layer: l.layer,
    below: driveOf(seen, l.target).drive.parentPath ?? '',
  }));
}

/**
 * `Remove-VMCheckpoint` of every checkpoint of vmplace's (named `vmplace-<migration>...`, of the
 * migration `top` names) that the VM has, highest round first (removeCheckpoint: a name already
 * gone is fine); Hyper-V merges every disk of them in the background; then poll (mergeStatus)
 * until the disk `target` runs from a file that is not an `.avhdx` and no merge is reported;
 * then the asked names of the merged layers (the hard links `freezeDisks` made) are removed by
 * the file identity they had before the merge (never a file that took the name since).
 *
 * Already done: with `top`, a disk that no longer runs from it (a rerun) is left alone; a disk
 * that is not on a differencing disk has nothing to merge. A merge an interrupted run started
 * is found running (no checkpoint left, the disk still on its layer) and waited for.
 *
 * Refused (`NotSupportedByDriver`): a disk on a differencing disk that no checkpoint of vmplace
 * holds, with no merge running: a layer attached as the VM's disk (a restore elsewhere) or a
 * checkpoint someone else took. Hyper-V merges such a disk only while the VM is off.
 */
export async function mergeLayers(
  ctx: HyperVContext,
  vm: string,
  target: string,
  opts: { top?: string } = {},
): Promise<void> {
  const seen = await mustSeeVm(ctx, vm);
  const d = seen.drives.find((x) => x.disk.target === target);
  if (!d?.real) throw new StalledError('DiskNotFound', `${vm} on ${ctx.hostName} has no file disk ${target}`);
  if (d.drive.vhdError !== undefined)
    throw new VmplaceError('UnexpectedOutput', `Get-VHD cannot read ${d.real} of ${vm}: ${d.drive.vhdError}`);
  if (d.drive.vhdType !== 'Differencing') return;
  if (opts.top !== undefined && !same(d.disk.path, opts.top) && !same(d.real, opts.top)) return;
  const migration =
    (opts.top !== undefined ? parseOwnLayer(opts.top, vm, target)?.migration : undefined) ??
    parseOwnLayer(d.disk.path ?? '', vm, target)?.migration;
  const checkpoints = await ctx.run(`mergeLayers ${vm}`, scripts.getCheckpoints(vm), parse.parseCheckpoints);
  const ours = checkpoints
    .flatMap((c) => {
      const n = parseCheckpointName(c.name);
      return n && (migration === undefined || n.migration === migration) ? [{ c, n }] : [];
    })
    .sort((a, b) => b.n.round - a.n.round);
  const status = await ctx.run('mergeStatus', scripts.mergeStatus(vm), parse.parseMergeStatus);
  if (ours.length === 0 && !status.merging)
    throw new StalledError(
      'NotSupportedByDriver',
      `${vm} ${target} runs from the differencing disk ${d.real}, which no checkpoint of vmplace holds and no merge is folding: Hyper-V merges such a disk only while the VM is off (Merge-VHD); vmplace does not do it for a running VM`,
    );
  // the asked names of every disk's layers of these rounds, with their identity now (all merge together)
  const rounds = new Set(ours.map((o) => o.n.round));
  const topRound = opts.top !== undefined ? parseOwnLayer(opts.top, vm, target)?.round : undefined;
  if (topRound !== undefined) for (let r = 1; r <= topRound; r++) rounds.add(r);
  const links = await ownLinksOf(ctx, seen, migration, rounds);
  for (const o of ours)
    await ctx.run(`mergeLayers ${vm}`, scripts.removeCheckpoint(vm, o.c.name), parse.parseRemoved);
  ctx.log?.info({ vm, checkpoints: ours.map((o) => o.c.name) }, 'checkpoints removed; Hyper-V merges');
  await ctx.waitUntil(`the merge of ${vm} ${target}`, async () => {
    const s = await ctx.run('mergeStatus', scripts.mergeStatus(vm), parse.parseMergeStatus);
    const drive = s.vm.hardDrives.find(
      (h) =>
        h.controllerType === d.drive.controllerType &&
        h.controllerNumber === d.drive.controllerNumber &&
        h.controllerLocation === d.drive.controllerLocation,
    );
    return !s.merging && drive?.path !== undefined && !/\.avhdx?$/i.test(drive.path);
  });
  for (const l of links)
    await ctx.run('removeIfIdentity', scripts.removeIfIdentity(l.path, l.identity), parse.parseRemoveOwn);
}

/** The asked names (hard links) of the VM's layers of `migration` and `rounds` that exist, with their identity. */
async function ownLinksOf(
  ctx: HyperVContext,
  seen: SeenVm,
  migration: string | undefined,
  rounds: Set<number>,
): Promise<{ path: string; identity: string }[]> {
  if (migration === undefined) return [];
  const names = seen.drives.flatMap((d) =>
    d.real
      ? [...rounds].map((round) =>
          ownFilePath(WINDOWS_PATHS.dirname(d.real!), seen.vm.name, migration, {
            what: 'layer',
            disk: d.disk.target,
            round,
          }),
        )
      : [],
  );
  const infos = await Promise.all(names.map((n) => ctx.fileInfo(n).then((i) => ({ n, i }))));
  return infos.flatMap(({ n, i }) => (i.exists && !i.isDirectory ? [{ path: n, identity: i.identity }] : []));
}

/**
 * A layer of a VM that does not run, merged into its parent.
 * - Nothing at `layer`: merged already (Hyper-V deletes what it merged): done.
 * - Used by a VM of this host that is off through a checkpoint of vmplace's: that checkpoint is
 *   removed (Hyper-V merges an off VM's checkpoint at once) and waited for, as `mergeLayers`.
 * - Used otherwise: `DestinationInUse` (Merge-VHD needs the chain detached).
 * - Not used: `Test-VHD` first (a layer whose parent changed since, such as the asked name of a
 *   layer merged online, must never be merged again: `ImageCheckFailed`), then `Merge-VHD -Path
 *   layer -DestinationPath parent` (mergeVhd), then the merged file is removed (it is no longer
 *   a valid disk).
 */
export async function mergeLayerOffline(ctx: HyperVContext, layer: string): Promise<void> {
  await ctx.guardPath(layer);
  const info = await ctx.fileInfo(layer);
  if (!info.exists) return;
  const users = [...(await filesInUse(ctx)).entries()].find(([p]) => same(p, layer))?.[1];
  if (users && users.size > 0) {
    const [vm] = [...users];
    const s = vm !== undefined ? await seeVm(ctx, vm) : undefined;
    const d = s?.drives.find((x) => same(x.disk.path, layer) || same(x.real, layer));
    if (s && users.size === 1 && s.info.state === 'shutoff' && d) {
      await mergeLayers(ctx, s.vm.name, d.disk.target, { top: layer });
      return;
    }
    throw new StalledError(
      'DestinationInUse',
      `${layer} on ${ctx.hostName} is in use by ${[...users].join(', ')}`,
    );
  }
  const vhd = await ctx.run('mergeLayerOffline', scripts.getVhd(layer), parse.parseVhd);
  if (vhd.parentPath === undefined) return;
  await ctx.guardPath(vhd.parentPath);
  const t = await ctx.run('checkImage', scripts.testVhd(layer), parse.parseVhdTest);
  if (!t.valid)
    throw new StalledError(
      'ImageCheckFailed',
      `${layer} on ${ctx.hostName} does not fit its parent ${vhd.parentPath} (${t.problems.join('; ') || 'Test-VHD failed'}); not merged`,
    );
  await ctx.run('mergeLayerOffline', scripts.mergeVhd(layer, vhd.parentPath), parse.parseVhd, {
    timeoutMs: null,
  });
  await ctx.run('removeFile', scripts.removeFile(layer), parse.parseRemoved);
}

/**
 * `Set-VHD -Path layer -ParentPath parent` (setVhdParent), without `-IgnoreIdMismatch`: Hyper-V
 * checks that the new parent is the one the layer was made on (a verified copy is). Already
 * done: the layer records `parent` (getVhd first).
 */
export async function relinkLayer(ctx: HyperVContext, layer: string, parent: string): Promise<void> {
  await Promise.all([ctx.guardPath(layer), ctx.guardPath(parent)]);
  const now = await ctx.run('relinkLayer', scripts.getVhd(layer), parse.parseVhd);
  if (same(now.parentPath, parent)) return;
  await ctx.run('relinkLayer', scripts.setVhdParent(layer, parent), parse.parseVhd);
}

/**
 * `New-VHD -Path path -ParentPath parent -Differencing` (newDifferencingVhd), after removing a
 * file of that name (ours by its name). Whether New-VHD accepts the `.avhdx` extension is
 * documented for checkpoints only, not for New-VHD: unverified.
 */
export async function createLayer(ctx: HyperVContext, path: string, parent: string): Promise<void> {
  await Promise.all([ctx.guardPath(path), ctx.guardPath(parent)]);
  await ctx.run('createLayer', scripts.removeFile(path), parse.parseRemoved);
  await ctx.run('createLayer', scripts.newDifferencingVhd(path, parent), parse.parseVhd);
}

/** `Test-VHD` of the file and its chain (testVhd): the errors it wrote; empty when valid. */
export async function checkImage(ctx: HyperVContext, path: string): Promise<string[]> {
  const t = await ctx.run('checkImage', scripts.testVhd(path), parse.parseVhdTest, { timeoutMs: null });
  return t.valid ? [] : t.problems.length ? t.problems : ['Test-VHD reports the disk invalid'];
}
