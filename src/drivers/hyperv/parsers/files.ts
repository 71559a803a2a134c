/**
 * Readers of scripts/files.ts's answers, and {@link fileIdOfText} for the file ids other scripts
 * answer.
 */
import { ParseError } from '../../../errors';
import type { FsInfo } from '../../driver';
import { bool, enumName, optStr, records, single, size, str } from './common';

/** fileHash's answer: the SHA-256, lower-case hex. */
export function parseFileHash(result: unknown): string {
  const what = 'Get-FileHash';
  const o = single(result, what);
  if (o.Algorithm !== 'SHA256') throw new ParseError(what, `algorithm ${JSON.stringify(o.Algorithm)}`);
  const hash = str(o, 'Hash', what);
  if (!/^[0-9A-Fa-f]{64}$/.test(hash)) throw new ParseError(what, `not a SHA-256: ${JSON.stringify(hash)}`);
  return hash.toLowerCase();
}

/** What fileInfo answers. */
export type HvFileInfo =
  | { exists: false }
  | {
      exists: true;
      isDirectory: boolean;
      /** apparent size in bytes; undefined for a directory */
      length?: number;
      attributes: string[];
      /** a reparse point (symbolic link, junction...): not a plain file */
      reparsePoint: boolean;
      /** the volume's GUID, lower case */
      volumeId: string;
      /** the file id fsutil printed, lower-case hex without leading zeros */
      fileId: string;
      /** `volumeId:fileId`: the same file on the same volume, whatever its name */
      identity: string;
    };

/**
 * Reads fileInfo. The file id is the one `0x` hex number in fsutil's line (its words are
 * localized: "File ID is 0x…" in English, "ファイル ID は 0x… です" in Japanese). The volume id is
 * the GUID of `Get-Volume`'s `UniqueId` (`\\?\Volume{GUID}\`).
 */
export function parseFileInfo(result: unknown): HvFileInfo {
  const what = 'file info';
  const o = single(result, what);
  if (!bool(o, 'Exists', what)) return { exists: false };
  const isDirectory = bool(o, 'IsDirectory', what);
  const attributes = (optStr(o, 'Attributes', what) ?? '')
    .split(',')
    .map((a) => a.trim())
    .filter((a) => a !== '');
  const fileId = fileIdOfText(str(o, 'FileIdText', what), what);
  const unique = str(o, 'VolumeId', what);
  const guid = /\{([0-9A-Fa-f-]{36})\}/.exec(unique)?.[1];
  if (guid === undefined) throw new ParseError(what, `no volume GUID in ${JSON.stringify(unique)}`);
  const volumeId = guid.toLowerCase();
  const info: HvFileInfo = {
    exists: true,
    isDirectory,
    attributes,
    reparsePoint: attributes.includes('ReparsePoint'),
    volumeId,
    fileId,
    identity: `${volumeId}:${fileId}`,
  };
  if (!isDirectory) info.length = size(o, 'Length', what);
  return info;
}

/**
 * The file id in what `fsutil file queryfileid` printed: its one `0x` hex number, lower case,
 * without leading zeros (the words around it are localized).
 */
export function fileIdOfText(text: string, what = 'file id'): string {
  const ids = [...text.matchAll(/0x([0-9A-Fa-f]+)/g)];
  if (ids.length !== 1) throw new ParseError(what, `expected one 0x file id in fsutil's line`);
  return ids[0]![1]!.toLowerCase().replace(/^0+(?=.)/, '');
}

/** newDirectory's answer. */
export function parseNewDirectory(result: unknown): { path: string; created: boolean } {
  const what = 'new directory';
  const o = single(result, what);
  return { path: str(o, 'Path', what), created: bool(o, 'Created', what) };
}

/** removeDirIfEmpty's answer. */
export function parseRemoveDir(result: unknown): { existed: boolean; removed: boolean } {
  const what = 'remove directory';
  const o = single(result, what);
  return { existed: bool(o, 'Existed', what), removed: bool(o, 'Removed', what) };
}

/** volumeInfo's answer. */
export interface HvVolume extends FsInfo {
  /** the existing path the volume was looked up for */
  path: string;
  uniqueId: string;
  driveLetter?: string;
  fileSystem?: string;
}

export function parseVolume(result: unknown): HvVolume {
  const what = 'Get-Volume';
  const o = single(result, what);
  const v: HvVolume = {
    path: str(o, 'Path', what),
    uniqueId: str(o, 'UniqueId', what),
    capacityBytes: size(o, 'Size', what),
    freeBytes: size(o, 'SizeRemaining', what),
  };
  const letter = optStr(o, 'DriveLetter', what);
  if (letter !== undefined) v.driveLetter = letter;
  const fs = optStr(o, 'FileSystem', what);
  if (fs !== undefined) v.fileSystem = fs;
  return v;
}

/** pathAttributes' answer. */
export interface HvPathAttributes {
  path: string;
  exists: boolean;
  attributes: string[];
  /** a symbolic link, junction or mount point: the name leads elsewhere */
  reparsePoint: boolean;
}

export function parsePathAttributes(result: unknown): HvPathAttributes[] {
  const what = 'path attributes';
  return records(result, what).map((o) => {
    const attributes = (optStr(o, 'Attributes', what) ?? '')
      .split(',')
      .map((a) => a.trim())
      .filter((a) => a !== '');
    const exists = bool(o, 'Exists', what);
    if (exists && attributes.length === 0) throw new ParseError(what, 'an existing path without attributes');
    return {
      path: str(o, 'Path', what),
      exists,
      attributes,
      reparsePoint: attributes.includes('ReparsePoint'),
    };
  });
}

/** removeIfIdentity's answer. */
export function parseRemoveOwn(result: unknown): 'removed' | 'absent' | 'other' {
  const what = 'remove own file';
  const v = enumName(single(result, what), 'Outcome', what);
  if (v === 'Removed') return 'removed';
  if (v === 'Absent') return 'absent';
  if (v === 'Other') return 'other';
  throw new ParseError(what, `Outcome ${v}`);
}

/** hardLink's answer: whether the link was made now, and the file ids of both names. */
export function parseHardLink(result: unknown): { created: boolean; linkId: string; targetId: string } {
  const what = 'hard link';
  const o = single(result, what);
  return {
    created: bool(o, 'Created', what),
    linkId: fileIdOfText(str(o, 'LinkIdText', what), what),
    targetId: fileIdOfText(str(o, 'TargetIdText', what), what),
  };
}

/** fileHeader's answer: the first bytes and those of the footer's place, or what Get-VHD said when reading was denied. */
export function parseFileHeader(result: unknown): {
  bytes?: Buffer;
  tail?: Buffer;
  denied: boolean;
  vhdFormat?: string;
} {
  const what = 'file header';
  const o = single(result, what);
  const denied = bool(o, 'Denied', what);
  const bytesOf = (key: string): Buffer | undefined => {
    const hex = optStr(o, key, what);
    if (hex === undefined) return undefined;
    if (!/^[0-9A-Fa-f]{2}(-[0-9A-Fa-f]{2})*$/.test(hex))
      throw new ParseError(what, `${key} ${JSON.stringify(hex)}`);
    return Buffer.from(hex.replace(/-/g, ''), 'hex');
  };
  const out: { bytes?: Buffer; tail?: Buffer; denied: boolean; vhdFormat?: string } = { denied };
  const bytes = bytesOf('Hex');
  const tail = bytesOf('Tail');
  if (bytes !== undefined) out.bytes = bytes;
  else if (!denied) throw new ParseError(what, 'neither bytes nor denied');
  if (tail !== undefined) out.tail = tail;
  const f = optStr(o, 'VhdFormat', what);
  if (f !== undefined) out.vhdFormat = f;
  return out;
}
