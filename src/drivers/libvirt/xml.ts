/**
 * Domain XML, read and rewritten through a real XML parser (fast-xml-parser in
 * order-preserving mode), never with regular expressions: attribute values may hold `'`,
 * `&`, `,` or spaces, and element order matters to libvirt.
 */
import { XMLBuilder, XMLParser } from 'fast-xml-parser';

import { StalledError } from '../../errors';
import type { DomainDisk } from '../driver';

const ORDERED_OPTIONS = {
  preserveOrder: true,
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: false,
  commentPropName: '#comment',
  cdataPropName: '#cdata',
  processEntities: true,
  htmlEntities: false,
} as const;

/** One element of the order-preserving tree: `{ tag: children, ':@': { '@_attr': value } }`. */
export type XmlNode = Record<string, unknown>;

/** Parse into the order-preserving tree (attribute values and text are entity-decoded). */
export function parseOrdered(xml: string): XmlNode[] {
  const tree: unknown = new XMLParser(ORDERED_OPTIONS).parse(xml, true);
  if (!Array.isArray(tree)) throw new TypeError('XML parser returned no tree');
  return tree as XmlNode[];
}

/** Build XML from the order-preserving tree; empty elements become `<x/>`, entities re-encoded. */
export function buildOrdered(tree: XmlNode[]): string {
  const out = new XMLBuilder({ ...ORDERED_OPTIONS, format: false, suppressEmptyNode: true }).build(tree);
  return out.endsWith('\n') ? out : `${out}\n`;
}

/** The element name of a node, or undefined for text, comments and CDATA. */
export function tagOf(node: XmlNode): string | undefined {
  for (const k of Object.keys(node)) {
    if (k !== ':@' && !k.startsWith('#')) return k;
  }
  return undefined;
}

export function childrenOf(node: XmlNode): XmlNode[] {
  const tag = tagOf(node);
  const kids = tag === undefined ? undefined : node[tag];
  return Array.isArray(kids) ? (kids as XmlNode[]) : [];
}

export function childElements(node: XmlNode, tag: string): XmlNode[] {
  return childrenOf(node).filter((c) => tagOf(c) === tag);
}

export function firstChild(node: XmlNode, tag: string): XmlNode | undefined {
  return childrenOf(node).find((c) => tagOf(c) === tag);
}

export function attrOf(node: XmlNode | undefined, name: string): string | undefined {
  if (!node) return undefined;
  const attrs = node[':@'] as Record<string, unknown> | undefined;
  const v = attrs?.[`@_${name}`];
  // parseAttributeValue is off: attribute values are strings
  return typeof v === 'string' ? v : undefined;
}

function setAttr(node: XmlNode, name: string, value: string): void {
  const attrs = (node[':@'] as Record<string, unknown> | undefined) ?? {};
  attrs[`@_${name}`] = value;
  node[':@'] = attrs;
}

function deleteAttr(node: XmlNode, name: string): void {
  const attrs = node[':@'] as Record<string, unknown> | undefined;
  if (attrs) delete attrs[`@_${name}`];
}

/** Concatenated text content of an element (direct text children only). */
export function textOf(node: XmlNode | undefined): string | undefined {
  if (!node) return undefined;
  const parts = childrenOf(node)
    .map((c) => c['#text'])
    .filter((t) => t !== undefined)
    .map(String);
  return parts.length ? parts.join('') : undefined;
}

/** The single root element of a document (skips the declaration, comments and whitespace). */
export function rootElement(tree: XmlNode[], expected?: string): XmlNode {
  const root = tree.find((n) => {
    const t = tagOf(n);
    return t !== undefined && !t.startsWith('?');
  });
  if (!root) throw new TypeError('XML document has no root element');
  if (expected !== undefined && tagOf(root) !== expected) {
    throw new TypeError(`expected <${expected}>, found <${tagOf(root)}>`);
  }
  return root;
}

// ---------------------------------------------------------------- domain XML

/** libvirt's memory units (domain XML `unit=`); bare numbers are KiB. */
const UNIT_BYTES: Record<string, number> = {
  b: 1,
  bytes: 1,
  kb: 1e3,
  k: 1024,
  kib: 1024,
  mb: 1e6,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  gb: 1e9,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  tb: 1e12,
  t: 1024 ** 4,
  tib: 1024 ** 4,
  pb: 1e15,
  p: 1024 ** 5,
  pib: 1024 ** 5,
  eb: 1e18,
  e: 1024 ** 6,
  eib: 1024 ** 6,
};

/** Bytes of a libvirt scaled integer such as `<memory unit='MiB'>64</memory>`. */
export function scaledBytes(value: string | undefined, unit: string | undefined): number | undefined {
  if (value === undefined || !/^\s*\d+\s*$/.test(value)) return undefined;
  // lower-cased, 'KB' is 1000 and 'k'/'KiB' are 1024, as in libvirt
  const mult = UNIT_BYTES[(unit ?? 'KiB').toLowerCase()];
  if (mult === undefined) return undefined;
  return Number(value.trim()) * mult;
}

/** A disk as found in domain XML; `DomainDisk` plus the non-file sources, for findings. */
export interface ParsedDisk extends DomainDisk {
  /** `<source dev=>` for type=block */
  sourceDev?: string;
  /** `<source name=>` (network) or `pool/volume` (volume) */
  sourceName?: string;
  /** network protocol (nbd, rbd, iscsi...) */
  protocol?: string;
  /** `<source index=>` in live XML */
  sourceIndex?: string;
  /** file paths of the backing chain shown in the XML, nearest first */
  backingPaths: string[];
  shareable: boolean;
  /** `<mirror file=>` of a running block copy (live XML only) */
  mirrorPath?: string;
}

export interface ParsedDomain {
  name: string;
  uuid: string;
  /** `<domain type=>`: kvm | qemu | ... */
  domainType?: string;
  /** `id=` is present only on running domains */
  id?: string;
  memoryBytes: number;
  currentMemoryBytes?: number;
  /** vcpus online (`current=` when present) */
  vcpus: number;
  maxVcpus: number;
  disks: ParsedDisk[];
  /** `<os><nvram>`: the path of the UEFI variables file (text, or `<source file=>`) */
  nvram?: string;
  /** firmware that keeps variables: `<os firmware='efi'>`, or a pflash loader that is not stateless */
  uefi: boolean;
  /** `<devices><tpm>`: model and backend type (emulator, passthrough, external) */
  tpms: { model?: string; backend: string }[];
}

function parseDisk(disk: XmlNode): ParsedDisk {
  const source = firstChild(disk, 'source');
  const type = attrOf(disk, 'type') ?? 'file';
  const backingPaths: string[] = [];
  let bs = firstChild(disk, 'backingStore');
  const hasBackingStore = bs !== undefined && firstChild(bs, 'source') !== undefined;
  for (let depth = 0; bs && depth < 64; depth++) {
    const src = firstChild(bs, 'source');
    const file = attrOf(src, 'file') ?? attrOf(src, 'dev');
    if (file !== undefined) backingPaths.push(file);
    bs = firstChild(bs, 'backingStore');
  }
  const pool = attrOf(source, 'pool');
  const volume = attrOf(source, 'volume');
  const d: ParsedDisk = {
    target: attrOf(firstChild(disk, 'target'), 'dev') ?? '',
    type,
    device: attrOf(disk, 'device') ?? 'disk',
    readonly: firstChild(disk, 'readonly') !== undefined,
    hasBackingStore,
    backingPaths,
    shareable: firstChild(disk, 'shareable') !== undefined,
  };
  const file = type === 'file' ? attrOf(source, 'file') : undefined;
  if (file !== undefined) d.path = file;
  const format = attrOf(firstChild(disk, 'driver'), 'type');
  if (format !== undefined) d.format = format;
  const dev = attrOf(source, 'dev');
  if (dev !== undefined) d.sourceDev = dev;
  const name =
    pool !== undefined || volume !== undefined ? `${pool ?? ''}/${volume ?? ''}` : attrOf(source, 'name');
  if (name !== undefined) d.sourceName = name;
  const protocol = attrOf(source, 'protocol');
  if (protocol !== undefined) d.protocol = protocol;
  const index = attrOf(source, 'index');
  if (index !== undefined) d.sourceIndex = index;
  const mirror = firstChild(disk, 'mirror');
  const mirrorPath = attrOf(mirror, 'file') ?? attrOf(firstChild(mirror ?? {}, 'source'), 'file');
  if (mirrorPath !== undefined) d.mirrorPath = mirrorPath;
  return d;
}

/**
 * Read what vmplace needs from domain XML (live, inactive, or from a saved state). Never
 * throws on odd disks (block, network, volume, empty cdrom): they are returned as they are,
 * for pre-flight to turn into findings. Throws only on XML that is not a `<domain>`.
 */
export function parseDomainXml(xml: string): ParsedDomain {
  const dom = rootElement(parseOrdered(xml), 'domain');
  const memory = firstChild(dom, 'memory');
  const current = firstChild(dom, 'currentMemory');
  const vcpu = firstChild(dom, 'vcpu');
  const maxVcpus = Number(textOf(vcpu)?.trim() ?? '1') || 1;
  const currentVcpus = attrOf(vcpu, 'current');
  const devices = firstChild(dom, 'devices');
  const out: ParsedDomain = {
    name: textOf(firstChild(dom, 'name'))?.trim() ?? '',
    uuid: textOf(firstChild(dom, 'uuid'))?.trim() ?? '',
    memoryBytes: scaledBytes(textOf(memory), attrOf(memory, 'unit')) ?? 0,
    vcpus: currentVcpus !== undefined && /^\d+$/.test(currentVcpus) ? Number(currentVcpus) : maxVcpus,
    maxVcpus,
    disks: devices ? childElements(devices, 'disk').map(parseDisk) : [],
    uefi: false,
    tpms: devices
      ? childElements(devices, 'tpm').map((t) => {
          const model = attrOf(t, 'model');
          return {
            ...(model !== undefined ? { model } : {}),
            backend: attrOf(firstChild(t, 'backend'), 'type') ?? 'unknown',
          };
        })
      : [],
  };
  const os = firstChild(dom, 'os');
  if (os) {
    const loader = firstChild(os, 'loader');
    const nvram = firstChild(os, 'nvram');
    const stateless = attrOf(loader, 'stateless') === 'yes';
    out.uefi =
      !stateless &&
      (attrOf(os, 'firmware') === 'efi' || attrOf(loader, 'type') === 'pflash' || nvram !== undefined);
    const nvramPath = textOf(nvram)?.trim() || attrOf(firstChild(nvram ?? {}, 'source'), 'file');
    if (nvram && nvramPath) out.nvram = nvramPath;
  }
  const cur = scaledBytes(textOf(current), attrOf(current, 'unit'));
  if (cur !== undefined) out.currentMemoryBytes = cur;
  const domainType = attrOf(dom, 'type');
  if (domainType !== undefined) out.domainType = domainType;
  const id = attrOf(dom, 'id');
  if (id !== undefined) out.id = id;
  return out;
}

// ---------------------------------------------------------------- storage pool XML

/** What vmplace reads of a storage pool (`virsh pool-dumpxml`). */
export interface ParsedPool {
  name: string;
  /** pool type: dir | fs | netfs | logical | disk | iscsi | rbd ... */
  type: string;
  /** `<target><path>`: where the pool's volumes are on the host (a device directory for some types) */
  path?: string;
}

/** Read a `<pool>` document. Throws only on XML that is not a `<pool>`. */
export function parsePoolXml(xml: string): ParsedPool {
  const pool = rootElement(parseOrdered(xml), 'pool');
  const path = textOf(firstChild(firstChild(pool, 'target') ?? {}, 'path'))?.trim();
  return {
    name: textOf(firstChild(pool, 'name'))?.trim() ?? '',
    type: attrOf(pool, 'type') ?? '',
    ...(path ? { path } : {}),
  };
}

/**
 * Every file a domain XML refers to as disk storage: each disk's source (file or block
 * device), the backing chain the XML shows, and a block job's mirror target.
 */
export function referencedFiles(xml: string): string[] {
  const out = new Set<string>();
  for (const d of parseDomainXml(xml).disks) {
    for (const p of [d.path, d.sourceDev, ...d.backingPaths, d.mirrorPath]) if (p) out.add(p);
  }
  return [...out];
}

/**
 * Point the listed disks (by target dev) at new files: set `<source file=>`, drop the stale
 * `index=` of that source, and remove every `<backingStore>` under those disks so libvirt
 * reads the chain from the images again (after `qemu-img rebase -u` it differs). Everything
 * else — other disks, attribute order, element order, comments — is kept. With `formats`, the
 * listed disks' `<driver type=>` is set too.
 *
 * Throws `StalledError('DiskNotFound')` when a target in `map` is not in the XML, and
 * `StalledError('DiskNotFile')` when a mapped disk is not `type='file'`.
 */
export function rewriteDiskPaths(
  xml: string,
  map: Readonly<Record<string, string>>,
  formats: Readonly<Record<string, string>> = {},
): string {
  const tree = parseOrdered(xml);
  const dom = rootElement(tree, 'domain');
  const devices = firstChild(dom, 'devices');
  const seen = new Set<string>();
  for (const disk of devices ? childElements(devices, 'disk') : []) {
    const target = attrOf(firstChild(disk, 'target'), 'dev');
    if (target === undefined || !Object.prototype.hasOwnProperty.call(map, target)) continue;
    const newPath = map[target]!;
    if ((attrOf(disk, 'type') ?? 'file') !== 'file') {
      throw new StalledError('DiskNotFile', `disk ${target} is type=${attrOf(disk, 'type')}, not a file`);
    }
    const kids = childrenOf(disk);
    let source = firstChild(disk, 'source');
    if (!source) {
      // an empty cdrom gets a source; insert it after <driver> like libvirt writes it
      source = { source: [], ':@': {} };
      const at = kids.findIndex((k) => tagOf(k) === 'driver');
      kids.splice(at + 1, 0, source);
    }
    setAttr(source, 'file', newPath);
    deleteAttr(source, 'index');
    // the image's format goes with its path: a raw base named where a qcow2 layer was must be
    // opened as raw (never as the qcow2 a guest may have written into it)
    const format = Object.prototype.hasOwnProperty.call(formats, target) ? formats[target] : undefined;
    if (format !== undefined) {
      let driver = firstChild(disk, 'driver');
      if (!driver) {
        driver = { driver: [], ':@': { '@_name': 'qemu' } };
        kids.splice(0, 0, driver);
      }
      setAttr(driver, 'type', format);
    }
    // remove backingStore elements and the whitespace text right before each of them
    for (let i = kids.length - 1; i >= 0; i--) {
      if (tagOf(kids[i]!) !== 'backingStore') continue;
      const prev = kids[i - 1];
      const ws =
        prev !== undefined &&
        tagOf(prev) === undefined &&
        typeof prev['#text'] === 'string' &&
        /^\s*$/.test(prev['#text']);
      kids.splice(ws ? i - 1 : i, ws ? 2 : 1);
    }
    seen.add(target);
  }
  const missing = Object.keys(map).filter((t) => !seen.has(t));
  if (missing.length) {
    throw new StalledError('DiskNotFound', `domain XML has no disk with target ${missing.join(', ')}`);
  }
  return buildOrdered(tree);
}
