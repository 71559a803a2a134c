/**
 * What carries a saved Hyper-V VM to another host (Quick Storage Migration across hosts): its
 * configuration and its checkpoints' copied beside the saved state while it is saved
 * (`copyConfiguration`, called by `save`), the files that go with a state as they are on a host
 * (`stateSidecarFiles`, for the transports and `removeFile`), and its registration on the target
 * from those copies (`importSaved`, called by `restore`). Functions of the Hyper-V driver (see
 * `driver.ts`), each taking the host's {@link HyperVContext}.
 */
import { StalledError, VmplaceError } from '../../errors';
import { WINDOWS_PATHS } from '../windows-paths';
import type { HyperVContext } from './context';
import type { HvDefinitionData } from './definition';
import {
  CHECKPOINT_FILE_EXTENSIONS,
  checkpointSidecarStem,
  controllerOf,
  importRoot,
  isGuid,
  parseCheckpointName,
  type StateSidecar,
  stateSidecars,
  stateSidecarsIn,
  stateStem,
} from './names';
import * as parse from './parsers';
import { inBatches } from './powershell';
import * as scripts from './scripts';

/** The VM's configuration and its (vmplace's) checkpoints' beside the saved state (see `save`). */
export async function copyConfiguration(ctx: HyperVContext, vm: string, stateFile: string): Promise<void> {
  const checkpoints = await ctx.run(`save ${vm}`, scripts.getCheckpoints(vm), parse.parseCheckpoints);
  const foreign = checkpoints.filter((c) => !parseCheckpointName(c.name));
  if (foreign.length)
    throw new StalledError(
      'DiskHasBackingChain',
      `${vm} on ${ctx.hostName} has checkpoints vmplace did not take (${foreign.map((c) => c.name).join(', ')}); its configuration is not carried to another host with them`,
    );
  const config = stateSidecars(stateFile).find((p) => p.toLowerCase().endsWith('.vmcx'));
  const stems = checkpoints.map((c) => {
    const stem = checkpointSidecarStem(stateFile, c.id);
    if (!stem)
      throw new VmplaceError(
        'UnexpectedOutput',
        `checkpoint ${c.name} of ${vm} has the id ${c.id}, not a GUID`,
      );
    return { id: c.id, stem };
  });
  if (!config) throw new StalledError('NotSupportedByDriver', `${stateFile} is not named as a saved state`);
  await Promise.all(
    [config, ...stems.flatMap((c) => CHECKPOINT_FILE_EXTENSIONS.map((e) => `${c.stem}${e}`))].map((p) =>
      ctx.guardPath(p),
    ),
  );
  let copied = 0;
  // the VM's configuration with the first checkpoints, the others in as few scripts as fit
  const batches = inBatches(stems, (b, first) =>
    scripts.copyConfiguration(vm, first ? config : undefined, b),
  );
  for (const script of batches)
    copied += (await ctx.run(`save ${vm}`, script, parse.parseConfigCopies)).length;
  ctx.log?.debug({ vm, files: copied }, 'configuration copied beside the saved state');
}

/**
 * The files that go with the saved state `stateFile` on this host (its guest state, the
 * configuration copies of the VM and of its checkpoints), as they are there now: one listing
 * (filesNamed). The transports copy them before the state itself; `removeFile` removes them.
 */
export async function stateSidecarFiles(ctx: HyperVContext, stateFile: string): Promise<StateSidecar[]> {
  const stem = stateStem(stateFile);
  if (stem === undefined) return [];
  const names = await ctx.run(
    'stateSidecars',
    scripts.filesNamed(WINDOWS_PATHS.dirname(stem), `${WINDOWS_PATHS.basename(stem)}.`),
    parse.parseFileNames,
  );
  return stateSidecarsIn(stateFile, names);
}

/**
 * Register on this host the saved VM whose state `stateFile` was copied here with its
 * configuration (Quick Storage Migration across hosts; see `save`): its files laid out under
 * `importRoot(stateFile)` as hard links to the verified copies (hardLinks), then Compare-VM, its
 * drives pointed at the files `data` names, and Import-VM -Register (importSavedVm). An incompatibility
 * that is not about those drives (a virtual switch this host lacks, say) registers nothing and
 * stops the move (`ImportIncompatible`, each named); the VM keeps its id. Every file it links
 * must be one of this migration's copies: the configuration copy must be there.
 */
export async function importSaved(
  ctx: HyperVContext,
  stateFile: string,
  data: HvDefinitionData,
): Promise<void> {
  const root = importRoot(stateFile);
  if (!root) throw new StalledError('NotSupportedByDriver', `${stateFile} is not named as a saved state`);
  const sidecars = await stateSidecarFiles(ctx, stateFile);
  const config = sidecars.find((f) => !f.checkpoint && f.kind === 'vmcx');
  if (!config)
    throw new StalledError(
      'SavedStateMismatch',
      `${stateFile} on ${ctx.hostName} has no copy of ${data.name}'s configuration beside it; nothing to register`,
    );
  if (!isGuid(data.id))
    throw new VmplaceError('UnexpectedOutput', `${data.name}'s id ${data.id} is not a GUID`);
  const vmDir = WINDOWS_PATHS.join(root, 'Virtual Machines');
  const snapDir = WINDOWS_PATHS.join(root, 'Snapshots');
  const links: [string, string][] = [[stateFile, WINDOWS_PATHS.join(vmDir, `${data.id}.vmrs`)]];
  for (const f of sidecars)
    links.push([
      f.path,
      f.checkpoint
        ? WINDOWS_PATHS.join(snapDir, `${f.checkpoint}.${f.kind}`)
        : WINDOWS_PATHS.join(vmDir, `${data.id}.${f.kind}`),
    ]);
  const drives = data.disks.flatMap((d) => {
    if (d.path === undefined) return [];
    const place = controllerOf(d.target) ?? d;
    return [
      {
        controllerType: place.controllerType,
        controllerNumber: place.controllerNumber,
        controllerLocation: place.controllerLocation,
        path: d.path,
      },
    ];
  });
  await Promise.all(
    [root, ...links.map((l) => l[1]), ...drives.map((d) => d.path)].map((p) => ctx.guardPath(p)),
  );
  for (const script of inBatches(links, (b) => scripts.hardLinks(b)))
    await ctx.run(`restore ${data.name}`, script, parse.parseLinked);
  const r = await ctx.run(
    `restore ${data.name}`,
    scripts.importSavedVm({ config: WINDOWS_PATHS.join(vmDir, `${data.id}.vmcx`), drives }),
    parse.parseImported,
    { timeoutMs: null },
  );
  if (!r.imported)
    throw new StalledError(
      'ImportIncompatible',
      `${data.name} cannot be registered on ${ctx.hostName}: ${r.incompatibilities.map((i) => `${i.message}${i.messageId !== undefined ? ` (${i.messageId})` : ''}`).join('; ')}`,
    );
  if (r.vm.id.toLowerCase() !== data.id.toLowerCase())
    throw new VmplaceError('UnexpectedOutput', `Import-VM registered ${r.vm.id}, not ${data.id}`);
  ctx.log?.info({ vm: data.name, root }, 'saved VM registered from its copied configuration (Import-VM)');
}
