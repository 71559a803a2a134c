/**
 * Parsers for what virsh, qemu-img and coreutils print. Pure functions, tested against
 * recorded real output in test/fixtures/libvirt/.
 */
import { ParseError } from '../../errors';
import type { CpuInfo, DomainState, FsInfo, ImageInfo } from '../driver';
import { firstChild, parseOrdered, rootElement, textOf } from './xml';

/** The output did not look like what the parser expects: a bug or an unexpected version. */
export { parseSha256sum } from '../../transfer/copy-local';

export { ParseError };

// ---------------------------------------------------------------- qemu-img info

interface QemuImgInfoJson {
  filename?: string;
  format?: string;
  'virtual-size'?: number;
  'actual-size'?: number;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'backing-filename-format'?: string;
}

/**
 * `qemu-img info --output=json -f FMT`: an object (or, from older callers, the array that
 * `--backing-chain` prints, whose first element is the image itself). `fileBytes` is not in qemu-img's output
 * (it reports allocation as `actual-size`), so the caller passes the apparent size from
 * `stat`; `path` is the path the caller asked about.
 */
export function parseQemuImgInfo(json: string, path: string, fileBytes?: number): ImageInfo {
  let data: unknown;
  try {
    data = JSON.parse(json);
  } catch (e) {
    throw new ParseError('qemu-img info', (e as Error).message);
  }
  const chain = (Array.isArray(data) ? data : [data]) as QemuImgInfoJson[];
  const top = chain[0];
  if (!top || typeof top !== 'object' || typeof top['virtual-size'] !== 'number') {
    throw new ParseError('qemu-img info', 'no image with virtual-size');
  }
  const info: ImageInfo = {
    path,
    format: top.format ?? 'unknown',
    virtualBytes: top['virtual-size'],
    allocatedBytes: top['actual-size'] ?? 0,
    fileBytes: fileBytes ?? top['actual-size'] ?? 0,
    chainLength: Array.isArray(data) ? chain.length : top['backing-filename'] !== undefined ? 2 : 1,
  };
  const backing = top['full-backing-filename'] ?? top['backing-filename'];
  if (backing !== undefined) info.backingFile = backing;
  const backingFormat = top['backing-filename-format'];
  if (backingFormat !== undefined) info.backingFormat = backingFormat;
  return info;
}

/** The backing format qemu-img recorded in an image, if any (`backing-filename-format`). */
export function backingFormatOf(json: string): string | undefined {
  const data = JSON.parse(json) as QemuImgInfoJson | QemuImgInfoJson[];
  const top = Array.isArray(data) ? data[0] : data;
  return top?.['backing-filename-format'];
}

// ---------------------------------------------------------------- image headers

/** How many bytes of an image's start {@link imageFormatOfHeader} looks at. */
export const HEADER_PROBE_BYTES = 512;

/** `od -An -v -tx1 -N COUNT -- FILE`: hex bytes separated by blanks and newlines. */
export function parseOdHex(text: string): Buffer {
  const hex = text.split(/\s+/).filter((t) => t !== '');
  if (hex.some((h) => !/^[0-9a-f]{2}$/i.test(h)))
    throw new ParseError('od', JSON.stringify(text.slice(0, 200)));
  return Buffer.from(hex.join(''), 'hex');
}

const startsWith = (buf: Buffer, magic: string | Buffer, at = 0): boolean => {
  const m = typeof magic === 'string' ? Buffer.from(magic, 'latin1') : magic;
  return buf.length >= at + m.length && buf.subarray(at, at + m.length).equals(m);
};

/**
 * The image format whose magic the first bytes of a file carry, as QEMU's format probes see
 * them (qcow/qcow2, qed, vmdk, vhdx, vpc, vdi, luks, parallels, bochs, cloop), or undefined
 * when none does (what a raw disk usually looks like). Read by vmplace itself, never by
 * letting qemu-img guess: a guest controls the contents of a raw disk, and an image opened as
 * the format it claims to be follows the backing file path written in it.
 */
export function imageFormatOfHeader(buf: Buffer): string | undefined {
  if (startsWith(buf, 'QFI\xfb')) return buf.length >= 8 && buf.readUInt32BE(4) === 1 ? 'qcow' : 'qcow2';
  if (startsWith(buf, 'QED\0')) return 'qed';
  if (startsWith(buf, 'KDMV') || startsWith(buf, 'COWD') || startsWith(buf, '# Disk DescriptorFile'))
    return 'vmdk';
  if (startsWith(buf, 'vhdxfile')) return 'vhdx';
  if (startsWith(buf, 'conectix')) return 'vpc';
  if (buf.length >= 0x44 && buf.readUInt32LE(0x40) === 0xbeda107f) return 'vdi';
  if (startsWith(buf, 'LUKS\xba\xbe')) return 'luks';
  if (startsWith(buf, 'WithoutFreeSpace') || startsWith(buf, 'WithouFreSpacExt')) return 'parallels';
  if (startsWith(buf, 'Bochs Virtual HD Image')) return 'bochs';
  if (startsWith(buf, '#!/bin/sh\n#V2.0 Format\n')) return 'cloop';
  return undefined;
}

// ---------------------------------------------------------------- qemu-img check

interface QemuImgCheckJson {
  'check-errors'?: number;
  corruptions?: number;
  leaks?: number;
  'corruptions-fixed'?: number;
  'leaks-fixed'?: number;
  'fragmented-clusters'?: number;
}

/**
 * `qemu-img check --output=json`. Returns problems as short strings; empty when clean.
 * With `ignoreLeaks` (an image checked with -U while a VM writes to it) leaked clusters are
 * not problems: allocations in flight look like leaks and leaks lose no data anyway.
 */
export function parseQemuImgCheck(json: string, opts: { ignoreLeaks?: boolean } = {}): string[] {
  let data: QemuImgCheckJson;
  try {
    data = JSON.parse(json) as QemuImgCheckJson;
  } catch (e) {
    throw new ParseError('qemu-img check', (e as Error).message);
  }
  const problems: string[] = [];
  if (data['check-errors']) problems.push(`check-errors: ${data['check-errors']}`);
  if (data.corruptions) problems.push(`corruptions: ${data.corruptions}`);
  if (data.leaks && !opts.ignoreLeaks) problems.push(`leaks: ${data.leaks}`);
  return problems;
}

// ---------------------------------------------------------------- virsh domstate / dominfo

/** Map virsh's state words (domstate, dominfo `State:`) to `DomainState`. */
export function parseDomState(text: string): DomainState {
  const s =
    text
      .trim()
      .split('\n')[0]
      ?.trim()
      .replace(/\s*\(.*\)$/, '') ?? '';
  switch (s) {
    case 'running':
    case 'idle': // VIR_DOMAIN_BLOCKED: active, waiting on a resource
      return 'running';
    case 'paused':
      return 'paused';
    case 'shut off':
      return 'shutoff';
    case 'crashed':
      return 'crashed';
    case 'pmsuspended':
      return 'pmsuspended';
    default:
      return 'other';
  }
}

export interface DomInfo {
  id?: number;
  name: string;
  uuid: string;
  state: DomainState;
  persistent: boolean;
  autostart?: boolean;
  vcpus?: number;
  /** `Max memory:` in bytes */
  maxMemoryBytes?: number;
  /** `Used memory:` in bytes */
  usedMemoryBytes?: number;
  managedSave?: boolean;
}

function kib(v: string | undefined): number | undefined {
  const m = v?.match(/^(\d+)\s*KiB$/);
  return m ? Number(m[1]) * 1024 : undefined;
}

/** `virsh dominfo DOMAIN`: `Key:   value` lines. */
export function parseDomInfo(text: string): DomInfo {
  const kv = new Map<string, string>();
  for (const line of text.split('\n')) {
    const i = line.indexOf(':');
    if (i <= 0) continue;
    kv.set(line.slice(0, i).trim(), line.slice(i + 1).trim());
  }
  const name = kv.get('Name');
  const uuid = kv.get('UUID');
  if (name === undefined || uuid === undefined) throw new ParseError('virsh dominfo', 'no Name or UUID');
  const out: DomInfo = {
    name,
    uuid,
    state: parseDomState(kv.get('State') ?? ''),
    persistent: kv.get('Persistent') === 'yes',
  };
  const id = kv.get('Id');
  if (id !== undefined && /^\d+$/.test(id)) out.id = Number(id);
  const auto = kv.get('Autostart');
  if (auto !== undefined) out.autostart = auto === 'enable';
  const cpus = kv.get('CPU(s)');
  if (cpus !== undefined && /^\d+$/.test(cpus)) out.vcpus = Number(cpus);
  const max = kib(kv.get('Max memory'));
  if (max !== undefined) out.maxMemoryBytes = max;
  const used = kib(kv.get('Used memory'));
  if (used !== undefined) out.usedMemoryBytes = used;
  const ms = kv.get('Managed save');
  if (ms !== undefined) out.managedSave = ms === 'yes';
  return out;
}

/** `virsh list --all --name`: one name per line, blank lines ignored. */
export function parseNameList(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
}

// ---------------------------------------------------------------- virsh blockjob --raw

export interface BlockJobInfo {
  type: string;
  cur: number;
  end: number;
}

/**
 * `virsh blockjob DOM TARGET --info --raw`: ` type=Active Block Commit` / ` cur=N` / ` end=N`
 * lines, or nothing when no job runs.
 */
export function parseBlockJobRaw(text: string): BlockJobInfo | undefined {
  const kv = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = line.trim().match(/^([a-z_]+)=(.*)$/);
    if (m) kv.set(m[1]!, m[2]!.trim());
  }
  const type = kv.get('type');
  if (type === undefined) return undefined;
  return { type, cur: Number(kv.get('cur') ?? 0), end: Number(kv.get('end') ?? 0) };
}

/** `virsh domjobinfo DOM`: the job libvirt runs for the domain (`Job type: None` when none). */
export interface DomJobInfo {
  /** `None`, `Unbounded`, `Bounded`, ... */
  type: string;
  /** `Save`, `Restore`, `Outgoing migration`, ... (libvirt >= 3.3 prints it while a job runs) */
  operation?: string;
  /** true while a job runs */
  active: boolean;
}

export function parseDomJobInfo(text: string): DomJobInfo {
  const kv = new Map<string, string>();
  for (const line of text.split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) kv.set(line.slice(0, i).trim(), line.slice(i + 1).trim());
  }
  const type = kv.get('Job type') ?? 'None';
  const operation = kv.get('Operation');
  return {
    type,
    ...(operation ? { operation } : {}),
    active: type !== 'None' && type !== 'Completed' && type !== 'Failed' && type !== 'Cancelled',
  };
}

// ---------------------------------------------------------------- virsh capabilities

/** Host CPU vendor and model from `virsh capabilities`. */
export function parseCapabilitiesCpu(xml: string): CpuInfo {
  const caps = rootElement(parseOrdered(xml), 'capabilities');
  const cpu = firstChild(firstChild(caps, 'host') ?? {}, 'cpu');
  const out: CpuInfo = {};
  const vendor = textOf(firstChild(cpu ?? {}, 'vendor'))?.trim();
  const model = textOf(firstChild(cpu ?? {}, 'model'))?.trim();
  if (vendor) out.vendor = vendor;
  if (model) out.model = model;
  return out;
}

/** The host UUID from `virsh capabilities` (useful to tell two hosts apart). */
export function parseCapabilitiesHostUuid(xml: string): string | undefined {
  const caps = rootElement(parseOrdered(xml), 'capabilities');
  return textOf(firstChild(firstChild(caps, 'host') ?? {}, 'uuid'))?.trim();
}

// ---------------------------------------------------------------- df

/** `df -B1 --output=size,avail PATH`: a header line, then `SIZE AVAIL`. */
export function parseDf(text: string): FsInfo {
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  const last = lines[lines.length - 1];
  const m = lines.length >= 2 ? last?.trim().match(/^(\d+)\s+(\d+)$/) : undefined;
  if (!m) throw new ParseError('df', JSON.stringify(text.slice(0, 200)));
  return { capacityBytes: Number(m[1]), freeBytes: Number(m[2]) };
}

/** `stat -c '%s %b %B' -- PATH`: apparent size, allocated blocks, block size. */
export function parseStatSizes(text: string): { apparentBytes: number; allocatedBytes: number } {
  const m = text.trim().match(/^(\d+) (\d+) (\d+)$/);
  if (!m) throw new ParseError('stat', JSON.stringify(text.slice(0, 200)));
  return { apparentBytes: Number(m[1]), allocatedBytes: Number(m[2]) * Number(m[3]) };
}
