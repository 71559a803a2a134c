/**
 * Lifecycle: save and restore (and a save an interrupted run left running), definitions
 * (`dumpxml`, `define`, `undefine`), start, resume, destroy, autostart, aborting jobs, and
 * live migration to another libvirt host. Functions of the libvirt driver (see `driver.ts`),
 * each taking the host's {@link LibvirtContext}.
 */
import { posix } from 'node:path';

import { CommandError, StalledError, VmplaceError } from '../../errors';
import type {
  DomainState,
  HypervisorDriver,
  MigrateLiveOptions,
  MigrateOntoLayersOptions,
  MigratePausedOptions,
} from '../driver';
import { blockJob } from './chain';
import type { LibvirtContext } from './context';
import { domainState, domState, fileExists, liveDisks, listDomains } from './observe';
import { parseDomInfo, parseDomJobInfo } from './parsers';
import { parseDomainXml, rewriteDiskPaths } from './xml';

const ACTIVE: readonly DomainState[] = ['running', 'paused', 'pmsuspended'];

/**
 * Wait while libvirt runs a save job of `domain` (`domjobinfo`: an active job whose operation
 * is `Save`). A save is a job of libvirtd: when the `virsh save` that asked for it dies (the
 * daemon or `vmplace apply` killed with its process group), libvirtd still finishes it and
 * the domain ends shut off (saved); measured on libvirt 9.0, see the lab test
 * restart-during-save. Resolves true when there was such a job (it has ended by then).
 */
export function waitForSaveJob(ctx: LibvirtContext, domain: string): Promise<boolean> {
  return waitForJob(ctx, domain, 'Save', 'a save');
}

/** As waitForSaveJob, for an outgoing migration (`migratePaused`, `migrateLive`). */
export function waitForMigrationJob(ctx: LibvirtContext, domain: string): Promise<boolean> {
  return waitForJob(ctx, domain, 'Outgoing migration', 'a migration');
}

async function waitForJob(
  ctx: LibvirtContext,
  domain: string,
  operation: string,
  what: string,
): Promise<boolean> {
  let waited = false;
  for (;;) {
    const r = await ctx.virsh(['domjobinfo', '--domain', domain], { allowExitCodes: [1] });
    // exit 1: the domain is not active (or gone): no job
    const job = r.exitCode === 0 ? parseDomJobInfo(r.stdout) : undefined;
    if (!job?.active || (job.operation !== undefined && job.operation !== operation)) return waited;
    if (!waited) ctx.log?.info({ domain }, `${what} of an interrupted run is still running: waiting for it`);
    waited = true;
    await new Promise((res) => setTimeout(res, ctx.pollMs));
  }
}

/**
 * True when `stateFile` holds a complete saved state of `domain`: it exists and
 * `save-image-dumpxml` reads it (libvirt writes the header magic `LibvirtQemudPart` while it
 * saves and `LibvirtQemudSave` only once the save is complete, and refuses to read an
 * unfinished image) and names the domain.
 */
export async function holdsSavedState(
  ctx: LibvirtContext,
  stateFile: string,
  domain: string,
): Promise<boolean> {
  await ctx.guard(stateFile);
  if (!(await fileExists(ctx, stateFile))) return false;
  try {
    return parseDomainXml(await savedStateXml(ctx, stateFile)).name === domain;
  } catch (err) {
    if (err instanceof CommandError) return false;
    throw err;
  }
}

/**
 * `virsh save` with neither `--running` nor `--paused`: restore brings the domain back in the
 * state it had (a running VM resumes running; one the user had paused stays paused).
 * Idempotent: when the domain is no longer active and `stateFile` holds a complete save of
 * it (libvirt marks incomplete saves, so `save-image-dumpxml` refuses them), it returns. A
 * save job still running from an interrupted run is waited for first (unless `knownActive`).
 */
export async function save(
  ctx: LibvirtContext,
  domain: string,
  stateFile: string,
  opts: { knownActive?: boolean },
): Promise<void> {
  await ctx.guard(stateFile);
  let state = opts.knownActive ? 'running' : await domState(ctx, domain);
  // a save of an interrupted run that libvirt still finishes: wait for it, then look again
  if (
    !opts.knownActive &&
    state !== undefined &&
    ACTIVE.includes(state) &&
    (await waitForSaveJob(ctx, domain))
  )
    state = await domState(ctx, domain);
  if (state !== undefined && ACTIVE.includes(state)) {
    await ctx.virsh(['save', '--domain', domain, '--file', stateFile], { timeoutMs: null });
    return;
  }
  if (await holdsSavedState(ctx, stateFile, domain)) return;
  throw new StalledError(
    'DomainNotRunning',
    `domain ${domain} is ${state ?? 'not defined'} and ${stateFile} holds no save of it`,
  );
}

/**
 * The domain XML inside a saved state, WITH security info (e.g. VNC passwords) so that a
 * restore with rewritten XML keeps them: do not log or store this XML.
 */
export async function savedStateXml(ctx: LibvirtContext, stateFile: string): Promise<string> {
  return (await ctx.virsh(['save-image-dumpxml', '--file', stateFile, '--security-info'])).stdout;
}

/**
 * `virsh restore STATE [--xml FILE]` (FILE: a private local temp file). Idempotent: returns when the domain named in the
 * XML is already active.
 */
export async function restore(
  ctx: LibvirtContext,
  stateFile: string,
  xml: string | undefined,
  opts: { knownInactive?: boolean },
): Promise<void> {
  const name = parseDomainXml(xml ?? (await savedStateXml(ctx, stateFile))).name;
  const state = opts.knownInactive ? undefined : await domState(ctx, name);
  if (state !== undefined && ACTIVE.includes(state)) return;
  if (xml === undefined) await ctx.virsh(['restore', '--file', stateFile], { timeoutMs: null });
  else
    await ctx.virshWithXmlFile(['restore', '--file', stateFile, '--xml', '{XML}'], xml, {
      timeoutMs: null,
    });
}

/**
 * `dumpxml --security-info [--inactive]`: complete enough to `define` again without losing
 * passwords. Contains secrets: do not log or store it.
 */
export async function dumpXml(
  ctx: LibvirtContext,
  domain: string,
  opts: { inactive?: boolean },
): Promise<string> {
  return (
    await ctx.virsh([
      'dumpxml',
      '--domain',
      domain,
      '--security-info',
      ...(opts.inactive ? ['--inactive'] : []),
    ])
  ).stdout;
}

/** `define --file FILE` (a private local temp file): defining the same XML again changes nothing. */
export async function define(ctx: LibvirtContext, xml: string): Promise<void> {
  await ctx.virshWithXmlFile(['define', '--file', '{XML}'], xml);
}

/**
 * `undefine --keep-nvram --keep-tpm`: UEFI variables and an emulated TPM's state are data
 * (keys, sealed secrets, boot entries) and are never removed implicitly. A virsh without
 * `--keep-tpm` (before libvirt 8.9, whose undefine removes an emulated TPM's state) undefines
 * only a domain without a TPM, and stops with `TpmStateAtRisk` otherwise. A domain that
 * is not defined is fine. An active persistent domain becomes transient (it keeps running).
 */
export async function undefine(ctx: LibvirtContext, domain: string): Promise<void> {
  if (!(await listDomains(ctx)).includes(domain)) return;
  const info = parseDomInfo((await ctx.virsh(['dominfo', '--domain', domain])).stdout);
  if (!info.persistent) return;
  const keepTpm = await virshKeepsTpm(ctx);
  if (!keepTpm && parseDomainXml(await dumpXml(ctx, domain, { inactive: true })).tpms.length > 0)
    throw new StalledError(
      'TpmStateAtRisk',
      `domain ${domain} has a TPM and this virsh has no undefine --keep-tpm: undefining it would delete the TPM's state`,
    );
  await ctx.virsh(['undefine', '--domain', domain, '--keep-nvram', ...(keepTpm ? ['--keep-tpm'] : [])]);
}

/** Does this virsh know `undefine --keep-tpm`? (`virsh help undefine`, asked once per context) */
function virshKeepsTpm(ctx: LibvirtContext): Promise<boolean> {
  ctx.keepTpm ??= ctx.virsh(['help', 'undefine']).then(
    (r) => /(^|\s)--keep-tpm(\s|$)/m.test(r.stdout),
    (err: unknown) => {
      ctx.keepTpm = undefined;
      throw err;
    },
  );
  return ctx.keepTpm;
}

export async function start(ctx: LibvirtContext, domain: string): Promise<void> {
  const state = await domState(ctx, domain);
  if (state === undefined) throw new StalledError('DomainNotFound', `domain ${domain} is not defined`);
  if (ACTIVE.includes(state)) return;
  await ctx.virsh(['start', '--domain', domain]);
}

export async function resume(
  ctx: LibvirtContext,
  domain: string,
  opts: { knownPaused?: boolean } = {},
): Promise<void> {
  if (opts.knownPaused) {
    // one round trip inside a pause; a VM found running after all is what was wanted
    const r = await ctx.virsh(['resume', '--domain', domain], { allowExitCodes: [1] });
    if (r.exitCode === 0 || (await domState(ctx, domain)) === 'running') return;
    throw new VmplaceError('ResumeFailed', `virsh resume ${domain} failed: ${r.stderr.trim()}`);
  }
  const state = await domState(ctx, domain);
  if (state === undefined) throw new StalledError('DomainNotFound', `domain ${domain} is not defined`);
  if (state !== 'paused') return;
  await ctx.virsh(['resume', '--domain', domain]);
}

/** The sum of the domain's `vcpu.N.time` (ns) from `virsh domstats --vcpu`; undefined when not active. */
export async function guestRunTime(ctx: LibvirtContext, domain: string): Promise<string | undefined> {
  const r = await ctx.virsh(['domstats', '--vcpu', domain], { allowExitCodes: [1] });
  if (r.exitCode !== 0) return undefined;
  let sum = 0n;
  let seen = false;
  for (const line of r.stdout.split('\n')) {
    const m = /^\s*vcpu\.\d+\.time=(\d+)\s*$/.exec(line);
    if (!m) continue;
    sum += BigInt(m[1]!);
    seen = true;
  }
  return seen ? sum.toString() : undefined;
}

/**
 * `virsh suspend`: QEMU stops the CPUs, drains every disk's requests and flushes the images
 * (its `stop`) before libvirt answers. A paused domain is left alone (virsh says so with an
 * error: asked again then).
 */
export async function suspend(
  ctx: LibvirtContext,
  domain: string,
  opts: { knownRunning?: boolean } = {},
): Promise<void> {
  if (!opts.knownRunning) {
    const state = await domState(ctx, domain);
    if (state === undefined) throw new StalledError('DomainNotFound', `domain ${domain} is not defined`);
    if (state === 'paused') return;
  }
  const r = await ctx.virsh(['suspend', '--domain', domain], { allowExitCodes: [1] });
  if (r.exitCode === 0 || (await domState(ctx, domain)) === 'paused') return;
  throw new VmplaceError('SuspendFailed', `virsh suspend ${domain} failed: ${r.stderr.trim()}`);
}

/**
 * Move a paused domain to `tctx`'s host onto images already there: `virsh migrate --unsafe`
 * without `--live` and without storage copy. libvirt calls a migration "unsafe" when a disk is
 * on a local filesystem, because QEMU would otherwise go on writing the source's image while
 * the target reads its own; here the VM is paused (QEMU drained and flushed every disk before
 * `suspend` answered) and each target image is a verified copy of the paused source's, so
 * nothing writes either side until the target runs. The destination XML names the target's
 * images (the layer chain below each as its images record it). No `--persistent` and no
 * `--undefinesource`: the target's definition stays transient until Finalizing defines it from
 * verified copies, and the source keeps its own, inactive, until CleaningUp (as with a saved
 * state restored on the target). The memory goes host to host (`tcp://address`).
 */
export async function migratePaused(
  ctx: LibvirtContext,
  domain: string,
  tctx: LibvirtContext,
  opts: MigratePausedOptions,
): Promise<void> {
  const xml = await migrationXml(ctx, domain, opts.disks);
  await runMigrate(ctx, domain, tctx, {
    flags: ['--unsafe'],
    address: opts.address,
    xml,
    ...(opts.signal ? { signal: opts.signal } : {}),
    what: 'migration',
    arrived: (st) => st !== undefined && ACTIVE.includes(st),
  });
}

export async function destroy(ctx: LibvirtContext, domain: string): Promise<void> {
  const state = await domState(ctx, domain);
  if (state === undefined || !ACTIVE.includes(state)) return;
  await ctx.virsh(['destroy', '--domain', domain]);
}

export async function setAutostart(ctx: LibvirtContext, domain: string, on: boolean): Promise<void> {
  await ctx.virsh(['autostart', '--domain', domain, ...(on ? [] : ['--disable'])]);
}

/** `blockjob --abort` on every disk with a job, and `domjobabort` (no job: nothing to do). */
export async function abortJobs(ctx: LibvirtContext, domain: string): Promise<void> {
  // jobs exist only on an active domain (a saved or shut-off one has none)
  const state = await domainState(ctx, domain);
  if (state === undefined || !ACTIVE.includes(state)) return;
  for (const d of await liveDisks(ctx, domain)) {
    if (!d.target || !(await blockJob(ctx, domain, d.target))) continue;
    await ctx.virsh(['blockjob', '--domain', domain, '--path', d.target, '--abort'], {
      allowExitCodes: [1],
      timeoutMs: null,
    });
  }
  await ctx.virsh(['domjobabort', '--domain', domain], { allowExitCodes: [1] });
}

/**
 * `virsh migrate --live --copy-storage-all` to `target` (a
 * libvirt host: `tctx` is its context). The target's images are created first, exclusively
 * and recorded through `claimFor` (or found again as ours on a re-run); the domain XML is
 * rewritten to name them. Idempotent: a domain already running on the target is success.
 */
export async function migrateLive(
  ctx: LibvirtContext,
  domain: string,
  target: HypervisorDriver,
  tctx: LibvirtContext,
  opts: MigrateLiveOptions,
): Promise<{ downtimeMs?: number }> {
  const there = await target.getDomain(domain);
  if (there?.state === 'running') return { downtimeMs: await incomingDowntime(tctx, domain) };
  // Target images: created by this migration under names nothing had (identity recorded
  // before QEMU writes a byte), or found again as ours on a re-run; never someone's file.
  for (const d of opts.disks) {
    await target.guardPath(d.path);
    await target.makeDir(posix.dirname(d.path));
    const claim = opts.claimFor?.(d.path);
    const id = await target.fileIdentity(d.path);
    if (id !== undefined) {
      if (!claim || !(await claim.owns(id)))
        throw new StalledError(
          'FileExists',
          `${d.path} exists on ${target.hostName} and was not created by this migration; not writing into it`,
        );
    } else {
      await claim?.intend?.();
      const made = await target.createExclusive(d.path);
      await claim?.record(made);
    }
    await tctx.run(
      tctx.exec,
      ['qemu-img', 'create', '-q', '-f', d.format, '--', d.path, String(d.virtualBytes)],
      {
        timeoutMs: ctx.quickMs,
      },
    );
  }
  const xml = await migrationXml(ctx, domain, opts.disks);
  await setMaxDowntime(ctx, domain, opts.maxDowntimeMs);
  await runMigrate(ctx, domain, tctx, {
    // No --persistent, no --undefinesource: libvirt persists the definition on the target
    // before it resumes the guest, inside the switch-over. Measured on the busy lab (1 GiB):
    // 513-583 ms with them, 103-504 without, and 531-629 ms without at 4 GiB, so it is not the
    // main cost of this pause. The target's definition stays transient until Finalizing
    // defines it; the source keeps its own, inactive, until CleaningUp (as with the quick ways).
    flags: ['--live', '--copy-storage-all'],
    extra: bandwidthArgs(opts.bandwidthMiBps),
    address: opts.address,
    xml,
    ...(opts.signal ? { signal: opts.signal } : {}),
    what: 'live migration',
    arrived: (st) => st === 'running',
  });
  return { downtimeMs: await incomingDowntime(tctx, domain) };
}

/**
 * Live-migrate a running domain onto layer chains already on `tctx`'s host: `virsh migrate
 * --live --copy-storage-inc --migrate-disks ...`. Each listed disk's target `path` is an empty
 * layer over the copies vmplace made and verified (created by the caller); QEMU mirrors only
 * the source's top layer into it (libvirt's incremental storage copy: the backing chain is
 * expected on the destination) while the memory goes by its live migration; the VM stops
 * only for the switch-over (`migrate-setmaxdowntime` first). No `--persistent`, no
 * `--undefinesource` (see migratePaused). Aborting `signal` aborts the job.
 */
export async function migrateOntoLayers(
  ctx: LibvirtContext,
  domain: string,
  tctx: LibvirtContext,
  opts: MigrateOntoLayersOptions,
): Promise<{ downtimeMs?: number }> {
  const xml = await migrationXml(ctx, domain, opts.disks);
  await setMaxDowntime(ctx, domain, opts.maxDowntimeMs);
  await runMigrate(ctx, domain, tctx, {
    flags: ['--live', '--copy-storage-inc', '--migrate-disks', opts.disks.map((d) => d.target).join(',')],
    extra: [...bandwidthArgs(opts.bandwidthMiBps), ...suspendAfterArgs(opts.suspendAfterMs)],
    address: opts.address,
    xml,
    ...(opts.signal ? { signal: opts.signal } : {}),
    what: 'migration',
    arrived: (st) => st === 'running',
  });
  return { downtimeMs: await incomingDowntime(tctx, domain) };
}

/**
 * `--timeout N --timeout-suspend` (virsh): a live migration still running after N seconds
 * suspends the domain and completes paused; libvirt counts from the migration's start.
 */
export function suspendAfterArgs(ms: number | undefined): string[] {
  if (ms === undefined) return [];
  return ['--timeout', String(Math.max(1, Math.ceil(ms / 1000))), '--timeout-suspend'];
}

/** The running domain's migratable XML (secrets kept: it goes to the target) with the moved disks' paths and formats. */
async function migrationXml(
  ctx: LibvirtContext,
  domain: string,
  disks: readonly { target: string; path: string; format?: string }[],
): Promise<string> {
  const live = (await ctx.virsh(['dumpxml', '--domain', domain, '--migratable', '--security-info'])).stdout;
  return rewriteDiskPaths(
    live,
    Object.fromEntries(disks.map((d) => [d.target, d.path])),
    // a disk without a format is one of our qcow2 layers
    Object.fromEntries(disks.map((d) => [d.target, d.format ?? 'qcow2'])),
  );
}

/** QEMU switches over once it predicts the rest fits this (its default: 300 ms); settable before the migration starts since libvirt 1.2.9. */
async function setMaxDowntime(ctx: LibvirtContext, domain: string, ms: number | undefined): Promise<void> {
  if (ms === undefined) return;
  await ctx.virsh([
    'migrate-setmaxdowntime',
    '--domain',
    domain,
    '--downtime',
    String(Math.max(1, Math.round(ms))),
  ]);
}

/**
 * `virsh migrate FLAGS --domain D --desturi T --migrateuri tcp://ADDRESS --xml XML [EXTRA]`, with
 * cancellation: aborting `signal` aborts libvirt's job (libvirt keeps the job when the virsh
 * client dies: abort it there, then stop waiting; detached, since an abort listener cannot wait:
 * a failed abort is dropped, the wait stops anyway). A cancelled migration that completed before
 * the abort landed counts as done when `arrived` says so of the target's state; else `Cancelled`.
 */
async function runMigrate(
  ctx: LibvirtContext,
  domain: string,
  tctx: LibvirtContext,
  o: {
    flags: string[];
    extra?: string[];
    address: string;
    xml: string;
    signal?: AbortSignal;
    what: string;
    arrived: (state: DomainState | undefined) => boolean;
  },
): Promise<void> {
  if (o.signal?.aborted) throw new VmplaceError('Cancelled', `${o.what} of ${domain} cancelled`);
  const job = new AbortController();
  const onAbort = (): void => {
    void ctx
      .virsh(['domjobabort', '--domain', domain], { allowExitCodes: [1] })
      .catch(() => undefined)
      .finally(() => job.abort());
  };
  o.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    await ctx.virshWithXmlFile(
      [
        'migrate',
        ...o.flags,
        '--domain',
        domain,
        '--desturi',
        tctx.uri,
        '--migrateuri',
        `tcp://${o.address}`,
        '--xml',
        '{XML}',
        ...(o.extra ?? []),
      ],
      o.xml,
      { timeoutMs: null, signal: job.signal },
    );
  } catch (err) {
    if (!o.signal?.aborted) throw err;
    if (o.arrived(await domState(tctx, domain))) return;
    throw new VmplaceError('Cancelled', `${o.what} of ${domain} cancelled`, { cause: err });
  } finally {
    o.signal?.removeEventListener('abort', onAbort);
  }
}

const bandwidthArgs = (mibps: number | undefined): string[] =>
  mibps ? ['--bandwidth', String(Math.max(1, Math.floor(mibps)))] : [];

/** `Total downtime` of the last completed incoming migration, as QEMU measured it. */
async function incomingDowntime(ctx: LibvirtContext, domain: string): Promise<number | undefined> {
  const r = await ctx.virsh(['domjobinfo', '--domain', domain, '--completed'], { allowExitCodes: [1] });
  const line = r.stdout.split('\n').find((l) => l.trim().startsWith('Total downtime:'));
  const n = line ? Number(line.split(':')[1]?.trim().split(/\s+/)[0]) : NaN;
  return Number.isFinite(n) ? n : undefined;
}
