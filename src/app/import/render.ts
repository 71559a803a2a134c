/**
 * The manifests `vmplace import` writes, as YAML text emitted by the `yaml` package (so every
 * name and path from a host is quoted as YAML needs it), one object per file:
 * `manifests/hosts/<name>.yaml`, `manifests/clusters/<name>.yaml`, `manifests/vms/<name>.yaml`.
 * Names are checked to be manifest names (DNS labels) before they become file names.
 */
import { Document, isMap, isScalar } from 'yaml';
import { API_VERSION } from '../../types';
import { type ClusterDraft, type HostDraft, hostText, isManifestName, type VmDraft } from './decide';

/** One file to add, relative to the repository, with forward slashes. */
export interface ManifestFile {
  rel: string;
  kind: 'Host' | 'Cluster' | 'VirtualMachine';
  name: string;
  text: string;
}

const DIRS = { Host: 'hosts', Cluster: 'clusters', VirtualMachine: 'vms' } as const;

/** `manifests/<kind dir>/<name>.yaml`; throws on a name that is not a manifest name (a bug upstream). */
export function manifestPath(kind: ManifestFile['kind'], name: string): string {
  if (!isManifestName(name)) throw new TypeError(`not a manifest name: ${JSON.stringify(name)}`);
  return `manifests/${DIRS[kind]}/${name}.yaml`;
}

function render(
  kind: ManifestFile['kind'],
  name: string,
  spec: object,
  opts: { header: string; commentOn?: { key: string; lines: string[] } },
): ManifestFile {
  const doc = new Document({ apiVersion: API_VERSION, kind, metadata: { name }, spec }, { version: '1.2' });
  doc.commentBefore = ` ${opts.header}`;
  if (opts.commentOn) {
    const map = doc.getIn(['spec'], true);
    const pair = isMap(map)
      ? map.items.find((p) => isScalar(p.key) && p.key.value === opts.commentOn!.key)
      : undefined;
    if (pair && isScalar(pair.key))
      pair.key.commentBefore = opts.commentOn.lines.map((l) => ` ${hostText(l, 200)}`).join('\n');
  }
  return {
    rel: manifestPath(kind, name),
    kind,
    name,
    text: doc.toString({ lineWidth: 0, minContentWidth: 0, indentSeq: true }),
  };
}

export function renderHost(h: HostDraft): ManifestFile {
  return render('Host', h.name, h.spec, { header: `Written by vmplace import from host ${h.name}.` });
}

export function renderCluster(c: ClusterDraft): ManifestFile {
  return render(
    'Cluster',
    c.name,
    { storage: c.storage },
    { header: 'Written by vmplace import: storage the operator named shared (--shared).' },
  );
}

export function renderVm(v: VmDraft): ManifestFile {
  return render('VirtualMachine', v.name, v.spec, {
    header: `Written by vmplace import: where the domain was on host ${v.spec.host}.`,
    ...(v.unmovable.length
      ? {
          commentOn: {
            key: 'suspend',
            lines: ['vmplace cannot move this VM:', ...v.unmovable.map((w) => `- ${w}`)],
          },
        }
      : {}),
  });
}
