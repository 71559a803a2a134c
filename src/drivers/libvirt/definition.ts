/** The libvirt driver in the contract's words: its definitions and its capabilities. */
import { StalledError } from '../../errors';
import type { DriverCapabilities, VmDefinition } from '../driver';

/** A libvirt definition: domain XML (plain `dumpxml`, no secrets), as an opaque contract value. */
export function libvirtDefinition(xml: string): VmDefinition {
  return { driver: 'libvirt', data: xml };
}

/** The domain XML of a definition; a definition of another family is refused. */
export function domainXmlOf(def: VmDefinition): string {
  if (def.driver !== 'libvirt')
    throw new StalledError('DriverMismatch', `a ${def.driver} definition cannot be used by libvirt`);
  return def.data;
}

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
