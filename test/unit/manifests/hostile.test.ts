import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { formatProblem, loadDesiredState, type LoadOptions } from '../../../src/manifests';
import type { DesiredState } from '../../../src/types';
import { FIXTURES, hostDoc, makeRepo, vmDoc } from '../../support/manifests';
import { cleanupTmp } from '../../support/tmp';

afterAll(cleanupTmp);

const fixture = (name: string): string => fs.readFileSync(path.join(FIXTURES, 'hostile', name), 'utf8');

/** Load with a wall-clock guard: hostile input must never hang the loader. */
async function load(repo: string, opts?: LoadOptions): Promise<{ state: DesiredState; lines: string[] }> {
  const started = Date.now();
  const state = await loadDesiredState(repo, opts);
  expect(Date.now() - started).toBeLessThan(10_000);
  return { state, lines: state.problems.map(formatProblem) };
}

interface FileCase {
  name: string;
  /** files to write (relative to the repo), or a function preparing the repo */
  setup: Record<string, string | Buffer> | ((repo: string) => void);
  opts?: LoadOptions;
  /** a formatted problem line must match */
  expected: RegExp;
}

const bigFile = (): string => {
  const doc = vmDoc('web-01', 'lab', 'b') + '---\n';
  return doc.repeat(Math.ceil((1024 * 1024 + 1) / doc.length));
};

const fileCases: FileCase[] = [
  {
    name: 'alias bomb (committed fixture, 9^9 expansion)',
    setup: { 'manifests/bomb.yaml': fixture('alias-bomb.yaml') },
    expected:
      /^manifests\/bomb\.yaml:1:1: too many alias expansions \(more than 100\); looks like an alias bomb$/,
  },
  {
    name: 'alias bomb generated at test time (deeper, 1e20 nodes)',
    setup: {
      'manifests/bomb.yaml':
        'a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n' +
        Array.from(
          { length: 20 },
          (_, i) => `a${i + 1}: &a${i + 1} [${Array(10).fill(`*a${i}`).join(', ')}]\n`,
        ).join(''),
    },
    expected: /^manifests\/bomb\.yaml:1:1: too many alias expansions/,
  },
  {
    name: 'file larger than 1 MiB',
    setup: { 'manifests/big.yaml': bigFile() },
    expected: /^manifests\/big\.yaml:1:1: file is too large: \d+ bytes, the limit is 1048576$/,
  },
  {
    name: 'more files than allowed',
    setup: Object.fromEntries(
      Array.from({ length: 5 }, (_, i) => [`manifests/h${i}.yaml`, hostDoc(`h${i}`)]),
    ),
    opts: { maxFiles: 3 },
    expected: /^manifests\/h3\.yaml:1:1: more than 3 YAML files; this and later files skipped$/,
  },
  {
    name: 'more documents than allowed',
    setup: {
      'manifests/many.yaml': Array.from({ length: 20 }, (_, i) => `---\n${hostDoc(`h${i}`)}`).join(''),
    },
    opts: { maxDocuments: 10 },
    expected: /^manifests\/many\.yaml:1:1: more than 10 YAML documents in total/,
  },
  {
    name: 'more bytes than allowed in total',
    setup: Object.fromEntries(
      Array.from({ length: 3 }, (_, i) => [`manifests/h${i}.yaml`, hostDoc(`h${i}`)]),
    ),
    opts: { maxTotalBytes: 400 },
    expected: /^manifests\/h1\.yaml:1:1: more than 400 bytes of YAML in total/,
  },
  {
    name: 'binary file (NUL byte)',
    setup: {
      'manifests/bin.yaml': Buffer.concat([Buffer.from('kind: Host\nmeta'), Buffer.from([0, 1, 2, 0xff])]),
    },
    expected: /^manifests\/bin\.yaml:2:5: binary file: contains a NUL byte/,
  },
  {
    name: 'invalid UTF-8',
    setup: { 'manifests/latin1.yaml': Buffer.from('kind: Host\nmetadata:\n  name: caf\xe9\n', 'latin1') },
    expected: /^manifests\/latin1\.yaml:3:12: not valid UTF-8 text/,
  },
  {
    name: 'a list as document',
    setup: { 'manifests/list.yaml': fixture('list-document.yaml') },
    expected: /^manifests\/list\.yaml:1:1: document must be a mapping .*; got a list$/,
  },
  {
    name: 'a scalar as document',
    setup: { 'manifests/scalar.yaml': fixture('scalar-document.yaml') },
    expected: /^manifests\/scalar\.yaml:1:1: document must be a mapping .*; got a string "just a string"$/,
  },
  {
    name: 'duplicate keys',
    setup: { 'manifests/dup.yaml': fixture('duplicate-keys.yaml') },
    expected: /^manifests\/dup\.yaml:8:3: duplicate key "host"$/,
  },
  {
    name: 'merge-conflict markers',
    setup: { 'manifests/conflict.yaml': fixture('merge-conflict.yaml') },
    expected: /^manifests\/conflict\.yaml:6:1: merge conflict marker "<<<<<<<": resolve the conflict first$/,
  },
  {
    name: 'tab indentation',
    setup: { 'manifests/tabs.yaml': fixture('tabs.yaml') },
    expected: /^manifests\/tabs\.yaml:6:1: YAML syntax error: Tabs are not allowed as indentation/,
  },
  {
    name: 'syntax error',
    setup: { 'manifests/syntax.yaml': fixture('syntax-error.yaml') },
    expected: /^manifests\/syntax\.yaml:\d+:\d+: YAML syntax error: /,
  },
  {
    name: 'unknown kind',
    setup: { 'manifests/kind.yaml': fixture('unknown-kind.yaml') },
    expected:
      /^manifests\/kind\.yaml:2:7: kind: unknown kind "Pod"; expected one of Host, Cluster, VirtualMachine$/,
  },
  {
    name: 'wrong apiVersion',
    setup: { 'manifests/api.yaml': fixture('wrong-api-version.yaml') },
    expected:
      /^manifests\/api\.yaml:1:13: VirtualMachine\/web-01: apiVersion: must be "vmplace\.dev\/v1alpha1" \(got "v1"\)$/,
  },
  {
    name: 'unknown tag (!!binary is not in the YAML 1.2 core schema)',
    setup: { 'manifests/tag.yaml': fixture('unknown-tag.yaml') },
    expected: /^manifests\/tag\.yaml:4:9: YAML: .*binary/,
  },
  {
    name: '__proto__ label key',
    setup: { 'manifests/proto.yaml': fixture('proto-key.yaml') },
    expected:
      /^manifests\/proto\.yaml:6:5: VirtualMachine\/web-01: metadata\.labels: key "__proto__" is not allowed/,
  },
  {
    name: 'merge key `<<` (not a YAML 1.2 feature)',
    setup: { 'manifests/merge.yaml': fixture('merge-key.yaml') },
    expected: /^manifests\/merge\.yaml:6:3: VirtualMachine\/web-01: spec\["<<"\]: unknown field$/,
  },
  {
    name: 'a mapping with ~80,000 unknown keys (bounded time, capped problems)',
    setup: {
      'manifests/keys.yaml':
        'apiVersion: vmplace.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c\nspec:\n' +
        Array.from({ length: 80_000 }, (_, i) => `  k${i}: v\n`).join(''),
    },
    expected: /^manifests\/keys\.yaml:1:1: Cluster\/c: 79980 more problem\(s\) in this document not shown$/,
  },
  {
    name: 'line longer than 16 KiB',
    setup: { 'manifests/long.yaml': `kind: Host\nmetadata: {name: ${'x'.repeat(20_000)}}\n` },
    expected: /^manifests\/long\.yaml:2:1: line is longer than 16384 characters$/,
  },
  {
    name: 'deep flow nesting',
    setup: { 'manifests/deep.yaml': Array.from({ length: 2000 }, () => '[').join('\n') + '\n' },
    expected: /^manifests\/deep\.yaml:\d+:\d+: YAML syntax error: /,
  },
  {
    name: 'file symlink leading outside the repository',
    setup: (repo) => {
      const outside = path.join(path.dirname(repo), 'outside.yaml');
      fs.writeFileSync(outside, hostDoc('evil'));
      fs.symlinkSync(outside, path.join(repo, 'manifests', 'evil.yaml'));
    },
    expected: /^manifests\/evil\.yaml:1:1: symbolic link leads outside the repository; skipped$/,
  },
  {
    name: 'directory symlink leading outside the repository',
    setup: (repo) => {
      const outside = path.join(path.dirname(repo), 'outside-dir');
      fs.mkdirSync(outside);
      fs.writeFileSync(path.join(outside, 'h.yaml'), hostDoc('evil'));
      fs.symlinkSync(outside, path.join(repo, 'manifests', 'sub'));
    },
    expected: /^manifests\/sub:1:1: symbolic link leads outside the repository; skipped$/,
  },
  {
    name: 'symlink loop',
    setup: (repo) => {
      fs.symlinkSync('loop-b.yaml', path.join(repo, 'manifests', 'loop-a.yaml'));
      fs.symlinkSync('loop-a.yaml', path.join(repo, 'manifests', 'loop-b.yaml'));
    },
    expected: /^manifests\/loop-a\.yaml:1:1: symbolic link loop; skipped$/,
  },
  {
    name: 'directory symlink to an ancestor (cycle)',
    setup: (repo) => {
      fs.mkdirSync(path.join(repo, 'manifests', 'd'));
      fs.writeFileSync(path.join(repo, 'manifests', 'd', 'h.yaml'), 'kind: 1\n');
      fs.symlinkSync('..', path.join(repo, 'manifests', 'd', 'up'));
    },
    expected: /^manifests\/d\/h\.yaml:1:7: kind: unknown kind 1;/,
  },
  {
    name: 'FIFO named like a manifest (must not block)',
    setup: (repo) => execFileSync('mkfifo', [path.join(repo, 'manifests', 'fifo.yaml')]),
    expected: /^manifests\/fifo\.yaml:1:1: not a regular file; skipped$/,
  },
];

describe('hostile files', () => {
  it.each(fileCases)('$name', async ({ setup, opts, expected }) => {
    const repo = typeof setup === 'function' ? makeRepo() : makeRepo(setup);
    if (typeof setup === 'function') setup(repo);
    const { state, lines } = await load(repo, opts);
    expect(lines).toEqual(expect.arrayContaining([expect.stringMatching(expected)]));
    // nothing hostile gets through
    expect(state.vms.has('web-01')).toBe(false);
    expect(state.hosts.has('evil')).toBe(false);
    expect(state.invalidFiles.size).toBeGreaterThan(0);
  });

  it('reports every merge-conflict marker line of a file', async () => {
    const repo = makeRepo({ 'manifests/conflict.yaml': fixture('merge-conflict.yaml') });
    const { lines } = await load(repo);
    expect(lines.filter((l) => l.includes('merge conflict marker')).map((l) => l.split(':')[1])).toEqual([
      '6',
      '8',
      '10',
    ]);
  });

  it('ignores empty documents and comment-only documents', async () => {
    const repo = makeRepo({ 'manifests/h.yaml': `---\n# nothing here\n---\n${hostDoc('lab')}---\n---\n` });
    const { state, lines } = await load(repo);
    expect(lines).toEqual([]);
    expect([...state.hosts.keys()]).toEqual(['lab']);
  });

  it('keeps the rest of the repository when one file is hostile', async () => {
    const repo = makeRepo({
      'manifests/a.yaml': hostDoc('lab'),
      'manifests/b.yaml': fixture('merge-conflict.yaml'),
      'manifests/c.yaml': vmDoc('demo'),
    });
    const { state } = await load(repo);
    expect([...state.vms.keys()]).toEqual(['demo']);
    expect([...state.invalidFiles]).toEqual(['manifests/b.yaml']);
  });

  it('follows symlinks that stay inside the repository, loading each real file once', async () => {
    const repo = makeRepo({ 'shared/lab.yaml': hostDoc('lab'), 'manifests/vm.yaml': vmDoc('demo') });
    fs.symlinkSync('../shared', path.join(repo, 'manifests', 'shared'));
    fs.symlinkSync('../shared/lab.yaml', path.join(repo, 'manifests', 'lab.yaml'));
    const { state, lines } = await load(repo);
    expect(lines).toEqual([]);
    expect([...state.hosts.keys()]).toEqual(['lab']);
  });

  it('visits a directory reachable through a symlink cycle once', async () => {
    const repo = makeRepo({ 'manifests/d/h.yaml': hostDoc('lab') });
    fs.symlinkSync('..', path.join(repo, 'manifests', 'd', 'up'));
    fs.symlinkSync('.', path.join(repo, 'manifests', 'self'));
    const { state, lines } = await load(repo);
    expect(lines).toEqual([]);
    expect([...state.hosts.keys()]).toEqual(['lab']);
  });
});

const host = (specExtra: string, uri = 'qemu:///system', driver = 'libvirt'): string =>
  `apiVersion: vmplace.dev/v1alpha1
kind: Host
metadata:
  name: hv-a
spec:
  driver: ${driver}
  uri: ${uri}
${specExtra}`;
const storagePath = (p: string): string => host(`  storage:\n    - name: a\n      path: ${p}\n`);
const named = (name: string): string => vmDoc(name, 'lab', 'b');
const ssh = (lines: string): string =>
  host(
    `  ssh:\n${lines
      .split('\n')
      .map((l) => `    ${l}`)
      .join('\n')}\n`,
  );

/** [description, document, line:col and message of the expected problem] */
const valueCases: [string, string, RegExp][] = [
  [
    'name with a space',
    named('"web 01"'),
    /:4:9: .*metadata\.name: must be a lowercase DNS label.* \(got "web 01"\)$/,
  ],
  ['name with ;', named('"web;rm -rf"'), /:4:9: .*metadata\.name: must be a lowercase DNS label/],
  ['name with /', named('a/b'), /:4:9: .*metadata\.name: must be a lowercase DNS label.*\(got "a\/b"\)$/],
  ['name with quotes', named(`'a"b'`), /:4:9: .*metadata\.name: must be a lowercase DNS label/],
  [
    'uppercase name',
    named('Web01'),
    /:4:9: VirtualMachine\/"Web01": metadata\.name: must be a lowercase DNS label/,
  ],
  [
    'name of 64 characters',
    named('a'.repeat(64)),
    /:4:9: .*metadata\.name: must NOT have more than 63 characters/,
  ],
  ['name with a control character', named('"a\\u0007b"'), /metadata\.name: .*\(got "a\\u0007b"\)$/],
  [
    'relative storage path',
    storagePath('var/lib/x'),
    /:10:13: Host\/hv-a: spec\.storage\[0\]\.path: must be an absolute, normalised path/,
  ],
  [
    'storage path with ..',
    storagePath('/var/lib/../etc'),
    /spec\.storage\[0\]\.path: must be an absolute, normalised path/,
  ],
  [
    'storage path with .',
    storagePath('/var/./lib'),
    /spec\.storage\[0\]\.path: must be an absolute, normalised path/,
  ],
  [
    'storage path with //',
    storagePath('/var//lib'),
    /spec\.storage\[0\]\.path: must be an absolute, normalised path/,
  ],
  [
    'storage path with trailing /',
    storagePath('/var/lib/'),
    /spec\.storage\[0\]\.path: must be an absolute, normalised path/,
  ],
  [
    'storage path with a newline',
    storagePath('"/var/li\\nb"'),
    /spec\.storage\[0\]\.path: .*\(got "\/var\/li\\nb"\)$/,
  ],
  ['storage path /', storagePath('/'), /spec\.storage\[0\]\.path: must NOT have fewer than 2 characters/],
  [
    'uri with an unknown scheme',
    host('', 'ftp://host/system'),
    /:7:8: Host\/hv-a: spec\.uri: must be a libvirt URI/,
  ],
  [
    'uri with whitespace',
    host('', '"qemu:///system --x"'),
    /spec\.uri: must be a connection URI without whitespace/,
  ],
  [
    'uri with a quote',
    host('', `"qemu+ssh://ho'st/system"`),
    /spec\.uri: must be a connection URI without whitespace, quotes/,
  ],
  [
    'uri host starting with -',
    host('', 'qemu+ssh://-oProxyCommand=x/system'),
    /spec\.uri: must be a libvirt URI/,
  ],
  ['uri user starting with -', host('', 'qemu+ssh://-x@h/system'), /spec\.uri: must be a libvirt URI/],
  [
    'uri port out of range',
    host('', 'qemu+ssh://h:70000/system'),
    /spec\.uri: has a port out of range 1-65535/,
  ],
  [
    'uri qemu+ssh without host',
    host('', 'qemu+ssh:///system'),
    /spec\.uri: must be a libvirt URI qemu:\/\/\/system/,
  ],
  ['uri qemu+unix with host', host('', 'qemu+unix://h/system'), /spec\.uri: must be a libvirt URI/],
  [
    'uri with a bad IPv4 host',
    host('', 'qemu+ssh://root@999.1.1.1/system'),
    /spec\.uri: has an invalid host "999\.1\.1\.1"/,
  ],
  [
    'uri with a bad IPv6 host',
    host('', 'qemu+ssh://[::zz]/system'),
    /spec\.uri: must be a libvirt URI|spec\.uri: has an invalid IPv6/,
  ],
  [
    'hyperv driver with a libvirt uri',
    host('', 'qemu:///system', 'hyperv'),
    /spec\.uri: must be a Hyper-V URI/,
  ],
  [
    'unknown driver',
    host('', 'qemu:///system', 'vmware'),
    /spec\.driver: must be one of libvirt, hyperv \(got "vmware"\)$/,
  ],
  [
    'ssh host starting with -',
    ssh('host: -oProxyCommand=x'),
    /:9:11: Host\/hv-a: spec\.ssh\.host: must be a hostname, an IPv4 address or an IPv6/,
  ],
  ['ssh host with a space', ssh('host: "a b"'), /spec\.ssh\.host: must be a hostname/],
  [
    'ssh host bad IPv4',
    ssh('host: 300.1.1.1'),
    /:9:11: Host\/hv-a: spec\.ssh\.host: is not a valid IPv4 address \(got "300\.1\.1\.1"\)$/,
  ],
  ['ssh host bad IPv6', ssh('host: "fe80::1::2"'), /spec\.ssh\.host: is not a valid IPv6 address/],
  [
    'ssh user with ;',
    ssh('host: h\nuser: "root;id"'),
    /:10:11: Host\/hv-a: spec\.ssh\.user: must be a user name/,
  ],
  ['ssh user starting with -', ssh('host: h\nuser: -oX'), /spec\.ssh\.user: must be a user name/],
  ['ssh port 0', ssh('host: h\nport: 0'), /spec\.ssh\.port: must be >= 1/],
  ['ssh port 65536', ssh('host: h\nport: 65536'), /spec\.ssh\.port: must be <= 65535/],
  ['ssh port as a string', ssh('host: h\nport: "22"'), /spec\.ssh\.port: must be integer \(got "22"\)$/],
  ['ssh port fractional', ssh('host: h\nport: 22.5'), /spec\.ssh\.port: must be integer/],
  [
    'identityFile relative',
    ssh('host: h\nidentityFile: id_rsa'),
    /spec\.ssh\.identityFile: must be an absolute, normalised path/,
  ],
  [
    'knownHostsFile with ..',
    ssh('host: h\nknownHostsFile: /etc/../k'),
    /spec\.ssh\.knownHostsFile: must be an absolute/,
  ],
  [
    'unknown ssh field, at the key',
    ssh('host: h\ncolour: red'),
    /:10:5: Host\/hv-a: spec\.ssh\.colour: unknown field$/,
  ],
  [
    'transferAddress not a host',
    host('  transferAddress: "10.0.0.1; id"\n'),
    /spec\.transferAddress: must be a hostname/,
  ],
  [
    'transferAddress bad IPv4',
    host('  transferAddress: 10.0.0.256\n'),
    /spec\.transferAddress: is not a valid IPv4 address/,
  ],
];

describe('hostile values', () => {
  it.each(valueCases)('%s', async (_name, doc, expected) => {
    const repo = makeRepo({ 'manifests/x.yaml': doc });
    const { state, lines } = await load(repo);
    expect(lines).toEqual(expect.arrayContaining([expect.stringMatching(expected)]));
    expect(lines.every((l) => l.startsWith('manifests/x.yaml:'))).toBe(true);
    expect(state.hosts.size + state.vms.size).toBe(0);
  });
});
