/** The libvirt driver in the contract's words: its definitions and its capabilities. */
import { StalledError } from '../../errors';
import type { VmDefinition } from '../driver';

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

export { LIBVIRT_CAPABILITIES } from '../capabilities';
