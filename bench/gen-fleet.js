#!/usr/bin/env node
/**
 * Generate a synthetic vmplace repository for load benchmarks: manifests (clusters, hosts, VMs
 * spread over ~50 files) and status files (one per VM and per host). Plain Node, no dependencies.
 *
 *   node bench/gen-fleet.js OUT_DIR [--vms 10000] [--hosts 500] [--clusters 20] [--files 50]
 *
 * Hosts are spread evenly over the clusters except every 25th, which is standalone. Each VM
 * desires a host and a storage; its status places it somewhere, so a planner finds a mix of
 * unchanged VMs and same-host, cross-host and cross-cluster moves.
 */
'use strict';
const fs = require('fs');
const path = require('path');

function parseArgs(argv) {
  const opts = { out: undefined, vms: 10000, hosts: 500, clusters: 20, files: 50 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a.startsWith('--')) {
      const key = a.slice(2);
      if (!(key in opts) || key === 'out') throw new Error(`unknown option ${a}`);
      const n = Number(argv[++i]);
      if (!Number.isInteger(n) || n < 1) throw new Error(`${a} needs a positive whole number`);
      opts[key] = n;
    } else if (opts.out === undefined) opts.out = a;
    else throw new Error(`unexpected argument ${a}`);
  }
  if (!opts.out)
    throw new Error(
      'usage: node bench/gen-fleet.js OUT_DIR [--vms N] [--hosts N] [--clusters N] [--files N]',
    );
  return opts;
}

const pad = (n, w) => String(n).padStart(w, '0');
const GiB = 1024 * 1024 * 1024;

function generate(opts) {
  const root = path.resolve(opts.out);
  for (const d of ['manifests', 'status/vms', 'status/hosts'])
    fs.mkdirSync(path.join(root, d), { recursive: true });
  const clusterName = (c) => `c${pad(c, 3)}`;
  const hostName = (h) => `hv-${pad(h, 4)}`;
  // topology
  const hosts = [];
  for (let h = 0; h < opts.hosts; h++) {
    const standalone = h % 25 === 24;
    hosts.push({
      name: hostName(h),
      cluster: standalone ? undefined : clusterName(h % opts.clusters),
      ip: `10.${(h >> 8) & 255}.${h & 255}.10`,
    });
  }
  const storageOf = (host) => (host.cluster ? ['local', 'csv1', 'csv2'] : ['local', 'data']);
  const pathOf = (host, s) =>
    s === 'csv1' || s === 'csv2' ? `/srv/${host.cluster}/${s}` : `/var/lib/vmplace/${s}`;

  // clusters: one file
  let text = '';
  for (let c = 0; c < opts.clusters; c++) {
    text += `---\napiVersion: vmplace.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: ${clusterName(c)}\nspec:\n  storage:\n`;
    for (const s of ['csv1', 'csv2']) text += `    - name: ${s}\n      path: /srv/${clusterName(c)}/${s}\n`;
  }
  fs.writeFileSync(path.join(root, 'manifests', 'clusters.yaml'), text);

  // hosts: 100 per file
  const hostFiles = Math.max(1, Math.ceil(opts.hosts / 100));
  for (let f = 0; f < hostFiles; f++) {
    text = '';
    for (const host of hosts.slice(f * 100, (f + 1) * 100)) {
      text += `---\napiVersion: vmplace.dev/v1alpha1\nkind: Host\nmetadata:\n  name: ${host.name}\n  labels:\n    rack: r${pad(hosts.indexOf(host) % 40, 2)}\n`;
      text += `spec:\n  driver: libvirt\n  uri: qemu+ssh://root@${host.ip}/system\n  ssh:\n    host: ${host.ip}\n    user: root\n`;
      text += `    identityFile: /etc/vmplace/id_ed25519\n`;
      if (host.cluster) text += `  cluster: ${host.cluster}\n`;
      text += `  transferAddress: ${host.ip}\n  storage:\n    - name: local\n      path: /var/lib/vmplace/local\n`;
      if (!host.cluster) text += `    - name: data\n      path: /var/lib/vmplace/data\n`;
    }
    fs.writeFileSync(path.join(root, 'manifests', `hosts-${pad(f, 2)}.yaml`), text);
  }

  // VMs: the remaining files
  const vmFiles = Math.max(1, opts.files - 1 - hostFiles);
  const perFile = Math.ceil(opts.vms / vmFiles);
  const strategies = ['quick', 'live', 'cold', 'auto'];
  for (let f = 0; f < vmFiles; f++) {
    text = '';
    for (let v = f * perFile; v < Math.min(opts.vms, (f + 1) * perFile); v++) {
      const name = `vm-${pad(v, 5)}`;
      const desired = hosts[v % hosts.length];
      const storages = storageOf(desired);
      const storage = storages[v % storages.length];
      text += `---\napiVersion: vmplace.dev/v1alpha1\nkind: VirtualMachine\nmetadata:\n  name: ${name}\n  labels:\n    app: app-${v % 50}\n`;
      text += `spec:\n  host: ${desired.name}\n  storage: ${storage}\n`;
      if (v % 7 === 0) text += `  disks:\n    vdb:\n      storage: local\n`;
      if (v % 3 === 0) text += `  strategy: ${strategies[v % 4]}\n`;
      if (v % 97 === 0) text += `  suspend: true\n`;

      // actual placement: 70% at the desired place, the rest moved around
      const r = v % 10;
      const actualHost = r < 7 || r === 7 ? desired : hosts[(v * 7 + 3) % hosts.length];
      const actualStorages = storageOf(actualHost);
      const actualStorage = r < 7 ? storage : actualStorages[(v + 1) % actualStorages.length];
      const disks = ['vda', 'vdb'].map((t, i) => {
        const s = i === 1 && v % 7 === 0 && r < 7 ? 'local' : actualStorage;
        return (
          `    - target: ${t}\n      path: ${pathOf(actualHost, s)}/${name}-${t}.qcow2\n      storage: ${s}\n` +
          `      format: qcow2\n      virtualBytes: ${(20 + (v % 5) * 10) * GiB}\n      allocatedBytes: ${(1 + (v % 9)) * GiB}\n`
        );
      });
      const placed = r < 7;
      fs.writeFileSync(
        path.join(root, 'status', 'vms', `${name}.yaml`),
        `apiVersion: vmplace.dev/v1alpha1\nkind: VirtualMachineStatus\nmetadata:\n  name: ${name}\n` +
          `observedRevision: 0123456789abcdef0123456789abcdef01234567\nplacement:\n  host: ${actualHost.name}\n` +
          `  memoryBytes: ${(1 + (v % 8)) * GiB}\n  disks:\n${disks.join('')}phase: ${placed ? 'Placed' : 'Pending'}\n` +
          `conditions:\n  - type: Placed\n    status: '${placed ? 'True' : 'False'}'\n    reason: ${placed ? 'AtDesiredPlacement' : 'PlacementDiffers'}\n` +
          `    message: generated\n    lastTransitionTime: 2025-01-15T10:00:00Z\n`,
      );
    }
    fs.writeFileSync(path.join(root, 'manifests', `vms-${pad(f, 2)}.yaml`), text);
  }

  // host status
  for (const host of hosts) {
    let s = `apiVersion: vmplace.dev/v1alpha1\nkind: HostStatus\nmetadata:\n  name: ${host.name}\nobservedAt: 2025-01-15T10:00:00Z\n`;
    s += `cpu:\n  vendor: AMD\n  model: EPYC-Milan\nstorage:\n`;
    for (const st of storageOf(host)) {
      s += `  - name: ${st}\n    path: ${pathOf(host, st)}\n    capacityBytes: ${4096 * GiB}\n    freeBytes: ${2048 * GiB}\n`;
    }
    fs.writeFileSync(path.join(root, 'status', 'hosts', `${host.name}.yaml`), s);
  }
  return { root, files: 1 + hostFiles + vmFiles };
}

if (require.main === module) {
  try {
    const opts = parseArgs(process.argv.slice(2));
    const { root, files } = generate(opts);
    console.log(
      `wrote ${opts.vms} VMs, ${opts.hosts} hosts, ${opts.clusters} clusters in ${files} manifest files under ${root}`,
    );
  } catch (err) {
    console.error(String(err && err.message ? err.message : err));
    process.exit(2);
  }
}

module.exports = { generate };
