/**
 * Pure pre-flight decisions about what a disk's format and a domain's host-bound state allow.
 * Preflight observes (the domain's XML, the first bytes of each disk), calls these, and throws
 * the findings as `StalledError`s.
 */
import type { DomainInfo } from '../drivers/driver';

/** What Preflight does about a disk, given its declared format and what its first bytes say. */
export type DiskFormatVerdict =
  { ok: true; warning?: string } | { ok: false; reason: 'DiskFormatMismatch'; message: string };

/**
 * Every image is opened as the format libvirt declares for it; the probe (`found`, from the
 * file's magic bytes) only decides whether the move may start:
 * - declared = found, or declared raw with no magic: a plain move.
 * - declared raw, but the content starts with an image header (qcow2, vmdk...): the guest owns
 *   every byte of a raw disk, including a header it wrote (a nested image, an installer).
 *   It moves as raw, byte for byte, with a warning; nothing ever opens it as what it claims.
 * - declared another format (qcow2...) that the first bytes do not confirm: blocked. QEMU
 *   would open it as the declared format and vmplace cannot tell what the file really holds;
 *   copying it on would only move the inconsistency (and its checks would fail after the point
 *   of no return).
 */
export function judgeDiskFormat(declared: string, found: string | undefined): DiskFormatVerdict {
  if (declared === 'raw') {
    if (found === undefined) return { ok: true };
    return {
      ok: true,
      warning: `the raw disk's content starts with a ${found} header (written by its guest); it moves as raw, byte for byte`,
    };
  }
  if (found === declared) return { ok: true };
  return {
    ok: false,
    reason: 'DiskFormatMismatch',
    message:
      found === undefined
        ? `declared ${declared}, but the file does not start with a ${declared} header`
        : `declared ${declared}, but the file starts with a ${found} header`,
  };
}

/** A domain's state that lives on its host outside its disks, and why it cannot move along. */
export interface HostStateFinding {
  reason: 'NvramNotMovable' | 'TpmStateNotMovable';
  message: string;
}

/**
 * State vmplace does not carry between hosts: UEFI variables (`<os><nvram>`, or firmware that
 * will create them) and a TPM (an emulated TPM's swtpm state under libvirt's directory, or a
 * host TPM passed through). A move to another host would start the VM with fresh variables (boot
 * entries, Secure Boot keys) or a different TPM (sealed secrets, disk encryption keys lost), so
 * such a move is blocked before anything is touched. Moves within one host keep both in place.
 */
export function hostStateFindings(dom: Pick<DomainInfo, 'nvram' | 'uefi' | 'tpms'>): HostStateFinding[] {
  const out: HostStateFinding[] = [];
  if (dom.nvram !== undefined || dom.uefi) {
    out.push({
      reason: 'NvramNotMovable',
      message: `UEFI variables${dom.nvram !== undefined ? ` (${dom.nvram})` : ''} stay on the host; vmplace does not move NVRAM between hosts`,
    });
  }
  for (const t of dom.tpms ?? []) {
    out.push({
      reason: 'TpmStateNotMovable',
      message: `a TPM (${t.model ?? 'tpm'}, backend ${t.backend}) keeps its state on the host; vmplace does not move TPM state between hosts`,
    });
  }
  return out;
}
