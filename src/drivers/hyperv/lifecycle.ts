/**
 * Lifecycle: save (a saved state's files given the asked names) and restore, definitions
 * (`definition`, `define`: a registered VM's disks changed), undefine, start, resume, pause,
 * destroy, autostart, and waiting for the saves and migrations Hyper-V runs in the background.
 * Functions of the Hyper-V driver (see `driver.ts`), each taking the host's {@link HyperVContext}.
 */
import { StalledError, VmplaceError } from '../../errors';
import type { VmDefinition } from '../driver';
import { WINDOWS_PATHS } from '../windows-paths';
import { definitionData } from './definition';
import { copyConfiguration, importSaved } from './carry';
import { controllerOf, stateSidecars } from './names';
import * as parse from './parsers';
import * as scripts from './scripts';
import { type HyperVContext, same } from './context';
import { mustSeeVm, seeVm } from './seen';

/**
 * `Save-VM` (saveVm: a VM already `Saved` is not saved again), then the saved state's files
 * (stateFiles: `<id>.vmrs`, `<id>.vmgs` in the VM's `Virtual Machines` folder) get the asked
 * names: `stateFile` for the `.vmrs`, its sidecar (`x.vmgs`) for the `.vmgs` (hardLink; one
 * file id each, else `FileExists`). A hard link stays on its volume: `stateFile` must be on the
 * volume of the VM's configuration (else the link fails, with the VM saved: the rollback starts
 * it again). Already done: `holdsSavedState`.
 *
 * Then what registers the saved VM on another host goes beside it (copyConfiguration): a copy
 * of the VM's configuration (`x.vmcx`) and of each of its checkpoints' (`x.checkpoint-<id>.*`),
 * taken while it is saved. Only checkpoints vmplace took (named with a migration id) may be
 * there: Preflight blocks a VM with any other (`DiskHasBackingChain`), and this checks again.
 */
export async function save(ctx: HyperVContext, vm: string, stateFile: string): Promise<void> {
  const sidecars = stateSidecars(stateFile);
  await Promise.all([stateFile, ...sidecars].map((p) => ctx.guardPath(p)));
  await ctx.run(`save ${vm}`, scripts.saveVm(vm), parse.parseVmStates, { timeoutMs: null });
  const files = await ctx.run('stateFiles', scripts.stateFiles(vm), parse.parseStateFiles);
  if (files.state !== 'Saved')
    throw new VmplaceError('SuspendFailed', `${vm} on ${ctx.hostName} is ${files.state} after Save-VM`);
  const vmrs = files.files.find((f) => f.kind === 'vmrs');
  if (!vmrs) throw new VmplaceError('UnexpectedOutput', `${vm} is saved but has no .vmrs`);
  const vmgs = files.files.find((f) => f.kind === 'vmgs');
  const pairs: [string, string][] = [[stateFile, vmrs.path]];
  if (vmgs && sidecars[0]) pairs.push([sidecars[0], vmgs.path]);
  for (const [name, file] of pairs) {
    const l = await ctx.run('hardLink', scripts.hardLink(name, file), parse.parseHardLink);
    if (l.linkId !== l.targetId)
      throw new StalledError(
        'FileExists',
        `${name} exists on ${ctx.hostName} and is not the saved state ${file}`,
      );
  }
  await copyConfiguration(ctx, vm, stateFile);
}

/** Polls vmState while the VM is `Saving` (a save an interrupted run issued goes on in Hyper-V); true when it was. */
export async function waitForSaveJob(ctx: HyperVContext, vm: string): Promise<boolean> {
  let was = false;
  await ctx.waitUntil(`the save of ${vm}`, async () => {
    const s = await ctx.run('waitForSaveJob', scripts.vmState(vm), parse.parseVmStates);
    const saving = s.some((x) => x.state === 'Saving' || x.state === 'FastSaving');
    was ||= saving;
    return !saving;
  });
  return was;
}

/**
 * True when `vm` is `Saved` on this host and `stateFile` (and its `.vmgs` sidecar when the VM
 * has a guest state) is the same file as the VM's saved state (file identity): a save of its
 * own, complete (Hyper-V shows `Saved` only after the save).
 */
export async function holdsSavedState(ctx: HyperVContext, stateFile: string, vm: string): Promise<boolean> {
  let files: parse.HvStateFiles;
  try {
    files = await ctx.run('holdsSavedState', scripts.stateFiles(vm), parse.parseStateFiles);
  } catch (err) {
    if (err instanceof VmplaceError && err.reason === 'DomainNotFound') return false;
    throw err;
  }
  if (files.state !== 'Saved') return false;
  const sidecar = stateSidecars(stateFile)[0];
  const pairs: [string, string][] = [];
  for (const f of files.files) {
    if (f.kind === 'vmrs') pairs.push([stateFile, f.path]);
    if (f.kind === 'vmgs' && sidecar) pairs.push([sidecar, f.path]);
  }
  if (!pairs.some(([a]) => a === stateFile)) return false;
  const same2 = await Promise.all(
    pairs.map(async ([ours, theirs]) => {
      const [a, b] = await Promise.all([ctx.fileInfo(ours), ctx.fileInfo(theirs)]);
      return a.exists && b.exists && a.identity === b.identity;
    }),
  );
  return same2.every(Boolean);
}

/** The VM the state file names (`<vm>.state.vmplace-<id>.vmrs`), read where it holds that saved state. */
export async function savedDefinition(ctx: HyperVContext, stateFile: string): Promise<VmDefinition> {
  const vm = vmOfStateFile(stateFile);
  if (!(await holdsSavedState(ctx, stateFile, vm)))
    throw new StalledError(
      'NotSupportedByDriver',
      `${stateFile} is not the saved state of ${vm} registered on ${ctx.hostName}: Hyper-V keeps a saved state inside the VM's configuration, and vmplace reads its definition only there`,
    );
  return definition(ctx, vm);
}

function vmOfStateFile(stateFile: string): string {
  const m = /^(.+)\.state\.vmplace-[A-Za-z0-9][A-Za-z0-9_-]*\.vmrs$/i.exec(WINDOWS_PATHS.basename(stateFile));
  if (!m)
    throw new StalledError(
      'NotSupportedByDriver',
      `${stateFile} is not a saved state named by vmplace on Hyper-V`,
    );
  return m[1]!;
}

/**
 * `Start-VM` of the VM registered on this host whose saved state `stateFile` is
 * (`holdsSavedState`): Hyper-V restores it from that state. A VM already running or paused is
 * fine (idempotent). With `def`, it must be this VM (its id) on the disks it has: Hyper-V does
 * not change the disks of a saved VM (`NotSupportedByDriver`). A VM not registered here: a
 * restore on another host would be Compare-VM and Import-VM of its copied configuration with
 * the disks fixed up, not done without a real host to prove it (`NotSupportedByDriver`).
 */
export async function restore(ctx: HyperVContext, stateFile: string, def?: VmDefinition): Promise<void> {
  const data = def ? definitionData(def) : undefined;
  const vm = data?.name ?? vmOfStateFile(stateFile);
  let seen = await seeVm(ctx, vm);
  if (!seen) {
    if (!data)
      throw new StalledError(
        'NotSupportedByDriver',
        `${vm} is not registered on ${ctx.hostName}: registering its saved state here needs its definition (the drives' new files)`,
      );
    await importSaved(ctx, stateFile, data);
    seen = await seeVm(ctx, vm);
    if (!seen) throw new VmplaceError('UnexpectedOutput', `${vm} is not on ${ctx.hostName} after Import-VM`);
  }
  if (seen.vm.state === 'Running' || seen.vm.state === 'Paused') return;
  if (data) {
    if (data.id !== seen.vm.id)
      throw new StalledError(
        'DomainExistsOnTarget',
        `${vm} on ${ctx.hostName} is another VM (id ${seen.vm.id}, not ${data.id})`,
      );
    const moved = data.disks.filter((w) => {
      const d = seen.drives.find((x) => x.disk.target === w.target);
      return w.path !== undefined && !same(d?.disk.path, w.path) && !same(d?.real, w.path);
    });
    if (moved.length)
      throw new StalledError(
        'NotSupportedByDriver',
        `Hyper-V does not change the disks of a saved VM: ${vm} would need ${moved.map((m) => `${m.target} on ${m.path}`).join(', ')}`,
      );
  }
  if (!(await holdsSavedState(ctx, stateFile, vm)))
    throw new StalledError(
      'SavedStateMismatch',
      `${vm} on ${ctx.hostName} is ${seen.vm.state} and ${stateFile} is not its saved state; not started`,
    );
  const after = await ctx.run(`restore ${vm}`, scripts.startVm(vm), parse.parseVmStates, {
    timeoutMs: null,
  });
  const state = after[0]?.state;
  if (state !== 'Running' && state !== 'Starting')
    throw new VmplaceError('ResumeFailed', `${vm} on ${ctx.hostName} is ${state ?? 'gone'} after Start-VM`);
}

/** The VM's definition (Hyper-V has one configuration: `inactive` reads the same). */
export async function definition(ctx: HyperVContext, vm: string): Promise<VmDefinition> {
  return (await mustSeeVm(ctx, vm)).info.definition;
}

/**
 * Make the VM registered here under the definition's id use the definition's disk files:
 * `Set-VMHardDiskDrive -Path` (setDrivePath) for each drive whose file differs, only while the
 * VM is `Off` (a running VM's disks move with `moveDiskLive`; a saved VM's would lose its
 * memory: `DomainStateUnsupported`). Already done: every drive names its file. A VM not
 * registered here: `NotSupportedByDriver` (registering needs its configuration on this host:
 * Import-VM, which vmplace does not do); another VM of that name: `DomainExistsOnTarget`.
 */
export async function define(ctx: HyperVContext, def: VmDefinition): Promise<void> {
  const data = definitionData(def);
  const seen = await seeVm(ctx, data.name);
  if (!seen)
    throw new StalledError(
      'NotSupportedByDriver',
      `${data.name} is not registered on ${ctx.hostName}: defining it here needs its configuration on this host (Import-VM), which vmplace does not copy`,
    );
  if (seen.vm.id !== data.id)
    throw new StalledError(
      'DomainExistsOnTarget',
      `${data.name} on ${ctx.hostName} is another VM (id ${seen.vm.id}, not ${data.id})`,
    );
  const change = data.disks.filter((w) => {
    const d = seen.drives.find((x) => x.disk.target === w.target);
    return w.path !== undefined && !same(d?.disk.path, w.path) && !same(d?.real, w.path);
  });
  if (change.length === 0) return;
  if (seen.vm.state !== 'Off')
    throw new StalledError(
      'DomainStateUnsupported',
      `${data.name} on ${ctx.hostName} is ${seen.vm.state}: Hyper-V changes a VM's disks only while it is off`,
    );
  for (const w of change) {
    await ctx.guardPath(w.path!);
    const place = controllerOf(w.target) ?? {
      controllerType: w.controllerType,
      controllerNumber: w.controllerNumber,
      controllerLocation: w.controllerLocation,
    };
    await ctx.run(
      `define ${data.name}`,
      scripts.setDrivePath(
        data.name,
        place.controllerType,
        place.controllerNumber,
        place.controllerLocation,
        w.path!,
      ),
      parse.parseVmStates,
    );
  }
}

/** `Remove-VM -Force` of a VM that is off or saved (removeVm; its disks stay); no VM of that name is fine. */
export async function undefine(ctx: HyperVContext, vm: string): Promise<void> {
  await ctx.run(`undefine ${vm}`, scripts.removeVm(vm), parse.parseRemoved);
}

/** `Start-VM` of a VM that is off or saved (startVm; any other state is left alone). */
export async function start(ctx: HyperVContext, vm: string): Promise<void> {
  await ctx.run(`start ${vm}`, scripts.startVm(vm), parse.parseVmStates, { timeoutMs: null });
}

/** `Resume-VM` of a paused VM (resumeVm; a running one is left alone). */
export async function resume(ctx: HyperVContext, vm: string): Promise<void> {
  const s = await ctx.run(`resume ${vm}`, scripts.resumeVm(vm), parse.parseVmStates);
  if (s[0]?.state === 'Paused')
    throw new VmplaceError('ResumeFailed', `${vm} on ${ctx.hostName} is still paused`);
}

/**
 * `Suspend-VM` of a running VM (suspendVm; a paused one is left alone). That the VM's disk
 * writes are all on its files when Suspend-VM returns is Hyper-V's documented pause, not
 * observed here.
 */
export async function pause(ctx: HyperVContext, vm: string): Promise<void> {
  const s = await ctx.run(`pause ${vm}`, scripts.suspendVm(vm), parse.parseVmStates);
  if (s[0]?.state !== 'Paused')
    throw new VmplaceError('SuspendFailed', `${vm} on ${ctx.hostName} is ${s[0]?.state}`);
}

/**
 * Polls the VM while Hyper-V reports a migration of it (an operational status naming a
 * migration: `MigratingVirtualMachine`, `StorageMigrationPhaseOne`/`Two`, names of the
 * documented `VMOperationalStatus`, not observed); true when there was one.
 */
export async function waitForMigrationJob(ctx: HyperVContext, vm: string): Promise<boolean> {
  let was = false;
  await ctx.waitUntil(`the migration of ${vm}`, async () => {
    const running = await migrationRunning(ctx, vm);
    was ||= running;
    return !running;
  });
  return was;
}

async function migrationRunning(ctx: HyperVContext, vm: string): Promise<boolean> {
  const vms = await ctx.run('migrationStatus', scripts.getVm(vm), parse.parseVms);
  return vms.some((v) => v.operationalStatus.some((s) => /Migrat/i.test(s)));
}

/**
 * `Uptime` of a running or paused VM, in ticks (vmUptime). An opaque counter as the contract
 * asks; whether Hyper-V stops it while the VM is paused is not documented: a counter that goes
 * on makes two answers differ (the caller then takes the guest for having run, the safe way).
 */
export async function guestRunTime(ctx: HyperVContext, vm: string): Promise<string | undefined> {
  try {
    const u = await ctx.run('guestRunTime', scripts.vmUptime(vm), parse.parseUptime);
    return u.state === 'Running' || u.state === 'Paused' ? u.uptimeTicks : undefined;
  } catch (err) {
    if (err instanceof VmplaceError && err.reason === 'DomainNotFound') return undefined;
    throw err;
  }
}

/** `Stop-VM -TurnOff` (stopVm: an off VM is left alone): power cut, nothing saved. */
export async function destroy(ctx: HyperVContext, vm: string): Promise<void> {
  await ctx.run(`destroy ${vm}`, scripts.stopVm(vm, true), parse.parseVmStates);
}

/** `Set-VM -AutomaticStartAction Start` (on) or `Nothing` (off). */
export async function setAutostart(ctx: HyperVContext, vm: string, on: boolean): Promise<void> {
  await ctx.run(
    `setAutostart ${vm}`,
    scripts.setStartAction(vm, on ? 'Start' : 'Nothing'),
    parse.parseVmStates,
  );
}

/**
 * Hyper-V runs a VM's moves as jobs of its own management service, which go on when vmplace's
 * client dies; there is no documented cmdlet to cancel one, and cancelling through WMI is not
 * done without a real host to prove it. So this waits until no migration of the VM runs
 * (afterwards nothing writes the migration's files, which is what the caller needs); a merge
 * is not aborted either: `mergeLayers` waits for it.
 */
export async function abortJobs(ctx: HyperVContext, vm: string): Promise<void> {
  try {
    if (await waitForMigrationJob(ctx, vm))
      ctx.log?.warn({ vm }, 'a Hyper-V migration of the VM ran; waited for it to end');
  } catch (err) {
    if (err instanceof VmplaceError && err.reason === 'DomainNotFound') return;
    throw err;
  }
}
