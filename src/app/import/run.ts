/**
 * `vmplace import`, the effects: connect to every host through the driver factory, observe it,
 * decide what to add (decide.ts), check the result the way `vmplace validate` would (in a
 * scratch copy of `manifests/`, before anything is written), then write the new manifests and
 * the status files the daemon would write for them (the reconciler's observation, plan and
 * status composition). Writes only below REPO/manifests and REPO/status, through the link-safe
 * writer; never replaces a file that exists.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Logger } from 'pino';
import type { HypervisorDriver } from '../../drivers/driver';
import { createDrivers } from '../../drivers/factory';
import { isInside } from '../../drivers/paths';
import { describeError } from '../../errors';
import { observe } from '../../inventory/observe';
import { loadDesiredState, MANIFESTS_DIR, validateAgainstSchema } from '../../manifests';
import { checkHostValues } from '../../manifests/checks';
import { assertRepo } from '../../manifests/load';
import { planMigrations } from '../../planner/plan';
import { composeAll, stabiliseHosts, toActual } from '../../reconciler/compose-status';
import { loadSettings } from '../../settings';
import { loadActualState, writeRepoFile, writeStatusFiles } from '../../status/files';
import {
  API_VERSION,
  type DesiredState,
  type Host,
  type HostStatus,
  type Plan,
  type Problem,
  type VirtualMachineStatus,
} from '../../types';
import { gitRevision, trustFor } from '../commands';
import { decideImport, type ImportNote, type ObservedHost } from './decide';
import type { HostOption } from './host-option';
import { type ManifestFile, renderCluster, renderHost, renderVm } from './render';

export interface ImportRequest {
  root: string;
  hosts: HostOption[];
  cluster?: string;
  shared: string[];
  dryRun: boolean;
  trustFile?: string;
  stateDir?: string;
  logger: Logger;
  /** the driver of a host (tests: the FAKE); default: the driver factory */
  driverFor?: (name: string, desired: DesiredState) => HypervisorDriver | undefined;
  now?: () => Date;
}

export interface ImportReport {
  /** problems with the input (the repository's manifests, a --host): nothing was done */
  problems: Problem[];
  /** manifests added (with --dry-run: that would be added) */
  manifests: ManifestFile[];
  /** status files written (with --dry-run: that would be written), relative paths */
  status: string[];
  notes: ImportNote[];
  /** the plan right after the import (an imported VM in it is a bug, reported as a note) */
  plan?: Plan;
}

const NO_MANIFESTS = 'manifests/ directory not found';

/** A repository-relative path as the loader reports it (`manifests/hosts/hv1.yaml`). */
const relOf = (f: ManifestFile): string => f.rel;

export async function runImport(req: ImportRequest): Promise<ImportReport> {
  const root = path.resolve(req.root);
  assertRepo(root);
  const trust = trustFor(req.trustFile, req.stateDir ? { stateDir: req.stateDir } : {});
  const existing = await loadDesiredState(root, { trust });
  const problems = existing.problems.filter((p) => !(p.file === MANIFESTS_DIR && p.message === NO_MANIFESTS));
  if (problems.length) return { problems, manifests: [], status: [], notes: [] };
  const { settings, problems: settingsProblems } = await loadSettings(root);
  if (!settings) return { problems: settingsProblems, manifests: [], status: [], notes: [] };

  const notes: ImportNote[] = [];
  // ---- the hosts: declared ones as declared, new ones from --host (checked like a manifest)
  const hosts = new Map<string, Host>(existing.hosts);
  const fresh = new Set<string>();
  for (const h of req.hosts) {
    if (existing.hosts.has(h.name)) {
      notes.push({
        severity: 'info',
        reason: 'HostAlreadyDeclared',
        subject: `Host/${h.name}`,
        message: `declared in ${existing.hosts.get(h.name)!.source.file}: that manifest is used, --host ${h.name} is not`,
      });
      continue;
    }
    const found = hostOptionProblems(h, root);
    if (found.length) problems.push(...found);
    fresh.add(h.name);
    hosts.set(h.name, {
      apiVersion: API_VERSION,
      kind: 'Host',
      metadata: { name: h.name },
      spec: h.spec,
      source: { file: '--host', line: 1, col: 1 },
    });
  }
  if (hosts.size === 0)
    problems.push({
      file: '--host',
      line: 1,
      col: 1,
      message: 'no hosts: give --host NAME=URI or declare Host manifests',
    });
  if (problems.length) return { problems, manifests: [], status: [], notes };

  const observable: DesiredState = { ...existing, hosts, problems: [] };
  const factory = req.driverFor
    ? undefined
    : createDrivers(observable, { stateDir: trust.stateDir ?? '/var/lib/vmplace', logger: req.logger });
  const driverFor = (h: string): HypervisorDriver | undefined =>
    req.driverFor ? req.driverFor(h, observable) : factory!.get(h);
  try {
    // ---- observe every host (one broken host does not hide the others)
    const observed: ObservedHost[] = await Promise.all(
      [...hosts.values()].map(async (h): Promise<ObservedHost> => {
        const base = {
          name: h.metadata.name,
          spec: h.spec,
          declared: !fresh.has(h.metadata.name),
          pools: [],
          domains: [],
        };
        const drv = driverFor(h.metadata.name);
        if (!drv)
          return {
            ...base,
            error: { reason: 'DriverUnavailable', message: `no driver for ${h.spec.driver}` },
          };
        try {
          const pools = await drv.storageLocations();
          const domains = [];
          for (const name of (await drv.listDomains()).sort()) {
            const dom = await drv.getDomain(name);
            if (dom) domains.push(dom);
          }
          return { ...base, pools, domains };
        } catch (err) {
          return { ...base, error: describeError(err) };
        }
      }),
    );
    const decision = decideImport(observed, existing, {
      ...(req.cluster ? { cluster: req.cluster } : {}),
      shared: req.shared,
      repoDir: root,
      ...(trust.stateDir ? { stateDir: trust.stateDir } : {}),
    });
    notes.push(...decision.notes);

    // ---- the files to add: never one that exists
    let files: ManifestFile[] = [
      ...decision.clusters.filter((c) => !existing.clusters.has(c.name)).map(renderCluster),
      ...decision.hosts.map(renderHost),
      ...decision.vms.map(renderVm),
    ].filter((f) => {
      if (!pathTaken(root, f.rel)) return true;
      notes.push({
        severity: 'warning',
        reason: 'FileExists',
        subject: `${f.kind}/${f.name}`,
        message: `${f.rel} exists but does not declare ${f.kind}/${f.name}; not overwritten, not imported`,
      });
      return false;
    });
    files = dropDependents(
      files,
      new Set(files.map((f) => `${f.kind}/${f.name}`)),
      existing,
      decision,
      notes,
    );

    // ---- check the result as `vmplace validate` would, before writing anything
    const desired = await validateWith(root, files, trust, notes, (kept) => {
      files = dropDependents(
        kept,
        new Set(kept.map((f) => `${f.kind}/${f.name}`)),
        existing,
        decision,
        notes,
      );
      return files;
    });

    // ---- status as the daemon writes it: observe, plan, compose
    const now = (req.now ?? (() => new Date()))();
    const previous = await loadActualState(root);
    const obs = await observe(desired, driverFor, () => now);
    const actual = toActual(obs, previous.state);
    const revision = await gitRevision(root);
    const plan = planMigrations(desired, actual, settings.policy, { revision });
    const added = new Set(files.map((f) => `${f.kind}/${f.name}`));
    for (const m of plan.migrations)
      if (added.has(`VirtualMachine/${m.vm}`))
        notes.push({
          severity: 'warning',
          reason: 'ImportedVmWouldMove',
          subject: `VirtualMachine/${m.vm}`,
          message: `imported at its place, yet the plan moves it (${m.disks.map((d) => `${d.target}: ${d.from} -> ${d.to}`).join(', ')}); please report this`,
        });
    const vmStatus = composeAll(
      { desired, previous: previous.state, ...(revision ? { revision } : {}) },
      obs,
      plan,
      new Map(),
      now,
    ).filter(
      (s) => added.has(`VirtualMachine/${s.metadata.name}`) || !previous.state.vms.has(s.metadata.name),
    );
    const hostStatus = stabiliseHosts([...obs.hosts.values()], previous.state.hosts, now).filter(
      (s) => added.has(`Host/${s.metadata.name}`) || !previous.state.hosts.has(s.metadata.name),
    );
    const status = statusPaths(vmStatus, hostStatus);
    if (!req.dryRun) {
      for (const f of files) {
        if (pathTaken(root, f.rel)) continue; // appeared meanwhile: still never overwritten
        writeRepoFile(root, f.rel, f.text);
      }
      await writeStatusFiles(root, { vms: vmStatus, hosts: hostStatus });
    }
    return { problems: [], manifests: files, status, notes, plan };
  } finally {
    await factory?.closeAll();
  }
}

/** Problems of a `--host` as a Host manifest (schema and value checks) and of its key files. */
function hostOptionProblems(h: HostOption, root: string): Problem[] {
  const data = { apiVersion: API_VERSION, kind: 'Host', metadata: { name: h.name }, spec: h.spec };
  const findings = [...validateAgainstSchema('Host', data), ...checkHostValues(data, () => false)];
  const out: Problem[] = findings.map((f) => ({
    file: '--host',
    line: 1,
    col: 1,
    object: `Host/${h.name}`,
    message: f.message,
  }));
  for (const file of [h.spec.ssh?.identityFile, h.spec.ssh?.knownHostsFile])
    if (file && isInside(path.resolve(file), fs.realpathSync(root), { allowRoot: true }))
      out.push({
        file: '--host',
        line: 1,
        col: 1,
        object: `Host/${h.name}`,
        message: `${file} is inside the repository; keys and known_hosts files live outside it`,
      });
  return out;
}

/** Is anything (a file, a link, a directory) at `rel` below `root`? */
function pathTaken(root: string, rel: string): boolean {
  try {
    fs.lstatSync(path.join(root, rel));
    return true;
  } catch {
    return false;
  }
}

/** Drop VMs whose host is neither declared nor added, and hosts whose new cluster is not added. */
function dropDependents(
  files: ManifestFile[],
  added: Set<string>,
  existing: DesiredState,
  decision: ReturnType<typeof decideImport>,
  notes: ImportNote[],
): ManifestFile[] {
  const hostOk = (h: string): boolean => existing.hosts.has(h) || added.has(`Host/${h}`);
  const clusterOk = (c: string | undefined): boolean =>
    c === undefined || existing.clusters.has(c) || added.has(`Cluster/${c}`);
  const out: ManifestFile[] = [];
  const gone = new Set<string>();
  for (const f of files.filter((x) => x.kind !== 'VirtualMachine')) {
    const spec = decision.hosts.find((h) => h.name === f.name)?.spec;
    if (f.kind === 'Host' && !clusterOk(spec?.cluster)) gone.add(f.name);
    else out.push(f);
  }
  for (const f of files.filter((x) => x.kind === 'VirtualMachine')) {
    const host = decision.vms.find((v) => v.name === f.name)!.spec.host;
    if (hostOk(host) && !gone.has(host)) out.push(f);
    else
      notes.push({
        severity: 'warning',
        reason: 'ManifestInvalid',
        subject: `VirtualMachine/${f.name}`,
        message: `not imported: its Host/${host} could not be imported`,
      });
  }
  for (const h of gone)
    notes.push({
      severity: 'warning',
      reason: 'ManifestInvalid',
      subject: `Host/${h}`,
      message: 'not imported: its Cluster could not be imported',
    });
  return out;
}

/**
 * Load `manifests/` with `files` added, in a scratch directory, with the repository's trust
 * rules; a file of ours with a problem is dropped (reported with the problem), dependents
 * after it (`prune`), until the result is clean. Returns the desired state of the result.
 */
async function validateWith(
  root: string,
  initial: ManifestFile[],
  trust: ReturnType<typeof trustFor>,
  notes: ImportNote[],
  prune: (kept: ManifestFile[]) => ManifestFile[],
): Promise<DesiredState> {
  let files = initial;
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'vmplace-import-'));
  try {
    for (let round = 0; ; round++) {
      const dir = path.join(scratch, String(round));
      fs.mkdirSync(dir);
      const src = path.join(root, MANIFESTS_DIR);
      if (fs.existsSync(src))
        fs.cpSync(src, path.join(dir, MANIFESTS_DIR), { recursive: true, verbatimSymlinks: true });
      for (const f of files) {
        fs.mkdirSync(path.dirname(path.join(dir, f.rel)), { recursive: true });
        fs.writeFileSync(path.join(dir, f.rel), f.text, { flag: 'wx' });
      }
      const desired = await loadDesiredState(dir, { trust });
      const bad = new Set(desired.problems.map((p) => p.file));
      if (!files.some((f) => bad.has(relOf(f))) || round > 8) {
        for (const p of desired.problems)
          notes.push({
            severity: 'warning',
            reason: 'ManifestInvalid',
            subject: p.object ?? p.file,
            message: `${p.file}:${p.line}:${p.col}: ${p.message}`,
          });
        return desired;
      }
      for (const p of desired.problems) {
        const f = files.find((x) => x.rel === p.file);
        if (f)
          notes.push({
            severity: 'warning',
            reason: 'ManifestInvalid',
            subject: `${f.kind}/${f.name}`,
            message: `not imported: ${p.file}:${p.line}:${p.col}: ${p.message}`,
          });
      }
      files = prune(files.filter((f) => !bad.has(relOf(f))));
    }
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

function statusPaths(vms: VirtualMachineStatus[], hosts: HostStatus[]): string[] {
  return [
    ...vms.map((s) => `status/vms/${s.metadata.name}.yaml`),
    ...hosts.map((s) => `status/hosts/${s.metadata.name}.yaml`),
  ].sort();
}
