/**
 * Observation: what Hyper-V and the host's files say, changing nothing (VMs and their state,
 * virtual hard disks, volumes, storage locations, the host's processors, the files VMs use).
 * Functions of the Hyper-V driver (see `driver.ts`), each taking the host's {@link HyperVContext}.
 */
import { StalledError, VmplaceError } from '../../errors';
import type { CpuInfo, DomainInfo, DomainState, FsInfo, ImageInfo, VmDefinition } from '../driver';
import { definitionData } from './definition';
import { LAYER_EXTENSION } from './names';
import * as parse from './parsers';
import * as scripts from './scripts';
import { cpuInfoVendor, type HyperVContext, same } from './context';
import { domainStateOf, formatOf, layerLinks, seeVm } from './seen';

/** `Get-VM`: every VM's name (Hyper-V allows two of one name: listed once). */
export async function listDomains(ctx: HyperVContext): Promise<string[]> {
  const vms = await ctx.run('listDomains', scripts.listVms(), parse.parseVms);
  return [...new Set(vms.map((v) => v.name))];
}

/**
 * `Get-VM`, `Get-VMHardDiskDrive` and `Get-VHD` of each drive's file (vmDisks), and for drives
 * on an `.avhdx` the layer-named files beside it with their file ids (layerLinks, a second
 * round trip only then). Each drive is a disk whose target comes from its controller place
 * (`diskTarget`: SCSI 0:0 `sda`, IDE 0:1 `hdb`), its format from Get-VHD (`vhdx`, `vhd`, a
 * differencing disk `avhdx`), `hasBackingStore` for a differencing disk, and as `path` the
 * asked name of a layer when the `.avhdx` has one (see driver.ts), else Hyper-V's path.
 * A drive whose `Path` is not a Windows file path (a pass-through disk) is `type: 'block'`.
 * `autostart`: `AutomaticStartAction` is `Start`. A generation 2 VM's UEFI variables and
 * virtual TPM live in its guest state file (`.vmgs`), part of its configuration, which Hyper-V
 * moves with the VM (Move-VM) and which the driver's saved state carries (`x.vmgs`): none of
 * `nvram`, `uefi`, `tpms` (state left on the host, which would block a move to another host) is
 * reported. Undefined when no VM has that name; several: `VmNameAmbiguous`.
 */
export async function getDomain(ctx: HyperVContext, name: string): Promise<DomainInfo | undefined> {
  return (await seeVm(ctx, name))?.info;
}

/** One cheap `Get-VM` (vmState). Undefined when no VM has that name; several: `VmNameAmbiguous`. */
export async function domainState(ctx: HyperVContext, name: string): Promise<DomainState | undefined> {
  const states = await ctx.run(`domainState ${name}`, scripts.vmState(name), parse.parseVmStates);
  if (states.length === 0) return undefined;
  if (states.length > 1)
    throw new StalledError('VmNameAmbiguous', `${states.length} VMs on ${ctx.hostName} are named ${name}`);
  return domainStateOf(states[0]!.state);
}

/**
 * `Get-VHD` of the file and of each parent it records (getVhdChain). Hyper-V reads a virtual
 * hard disk by its own header, so "opened as `format`" means: the file must be of that format
 * (without one: a differencing VHDX, one of the driver's layers), else `DiskFormatMismatch`.
 * `allocatedBytes` is the file's size (a VHDX file is not sparse: its size is what it takes).
 */
export async function imageInfo(
  ctx: HyperVContext,
  path: string,
  opts: { format?: string; forceShare?: boolean } = {},
): Promise<ImageInfo> {
  const chain = await ctx.run('imageInfo', scripts.getVhdChain(path), parse.parseVhdChain);
  const top = chain[0]!;
  if (!same(top.path, path))
    throw new VmplaceError('UnexpectedOutput', `Get-VHD on ${ctx.hostName} answered ${top.path} for ${path}`);
  const want = opts.format ?? 'avhdx';
  const format = formatOf(top.vhdFormat, top.vhdType)!;
  if (format !== want)
    throw new StalledError('DiskFormatMismatch', `${path} on ${ctx.hostName} is ${format}, not ${want}`);
  const below = chain[1];
  return {
    path,
    format,
    virtualBytes: top.virtualBytes,
    allocatedBytes: top.fileBytes,
    fileBytes: top.fileBytes,
    ...(top.parentPath !== undefined ? { backingFile: top.parentPath } : {}),
    ...(below ? { backingFormat: formatOf(below.vhdFormat, below.vhdType)! } : {}),
    chainLength: chain.length,
  };
}

/**
 * The first 8 bytes and the footer's (fileHeader): `vhdxfile` first is a VHDX (differencing
 * ones too), `conectix` first a dynamic or differencing VHD, `conectix` in the footer (the last
 * 512 bytes) a fixed VHD; anything else undefined. A file Hyper-V holds open without sharing it
 * is not readable: then what Get-VHD says.
 */
export async function probeFormat(ctx: HyperVContext, path: string): Promise<string | undefined> {
  const h = await ctx.run('probeFormat', scripts.fileHeader(path), parse.parseFileHeader);
  if (h.bytes) {
    const magic = h.bytes.toString('latin1');
    if (magic === 'vhdxfile') return 'vhdx';
    if (magic === 'conectix' || h.tail?.toString('latin1') === 'conectix') return 'vhd';
    return undefined;
  }
  return h.vhdFormat?.toLowerCase();
}

/** `Get-Volume` of the path or its nearest existing parent (volumeInfo). */
export async function fsInfo(ctx: HyperVContext, path: string): Promise<FsInfo> {
  const v = await ctx.run('fsInfo', scripts.volumeInfo(path), parse.parseVolume);
  return { capacityBytes: v.capacityBytes, freeBytes: v.freeBytes };
}

/** `Get-VMHost`: the default folders of new disks and of new VMs' configurations. */
export async function storageLocations(ctx: HyperVContext): Promise<{ name: string; path: string }[]> {
  const s = await ctx.run('storageLocations', scripts.vmHostStorage(), parse.parseVmHostStorage);
  const out = [{ name: 'virtual-hard-disks', path: s.virtualHardDiskPath }];
  if (!same(s.virtualMachinePath, s.virtualHardDiskPath))
    out.push({ name: 'virtual-machines', path: s.virtualMachinePath });
  return out;
}

/** `Win32_Processor` of the host (asked once per driver). */
export async function hostCpu(ctx: HyperVContext): Promise<CpuInfo> {
  return parse.cpuInfoOf(await ctx.hostInfo());
}

export async function fileExists(ctx: HyperVContext, path: string): Promise<boolean> {
  return (await ctx.fileInfo(path)).exists;
}

/** Apparent size (`Get-Item` Length); undefined when missing or a directory. */
export async function fileSize(ctx: HyperVContext, path: string): Promise<number | undefined> {
  const i = await ctx.fileInfo(path);
  return i.exists && !i.isDirectory ? i.length : undefined;
}

/**
 * The definition's configuration version is one this host runs (`Get-VMHostSupportedVersion`),
 * and its processors are of the vendor of the host the definition was read on (a saved state
 * or a live migration does not cross from Intel to AMD or back).
 */
export async function canRun(
  ctx: HyperVContext,
  def: VmDefinition,
): Promise<{ compatible: boolean; message: string }> {
  const data = definitionData(def);
  const host = await ctx.hostInfo();
  if (!host.supportedVersions.some((v) => v.version === data.version))
    return {
      compatible: false,
      message: `configuration version ${data.version} of ${data.name} is not one ${ctx.hostName} runs (${host.supportedVersions.map((v) => v.version).join(', ')})`,
    };
  const vendor = cpuInfoVendor(host);
  if (data.processorVendor !== undefined && vendor !== undefined && data.processorVendor !== vendor)
    return {
      compatible: false,
      message: `${data.name} runs on ${data.processorVendor} processors and ${ctx.hostName} has ${vendor}: Hyper-V moves a running or saved VM only between processors of one vendor`,
    };
  return { compatible: true, message: `${ctx.hostName} runs configuration version ${data.version}` };
}

/**
 * Every VM's files (vmFiles): its drives' files and its checkpoints' drives' files, each with the
 * parents Get-VHD reads down the chain; and for every `.avhdx` among them, the asked names that
 * are the same file (layerLinks: vmplace's hard links), so a layer is in use under both names.
 */
export async function filesInUse(ctx: HyperVContext): Promise<Map<string, Set<string>>> {
  const vms = await ctx.run('filesInUse', scripts.vmFiles(), parse.parseVmFiles);
  const used = new Map<string, Set<string>>();
  const add = (p: string, vm: string): void => {
    const s = used.get(p) ?? new Set<string>();
    s.add(vm);
    used.set(p, s);
  };
  for (const v of vms) for (const p of v.paths) add(p, v.name);
  const layers = [...used.keys()].filter((p) => p.toLowerCase().endsWith(LAYER_EXTENSION));
  if (layers.length) {
    for (const l of await layerLinks(ctx, layers)) {
      const users = used.get(l.path) ?? new Set<string>();
      for (const x of l.links)
        if (x.fileId === l.fileId && !same(x.path, l.path)) for (const u of users) add(x.path, u);
    }
  }
  return used;
}
