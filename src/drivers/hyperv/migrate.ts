/**
 * Moves Hyper-V runs itself while the VM runs: one disk to another file (`moveDiskLive`:
 * Move-VMStorage) and the whole VM with its storage to another host (`migrateLive`: Move-VM),
 * with the claims that prove the files they create are the migration's; and the fast paths
 * Hyper-V lacks, refused. Functions of the Hyper-V driver (see `driver.ts`), each taking the
 * host's {@link HyperVContext}.
 */
import { StalledError, VmplaceError } from '../../errors';
import type { MigrateLiveOptions, MoveDiskLiveOptions } from '../driver';
import { WINDOWS_PATHS } from '../windows-paths';
import * as parse from './parsers';
import * as scripts from './scripts';
import { type HyperVContext, same } from './context';
import { waitForMigrationJob } from './lifecycle';
import { getDomain } from './observe';
import { mustSeeVm, type SeenDrive } from './seen';

/**
 * `Move-VMStorage -VHDs @(@{SourceFilePath; DestinationFilePath})` (moveVmVhd): Hyper-V mirrors
 * the disk while the VM runs, switches to the copy and deletes the source. Already done: the
 * disk runs from `destPath`. A move an interrupted run started goes on in Hyper-V: waited for
 * first (waitForMigrationJob). `claim`: Hyper-V creates the destination itself (a file there
 * makes it fail), so the claim's intent is recorded before the move and the new file's identity
 * after it (the claim adopts the file if vmplace dies in between); a file already at `destPath`
 * that the claim does not own stops with `DestinationExists`, one it owns (a leftover) is
 * removed. Aborting `signal` ends vmplace's wait, not Hyper-V's job (see `abortJobs`): it then
 * waits for the job and resolves when the disk switched, else rejects with `Cancelled`.
 * `bandwidthMiBps` is not offered by Move-VMStorage and is ignored.
 */
export async function moveDiskLive(
  ctx: HyperVContext,
  vm: string,
  target: string,
  destPath: string,
  opts: MoveDiskLiveOptions = {},
): Promise<void> {
  await ctx.guardPath(destPath);
  const onDest = async (): Promise<SeenDrive> => {
    const d = (await mustSeeVm(ctx, vm)).drives.find((x) => x.disk.target === target);
    if (!d?.real)
      throw new StalledError('DiskNotFound', `${vm} on ${ctx.hostName} has no file disk ${target}`);
    return d;
  };
  if (await waitForMigrationJob(ctx, vm)) ctx.log?.info({ vm }, 'a storage move of an earlier run ended');
  const d = await onDest();
  if (same(d.real, destPath)) return recordClaim(ctx, destPath, opts);
  const there = await ctx.fileInfo(destPath);
  if (there.exists) {
    if (!opts.claim || !(await opts.claim.owns(there.identity)))
      throw new StalledError(
        'DestinationExists',
        `${destPath} exists on ${ctx.hostName} but was not created by this migration`,
      );
    await ctx.run(
      'removeIfIdentity',
      scripts.removeIfIdentity(destPath, there.identity),
      parse.parseRemoveOwn,
    );
  }
  await opts.claim?.intend?.();
  try {
    await ctx.run(`moveDiskLive ${vm}`, scripts.moveVmVhd(vm, d.real!, destPath), parse.parseVms, {
      timeoutMs: null,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
  } catch (err) {
    if (!opts.signal?.aborted) throw err;
    await waitForMigrationJob(ctx, vm);
    if (!same((await onDest()).real, destPath))
      throw new VmplaceError('Cancelled', `the storage move of ${vm} ${target} was cancelled`, {
        cause: err,
      });
  }
  if (!same((await onDest()).real, destPath))
    throw new VmplaceError(
      'UnexpectedDiskSource',
      `${vm} ${target} does not run from ${destPath} after Move-VMStorage`,
    );
  await recordClaim(ctx, destPath, opts);
}

/** Record the identity of `path` in `opts.claim` (a file Hyper-V created for the migration). */
export async function recordClaim(
  ctx: HyperVContext,
  path: string,
  opts: { claim?: MoveDiskLiveOptions['claim'] },
): Promise<void> {
  if (!opts.claim) return;
  const i = await ctx.fileInfo(path);
  if (i.exists) await opts.claim.record(i.identity);
}

/**
 * `Move-VM -DestinationHost ADDRESS -IncludeStorage -DestinationStoragePath FOLDER` (moveVm):
 * the VM, its configuration and every disk go to `target` while it runs. Hyper-V puts every
 * file in one folder under its own name, so every file disk of the VM must be in `opts.disks`
 * and all of them in one folder under their source names (`NotSupportedByDriver` otherwise,
 * before anything is done). Live migration must be set up between the hosts (Kerberos
 * constrained delegation or CredSSP, migration networks): an ssh session logged in with a key
 * has no network credentials of its own, so without delegation Hyper-V refuses, and the error
 * is reported as it is. Already done: the VM runs on `target` from those paths. `claimFor`:
 * intent before, identities after (as `moveDiskLive`). Aborting `signal`: as `moveDiskLive`.
 * Hyper-V reports no downtime.
 */
export async function migrateLive(
  ctx: HyperVContext,
  vm: string,
  target: HyperVContext,
  opts: MigrateLiveOptions,
): Promise<{ downtimeMs?: number }> {
  const arrived = async (): Promise<boolean> => {
    const t = await getDomain(target, vm);
    return (
      t?.state === 'running' &&
      opts.disks.every((w) => same(t.disks.find((x) => x.target === w.target)?.path, w.path))
    );
  };
  if (await arrived()) return {};
  const seen = await mustSeeVm(ctx, vm);
  const files = seen.drives.filter((d) => d.real !== undefined);
  const folder = opts.disks[0] ? WINDOWS_PATHS.dirname(opts.disks[0].path) : undefined;
  const fits =
    folder !== undefined &&
    files.every((d) => {
      const w = opts.disks.find((x) => x.target === d.disk.target);
      return (
        w !== undefined &&
        same(WINDOWS_PATHS.dirname(w.path), folder) &&
        same(WINDOWS_PATHS.basename(w.path), WINDOWS_PATHS.basename(d.real!))
      );
    });
  if (!fits || folder === undefined)
    throw new StalledError(
      'NotSupportedByDriver',
      `Move-VM -IncludeStorage puts every file of ${vm} in one folder under its own name; the plan puts them at ${opts.disks.map((w) => w.path).join(', ')}`,
    );
  await Promise.all([
    target.guardPath(folder, { allowRoot: true }),
    ...opts.disks.map((w) => target.guardPath(w.path)),
  ]);
  for (const w of opts.disks) await opts.claimFor?.(w.path).intend?.();
  try {
    await ctx.run(`migrateLive ${vm}`, scripts.moveVm(vm, opts.address, folder), parse.parseVmMoved, {
      timeoutMs: null,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
  } catch (err) {
    if (!opts.signal?.aborted) throw err;
    await waitForMigrationJob(ctx, vm).catch(() => false);
    if (!(await arrived()))
      throw new VmplaceError('Cancelled', `the live migration of ${vm} was cancelled`, { cause: err });
  }
  if (!(await arrived()))
    throw new VmplaceError(
      'TargetUnconfirmed',
      `${vm} does not run on ${target.hostName} from the planned files after Move-VM`,
    );
  for (const w of opts.disks) {
    const claim = opts.claimFor?.(w.path);
    if (claim) await recordClaim(target, w.path, { claim });
  }
  return {};
}

/** Hyper-V has no migration of a paused VM onto copied disks (`capabilities.pausedMigration` is false). */
export function migratePaused(vm: string): Promise<void> {
  return Promise.reject(
    new StalledError(
      'NotSupportedByDriver',
      `Hyper-V cannot move paused ${vm} onto copied disks (no pausedMigration)`,
    ),
  );
}

/** Hyper-V has no live migration onto differencing disks already there (`capabilities.liveOntoLayers` is false). */
export function migrateOntoLayers(vm: string): Promise<{ downtimeMs?: number }> {
  return Promise.reject(
    new StalledError(
      'NotSupportedByDriver',
      `Hyper-V cannot live-migrate ${vm} onto layers (no liveOntoLayers)`,
    ),
  );
}
