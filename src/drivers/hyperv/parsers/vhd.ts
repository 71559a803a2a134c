/** Readers of scripts/vhd.ts's answers: virtual hard disks as Get-VHD describes them. */
import { ParseError } from '../../../errors';
import { bool, enumName, optSize, optStr, type Rec, records, single, size, str, strings } from './common';

/** Formats and types of a virtual hard disk as `VhdFormat` and `VhdType` name them. */
export const VHD_FORMATS = ['VHD', 'VHDX', 'VHDSet'] as const;
export const VHD_TYPES = ['Fixed', 'Dynamic', 'Differencing'] as const;

/** A `VirtualHardDisk` (Get-VHD) as `VhdOut` writes it. */
export interface HvVhd {
  path: string;
  vhdFormat: (typeof VHD_FORMATS)[number];
  vhdType: (typeof VHD_TYPES)[number];
  /** bytes the file takes */
  fileBytes: number;
  /** the virtual disk's size */
  virtualBytes: number;
  minimumBytes?: number;
  /** the parent of a differencing disk, as recorded in it */
  parentPath?: string;
  diskIdentifier?: string;
  attached: boolean;
  blockSize?: number;
  logicalSectorSize?: number;
  physicalSectorSize?: number;
}

function vhd(o: Rec): HvVhd {
  const what = 'Get-VHD';
  const format = enumName(o, 'VhdFormat', what);
  const type = enumName(o, 'VhdType', what);
  const f = VHD_FORMATS.find((x) => x === format);
  const t = VHD_TYPES.find((x) => x === type);
  if (f === undefined) throw new ParseError(what, `unknown VhdFormat ${format}`);
  if (t === undefined) throw new ParseError(what, `unknown VhdType ${type}`);
  const out: HvVhd = {
    path: str(o, 'Path', what),
    vhdFormat: f,
    vhdType: t,
    fileBytes: size(o, 'FileSize', what),
    virtualBytes: size(o, 'Size', what),
    attached: bool(o, 'Attached', what),
  };
  const parentPath = optStr(o, 'ParentPath', what);
  if (parentPath !== undefined) out.parentPath = parentPath;
  if (t === 'Differencing' && parentPath === undefined)
    throw new ParseError(what, 'a differencing disk without ParentPath');
  const diskIdentifier = optStr(o, 'DiskIdentifier', what);
  if (diskIdentifier !== undefined) out.diskIdentifier = diskIdentifier;
  for (const [key, field] of [
    ['MinimumSize', 'minimumBytes'],
    ['BlockSize', 'blockSize'],
    ['LogicalSectorSize', 'logicalSectorSize'],
    ['PhysicalSectorSize', 'physicalSectorSize'],
  ] as const) {
    const v = optSize(o, key, what);
    if (v !== undefined) out[field] = v;
  }
  return out;
}

/** The disk getVhd, mergeVhd, setVhdParent and newDifferencingVhd answer. */
export function parseVhd(result: unknown): HvVhd {
  return vhd(single(result, 'Get-VHD'));
}

/**
 * The chain getVhdChain answers, top first: each disk's ParentPath is the next one's Path
 * (compared without regard to case, as Windows does), the last has none.
 */
export function parseVhdChain(result: unknown): HvVhd[] {
  const chain = records(result, 'VHD chain').map(vhd);
  if (chain.length === 0) throw new ParseError('VHD chain', 'empty');
  chain.forEach((d, i) => {
    const next = chain[i + 1];
    if (next === undefined) {
      if (d.parentPath !== undefined)
        throw new ParseError('VHD chain', `ends at ${d.path}, which has a parent`);
    } else if (d.parentPath?.toLowerCase() !== next.path.toLowerCase()) {
      throw new ParseError('VHD chain', `${d.path} has parent ${d.parentPath ?? 'none'}, not ${next.path}`);
    }
  });
  return chain;
}

/** testVhd's answer. */
export function parseVhdTest(result: unknown): { path: string; valid: boolean; problems: string[] } {
  const what = 'Test-VHD';
  const o = single(result, what);
  return {
    path: str(o, 'Path', what),
    valid: bool(o, 'Valid', what),
    problems: strings(o, 'Problems', what),
  };
}
