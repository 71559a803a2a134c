/**
 * What the driver sees of a VM (one `vmDisks` round trip, and `layerLinks` for drives on an
 * `.avhdx`): each hard disk drive as the contract's disk (target from its controller place,
 * format, the asked name of a layer) beside what Hyper-V reports, and the VM's `DomainInfo` with
 * its definition. `getDomain` (observe.ts) reports it; layers.ts, lifecycle.ts and migrate.ts
 * act on it. Also the contract's words for Hyper-V's states and disk formats.
 */
import { StalledError, VmplaceError } from '../../errors';
import type { DomainDisk, DomainInfo, DomainState } from '../driver';
import { WINDOWS_RULES } from '../path-rules';
import { WINDOWS_PATHS } from '../windows-paths';
import { hypervDefinition, type HvDefinitionDisk } from './definition';
import { diskTarget, LAYER_EXTENSION, ownFilePath, parseOwnLayer } from './names';
import * as parse from './parsers';
import type { HvDiskDrive, HvVmDisks } from './parsers';
import * as scripts from './scripts';
import { cpuInfoVendor, type HyperVContext, same } from './context';

/** Paths per script that lists paths (each literal costs ~2.7 characters of command line per character). */
const PATHS_PER_SCRIPT = 8;

/** A hard disk drive as the driver sees it: the contract's disk plus the file Hyper-V opens. */
export interface SeenDrive {
  disk: DomainDisk;
  drive: HvDiskDrive;
  /** the file Hyper-V opens (its `Path`); `disk.path` may be the asked name of the same file */
  real?: string;
}

export interface SeenVm {
  vm: HvVmDisks;
  drives: SeenDrive[];
  info: DomainInfo;
}

/**
 * The contract's state of a Hyper-V `VMState`. `Saved` is `shutoff`, as libvirt shows a VM with
 * a managed save: not active, and `Start-VM` resumes it from its saved memory (`define` refuses
 * to change the disks of a saved VM, so a cold move never drops that memory). The `*Critical`
 * states (Hyper-V lost the VM's storage) are `crashed`; states in passing (Starting, Saving,
 * Stopping...) are `other`, which Preflight refuses.
 */
export function domainStateOf(state: string): DomainState {
  switch (state) {
    case 'Running':
      return 'running';
    case 'Paused':
      return 'paused';
    case 'Off':
    case 'Saved':
    case 'FastSaved':
      return 'shutoff';
    default:
      return /Critical$/.test(state) ? 'crashed' : 'other';
  }
}

/** The contract's format of a virtual hard disk: `vhdx`, `vhd`, `vhdset`; a differencing one `avhdx` (`avhd`). */
export function formatOf(vhdFormat: string | undefined, vhdType: string | undefined): string | undefined {
  if (vhdFormat === undefined) return undefined;
  const f = vhdFormat.toLowerCase();
  return vhdType === 'Differencing' ? `a${f}` : f;
}

/** What `getDomain` reports (see there), with each drive as Hyper-V reports it. */
export async function seeVm(ctx: HyperVContext, name: string): Promise<SeenVm | undefined> {
  const [vms, vendor] = await Promise.all([
    ctx.run(`getDomain ${name}`, scripts.vmDisks(name), parse.parseVmDisks),
    hostVendor(ctx),
  ]);
  if (vms.length === 0) return undefined;
  if (vms.length > 1)
    throw new StalledError('VmNameAmbiguous', `${vms.length} VMs on ${ctx.hostName} are named ${name}`);
  const vm = vms[0]!;
  const onLayers = vm.hardDrives.flatMap((d) =>
    d.path !== undefined && d.path.toLowerCase().endsWith(LAYER_EXTENSION) ? [d.path] : [],
  );
  const links = onLayers.length ? await layerLinks(ctx, onLayers) : [];
  const drives = vm.hardDrives.map((d) => seeDrive(vm.name, d, links));
  const disks = drives.map((d) => d.disk);
  const defDisks: HvDefinitionDisk[] = drives.map(({ disk, drive }) => ({
    target: disk.target,
    controllerType: drive.controllerType,
    controllerNumber: drive.controllerNumber,
    controllerLocation: drive.controllerLocation,
    ...(disk.path !== undefined ? { path: disk.path } : {}),
    ...(disk.format !== undefined ? { format: disk.format } : {}),
  }));
  const info: DomainInfo = {
    name: vm.name,
    uuid: vm.id,
    state: domainStateOf(vm.state),
    persistent: true,
    memoryBytes: vm.memoryStartupBytes,
    vcpus: vm.processorCount,
    domainType: 'hyperv',
    disks,
    autostart: vm.automaticStartAction === 'Start',
    definition: hypervDefinition({
      kind: 'vmplace.hyperv.vm/v1',
      id: vm.id,
      name: vm.name,
      generation: vm.generation,
      version: vm.version,
      ...(vm.configurationLocation !== undefined ? { configurationLocation: vm.configurationLocation } : {}),
      ...(vendor !== undefined ? { processorVendor: vendor } : {}),
      disks: defDisks,
    }),
  };
  return { vm, drives, info };
}

/** As `seeVm`, for a VM that must be there (`DomainNotFound` otherwise). */
export async function mustSeeVm(ctx: HyperVContext, vm: string): Promise<SeenVm> {
  const s = await seeVm(ctx, vm);
  if (!s) throw new VmplaceError('DomainNotFound', `${vm} is not defined on ${ctx.hostName}`);
  return s;
}

/** The contract's disk of a drive (see getDomain). */
function seeDrive(vm: string, drive: HvDiskDrive, links: parse.HvLayerLinks[]): SeenDrive {
  const target = diskTarget(drive.controllerType, drive.controllerNumber, drive.controllerLocation);
  if (target === undefined)
    throw new VmplaceError(
      'UnexpectedOutput',
      `${vm} has a drive at ${drive.controllerType} ${drive.controllerNumber}:${drive.controllerLocation}, which vmplace cannot name`,
    );
  const real = drive.path !== undefined && WINDOWS_RULES.isAbsolute(drive.path) ? drive.path : undefined;
  if (real === undefined)
    return {
      drive,
      disk: {
        target,
        type: 'block',
        device: 'disk',
        ...(drive.path !== undefined ? { sourceDev: drive.path } : {}),
        readonly: false,
        hasBackingStore: false,
      },
    };
  const format = formatOf(drive.vhdFormat, drive.vhdType);
  return {
    drive,
    real,
    disk: {
      target,
      type: 'file',
      device: 'disk',
      path: askedName(vm, target, real, links) ?? real,
      ...(format !== undefined ? { format } : {}),
      readonly: false,
      hasBackingStore: drive.vhdType === 'Differencing',
    },
  };
}

/** The name `ownFile` gave the layer that is the file `real` (a hard link beside it), if any. */
function askedName(
  vm: string,
  target: string,
  real: string,
  links: parse.HvLayerLinks[],
): string | undefined {
  const seen = links.find((l) => same(l.path, real));
  if (!seen) return undefined;
  const mine = seen.links
    .filter((l) => l.fileId === seen.fileId && !same(l.path, real))
    .flatMap((l) => {
      const n = parseOwnLayer(l.path, vm, target);
      return n ? [{ n, path: l.path }] : [];
    })
    .sort((a, b) => b.n.round - a.n.round);
  const top = mine[0];
  if (!top) return undefined;
  // spelled as ownFile spells it, in the directory as Hyper-V spells the file it opens
  return WINDOWS_PATHS.join(
    WINDOWS_PATHS.dirname(real),
    WINDOWS_PATHS.basename(
      ownFilePath('C:\\x', vm, top.n.migration, { what: 'layer', disk: target, round: top.n.round }),
    ),
  );
}

/** The hard links of the given `.avhdx` files (layerLinks), a few paths a script. */
export async function layerLinks(
  ctx: HyperVContext,
  paths: readonly string[],
): Promise<parse.HvLayerLinks[]> {
  const out: parse.HvLayerLinks[] = [];
  for (let i = 0; i < paths.length; i += PATHS_PER_SCRIPT)
    out.push(
      ...(await ctx.run(
        'layerLinks',
        scripts.layerLinks(paths.slice(i, i + PATHS_PER_SCRIPT)),
        parse.parseLayerLinks,
      )),
    );
  return out;
}

/**
 * The host's processor vendor for the definitions `getDomain` reads; undefined when the host
 * does not say (then `canRun` cannot compare vendors, and Hyper-V itself refuses a saved state
 * or live migration across them).
 */
async function hostVendor(ctx: HyperVContext): Promise<string | undefined> {
  try {
    return cpuInfoVendor(await ctx.hostInfo());
  } catch (err) {
    ctx.log?.debug({ err }, 'no processor vendor');
    return undefined;
  }
}
