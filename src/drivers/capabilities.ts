/**
 * What each hypervisor driver can do (`DriverCapabilities`), by the `driver` a Host or Cluster
 * manifest names: pure data, read by the drivers themselves and by the offline planner (which
 * shows in a pull request the moves Preflight would refuse).
 */
import type { DriverCapabilities } from './driver';

export const LIBVIRT_CAPABILITIES: DriverCapabilities = Object.freeze({
  family: 'libvirt',
  liveStorageMove: true, // blockcopy --pivot
  liveMigration: true, // migrate --live --copy-storage-all
  stateOnSharedStorage: true, // a save file on NFS/shared storage restores on another host
  pausedMigration: true, // migrate --unsafe of a paused domain onto copied images
  liveOntoLayers: true, // migrate --live --copy-storage-inc onto copied backing chains
  quickStorageMigration: true, // restore --xml onto the copied disks on another host
  quickWithinHost: true, // the same restore --xml, on the host the VM is on
  defineOnOtherHost: true, // define from the source's inactive XML
});

export const HYPERV_CAPABILITIES: DriverCapabilities = Object.freeze({
  family: 'hyperv',
  liveStorageMove: true, // Move-VMStorage -VHDs
  liveMigration: true, // Move-VM -IncludeStorage
  // a saved state stays registered with the source's VM until the move commits: the target
  // imports its own copy, never the files the source still holds (even on a Cluster Shared Volume)
  stateOnSharedStorage: false,
  pausedMigration: false, // Hyper-V has no migration of a paused VM onto copied disks
  liveOntoLayers: false, // nor a live migration onto differencing disks already there
  // the saved VM's configuration (and vmplace's checkpoint's) copied with its state and
  // registered on the target: Compare-VM, the drives pointed at the copies, Import-VM -Register
  quickStorageMigration: true,
  // a saved VM registered here runs only from the disks it was saved on; importing its copy
  // beside it needs a new VM id (Import-VM -GenerateNewId): not done; Move-VMStorage moves live
  quickWithinHost: false,
  defineOnOtherHost: false, // a shut-off VM's configuration is not carried (no saved state to carry it with)
});

/** The capabilities of the driver a manifest names (`libvirt` when it names none); undefined for an unknown one. */
export function capabilitiesOf(driver: string | undefined): DriverCapabilities | undefined {
  if (driver === undefined || driver === 'libvirt') return LIBVIRT_CAPABILITIES;
  if (driver === 'hyperv') return HYPERV_CAPABILITIES;
  return undefined;
}

/**
 * Can these capabilities run Quick Storage Migration for a move across hosts (`cross`) or within
 * one host? One rule for Preflight (`chooseStrategy`) and the offline plan.
 */
export function quickSupported(
  caps: Pick<DriverCapabilities, 'quickStorageMigration' | 'quickWithinHost'>,
  cross: boolean,
): boolean {
  return caps.quickStorageMigration && (cross || caps.quickWithinHost);
}
