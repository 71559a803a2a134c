import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { getValidator, SCHEMA_DIR, SCHEMA_FILES, validateAgainstSchema } from '../../../src/manifests';
import { checkHostLiteral, checkUri } from '../../../src/connection-uri';
import { REPO_ROOT } from '../../support/manifests';

const kinds = Object.keys(SCHEMA_FILES) as (keyof typeof SCHEMA_FILES)[];

describe('schema files', () => {
  it('are found relative to the package root', () => {
    expect(SCHEMA_DIR).toBe(path.join(REPO_ROOT, 'schemas'));
  });

  it.each(kinds)(
    '%s: draft 2020-12, $id under https://vmplace.dev/schemas/, compiles in strict mode',
    (kind) => {
      const file = SCHEMA_FILES[kind];
      const schema = JSON.parse(fs.readFileSync(path.join(SCHEMA_DIR, file), 'utf8')) as Record<
        string,
        unknown
      >;
      expect(schema.$schema).toBe('https://json-schema.org/draft/2020-12/schema');
      expect(schema.$id).toBe(`https://vmplace.dev/schemas/${file}`);
      expect((schema.properties as Record<string, { const?: string }>).kind!.const).toBe(kind);
      expect(typeof getValidator(kind)).toBe('function');
    },
  );

  it('compiles each validator once per process', () => {
    expect(getValidator('Host')).toBe(getValidator('Host'));
  });
});

/**
 * Every example manifest and status file names the schema of its documents' kind in its first
 * line. Other example YAML (the settings file `vmplace.yaml`) has its own schema and checks.
 */
function exampleFiles(dir: string, inScope = false): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return exampleFiles(p, inScope || e.name === 'manifests' || e.name === 'status');
    return inScope && /\.ya?ml$/.test(e.name) ? [p] : [];
  });
}

describe('examples', () => {
  const files = exampleFiles(path.join(REPO_ROOT, 'examples'));
  it('exist', () => expect(files.length).toBeGreaterThanOrEqual(16));

  it.each(files.map((f) => [path.relative(REPO_ROOT, f), f]))(
    '%s starts with a yaml-language-server modeline naming the schema of its kind, and validates',
    (_rel, file) => {
      const text = fs.readFileSync(file, 'utf8');
      const m = /^# yaml-language-server: \$schema=(\S+)\n/.exec(text);
      expect(m).not.toBeNull();
      const schemaPath = path.resolve(path.dirname(file), m![1]!);
      expect(fs.existsSync(schemaPath)).toBe(true);
      const kind = kinds.find((k) => SCHEMA_FILES[k] === path.basename(schemaPath))!;
      const docs = parseAllDocuments(text, { version: '1.2', schema: 'core' });
      for (const d of [docs].flat()) {
        const data = d.toJS() as { kind: string };
        expect(data.kind).toBe(kind);
        expect(validateAgainstSchema(kind, data)).toEqual([]);
      }
    },
  );
});

describe('value checks', () => {
  it.each([
    'qemu:///system',
    'qemu:///session',
    'qemu+ssh://root@10.0.0.1/system',
    'qemu+ssh://root@hv-a.example.net:2222/system',
    'qemu+ssh://[2001:db8::1]:22/system',
  ])('accepts libvirt URI %s', (uri) => {
    expect(checkUri(uri)).toBeUndefined();
    const host = {
      apiVersion: 'vmplace.dev/v1alpha1',
      kind: 'Host',
      metadata: { name: 'a' },
      spec: { driver: 'libvirt', uri },
    };
    expect(validateAgainstSchema('Host', host)).toEqual([]);
  });

  it.each(['hyperv://hv1.example.net/', 'ssh://admin@hv1.example.net', 'ssh://admin@hv1.example.net:22'])(
    'accepts Hyper-V URI %s',
    (uri) => {
      expect(checkUri(uri)).toBeUndefined();
      const host = {
        apiVersion: 'vmplace.dev/v1alpha1',
        kind: 'Host',
        metadata: { name: 'a' },
        spec: { driver: 'hyperv', uri },
      };
      expect(validateAgainstSchema('Host', host)).toEqual([]);
    },
  );

  it.each([
    ['10.0.0.1', undefined],
    ['hv-a.example.net', undefined],
    ['::1', undefined],
    ['fe80::1:2', undefined],
    ['256.0.0.1', 'is not a valid IPv4 address'],
    ['1.2.3', 'is not a valid IPv4 address'],
    ['-h', 'is not a valid hostname'],
    ['a..b', 'is not a valid hostname'],
    ['1:2:3', 'is not a valid IPv6 address'],
    [`${'a'.repeat(60)}.`.repeat(5), 'is longer than 253 characters'],
  ])('checkHostLiteral(%s)', (value, why) => {
    expect(checkHostLiteral(value)).toBe(why);
  });
});
