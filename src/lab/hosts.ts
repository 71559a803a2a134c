/**
 * The two-host lab for cross-host tests and benchmarks: two hypervisor hosts (hv1, hv2) in
 * network namespaces, reachable from this process (the management box) only over ssh. See
 * scripts/lab/hosts-up.sh for what runs where and scripts/lab/hosts/boot.sh for one host.
 *
 * `ensureHosts()` brings the lab up (idempotent and fast when it is already up) and returns
 * the parsed env file: addresses, URIs, key paths, and ready-made `SshSpec`/`HostSpec` objects
 * for `SshExec` and `LibvirtDriver`. Paths in `LabHost` are host-side paths unless named
 * `...MgmtPath` (the same directory seen from the management box).
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { LibvirtDriver } from '../drivers/libvirt/driver';
import type { HostSpec, SshSpec } from '../types';
import { LAB_SCRIPTS_DIR } from './libvirt';
import { run } from './run';

export type LabHostName = 'hv1' | 'hv2';

export interface LabHost {
  name: LabHostName;
  /** network namespace the host runs in */
  ns: string;
  addr: string;
  port: number;
  /** `qemu+ssh://root@ADDR/system` */
  uri: string;
  /** the host's interface inside its namespace (for link down/up) */
  link: string;
  /** the host's own storage, host-side path (`/srv/vmplace/local`) */
  storage: string;
  /** the host's state directory, host-side path */
  stateDir: string;
  /** `storage` as seen from the management box */
  storageMgmtPath: string;
  /** host-side key this host uses to reach the other host */
  transferKey: string;
  /** host-side known_hosts listing both hosts' keys */
  transferKnownHosts: string;
  /** how the management box reaches this host (for `SshExec`) */
  ssh: SshSpec;
  /** a libvirt `HostSpec` for `new LibvirtDriver(name, hostSpec, { allowedRoots })` */
  hostSpec: HostSpec;
}

export interface HostsEnv {
  prefix: string;
  stateDir: string;
  dataDir: string;
  mgmtAddr: string;
  mgmtKey: string;
  mgmtKnownHosts: string;
  /** cluster shared storage: the same directory in both hosts, host-side path */
  csvPath: string;
  csvMgmtPath: string;
  hosts: Record<LabHostName, LabHost>;
  /** every KEY=VALUE of the env file */
  raw: Record<string, string>;
}

export const HOSTS_PREFIX = process.env.VMPLACE_HOSTS_PREFIX ?? 'vmpl';

/** Parse the env file hosts-up.sh writes (`KEY=VALUE` lines, `#` comments). Pure. */
export function parseHostsEnv(text: string): HostsEnv {
  const raw: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const l = line.trim();
    if (l === '' || l.startsWith('#')) continue;
    const i = l.indexOf('=');
    if (i <= 0) throw new Error(`hosts env: bad line ${JSON.stringify(line)}`);
    raw[l.slice(0, i)] = l.slice(i + 1);
  }
  const get = (k: string): string => {
    const v = raw[k];
    if (v === undefined || v === '') throw new Error(`hosts env: ${k} missing`);
    return v;
  };
  const mgmtKey = get('MGMT_KEY');
  const mgmtKnownHosts = get('MGMT_KNOWN_HOSTS');
  const host = (name: LabHostName): LabHost => {
    const p = name.toUpperCase();
    const addr = get(`${p}_ADDR`);
    const port = Number(get(`${p}_PORT`));
    const uri = get(`${p}_URI`);
    const ssh: SshSpec = {
      host: addr,
      user: 'root',
      port,
      identityFile: mgmtKey,
      knownHostsFile: mgmtKnownHosts,
    };
    return {
      name,
      ns: get(`${p}_NS`),
      addr,
      port,
      uri,
      link: get(`${p}_LINK`),
      storage: get(`${p}_STORAGE`),
      stateDir: get(`${p}_STATE_DIR`),
      storageMgmtPath: get(`${p}_STORAGE_MGMT_PATH`),
      transferKey: get(`${p}_TRANSFER_KEY`),
      transferKnownHosts: get(`${p}_TRANSFER_KNOWN_HOSTS`),
      ssh,
      hostSpec: { driver: 'libvirt', uri, ssh, transferAddress: addr },
    };
  };
  return {
    prefix: get('VMPLACE_HOSTS_PREFIX'),
    stateDir: get('VMPLACE_HOSTS_STATE_DIR'),
    dataDir: get('VMPLACE_HOSTS_DATA_DIR'),
    mgmtAddr: get('MGMT_ADDR'),
    mgmtKey,
    mgmtKnownHosts,
    csvPath: get('CSV_PATH'),
    csvMgmtPath: get('CSV_MGMT_PATH'),
    hosts: { hv1: host('hv1'), hv2: host('hv2') },
    raw,
  };
}

/**
 * How host `from` reaches host `to` for host-to-host copies (`targetSsh` of
 * `copyBetweenHosts`): `to`'s address, with `from`'s host-side key and known_hosts.
 */
export function transferSsh(from: LabHost, to: LabHost): SshSpec {
  return {
    host: to.addr,
    user: 'root',
    port: to.port,
    identityFile: from.transferKey,
    knownHostsFile: from.transferKnownHosts,
  };
}

/**
 * Which two-host lab: its name prefix (namespaces, bridge, state directory) and its /24. Two labs
 * with different prefixes and networks run side by side (the benchmarks use their own, so test
 * runs that bring the default lab up and down do not cut a benchmark in half).
 */
export interface HostsLabOptions {
  /** default {@link HOSTS_PREFIX} */
  prefix?: string;
  /** first three octets of a private /24, e.g. `10.231.77` (default: hosts-up.sh's) */
  net?: string;
}

const hostsUp = new Map<string, Promise<HostsEnv>>();

/**
 * Make sure the two-host lab is up and return its env. Runs scripts/lab/install.sh first when
 * libvirtd is not installed (needs root), then scripts/lab/hosts-up.sh (idempotent); once per
 * prefix and process.
 */
export function ensureHosts(opts: HostsLabOptions = {}): Promise<HostsEnv> {
  const prefix = opts.prefix ?? HOSTS_PREFIX;
  const up = async (): Promise<HostsEnv> => {
    const installed = await run('sh', [
      '-c',
      'command -v libvirtd && command -v sshd && command -v tini',
    ]).then(
      () => true,
      () => false,
    );
    if (!installed) await run('bash', [path.join(LAB_SCRIPTS_DIR, 'install.sh')], { timeoutMs: 900_000 });
    const t0 = Date.now();
    const args = ['--prefix', prefix, ...(opts.net === undefined ? [] : ['--net', opts.net])];
    const { stdout } = await run('bash', [path.join(LAB_SCRIPTS_DIR, 'hosts-up.sh'), ...args], {
      timeoutMs: 180_000,
    });
    hostsUpMs = Date.now() - t0;
    return parseHostsEnv(stdout);
  };
  let env = hostsUp.get(prefix);
  if (env === undefined) {
    env = up().catch((err: unknown) => {
      hostsUp.delete(prefix);
      throw err;
    });
    hostsUp.set(prefix, env);
  }
  return env;
}

/**
 * Stop the two-host lab `prefix` if this process brought it up (scripts/lab/hosts-down.sh;
 * keys and configuration stay for the next hosts-up.sh). Never fails: a lab that is already
 * down is fine.
 */
export async function hostsDown(opts: { prefix?: string } = {}): Promise<void> {
  const prefix = opts.prefix ?? HOSTS_PREFIX;
  if (!hostsUp.has(prefix)) return;
  hostsUp.delete(prefix);
  await run('bash', [path.join(LAB_SCRIPTS_DIR, 'hosts-down.sh'), '--prefix', prefix], {
    timeoutMs: 120_000,
  }).catch(() => undefined);
}

/** How long the last hosts-up.sh run of this process took (ms), for reports. */
export let hostsUpMs: number | undefined;

/** Take a host's link down or up (inside its namespace): the host drops off the network. */
export async function setLink(host: LabHost, state: 'up' | 'down'): Promise<void> {
  await run('ip', ['-n', host.ns, 'link', 'set', host.link, state]);
}

/** Commands (comm names) of the processes running in a host's namespace. */
export async function hostProcesses(host: LabHost): Promise<{ pid: number; comm: string }[]> {
  const { stdout } = await run('ip', ['netns', 'pids', host.ns]);
  const out: { pid: number; comm: string }[] = [];
  for (const p of stdout.split('\n').filter((l) => /^\d+$/.test(l.trim()))) {
    const comm = await fs.readFile(`/proc/${p.trim()}/comm`, 'utf8').catch(() => '');
    if (comm) out.push({ pid: Number(p), comm: comm.trim() });
  }
  return out;
}

/** Block (or unblock) `to`'s address inside `from`'s namespace: `from` can no longer reach `to`. */
export async function blockRoute(from: LabHost, to: LabHost, blocked: boolean): Promise<void> {
  await run('ip', ['-n', from.ns, 'route', blocked ? 'replace' : 'del', 'blackhole', `${to.addr}/32`]).catch(
    (err: unknown) => {
      if (blocked) throw err;
    },
  );
}

/**
 * The two lab hosts as manifests: each with its `local` storage, reached over ssh with the
 * management box's key; with `cluster`, both in cluster `c1` whose shared storage is `csv`.
 * Followed by one VirtualMachine per entry of `vms`.
 */
export function twoHostManifests(
  env: HostsEnv,
  vms: { name: string; host: LabHostName; storage: string }[],
  opts: { cluster?: boolean } = {},
): string {
  const cluster = opts.cluster ?? true;
  const hostDoc = (h: LabHostName): string => `apiVersion: vmplace.dev/v1alpha1
kind: Host
metadata: {name: ${h}}
spec:
  driver: libvirt
  uri: ${env.hosts[h].uri}
  ssh: {host: ${env.hosts[h].addr}, user: root, identityFile: ${env.mgmtKey}, knownHostsFile: ${env.mgmtKnownHosts}}
${cluster ? '  cluster: c1\n' : ''}  transferAddress: ${env.hosts[h].addr}
  storage: [{name: local, path: ${env.hosts[h].storage}}]
`;
  const clusterDoc = cluster
    ? `---
apiVersion: vmplace.dev/v1alpha1
kind: Cluster
metadata: {name: c1}
spec:
  storage: [{name: csv, path: ${env.csvPath}}]
`
    : '';
  const vmDocs = vms
    .map(
      (v) => `---
apiVersion: vmplace.dev/v1alpha1
kind: VirtualMachine
metadata: {name: ${v.name}}
spec: {host: ${v.host}, storage: ${v.storage}}
`,
    )
    .join('');
  return `${hostDoc('hv1')}---\n${hostDoc('hv2')}${clusterDoc}${vmDocs}`;
}

/**
 * argv that removes what one lab guest left in the given storage directories of a host: the
 * disks made for it (`VM-vda.qcow2`, `VM.serial.log`, …) and the folder a move made for it on
 * the target (`<storage>/VM/`). Only entries named after this VM, never a glob over the lab's
 * other runs' files (the lab's hosts keep their storage from run to run, on the disk CI runs on).
 */
export function labVmCleanupArgv(dirs: readonly string[], vm: string): string[] {
  if (!/^[A-Za-z0-9][A-Za-z0-9_-]*$/.test(vm)) throw new Error(`not a lab guest name: ${JSON.stringify(vm)}`);
  return [
    'find',
    ...dirs,
    '-maxdepth',
    '1',
    '(',
    '-name',
    vm,
    '-o',
    '-name',
    `${vm}-*`,
    '-o',
    '-name',
    `${vm}.*`,
    ')',
    '-exec',
    'rm',
    '-rf',
    '--',
    '{}',
    '+',
  ];
}

/** A libvirt driver for each lab host, allowed to write its local storage and the shared one. */
export function labHostDrivers(env: HostsEnv): Record<LabHostName, LibvirtDriver> {
  const mk = (h: LabHostName): LibvirtDriver =>
    new LibvirtDriver(h, env.hosts[h].hostSpec, { allowedRoots: [env.hosts[h].storage, env.csvPath] });
  return { hv1: mk('hv1'), hv2: mk('hv2') };
}
