/**
 * Disk-chain operations: external overlays (`snapshot-create-as`), block jobs (`blockcommit`,
 * `blockcopy`, and finishing those an interrupted run left), and the offline `qemu-img`
 * operations on images (`rebase -u`, `commit`, `check`). Functions of the libvirt driver (see
 * `driver.ts`), each taking the host's {@link LibvirtContext}.
 */
import { StalledError, VmplaceError } from '../../errors';
import type { MoveDiskLiveOptions } from '../driver';
import type { LibvirtContext } from './context';
import { createExclusive, fileIdentity } from './files';
import { fileExists, imageInfo, liveDisks } from './observe';
import { parseBlockJobRaw, parseQemuImgCheck } from './parsers';
import type { ParsedDisk } from './xml';

/** `qemu-img check`'s exit code for a format that has no consistency checks (raw). */
const NO_CHECKS = 63;

/** virsh's `--diskspec` splits on `,`; a literal comma in a value is written `,,`. */
export function escapeDiskspecValue(v: string): string {
  return v.replace(/,/g, ',,');
}

function findDisk(disks: ParsedDisk[], domain: string, target: string): ParsedDisk {
  const d = disks.find((x) => x.target === target);
  if (!d) throw new StalledError('DiskNotFound', `domain ${domain} has no disk ${target}`);
  return d;
}

/**
 * `snapshot-create-as --disk-only --no-metadata --atomic` with an external qcow2 overlay for
 * each listed disk and `snapshot=no` for every other disk (cdroms, shared disks...).
 * Idempotent: when every listed disk already has its overlay as active layer it returns.
 * Stops with `SnapshotPartial` if only some do (cannot happen with --atomic), and with
 * `OverlayExists` when an overlay file exists but the domain does not use it (a leftover:
 * the caller removes it if it is its own).
 */
export async function snapshotDisks(
  ctx: LibvirtContext,
  domain: string,
  overlays: { target: string; path: string }[],
): Promise<void> {
  if (overlays.length === 0) return;
  for (const o of overlays) await ctx.guard(o.path);
  const disks = await liveDisks(ctx, domain);
  const done = overlays.filter((o) => findDisk(disks, domain, o.target).path === o.path);
  if (done.length === overlays.length) return;
  if (done.length > 0) {
    throw new StalledError(
      'SnapshotPartial',
      `domain ${domain}: ${done.map((o) => o.target).join(',')} already on overlays but not the others`,
    );
  }
  for (const o of overlays) {
    const disk = findDisk(disks, domain, o.target);
    if (disk.type !== 'file')
      throw new StalledError('DiskNotFile', `domain ${domain}: disk ${o.target} is type=${disk.type}`);
    if (await fileExists(ctx, o.path)) {
      throw new StalledError(
        'OverlayExists',
        `overlay ${o.path} exists but domain ${domain} does not use it`,
      );
    }
  }
  const listed = new Set(overlays.map((o) => o.target));
  const specs: string[] = [];
  for (const o of overlays) {
    specs.push(
      '--diskspec',
      `${o.target},snapshot=external,driver=qcow2,file=${escapeDiskspecValue(o.path)}`,
    );
  }
  for (const d of disks) {
    if (d.target && !listed.has(d.target)) specs.push('--diskspec', `${d.target},snapshot=no`);
  }
  await ctx.virsh([
    'snapshot-create-as',
    '--domain',
    domain,
    '--disk-only',
    '--no-metadata',
    '--atomic',
    ...specs,
  ]);
}

/** The block job on `target`, if any (`blockjob --info --raw`). */
export async function blockJob(
  ctx: LibvirtContext,
  domain: string,
  target: string,
): Promise<{ type: string; cur: number; end: number } | undefined> {
  return parseBlockJobRaw(
    (await ctx.virsh(['blockjob', '--domain', domain, '--path', target, '--info', '--raw'])).stdout,
  );
}

/** A job left by an interrupted run (virsh killed while `--wait`ing): wait until ready, then pivot. */
async function finishLeftoverJob(
  ctx: LibvirtContext,
  domain: string,
  target: string,
  kind: 'Commit' | 'Copy',
): Promise<boolean> {
  let job = await blockJob(ctx, domain, target);
  if (!job) return false;
  if (!job.type.includes(kind)) {
    throw new StalledError(
      'BlockJobBusy',
      `domain ${domain} disk ${target} runs another block job: ${job.type}`,
    );
  }
  while (job && !(job.end > 0 && job.cur === job.end)) {
    await new Promise((r) => setTimeout(r, ctx.pollMs));
    job = await blockJob(ctx, domain, target);
  }
  if (job)
    await ctx.virsh(['blockjob', '--domain', domain, '--path', target, '--pivot'], { timeoutMs: null });
  return true;
}

/**
 * `blockcommit --active --pivot --wait`. Idempotent: returns when the disk has no backing
 * chain, or — with `opts.overlay`, which the machine should pass — when the active layer is
 * no longer that overlay (so a disk that legitimately sits on a base image is never merged
 * into it by a re-run). A commit job left by an interrupted run is finished and pivoted.
 */
export async function blockCommit(
  ctx: LibvirtContext,
  domain: string,
  target: string,
  opts: { overlay?: string },
): Promise<void> {
  if (await finishLeftoverJob(ctx, domain, target, 'Commit')) return;
  const disk = findDisk(await liveDisks(ctx, domain), domain, target);
  if (!disk.hasBackingStore) return;
  if (opts.overlay !== undefined && disk.path !== opts.overlay) return;
  await ctx.virsh(['blockcommit', '--domain', domain, '--path', target, '--active', '--pivot', '--wait'], {
    timeoutMs: null,
  });
}

/**
 * `blockcopy --pivot --wait --transient-job --format FMT`: a full copy (no `--shallow`: the
 * destination is self-contained even when the source sits on a base image), created by
 * libvirt (no `--reuse-external`). Idempotent: returns when the disk already uses
 * `destPath`; finishes a copy job left by an interrupted run; stops with
 * `DestinationExists` when `destPath` exists but is not in use. Afterwards the persistent
 * definition still names the old path: redefine from `dumpXml` as after a restore.
 */
export async function blockCopy(
  ctx: LibvirtContext,
  domain: string,
  target: string,
  destPath: string,
  format: string,
  opts: MoveDiskLiveOptions,
): Promise<void> {
  await ctx.guard(destPath);
  if (await finishLeftoverJob(ctx, domain, target, 'Copy')) return;
  const disk = findDisk(await liveDisks(ctx, domain), domain, target);
  if (disk.path === destPath) return;
  let reuse = false;
  if (opts.claim && opts.virtualBytes !== undefined) {
    // our own destination, made before libvirt writes to it: a rollback can prove it is ours
    const id = await fileIdentity(ctx, destPath);
    if (id !== undefined && !(await opts.claim.owns(id)))
      throw new StalledError('DestinationExists', `${destPath} exists but was not created by this migration`);
    if (id === undefined) {
      await opts.claim.intend?.();
      await opts.claim.record(await createExclusive(ctx, destPath));
    }
    await ctx.run(
      ctx.exec,
      ['qemu-img', 'create', '-q', '-f', format, '--', destPath, String(opts.virtualBytes)],
      {
        timeoutMs: ctx.quickMs,
      },
    );
    reuse = true;
  } else if (await fileExists(ctx, destPath)) {
    throw new StalledError('DestinationExists', `${destPath} exists but domain ${domain} does not use it`);
  }
  if (opts.signal?.aborted)
    throw new VmplaceError('Cancelled', `block copy of ${domain} ${target} cancelled`);
  const job = new AbortController();
  const onAbort = (): void => {
    // the job lives in libvirtd: abort it there (no pivot: the disk stays on its source);
    // detached (an abort listener cannot wait): a failed abort is dropped, the wait stops anyway
    void ctx
      .virsh(['blockjob', '--domain', domain, '--path', target, '--abort'], {
        allowExitCodes: [1],
        timeoutMs: null,
      })
      .catch(() => undefined)
      .finally(() => job.abort());
  };
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    await ctx.virsh(
      [
        'blockcopy',
        '--domain',
        domain,
        '--path',
        target,
        '--dest',
        destPath,
        '--format',
        format,
        ...(reuse ? ['--reuse-external'] : []),
        ...(opts.bandwidthMiBps ? ['--bandwidth', String(Math.max(1, Math.floor(opts.bandwidthMiBps)))] : []),
        '--pivot',
        '--wait',
        '--transient-job',
      ],
      { timeoutMs: null, signal: job.signal },
    );
  } catch (err) {
    if (!opts.signal?.aborted) throw err;
    // a pivot that happened before the abort landed: the disk runs from the copy
    if (findDisk(await liveDisks(ctx, domain), domain, target).path === destPath) return;
    throw new VmplaceError('Cancelled', `block copy of ${domain} ${target} cancelled`, { cause: err });
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
  }
}

/** `qemu-img rebase -u -f qcow2 -F FMT -b NEW OVERLAY`: rewrites a header field; idempotent. */
export async function rebaseUnsafe(
  ctx: LibvirtContext,
  overlay: string,
  newBacking: string,
  backingFormat: string,
): Promise<void> {
  await ctx.guard(overlay);
  await ctx.run(
    ctx.exec,
    ['qemu-img', 'rebase', '-u', '-f', 'qcow2', '-F', backingFormat, '-b', newBacking, '--', overlay],
    {
      timeoutMs: ctx.quickMs,
    },
  );
}

/**
 * `qemu-img create -f qcow2 -b PARENT -F FORMAT`: an empty layer of the parent's size, over it
 * (a file of that name is replaced: the caller names only its own layers).
 */
export async function createLayer(
  ctx: LibvirtContext,
  layer: string,
  parent: string,
  parentFormat: string,
): Promise<void> {
  await ctx.guard(layer);
  await ctx.guard(parent);
  await ctx.run(
    ctx.exec,
    ['qemu-img', 'create', '-q', '-f', 'qcow2', '-F', parentFormat, '-b', parent, '--', layer],
    {
      timeoutMs: ctx.quickMs,
    },
  );
}

/**
 * `qemu-img commit -f qcow2`: the overlay stays (emptied); re-running writes the same data
 * again. The backing image is opened as the format the overlay records (libvirt and
 * `rebaseUnsafe` always record one); an overlay without one stops with
 * `BackingFormatUnknown` instead of letting qemu-img guess what to write into.
 */
export async function commitOffline(ctx: LibvirtContext, overlay: string): Promise<void> {
  await ctx.guard(overlay);
  const info = await imageInfo(ctx, overlay, { format: 'qcow2', forceShare: false });
  if (info.backingFile !== undefined) await ctx.guard(info.backingFile);
  if (info.backingFile !== undefined && info.backingFormat === undefined)
    throw new StalledError(
      'BackingFormatUnknown',
      `${overlay} does not record the format of ${info.backingFile}`,
    );
  await ctx.run(ctx.exec, ['qemu-img', 'commit', '-f', 'qcow2', '--', overlay]);
}

/**
 * `qemu-img check --output=json -f FORMAT`. An image a running VM holds cannot be opened
 * normally (exit 1, lock); it is then checked with `-U`, and leaks are not reported: on a live
 * image clusters being allocated look leaked, and leaks lose no data. Corruptions and check
 * errors are always reported. A format without checks (raw: exit 63) has nothing to report.
 * Returns problems; empty when clean.
 */
export async function checkImage(ctx: LibvirtContext, path: string, format: string): Promise<string[]> {
  const base = ['qemu-img', 'check', '--output=json', '-f', format];
  const r = await ctx.run(ctx.exec, [...base, '--', path], { allowExitCodes: [1, 2, 3, NO_CHECKS] });
  if (r.exitCode === NO_CHECKS) return [];
  if (r.exitCode !== 1) return parseQemuImgCheck(r.stdout);
  const u = await ctx.run(ctx.exec, [...base, '-U', '--', path], { allowExitCodes: [2, 3, NO_CHECKS] });
  if (u.exitCode === NO_CHECKS) return [];
  return parseQemuImgCheck(u.stdout, { ignoreLeaks: true });
}
