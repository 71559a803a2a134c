/**
 * A Hyper-V VM's definition in the contract's words (`VmDefinition`), pure. Hyper-V keeps a VM's
 * configuration in a binary `.vmcx` that only Hyper-V reads and writes, so the definition vmplace
 * carries is not the configuration itself but what names it and what the machine may change in
 * it: the VM's id and name, where its configuration lives, its generation and configuration
 * version, and its hard disk drives (controller place, target, file, format). `withDiskPaths`
 * rewrites the drives in this JSON; `define` applies them to the VM Hyper-V has registered under
 * that id (`Set-VMHardDiskDrive`).
 */
import { ParseError, StalledError } from '../../errors';
import type { VmDefinition } from '../driver';

/** The `driver` of a Hyper-V definition (and the driver's family). */
export const HYPERV_FAMILY = 'hyperv';

export { HYPERV_CAPABILITIES } from '../capabilities';

/** One hard disk drive of a definition. */
export interface HvDefinitionDisk {
  /** the contract's target (see `diskTarget` in names.ts) */
  target: string;
  controllerType: string;
  controllerNumber: number;
  controllerLocation: number;
  /** the virtual hard disk file; absent for a pass-through disk */
  path?: string;
  /** `vhdx`, `vhd`, or `avhdx` for a differencing disk (a layer) */
  format?: string;
}

/** What a Hyper-V definition holds (its `data`, as JSON). */
export interface HvDefinitionData {
  kind: 'vmplace.hyperv.vm/v1';
  /** the VM's GUID: Hyper-V's identity of the VM, kept across Move-VM and Import-VM -Register */
  id: string;
  name: string;
  generation: number;
  /** configuration version, e.g. `9.0` */
  version: string;
  /** the folder of the VM's configuration (`Virtual Machines\<id>.vmcx` below it) */
  configurationLocation?: string;
  /** the processor vendor of the host it was read on (`GenuineIntel`, `AuthenticAMD`), for `canRun` */
  processorVendor?: string;
  disks: HvDefinitionDisk[];
}

export function hypervDefinition(data: HvDefinitionData): VmDefinition {
  return { driver: HYPERV_FAMILY, data: JSON.stringify(data) };
}

/** The data of a Hyper-V definition; a definition of another family is refused (`DriverMismatch`). */
export function definitionData(def: VmDefinition): HvDefinitionData {
  if (def.driver !== HYPERV_FAMILY)
    throw new StalledError('DriverMismatch', `a ${def.driver} definition cannot be used by Hyper-V`);
  let v: unknown;
  try {
    v = JSON.parse(def.data);
  } catch {
    throw new ParseError('Hyper-V definition', 'not JSON');
  }
  const o = v as Partial<HvDefinitionData> | null;
  if (
    typeof o !== 'object' ||
    o === null ||
    o.kind !== 'vmplace.hyperv.vm/v1' ||
    typeof o.id !== 'string' ||
    typeof o.name !== 'string' ||
    typeof o.generation !== 'number' ||
    typeof o.version !== 'string' ||
    (o.processorVendor !== undefined && typeof o.processorVendor !== 'string') ||
    !Array.isArray(o.disks) ||
    !o.disks.every(
      (d) =>
        typeof d === 'object' &&
        d !== null &&
        typeof d.target === 'string' &&
        typeof d.controllerType === 'string' &&
        Number.isSafeInteger(d.controllerNumber) &&
        Number.isSafeInteger(d.controllerLocation) &&
        (d.path === undefined || typeof d.path === 'string') &&
        (d.format === undefined || typeof d.format === 'string'),
    )
  )
    throw new ParseError('Hyper-V definition', 'not the shape vmplace writes');
  return o as HvDefinitionData;
}

/** disk target -> file of a definition (file disks only). */
export function diskPathsOfDefinition(def: VmDefinition): Record<string, string | undefined> {
  return Object.fromEntries(definitionData(def).disks.map((d) => [d.target, d.path]));
}

/**
 * The definition with these disks' files replaced (by target), each with its format; without a
 * format the file is one of the driver's layers (`avhdx`). A target the definition does not have
 * is refused (`DiskNotFound`): Hyper-V's drives are places on controllers, not added by a rename.
 */
export function withDefinitionDiskPaths(
  def: VmDefinition,
  disks: Record<string, { path: string; format?: string }>,
): VmDefinition {
  const data = definitionData(def);
  for (const t of Object.keys(disks))
    if (!data.disks.some((d) => d.target === t))
      throw new StalledError('DiskNotFound', `${data.name} has no disk ${t}`);
  return hypervDefinition({
    ...data,
    disks: data.disks.map((d) => {
      const w = disks[d.target];
      return w ? { ...d, path: w.path, format: w.format ?? 'avhdx' } : d;
    }),
  });
}
