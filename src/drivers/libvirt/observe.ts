/**
 * Observation: what libvirt and the host's files say, changing nothing. Functions of the
 * libvirt driver (see `driver.ts`), each taking the host's {@link LibvirtContext}.
 */
import { libvirtDefinition } from './definition';
import { CommandError, VmplaceError } from '../../errors';
import { statSize } from '../../transfer/copy-local';
import type { CpuInfo, DomainInfo, DomainState, FsInfo, ImageInfo } from '../driver';
import type { LibvirtContext } from './context';
import {
  HEADER_PROBE_BYTES,
  imageFormatOfHeader,
  parseCapabilitiesCpu,
  parseDf,
  parseDomInfo,
  parseDomState,
  parseNameList,
  parseOdHex,
  parseQemuImgInfo,
} from './parsers';
import { type ParsedDisk, parseDomainXml, parsePoolXml, referencedFiles } from './xml';

/** Pool types whose target path is a directory of image files (not a device directory). */
const FILE_POOL_TYPES = new Set(['dir', 'fs', 'netfs', 'gluster', 'vstorage']);

/**
 * `virsh pool-list --all --name`, then `pool-dumpxml` of each: the target paths of the pools
 * that hold files (active or not), by pool name, sorted by name. A pool removed between the
 * two calls is skipped.
 */
export async function storageLocations(ctx: LibvirtContext): Promise<{ name: string; path: string }[]> {
  const names = parseNameList((await ctx.virsh(['pool-list', '--all', '--name'])).stdout);
  const out: { name: string; path: string }[] = [];
  for (const name of names.sort()) {
    const r = await ctx.virsh(['pool-dumpxml', '--pool', name], { allowExitCodes: [1] });
    if (r.exitCode !== 0) {
      if (!parseNameList((await ctx.virsh(['pool-list', '--all', '--name'])).stdout).includes(name)) continue;
      throw new CommandError(
        'CommandFailed',
        ['virsh', 'pool-dumpxml', '--pool', name],
        r.exitCode,
        r.stderr,
      );
    }
    const pool = parsePoolXml(r.stdout);
    if (FILE_POOL_TYPES.has(pool.type) && pool.path) out.push({ name: pool.name || name, path: pool.path });
  }
  return out;
}

export async function listDomains(ctx: LibvirtContext): Promise<string[]> {
  return parseNameList((await ctx.virsh(['list', '--all', '--name'])).stdout);
}

/** One `domstate`; on an error, `list` tells "no such domain" (undefined) from a failure (thrown). */
export async function domainState(ctx: LibvirtContext, name: string): Promise<DomainState | undefined> {
  const r = await ctx.virsh(['domstate', '--domain', name], { allowExitCodes: [1] });
  if (r.exitCode === 0) return parseDomState(r.stdout);
  // an error: no such domain, or something else (then say so)
  if (!(await listDomains(ctx)).includes(name)) return undefined;
  throw new CommandError('CommandFailed', ['virsh', 'domstate', '--domain', name], r.exitCode, r.stderr);
}

/** `list`, then `domstate` of a listed domain (undefined when not listed). */
export async function domState(ctx: LibvirtContext, name: string): Promise<DomainState | undefined> {
  const names = await listDomains(ctx);
  if (!names.includes(name)) return undefined;
  return parseDomState((await ctx.virsh(['domstate', '--domain', name])).stdout);
}

/** The disks of the live definition (`dumpxml`). */
export async function liveDisks(ctx: LibvirtContext, domain: string): Promise<ParsedDisk[]> {
  return parseDomainXml((await ctx.virsh(['dumpxml', '--domain', domain])).stdout).disks;
}

/**
 * Name, state, persistence, memory, vcpus and disks. Disks of every kind are returned as
 * they are (block, network, volume, empty cdrom); nothing here opens the image files.
 * `xml` is the plain `dumpxml` (no `--security-info`: safe to log or store).
 */
export async function getDomain(ctx: LibvirtContext, name: string): Promise<DomainInfo | undefined> {
  let infoText = '';
  let xml = '';
  for (let attempt = 1; ; attempt++) {
    try {
      [infoText, xml] = await Promise.all([
        ctx.virsh(['dominfo', '--domain', name]).then((r) => r.stdout),
        ctx.virsh(['dumpxml', '--domain', name]).then((r) => r.stdout),
      ]);
      break;
    } catch (err) {
      // route on the world, not on virsh's message: is the domain there at all?
      if (err instanceof CommandError && !(await listDomains(ctx)).includes(name)) return undefined;
      // listed but not found a moment ago: it was being created or removed (a restore, an
      // incoming migration, an undefine); look again before calling it an error
      if (err instanceof CommandError && attempt < 3) {
        await new Promise((r) => setTimeout(r, 200 * attempt));
        continue;
      }
      throw err;
    }
  }
  const info = parseDomInfo(infoText);
  const dom = parseDomainXml(xml);
  return {
    name: dom.name || info.name,
    uuid: dom.uuid || info.uuid,
    state: info.state,
    persistent: info.persistent,
    memoryBytes: dom.memoryBytes,
    vcpus: dom.vcpus,
    ...(dom.domainType ? { domainType: dom.domainType } : {}),
    ...(info.autostart !== undefined ? { autostart: info.autostart } : {}),
    disks: dom.disks,
    ...(dom.nvram !== undefined ? { nvram: dom.nvram } : {}),
    ...(dom.uefi ? { uefi: true } : {}),
    ...(dom.tpms.length ? { tpms: dom.tpms } : {}),
    definition: libvirtDefinition(xml),
  };
}

/**
 * `qemu-img info --output=json -f FORMAT` plus `stat` for the apparent size. The format is
 * always the one libvirt declares (or qcow2 for vmplace's overlays), never guessed from the
 * contents, and the backing chain is not followed (`--backing-chain` would open whatever
 * file a header names): `backingFile` is what the image records.
 * `forceShare` defaults to TRUE (`-U`): observation must work on disks of running VMs,
 * which hold qcow2 write locks; allocation figures may then lag by QEMU's unflushed
 * metadata. Pass `forceShare: false` to get an error when someone holds the image.
 */
export async function imageInfo(
  ctx: LibvirtContext,
  path: string,
  opts: { format: string; forceShare?: boolean },
): Promise<ImageInfo> {
  const argv = [
    'qemu-img',
    'info',
    '--output=json',
    '-f',
    opts.format,
    ...(opts.forceShare === false ? [] : ['-U']),
    '--',
    path,
  ];
  const [r, size] = await Promise.all([
    ctx.run(ctx.exec, argv, { timeoutMs: ctx.quickMs }),
    statSize(ctx.exec, path),
  ]);
  return parseQemuImgInfo(r.stdout, path, size);
}

/** `od` of the first {@link HEADER_PROBE_BYTES} bytes, matched by {@link imageFormatOfHeader}. */
export async function probeFormat(ctx: LibvirtContext, path: string): Promise<string | undefined> {
  const r = await ctx.run(
    ctx.exec,
    ['od', '-An', '-v', '-tx1', '-N', String(HEADER_PROBE_BYTES), '--', path],
    {
      timeoutMs: ctx.quickMs,
    },
  );
  return imageFormatOfHeader(parseOdHex(r.stdout));
}

export async function fsInfo(ctx: LibvirtContext, path: string): Promise<FsInfo> {
  const r = await ctx.run(ctx.exec, ['df', '-B1', '--output=size,avail', '--', path], {
    timeoutMs: ctx.quickMs,
  });
  return parseDf(r.stdout);
}

/** `virsh hypervisor-cpu-compare` of the domain's `<cpu>` (a domain without one runs anywhere). */
export async function compareCpu(
  ctx: LibvirtContext,
  domainXml: string,
  virtType: string,
): Promise<{ compatible: boolean; message: string }> {
  const r = await ctx.virshWithXmlFile(
    ['hypervisor-cpu-compare', '--file', '{XML}', '--virttype', virtType],
    domainXml,
    {
      allowExitCodes: [1],
    },
  );
  const text = `${r.stdout}\n${r.stderr}`.trim();
  if (r.exitCode !== 0 && /does not contain any <cpu> element/.test(text)) {
    // no CPU requirement in the definition: the hypervisor's default model runs anywhere
    return { compatible: true, message: 'the domain asks for no particular CPU' };
  }
  if (r.exitCode !== 0) throw new VmplaceError('CpuCompareFailed', text.slice(0, 500));
  return { compatible: !/incompatible/i.test(text), message: text.split('\n')[0] ?? text };
}

export async function hostCpu(ctx: LibvirtContext): Promise<CpuInfo> {
  return parseCapabilitiesCpu((await ctx.virsh(['capabilities'])).stdout);
}

export async function fileExists(ctx: LibvirtContext, path: string): Promise<boolean> {
  const r = await ctx.run(ctx.exec, ['test', '-e', path], {
    allowExitCodes: [1],
    timeoutMs: ctx.quickMs,
  });
  return r.exitCode === 0;
}

export function fileSize(ctx: LibvirtContext, path: string): Promise<number | undefined> {
  return statSize(ctx.exec, path);
}

/**
 * Every domain's live XML (sources, the chain libvirt shows, block-job mirrors) and, for
 * persistent ones, the inactive XML too; for the file disks of the inactive definitions the
 * backing chain is read from the images (`qemu-img info -U --backing-chain` with the format
 * the definition declares), so the base of a shut-off linked clone counts as in use. An
 * image that cannot be read adds nothing beyond its own path.
 */
export async function filesInUse(ctx: LibvirtContext): Promise<Map<string, Set<string>>> {
  const used = new Map<string, Set<string>>();
  const add = (p: string, dom: string): void => {
    const set = used.get(p) ?? new Set<string>();
    set.add(dom);
    used.set(p, set);
  };
  const names = await listDomains(ctx);
  const chains = new Map<string, Promise<string[]>>();
  const chainOf = (file: string, format: string): Promise<string[]> => {
    const key = `${format}\0${file}`;
    let c = chains.get(key);
    if (!c) {
      c = ctx
        .run(
          ctx.exec,
          ['qemu-img', 'info', '--output=json', '--backing-chain', '-U', '-f', format, '--', file],
          {
            timeoutMs: ctx.quickMs,
            allowExitCodes: [1],
          },
        )
        .then(
          (r) => (r.exitCode === 0 ? chainFilesOf(r.stdout) : []),
          () => [],
        );
      chains.set(key, c);
    }
    return c;
  };
  await mapLimit(names, 8, async (name) => {
    const live = await ctx.virsh(['dumpxml', '--domain', name], { allowExitCodes: [1] });
    if (live.exitCode !== 0) return; // gone meanwhile
    for (const p of referencedFiles(live.stdout)) add(p, name);
    const inactive = await ctx.virsh(['dumpxml', '--domain', name, '--inactive'], { allowExitCodes: [1] });
    if (inactive.exitCode !== 0) return;
    for (const p of referencedFiles(inactive.stdout)) add(p, name);
    for (const d of parseDomainXml(inactive.stdout).disks) {
      if (d.type !== 'file' || !d.path || d.format !== 'qcow2') continue;
      for (const p of await chainOf(d.path, d.format)) add(p, name);
    }
  });
  return used;
}

/** The file names of a `qemu-img info --backing-chain --output=json` answer (an array, or one object). */
function chainFilesOf(json: string): string[] {
  try {
    const v = JSON.parse(json) as unknown;
    const list = Array.isArray(v) ? v : [v];
    return list
      .map((x) => (x as { filename?: unknown })?.filename)
      .filter((f): f is string => typeof f === 'string' && f.startsWith('/'));
  } catch {
    return [];
  }
}

/** Run `fn` over `items`, at most `limit` at once. */
async function mapLimit<T>(items: readonly T[], limit: number, fn: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}
