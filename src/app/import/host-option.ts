/**
 * `--host NAME=URI[,key=value...]` of `vmplace import`: a host to adopt, as the Host manifest's
 * spec. Keys: `identityFile`, `knownHostsFile` (ssh, on the management box), `transferAddress`
 * (default: the URI's host). The ssh host, user and port come from the URI, so virsh and the file
 * operations reach one machine. The spec is then checked like any Host manifest (see run.ts).
 */
import { parseConnectionUri } from '../../connection-uri';
import { quote } from '../../text';
import type { HostSpec, SshSpec } from '../../types';
import { isManifestName } from './decide';

export interface HostOption {
  name: string;
  spec: HostSpec;
}

const KEYS = new Set(['identityFile', 'knownHostsFile', 'transferAddress']);

/** Parse one `--host` value; throws an Error with a message for the operator. */
export function parseHostOption(text: string): HostOption {
  const eq = text.indexOf('=');
  if (eq <= 0)
    throw new Error(
      `--host ${quote(text)}: expected NAME=URI[,identityFile=F,knownHostsFile=F,transferAddress=A]`,
    );
  const name = text.slice(0, eq);
  if (!isManifestName(name))
    throw new Error(`--host: ${quote(name)} is not a manifest name (a lowercase DNS label)`);
  const [uri = '', ...rest] = text.slice(eq + 1).split(',');
  const parsed = parseConnectionUri(uri);
  if ('why' in parsed) throw new Error(`--host ${name}: the URI ${parsed.why}`);
  if (!parsed.parts.scheme.startsWith('qemu'))
    throw new Error(`--host ${name}: only libvirt hosts (qemu:///system, qemu+ssh://) can be imported`);
  const opts: Record<string, string> = {};
  for (const kv of rest) {
    const i = kv.indexOf('=');
    const key = i > 0 ? kv.slice(0, i) : kv;
    if (!KEYS.has(key) || i <= 0 || kv.length === i + 1)
      throw new Error(
        `--host ${name}: unknown or empty option ${quote(kv)} (known: ${[...KEYS].join(', ')})`,
      );
    if (key in opts) throw new Error(`--host ${name}: ${key} given twice`);
    opts[key] = kv.slice(i + 1);
  }
  const p = parsed.parts;
  const spec: HostSpec = { driver: 'libvirt', uri };
  if (p.scheme === 'qemu+ssh') {
    const ssh: SshSpec = {
      host: p.host,
      ...(p.user !== undefined ? { user: p.user } : {}),
      ...(p.port !== undefined ? { port: p.port } : {}),
      ...(opts.identityFile !== undefined ? { identityFile: opts.identityFile } : {}),
      ...(opts.knownHostsFile !== undefined ? { knownHostsFile: opts.knownHostsFile } : {}),
    };
    spec.ssh = ssh;
    spec.transferAddress = opts.transferAddress ?? p.host;
  } else {
    if (opts.identityFile !== undefined || opts.knownHostsFile !== undefined)
      throw new Error(`--host ${name}: ssh options need a qemu+ssh:// URI`);
    if (opts.transferAddress !== undefined) spec.transferAddress = opts.transferAddress;
  }
  return { name, spec };
}
