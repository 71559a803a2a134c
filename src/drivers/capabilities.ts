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
  quickStorageMigration: true, // restore --xml onto the copied disks, here or on another host
  defineOnOtherHost: true, // define from the source's inactive XML
});

export const HYPERV_CAPABILITIES: DriverCapabilities = Object.freeze({
  family: 'hyperv',
  liveStorageMove: true, // Move-VMStorage -VHDs
  liveMigration: true, // Move-VM -IncludeStorage
  stateOnSharedStorage: true, // a Cluster Shared Volume is seen by every node
  pausedMigration: false, // Hyper-V has no migration of a paused VM onto copied disks
  liveOntoLayers: false, // nor a live migration onto differencing disks already there
  // Hyper-V keeps a saved VM on its disks; restoring it on copies (here or on another host)
  // needs its configuration imported (Compare-VM fix-ups, Import-VM), not built without a host
  quickStorageMigration: false,
  defineOnOtherHost: false, // registering on another host is Import-VM too
});

/** The capabilities of the driver a manifest names (`libvirt` when it names none); undefined for an unknown one. */
export function capabilitiesOf(driver: string | undefined): DriverCapabilities | undefined {
  if (driver === undefined || driver === 'libvirt') return LIBVIRT_CAPABILITIES;
  if (driver === 'hyperv') return HYPERV_CAPABILITIES;
  return undefined;
}
