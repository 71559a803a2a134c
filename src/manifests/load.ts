/**
 * Loading the desired state: every `manifests/**\/*.yaml|yml` of a repository, validated
 * document by document against `schemas/`, then cross-checked. Bad input never throws; it
 * becomes a {@link Problem} with a file, line and column.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { StalledError } from '../errors';
import {
  API_VERSION,
  type Cluster,
  type DesiredState,
  type Host,
  type Kind,
  type Problem,
  type SourceRef,
  type VirtualMachine,
} from '../types';
import { checkHostValues, checkStoragePathValues } from './checks';
import { checkTrust, type TrustContext } from './trust';
import { objectLabel, resolveReferences, type Declaration } from './references';
import { quote, validateAgainstSchema, type DataPath, type SchemaFinding } from './schemas';
import {
  DEFAULT_LIMITS,
  newBudget,
  parseYamlFile,
  readYamlFiles,
  type ParsedDoc,
  type ParseOptions,
  type ReadLimits,
} from './yaml-source';
import type { SkippedEntry } from './repo-files';

/** Directory of the manifests, relative to the repository root. */
export const MANIFESTS_DIR = 'manifests';

/**
 * Limits for one load (every field is optional and defaults to {@link DEFAULT_LIMITS}), and
 * whether to try the fast parsing path (default true; see {@link parseYamlFile}).
 */
export type LoadOptions = Partial<ReadLimits> &
  ParseOptions & {
    /**
     * The operator's trust file and vmplace's own directories, for the rules of
     * {@link checkTrust}; the always-on rules apply without it (with the default directories).
     */
    trust?: Omit<TrustContext, 'repoDir'>;
  };

const KINDS: readonly Kind[] = ['Host', 'Cluster', 'VirtualMachine'];

/**
 * Load and validate the desired state of the GitOps repository at `repoDir`.
 *
 * Granularity of rejection:
 * - **file level**: a file that cannot be read or parsed as YAML (too large, binary, invalid
 *   UTF-8, merge-conflict markers, syntax or tab errors, duplicate keys, unknown tags, alias
 *   bombs) contributes no objects at all, because its document boundaries cannot be trusted;
 * - **document level**: a document that fails its schema or value checks is dropped, while
 *   the other valid documents of the same file are kept (the file is still listed in
 *   `invalidFiles`);
 * - **reference level**: an object whose references do not resolve is dropped, see
 *   {@link resolveReferences}; duplicated names drop every declaration of that name.
 *
 * Empty documents (a lone `---`, only comments) are ignored; a document that is a list or a
 * scalar is a problem. A missing `manifests/` directory is a problem too (an empty desired
 * state would otherwise look intentional). Defaults (`strategy: quick`, `suspend: false`) are
 * not filled in: absent optional fields stay absent.
 *
 * @throws StalledError `RepositoryNotFound` when `repoDir` itself does not exist.
 */
export async function loadDesiredState(repoDir: string, opts: LoadOptions = {}): Promise<DesiredState> {
  const { fastPath, trust: trustOpts, ...rest } = opts;
  const trust: TrustContext = { ...trustOpts, repoDir: path.resolve(repoDir) };
  const limits: ReadLimits = { ...DEFAULT_LIMITS, ...rest };
  assertRepo(repoDir);
  const problems: Problem[] = [];
  const budget = newBudget();
  const { files, found, skipped } = readYamlFiles(
    repoDir,
    MANIFESTS_DIR,
    { recursive: true, extensions: ['.yaml', '.yml'] },
    limits,
    budget,
    problems,
  );
  if (!found && !problems.some((p) => p.file === MANIFESTS_DIR)) {
    problems.push({ file: MANIFESTS_DIR, line: 1, col: 1, message: 'manifests/ directory not found' });
  }
  let skippedFiles = new Set(problems.map((p) => p.file)).size;
  const declarations: Declaration[] = [];
  const checkDocs = (docs: ParsedDoc[], found: Problem[]): Declaration[] => {
    const out: Declaration[] = [];
    for (const parsed of docs) {
      const d = checkDocument(parsed, found, trust);
      if (d) out.push(d);
    }
    return out;
  };
  for (const file of files) {
    const r = parseYamlFile(file, limits, budget, problems, checkDocs, { fastPath });
    if (!r.ok) {
      skippedFiles++;
      continue;
    }
    for (const d of r.result) declarations.push(d);
  }
  const resolved = resolveReferences(declarations, skippedFiles);
  problems.push(...resolved.problems);
  sortProblems(problems);
  const warnings = skippedWarnings(skipped, 'only .yaml and .yml (lower case) are read');
  return {
    hosts: resolved.hosts,
    clusters: resolved.clusters,
    vms: resolved.vms,
    problems,
    invalidFiles: new Set(problems.map((p) => p.file)),
    ...(warnings.length ? { warnings } : {}),
  };
}

/** One warning per entry {@link readYamlFiles} skipped though it looks meant; `read` says what is read. */
export function skippedWarnings(skipped: readonly SkippedEntry[], read: string): Problem[] {
  return skipped.map((e) => ({
    file: e.rel,
    line: 1,
    col: 1,
    message:
      e.why === 'hidden'
        ? 'skipped: hidden (its name starts with a dot); rename it to have it read'
        : `skipped: ${read}`,
  }));
}

/** @throws StalledError when the repository directory is missing or not a directory. */
export function assertRepo(repoDir: string): void {
  let ok = false;
  try {
    ok = fs.statSync(repoDir).isDirectory();
  } catch {
    ok = false;
  }
  if (!ok) throw new StalledError('RepositoryNotFound', `repository directory not found: ${repoDir}`);
}

/** Sort by file, then line, then column; stable, so equal positions keep discovery order. */
export function sortProblems(problems: Problem[]): void {
  problems.sort((a, b) =>
    a.file !== b.file ? (a.file < b.file ? -1 : 1) : a.line !== b.line ? a.line - b.line : a.col - b.col,
  );
}

/** Problems reported per document; locating each costs a scan of its mapping, so keep it bounded. */
export const MAX_FINDINGS_PER_DOCUMENT = 20;

/** The first {@link MAX_FINDINGS_PER_DOCUMENT} findings, then one summarising the rest. */
export function capFindings(findings: SchemaFinding[]): SchemaFinding[] {
  if (findings.length <= MAX_FINDINGS_PER_DOCUMENT) return findings;
  const rest = findings.length - MAX_FINDINGS_PER_DOCUMENT;
  return [
    ...findings.slice(0, MAX_FINDINGS_PER_DOCUMENT),
    { path: [], atKey: false, message: `${rest} more problem(s) in this document not shown` },
  ];
}

/** Short description of a YAML value's type, for messages. */
export function describeType(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `a ${typeof v} ${quote(v, 40)}`;
}

/**
 * Check one document: shape, `apiVersion`, `kind`, schema, value checks. Returns a declaration
 * when the document names a known kind and a string name (even if invalid, so references to it
 * can say "has problems" rather than "not found"), with the typed object when fully valid.
 */
function checkDocument(parsed: ParsedDoc, problems: Problem[], trust: TrustContext): Declaration | undefined {
  const data = parsed.data;
  const at = (p: DataPath, atKey = false) => parsed.locate(p, atKey);
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    problems.push({
      ...at([]),
      message: `document must be a mapping with apiVersion, kind, metadata and spec; got ${describeType(data)}`,
    });
    return undefined;
  }
  const obj = data as Record<string, unknown>;
  const rawName = (obj.metadata as Record<string, unknown> | undefined)?.name;
  const kind = obj.kind;
  const knownKind =
    typeof kind === 'string' && (KINDS as readonly string[]).includes(kind) ? (kind as Kind) : undefined;
  const label = knownKind && rawName !== undefined ? objectLabel(knownKind, rawName) : undefined;
  const push = (f: SchemaFinding): void => {
    problems.push({ ...at(f.path, f.atKey), ...(label ? { object: label } : {}), message: f.message });
  };
  let envelopeOk = true;
  if (obj.apiVersion !== API_VERSION) {
    const msg =
      obj.apiVersion === undefined
        ? 'apiVersion: missing required field'
        : `apiVersion: must be ${quote(API_VERSION)} (got ${quote(obj.apiVersion)})`;
    push({ path: obj.apiVersion === undefined ? [] : ['apiVersion'], atKey: false, message: msg });
    envelopeOk = false;
  }
  if (!knownKind) {
    const msg =
      kind === undefined
        ? 'kind: missing required field'
        : `kind: unknown kind ${quote(kind)}; expected one of ${KINDS.join(', ')}`;
    push({ path: kind === undefined ? [] : ['kind'], atKey: false, message: msg });
    return undefined;
  }
  if (!envelopeOk) return undefined;
  const findings = validateAgainstSchema(knownKind, data);
  if (knownKind === 'Host') {
    // value checks only where the schema had nothing to say (one message per field)
    const failed = findings.map((f) => f.path.join('\u0000') + '\u0000');
    const skip = (p: DataPath): boolean => failed.some((f) => (p.join('\u0000') + '\u0000').startsWith(f));
    findings.push(...checkHostValues(data, skip));
  }
  if (knownKind === 'Host' || knownKind === 'Cluster') {
    const failed = findings.map((f) => f.path.join('\u0000') + '\u0000');
    const skip = (p: DataPath): boolean => failed.some((f) => (p.join('\u0000') + '\u0000').startsWith(f));
    // the driver's path rules first: the trust rules then see only paths those accept
    const paths = checkStoragePathValues(data, skip);
    findings.push(...paths);
    const skipToo = (p: DataPath): boolean =>
      skip(p) || paths.some((f) => f.path.join('\u0000') === p.join('\u0000'));
    findings.push(...checkTrust(knownKind, data, trust, skipToo));
  }
  for (const f of capFindings(findings)) push(f);
  if (typeof rawName !== 'string') return undefined;
  const nameOk = !findings.some((f) => f.path[0] === 'metadata' && f.path[1] === 'name');
  if (!nameOk) return undefined;
  const decl: Declaration = { kind: knownKind, name: rawName, locate: at };
  if (findings.length === 0) {
    decl.object = buildObject(knownKind, parsed.shared ? cloneTree(obj) : obj, at([]));
    const disks = (obj.spec as { disks?: Record<string, unknown> } | undefined)?.disks;
    if (knownKind === 'VirtualMachine' && disks && Object.keys(disks).length) {
      // located on first use: a position other than a document's root costs the exact parse
      // of the file, and only a finding (an override naming a disk the VM lacks) needs one
      const sources: Record<string, SourceRef> = {};
      for (const dev of Object.keys(disks)) {
        let ref: SourceRef | undefined;
        Object.defineProperty(sources, dev, {
          enumerable: true,
          get: () => (ref ??= at(['spec', 'disks', dev], true)),
        });
      }
      (decl.object as VirtualMachine).diskSources = sources;
    }
  }
  return decl;
}

/**
 * A deep copy in which nothing is shared (unlike `structuredClone`, which keeps shared
 * references shared). For validated YAML data: plain objects, arrays and scalars.
 */
export function cloneTree<T>(value: T): T {
  if (Array.isArray(value)) return value.map((v: unknown) => cloneTree(v)) as T;
  if (typeof value === 'object' && value !== null) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = cloneTree(v);
    return out as T;
  }
  return value;
}

/**
 * The typed object. `data` must not share parts with other objects: documents with aliases
 * (where yaml shares one JS object between places) are copied by the caller first.
 */
function buildObject(
  kind: Kind,
  data: Record<string, unknown>,
  source: Host['source'],
): Host | Cluster | VirtualMachine {
  return { ...data, kind, apiVersion: API_VERSION, source } as Host | Cluster | VirtualMachine;
}
