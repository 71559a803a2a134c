/**
 * The lab guest: a Debian kernel and a busybox initramfs (scripts/lab/build-guest.sh) that
 * writes verifiable records to its disks, and the checks from the host that nothing it
 * acknowledged was lost.
 *
 * The guest (scripts/lab/guest/init) writes, on every virtio disk, 4 KiB records at offset
 * `seq * 4096` (seq = 1, 2, ...) with O_DIRECT + fsync, and only after a record is durable
 * prints `ACK <disk> <seq>` on its serial console, which libvirt appends to `serialLog`.
 * So: every sequence number acked in the serial log must be readable in the disk image.
 *
 * Every external command runs through execFile with an argument array; nothing goes through a
 * shell.
 */
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { XMLBuilder } from 'fast-xml-parser';
import { ensureLab, LAB_SCRIPTS_DIR, virsh, type DiskFormat } from './libvirt';
import { run } from './run';

/** Where buildGuest() caches kernel + initramfs (content-addressed subdirectories). */
export const GUEST_CACHE_DIR = process.env.VMPLACE_LAB_GUEST_CACHE ?? '/var/cache/vmplace-lab/guest';

/** Size of one record and the first sequence number, as written by the guest. */
export const RECORD_SIZE = 4096;
/** Default last sequence number per disk in the guest (16 MiB region); disks must be larger. */
export const DEFAULT_MAX_SEQ = 4095;

export interface GuestImage {
  kernel: string;
  initrd: string;
}

let guestBuilt: Promise<GuestImage> | undefined;

/** Build (or reuse from the cache) the guest kernel + initramfs. */
export function buildGuest(outDir: string = GUEST_CACHE_DIR): Promise<GuestImage> {
  const build = async (): Promise<GuestImage> => {
    const { stdout } = await run('bash', [path.join(LAB_SCRIPTS_DIR, 'build-guest.sh'), outDir], {
      timeoutMs: 300_000, // a first build packs modules and busybox on a busy machine
    });
    const kv = new Map(
      stdout
        .split('\n')
        .filter((l) => l.includes('='))
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)] as const),
    );
    const kernel = kv.get('kernel');
    const initrd = kv.get('initrd');
    if (!kernel || !initrd) throw new Error(`build-guest.sh printed no kernel/initrd: ${stdout}`);
    return { kernel, initrd };
  };
  if (outDir !== GUEST_CACHE_DIR) return build();
  guestBuilt ??= build().catch((err: unknown) => {
    guestBuilt = undefined;
    throw err;
  });
  return guestBuilt;
}

export interface GuestDisk {
  /** Guest device name, e.g. `vda`; also the disk name in records and acks. */
  target: string;
  /** Image file on the host. */
  path: string;
  format?: DiskFormat;
  /** libvirt's `<driver cache=…>` (QEMU's host page cache use); default: libvirt's own (writeback). */
  cache?: 'none' | 'writeback' | 'writethrough' | 'directsync' | 'unsafe';
}

export interface GuestVmSpec {
  name: string;
  disks: GuestDisk[];
  /** File the serial console is appended to (`<serial type='file'>`, append='on'). */
  serialLog: string;
  memoryMiB?: number;
  vcpus?: number;
  /** Writes per second per disk (kernel cmdline `vmplace.rate`); 0 = the guest writes nothing. */
  rateHz?: number;
  /** Last sequence number per disk (kernel cmdline `vmplace.maxseq`). */
  maxSeq?: number;
  /** MiB/s of unacknowledged filler writes per disk from 32 MiB on (kernel cmdline `vmplace.bulk`). */
  bulkMiBps?: number;
  /** MiB the filler writes cycle over from 32 MiB on (kernel cmdline `vmplace.bulkspan`, guest default 64). */
  bulkSpanMiB?: number;
  /** Kernel/initrd to boot; default buildGuest(). */
  guest?: GuestImage;
  /** Start after defining (default true). */
  start?: boolean;
}

const builder = new XMLBuilder({
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  format: true,
  suppressEmptyNode: true,
});

/**
 * Domain XML for the lab guest (pure). TCG (`type='qemu'`): nested KVM hangs this kernel here.
 * Any reboot, power-off or crash destroys the domain instead of looping (`panic=-1` turns a
 * guest panic into a reboot, `on_reboot=destroy` ends it). Values are escaped by XMLBuilder.
 */
export function guestDomainXml(spec: GuestVmSpec & { guest: GuestImage }): string {
  const cmdline = [
    'console=ttyS0',
    // under a contended TCG vCPU the timer check in setup_IO_APIC panics the kernel (LAB.md)
    'no_timer_check',
    'panic=-1',
    'loglevel=4',
    `vmplace.rate=${spec.rateHz ?? 20}`,
    `vmplace.maxseq=${spec.maxSeq ?? DEFAULT_MAX_SEQ}`,
    `vmplace.bulk=${spec.bulkMiBps ?? 0}`,
    ...(spec.bulkSpanMiB === undefined ? [] : [`vmplace.bulkspan=${spec.bulkSpanMiB}`]),
  ].join(' ');
  const serialSource = { '@_path': spec.serialLog, '@_append': 'on' };
  return builder.build({
    domain: {
      '@_type': 'qemu',
      name: spec.name,
      memory: { '@_unit': 'MiB', '#text': String(spec.memoryMiB ?? 128) },
      vcpu: String(spec.vcpus ?? 1),
      os: {
        type: { '@_arch': 'x86_64', '@_machine': 'pc', '#text': 'hvm' },
        kernel: spec.guest.kernel,
        initrd: spec.guest.initrd,
        cmdline,
      },
      on_poweroff: 'destroy',
      on_reboot: 'destroy',
      on_crash: 'destroy',
      devices: {
        disk: spec.disks.map((d) => ({
          '@_type': 'file',
          '@_device': 'disk',
          driver: {
            '@_name': 'qemu',
            '@_type': d.format ?? 'qcow2',
            ...(d.cache ? { '@_cache': d.cache } : {}),
          },
          source: { '@_file': d.path },
          target: { '@_dev': d.target, '@_bus': 'virtio' },
        })),
        serial: { '@_type': 'file', source: serialSource, target: { '@_port': '0' } },
        console: { '@_type': 'file', source: serialSource, target: { '@_type': 'serial', '@_port': '0' } },
        memballoon: { '@_model': 'none' },
      },
    },
  });
}

/** Define the guest persistently (`virsh define`) and, unless `start: false`, start it. */
export async function defineGuestVm(spec: GuestVmSpec): Promise<void> {
  await ensureLab();
  const guest = spec.guest ?? (await buildGuest());
  await fs.mkdir(path.dirname(spec.serialLog), { recursive: true });
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmplace-lab-xml-'));
  try {
    const xmlFile = path.join(dir, `${spec.name}.xml`);
    await fs.writeFile(xmlFile, guestDomainXml({ ...spec, guest }));
    await virsh(['define', xmlFile]);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
  if (spec.start ?? true) await virsh(['start', spec.name]);
}

/** Parse serial console text into disk -> highest acked sequence number. */
export function parseAcks(text: string): Map<string, number> {
  const acks = new Map<string, number>();
  // anchored at a line start but tolerant of kernel messages interleaved on other lines
  for (const m of text.matchAll(/^ACK (vd[a-z]+) (\d+)\r?$/gm)) {
    const disk = m[1] as string;
    const seq = Number(m[2]);
    if (seq > (acks.get(disk) ?? 0)) acks.set(disk, seq);
  }
  return acks;
}

/** Disk -> highest acked sequence number in the serial log (empty if the log does not exist yet). */
export async function ackedSequences(serialLog: string): Promise<Map<string, number>> {
  try {
    return parseAcks(await fs.readFile(serialLog, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new Map();
    throw err;
  }
}

/**
 * Wait until `disk` has an ack with sequence >= atLeast (default 1) in the serial log; resolves
 * to the highest acked sequence. Rejects after timeoutMs (default 30 s) with the log's tail.
 */
export async function waitForAcks(
  serialLog: string,
  opts: { disk: string; atLeast?: number; timeoutMs?: number; pollMs?: number },
): Promise<number> {
  const atLeast = opts.atLeast ?? 1;
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  for (;;) {
    const seq = (await ackedSequences(serialLog)).get(opts.disk) ?? 0;
    if (seq >= atLeast) return seq;
    if (Date.now() >= deadline) {
      const tail = await fs.readFile(serialLog, 'utf8').then(
        (t) => t.split('\n').slice(-15).join('\n'),
        () => '(no serial log)',
      );
      throw new Error(
        `timed out waiting for ${opts.disk} ack >= ${atLeast} (have ${seq}) in ${serialLog}; tail:\n${tail}`,
      );
    }
    await new Promise((r) => setTimeout(r, opts.pollMs ?? 100));
  }
}

/** The exact 4096 bytes the guest writes for `seq` on `disk`. */
export function expectedRecord(disk: string, seq: number): Buffer {
  const header = `VMPLACE-REC disk=${disk} seq=${String(seq).padStart(10, '0')}`;
  return Buffer.from(header.padEnd(RECORD_SIZE - 1, ' ') + '\n', 'latin1');
}

export interface RecordCheck {
  /** Sequence numbers checked: fromSeq..upToSeq. */
  checked: number;
  /** Records that were not as written, with the first bytes found instead. */
  bad: Array<{ seq: number; found: string }>;
}

/**
 * Check that records fromSeq..upToSeq of `disk` are in the image (read through its whole
 * backing chain with `qemu-img dd -U`, so it also works on an overlay). Read after the VM is
 * destroyed or paused, or rely on the guest's flush: every acked record was flushed.
 */
export async function verifyRecords(
  imagePath: string,
  disk: string,
  upToSeq: number,
  opts: { fromSeq?: number; format?: DiskFormat } = {},
): Promise<RecordCheck> {
  const fromSeq = opts.fromSeq ?? 1;
  if (upToSeq < fromSeq) return { checked: 0, bad: [] };
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmplace-lab-verify-'));
  try {
    const raw = path.join(dir, 'region.raw');
    await run('qemu-img', [
      'dd',
      '-U',
      '-f',
      opts.format ?? 'qcow2',
      '-O',
      'raw',
      `bs=${RECORD_SIZE}`,
      // from offset 0: qemu-img 7.2 counts `count` from block 0 even with `skip`
      `count=${upToSeq + 1}`,
      `if=${imagePath}`,
      `of=${raw}`,
    ]);
    const data = await fs.readFile(raw);
    const bad: RecordCheck['bad'] = [];
    for (let seq = fromSeq; seq <= upToSeq; seq++) {
      const off = seq * RECORD_SIZE;
      const got = data.subarray(off, off + RECORD_SIZE);
      if (!got.equals(expectedRecord(disk, seq))) {
        bad.push({ seq, found: JSON.stringify(got.subarray(0, 40).toString('latin1')) });
      }
    }
    return { checked: upToSeq - fromSeq + 1, bad };
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** Size of the serial log now (0 when it does not exist yet): an offset for {@link serialSince}. */
export async function serialLogSize(serialLog: string): Promise<number> {
  return fs.stat(serialLog).then(
    (s) => s.size,
    () => 0,
  );
}

/**
 * What the serial console shows from byte `offset` on: how often the guest booted (its `READY`
 * line), every place where a disk's acknowledged sequence went back, and the last sequence per
 * disk. A guest booted afresh instead of restored writes its records from 1 again at the same
 * offsets, so reading the records back cannot see it; this can (LAB.md, "Facts added later").
 */
export async function serialSince(
  serialLog: string,
  offset: number,
): Promise<{ boots: number; wentBack: string[]; last: Map<string, number> }> {
  const text = (await fs.readFile(serialLog)).subarray(offset).toString('latin1');
  const lines = text.split('\n');
  if (offset > 0) lines.shift(); // may be the tail of a line that began before the offset
  let boots = 0;
  const wentBack: string[] = [];
  const last = new Map<string, number>();
  for (const raw of lines) {
    const line = raw.replace(/\r$/, '');
    if (line.startsWith('READY ')) boots++;
    const m = line.match(/^ACK (vd[a-z]+) (\d+)$/);
    if (!m) continue;
    const disk = m[1] as string;
    const seq = Number(m[2]);
    const prev = last.get(disk);
    if (prev !== undefined && seq < prev) wentBack.push(`${disk}: ${prev} then ${seq}`);
    last.set(disk, seq);
  }
  return { boots, wentBack, last };
}
