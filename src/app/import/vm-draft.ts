/**
 * `vmplace import`, one VM: the VirtualMachine of a domain at its current place, and how a
 * declared one differs from where its domain is. Pure; see decide.ts.
 */
import type { DomainDisk, DomainInfo } from '../../drivers/driver';
import { isInside, normaliseAbsolute } from '../../drivers/paths';
import { quote, safeText } from '../../text';
import type { StorageLocation, VirtualMachineSpec } from '../../types';
import type { ImportNote, VmDraft } from './decide';

/** the schema's per-disk override keys */
const DISK_KEY = /^(?:vd|sd|hd|xvd)[a-z]{1,3}$/;

/** Text from a host for a message or a YAML comment: one line, printable, bounded. */
export function hostText(text: string, max = 120): string {
  const s = safeText(text).replace(/[^\x20-\x7e]/g, '?');
  return s.length > max ? `${s.slice(0, max)}...` : s;
}

/** Disks that are the VM's storage (cdroms and floppies are media), as `observe` counts them. */
export function storageDisks(dom: DomainInfo): DomainDisk[] {
  return dom.disks.filter((d) => d.device === 'disk' || d.device === 'lun');
}

/** The location holding `path` (the innermost), among `locs`. */
export function locate(locs: readonly StorageLocation[], path: string): StorageLocation | undefined {
  const p = normaliseAbsolute(path);
  if (!p) return undefined;
  let best: StorageLocation | undefined;
  for (const l of locs)
    if (isInside(p, l.path, { allowRoot: true }) && (!best || l.path.length > best.path.length)) best = l;
  return best;
}

/** The VirtualMachine of one domain at its current place, or undefined (with a note) when it cannot be described. */
export function draftVm(
  name: string,
  host: string,
  dom: DomainInfo,
  locs: readonly StorageLocation[],
  notes: ImportNote[],
  subject: string,
): VmDraft | undefined {
  const unmovable: string[] = [];
  if (!dom.persistent) unmovable.push('it is a transient domain (no persistent definition)');
  const placed: { target: string; loc: string }[] = [];
  for (const d of storageDisks(dom)) {
    const t = hostText(d.target, 20);
    if (d.shareable) unmovable.push(`disk ${t} is shareable`);
    if (d.type === 'block') unmovable.push(`disk ${t} is a block device`);
    else if (d.type === 'network') unmovable.push(`disk ${t} is a network disk`);
    else if (d.type !== 'file' || !d.path)
      unmovable.push(`disk ${t} is not a file (type ${hostText(d.type, 20)})`);
    if (d.type !== 'file' || !d.path) continue;
    const loc = locate(locs, d.path);
    if (!loc) {
      notes.push({
        severity: 'warning',
        reason: 'DiskOutsideStorage',
        subject,
        message: `disk ${t} at ${quote(hostText(d.path))} is in no storage location of Host/${host}; not imported (declare the location in the Host manifest, then import again)`,
      });
      return undefined;
    }
    placed.push({ target: d.target, loc: loc.name });
  }
  let storage: string | undefined;
  if (placed.length) {
    const count = new Map<string, number>();
    for (const p of placed) count.set(p.loc, (count.get(p.loc) ?? 0) + 1);
    storage = placed[0]!.loc;
    for (const p of placed) if (count.get(p.loc)! > count.get(storage)!) storage = p.loc;
  } else {
    storage = locs[0]?.name;
    if (storage === undefined) {
      notes.push({
        severity: 'warning',
        reason: 'NoStorage',
        subject,
        message: `Host/${host} has no storage location to name as its storage; not imported`,
      });
      return undefined;
    }
  }
  const spec: VirtualMachineSpec = { host, storage };
  const disks: Record<string, { storage: string }> = {};
  for (const p of placed) {
    if (p.loc === storage) continue;
    if (DISK_KEY.test(p.target)) disks[p.target] = { storage: p.loc };
    else unmovable.push(`disk ${hostText(p.target, 20)} has a name a per-disk override cannot use`);
  }
  if (Object.keys(disks).length) spec.disks = disks;
  return { name, spec, unmovable };
}

/** How a declared VM's desired placement differs from where its domain is, or undefined. */
export function placementDifference(
  want: VirtualMachineSpec,
  is: VirtualMachineSpec,
  dom: DomainInfo,
): string | undefined {
  const parts: string[] = [];
  if (want.host !== is.host) parts.push(`the manifest wants host ${want.host}, it is on ${is.host}`);
  for (const d of storageDisks(dom)) {
    if (d.type !== 'file' || !d.path) continue;
    const w = want.disks?.[d.target]?.storage ?? want.storage;
    const i = is.disks?.[d.target]?.storage ?? is.storage;
    if (w !== i) parts.push(`disk ${hostText(d.target, 20)}: the manifest wants storage ${w}, it is on ${i}`);
  }
  return parts.length ? parts.join('; ') : undefined;
}
