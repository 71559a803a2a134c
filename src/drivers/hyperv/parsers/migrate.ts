/** Readers of scripts/migrate.ts's answers (importVm, moveVmStorage and moveVmVhd answer VMs: `parseVms`). */
import { optStr, records, single, sizeOf, str } from './common';

/** What moveVm answers. */
export function parseVmMoved(result: unknown): { name: string; id: string; destinationHost: string } {
  const what = 'Move-VM';
  const o = single(result, what);
  return {
    name: str(o, 'Name', what),
    id: str(o, 'Id', what),
    destinationHost: str(o, 'DestinationHost', what),
  };
}

/** One incompatibility of a `VMCompatibilityReport` (compareVm). */
export interface HvIncompatibility {
  message: string;
  /** e.g. 33012 (the documented example: "Could not find Ethernet switch 'Production'.") */
  messageId?: number;
  /** the object at fault, e.g. `Microsoft.HyperV.PowerShell.VMNetworkAdapter` */
  source?: string;
}

/** The incompatibilities compareVm answers (empty: compatible). */
export function parseIncompatibilities(result: unknown): HvIncompatibility[] {
  const what = 'Compare-VM';
  return records(result, what).map((o) => {
    const i: HvIncompatibility = { message: str(o, 'Message', what) };
    const id = optStr(o, 'MessageId', what);
    if (id !== undefined) i.messageId = sizeOf(id, `${what} MessageId`);
    const source = optStr(o, 'Source', what);
    if (source !== undefined) i.source = source;
    return i;
  });
}
