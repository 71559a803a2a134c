/**
 * Status files: `status/vms/<name>.yaml` (VirtualMachineStatus) and `status/hosts/<name>.yaml`
 * (HostStatus). Reading (here) validates them against `schemas/`; rendering (`render.ts`) keeps a
 * fixed key order so identical state gives byte-identical files and git sees no noise; writing
 * (`write.ts`) replaces each atomically, never through a link the repository holds.
 */
import * as path from 'node:path';
import {
  assertRepo,
  capFindings,
  cloneTree,
  describeType,
  skippedWarnings,
  sortProblems,
} from '../manifests/load';
import { objectLabel } from '../manifests/references';
import { quote, validateAgainstSchema, type DataPath } from '../manifests/schemas';
import {
  DEFAULT_LIMITS,
  newBudget,
  parseYamlFile,
  readYamlFiles,
  type ParsedDoc,
  type ParseOptions,
  type ReadLimits,
} from '../manifests/yaml-source';
import { type ActualState, type HostStatus, type Problem, type VirtualMachineStatus } from '../types';
import { STATUS_DIR, SUBDIRS, type StatusKind } from './render';

export { normaliseStatus, renderStatusYaml, STATUS_DIR } from './render';
export { writeRepoFile, writeStatusFiles } from './write';

/**
 * Read every `status/vms/*.yaml` and `status/hosts/*.yaml` (not recursive; `.yaml` only, as
 * written by {@link writeStatusFiles}). Each file holds exactly one document of the kind its
 * directory implies, and its name must be `<metadata.name>.yaml`. A file with any problem is
 * skipped whole and reported as `FILE:LINE:COL`; a missing `status/` means nothing observed yet.
 * The same read limits and hostile-input protections as {@link loadDesiredState} apply, and the
 * same two parsing paths: files as {@link renderStatusYaml} writes them take the fast path
 * (js-yaml), while a hand-edited file with anchors, aliases or tags, and any file with a problem,
 * is parsed the exact way (yaml), which reports the problem.
 *
 * @throws StalledError `RepositoryNotFound` when `repoDir` itself does not exist.
 */
export async function loadActualState(
  repoDir: string,
  opts: Partial<ReadLimits> & ParseOptions = {},
): Promise<{ state: ActualState; problems: Problem[]; warnings: Problem[] }> {
  assertRepo(repoDir);
  const { fastPath, ...rest } = opts;
  const limits: ReadLimits = { ...DEFAULT_LIMITS, maxFiles: 100_000, ...rest };
  const problems: Problem[] = [];
  const budget = newBudget();
  const state: ActualState = { vms: new Map(), hosts: new Map() };
  const warnings: Problem[] = [];
  const top = readYamlFiles(repoDir, STATUS_DIR, { recursive: false, extensions: [] }, limits, budget, []);
  if (!top.found)
    warnings.push({
      file: STATUS_DIR,
      line: 1,
      col: 1,
      message: `${STATUS_DIR}/ not found: nothing observed yet, so every VM is unknown and no move is planned (vmplace apply or the daemon writes it)`,
    });
  for (const kind of ['VirtualMachineStatus', 'HostStatus'] as const) {
    const sub = `${STATUS_DIR}/${SUBDIRS[kind]}`;
    const { files, skipped } = readYamlFiles(
      repoDir,
      sub,
      { recursive: false, extensions: ['.yaml'] },
      limits,
      budget,
      problems,
    );
    warnings.push(
      ...skippedWarnings(skipped, `only .yaml is read in ${STATUS_DIR}/ (the files vmplace writes)`),
    );
    for (const file of files) {
      const stem = path.posix.basename(file.rel, '.yaml');
      const check = (docs: ParsedDoc[], found: Problem[]): VirtualMachineStatus | HostStatus | undefined => {
        if (docs.length !== 1) {
          const at = docs[1] ? docs[1].locate([]) : { file: file.rel, line: 1, col: 1 };
          found.push({ ...at, message: `a status file holds exactly one document; found ${docs.length}` });
          return undefined;
        }
        return checkStatusDocument(docs[0]!, kind, stem, found);
      };
      const r = parseYamlFile(file, limits, budget, problems, check, { fastPath });
      const obj = r.ok ? r.result : undefined;
      if (!obj) continue;
      if (kind === 'VirtualMachineStatus') state.vms.set(obj.metadata.name, obj as VirtualMachineStatus);
      else state.hosts.set(obj.metadata.name, obj as HostStatus);
    }
  }
  sortProblems(problems);
  return { state, problems, warnings };
}

function checkStatusDocument(
  parsed: ParsedDoc,
  kind: StatusKind,
  stem: string,
  problems: Problem[],
): VirtualMachineStatus | HostStatus | undefined {
  const data = parsed.data;
  const at = (p: DataPath, atKey = false) => parsed.locate(p, atKey);
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    problems.push({
      ...at([]),
      message: `status file must hold a ${kind} mapping; got ${describeType(data)}`,
    });
    return undefined;
  }
  const obj = data as Record<string, unknown>;
  const object = objectLabel(kind, (obj.metadata as Record<string, unknown> | undefined)?.name ?? stem);
  if (obj.kind !== kind) {
    problems.push({
      ...at(obj.kind === undefined ? [] : ['kind']),
      object,
      message: `kind: must be ${quote(kind)} in ${STATUS_DIR}/${SUBDIRS[kind]}/ (got ${quote(obj.kind)})`,
    });
    return undefined;
  }
  const findings = validateAgainstSchema(kind, data);
  for (const f of capFindings(findings))
    problems.push({ ...at(f.path, f.atKey), object, message: f.message });
  if (findings.length) return undefined;
  const name = (obj.metadata as { name: string }).name;
  if (name !== stem) {
    problems.push({
      ...at(['metadata', 'name']),
      object,
      message: `metadata.name: ${quote(name)} does not match the file name ${quote(stem + '.yaml')}`,
    });
    return undefined;
  }
  return (parsed.shared ? cloneTree(data) : data) as VirtualMachineStatus | HostStatus;
}
