/**
 * The field readers every parser of parsers/ is made of: the records of a `result`, and one
 * field of a record as a string, boolean, integer, enum name, list or size, each refusing what is
 * not shaped so (`ParseError`); and a VM's or checkpoint's hard disk drives. parsers.ts
 * re-exports {@link sizeOf}, {@link bigSizeOf} and {@link HvHardDrive} only.
 */
import { ParseError } from '../../../errors';
import { unwrapArray } from '../runner';

export type Rec = Record<string, unknown>;

export function isRec(v: unknown): v is Rec {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Every element of `result` as a record. */
export function records(result: unknown, what: string): Rec[] {
  const list = unwrapArray(result);
  if (list === undefined) throw new ParseError(what, 'result is not an array');
  return list.map((r, i) => {
    if (!isRec(r)) throw new ParseError(what, `element ${i} is not an object`);
    return r;
  });
}

/** The one record of `result`. */
export function single(result: unknown, what: string): Rec {
  const list = records(result, what);
  if (list.length !== 1) throw new ParseError(what, `expected one object, got ${list.length}`);
  return list[0]!;
}

export function str(o: Rec, key: string, what: string): string {
  const v = o[key];
  if (typeof v !== 'string' || v === '') throw new ParseError(what, `${key} is not a non-empty string`);
  return v;
}

/** A string that may be absent (`null`, missing or `""`). */
export function optStr(o: Rec, key: string, what: string): string | undefined {
  const v = o[key];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw new ParseError(what, `${key} is not a string`);
  return v;
}

export function bool(o: Rec, key: string, what: string): boolean {
  const v = o[key];
  if (typeof v !== 'boolean') throw new ParseError(what, `${key} is not a boolean`);
  return v;
}

/** A small integer (counts, controller numbers): a JSON number. */
export function int(o: Rec, key: string, what: string): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
    throw new ParseError(what, `${key} is not a non-negative integer`);
  return v;
}

/** An enum value written as its name: letters and digits, starting with a letter. */
export function enumName(o: Rec, key: string, what: string): string {
  const v = o[key];
  if (typeof v !== 'string' || !/^[A-Za-z][A-Za-z0-9]*$/.test(v))
    throw new ParseError(what, `${key} is not an enum name: ${JSON.stringify(v)}`);
  return v;
}

export function list(o: Rec, key: string, what: string): unknown[] {
  const v = unwrapArray(o[key]);
  if (v === undefined) throw new ParseError(what, `${key} is not an array`);
  return v;
}

export function strings(o: Rec, key: string, what: string): string[] {
  return list(o, key, what).map((s, i) => {
    if (typeof s !== 'string') throw new ParseError(what, `${key}[${i}] is not a string`);
    return s;
  });
}

const DECIMAL = /^(0|[1-9][0-9]*)$/;

/**
 * A size written as a decimal string, as a number; a value above `Number.MAX_SAFE_INTEGER`
 * (8 PiB, beyond any VHDX: 64 TB at most) cannot be held exactly and is refused (use
 * {@link bigSizeOf}).
 */
export function sizeOf(text: unknown, what = 'size'): number {
  if (typeof text !== 'string' || !DECIMAL.test(text))
    throw new ParseError(what, `not a decimal string: ${JSON.stringify(text)}`);
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new ParseError(what, `${text} is beyond 2^53`);
  return n;
}

/** A size written as a decimal string, as a bigint (any 64-bit value). */
export function bigSizeOf(text: unknown, what = 'size'): bigint {
  if (typeof text !== 'string' || !DECIMAL.test(text))
    throw new ParseError(what, `not a decimal string: ${JSON.stringify(text)}`);
  return BigInt(text);
}

export function size(o: Rec, key: string, what: string): number {
  return sizeOf(o[key], `${what} ${key}`);
}

export function optSize(o: Rec, key: string, what: string): number | undefined {
  const v = o[key];
  return v === undefined || v === null || v === '' ? undefined : sizeOf(v, `${what} ${key}`);
}

/** A hard disk drive of a VM or checkpoint (`Get-VMHardDiskDrive`). */
export interface HvHardDrive {
  /** the virtual hard disk file; undefined for a pass-through disk */
  path?: string;
  /** `IDE`, `SCSI` (or `PMEM` on newer hosts) */
  controllerType: string;
  controllerNumber: number;
  controllerLocation: number;
}

export function hardDrive(v: unknown, what: string): HvHardDrive {
  if (!isRec(v)) throw new ParseError(what, 'a hard drive is not an object');
  const d: HvHardDrive = {
    controllerType: enumName(v, 'ControllerType', what),
    controllerNumber: int(v, 'ControllerNumber', what),
    controllerLocation: int(v, 'ControllerLocation', what),
  };
  const path = optStr(v, 'Path', what);
  if (path !== undefined) d.path = path;
  return d;
}

export function hardDrives(o: Rec, what: string): HvHardDrive[] {
  return list(o, 'HardDrives', what).map((d) => hardDrive(d, what));
}
