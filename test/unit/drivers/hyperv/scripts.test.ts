import { StalledError } from '../../../../src/errors';
import { RAW_COMMAND_LINE } from '../../../../src/exec/exec';
import { powershellCommandLine, psQuote } from '../../../../src/drivers/hyperv/powershell';
import * as scripts from '../../../../src/drivers/hyperv/scripts';
import {
  parseProblems,
  powershellParser,
  scanVerbatim,
  stringLiterals,
  verbatimLiterals,
  withTree,
} from './ps-grammar';

/** How to call each script function: its string arguments by position, the rest fixed. */
type Variant = { label: string; strings: number; build: (s: string[]) => string };
const v = (label: string, strings: number, build: (s: string[]) => string): Variant => ({
  label,
  strings,
  build,
});
const at = (s: string[], i: number): string => s[i] ?? '';
const GUID = '3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f';

const TABLE: Record<string, Variant[]> = {
  getVm: [v('getVm', 1, (s) => scripts.getVm(at(s, 0)))],
  listVms: [v('listVms', 0, () => scripts.listVms())],
  vmState: [v('vmState', 1, (s) => scripts.vmState(at(s, 0)))],
  saveVm: [v('saveVm', 1, (s) => scripts.saveVm(at(s, 0)))],
  startVm: [v('startVm', 1, (s) => scripts.startVm(at(s, 0)))],
  stopVm: [
    v('stopVm shutdown', 1, (s) => scripts.stopVm(at(s, 0), false)),
    v('stopVm turnOff', 1, (s) => scripts.stopVm(at(s, 0), true)),
  ],
  suspendVm: [v('suspendVm', 1, (s) => scripts.suspendVm(at(s, 0)))],
  resumeVm: [v('resumeVm', 1, (s) => scripts.resumeVm(at(s, 0)))],
  removeVm: [v('removeVm', 1, (s) => scripts.removeVm(at(s, 0)))],
  compareVm: [
    v('compareVm register', 1, (s) => scripts.compareVm(at(s, 0))),
    v('compareVm copy', 2, (s) => scripts.compareVm(at(s, 0), at(s, 1))),
  ],
  importVm: [v('importVm', 1, (s) => scripts.importVm(at(s, 0)))],
  moveVmStorage: [v('moveVmStorage', 2, (s) => scripts.moveVmStorage(at(s, 0), at(s, 1)))],
  moveVm: [v('moveVm', 3, (s) => scripts.moveVm(at(s, 0), at(s, 1), at(s, 2)))],
  checkpointVm: [v('checkpointVm', 2, (s) => scripts.checkpointVm(at(s, 0), at(s, 1)))],
  getCheckpoints: [v('getCheckpoints', 1, (s) => scripts.getCheckpoints(at(s, 0)))],
  removeCheckpoint: [v('removeCheckpoint', 2, (s) => scripts.removeCheckpoint(at(s, 0), at(s, 1)))],
  mergeStatus: [v('mergeStatus', 1, (s) => scripts.mergeStatus(at(s, 0)))],
  getVhd: [v('getVhd', 1, (s) => scripts.getVhd(at(s, 0)))],
  getVhdChain: [v('getVhdChain', 1, (s) => scripts.getVhdChain(at(s, 0)))],
  testVhd: [v('testVhd', 1, (s) => scripts.testVhd(at(s, 0)))],
  mergeVhd: [v('mergeVhd', 2, (s) => scripts.mergeVhd(at(s, 0), at(s, 1)))],
  setVhdParent: [
    v('setVhdParent offline', 2, (s) => scripts.setVhdParent(at(s, 0), at(s, 1))),
    v('setVhdParent online, ignoring id mismatch', 3, (s) =>
      scripts.setVhdParent(at(s, 0), at(s, 1), { leafPath: at(s, 2), ignoreIdMismatch: true }),
    ),
  ],
  newDifferencingVhd: [v('newDifferencingVhd', 2, (s) => scripts.newDifferencingVhd(at(s, 0), at(s, 1)))],
  fileHash: [v('fileHash', 1, (s) => scripts.fileHash(at(s, 0)))],
  fileInfo: [v('fileInfo', 1, (s) => scripts.fileInfo(at(s, 0)))],
  removeFile: [v('removeFile', 1, (s) => scripts.removeFile(at(s, 0)))],
  newDirectory: [v('newDirectory', 1, (s) => scripts.newDirectory(at(s, 0)))],
  removeDirIfEmpty: [v('removeDirIfEmpty', 1, (s) => scripts.removeDirIfEmpty(at(s, 0)))],
  volumeInfo: [v('volumeInfo', 1, (s) => scripts.volumeInfo(at(s, 0)))],
  hostInfo: [v('hostInfo', 0, () => scripts.hostInfo())],
  vmHostStorage: [v('vmHostStorage', 0, () => scripts.vmHostStorage())],
  // the driver's own (src/drivers/hyperv/driver.ts) and the copies (src/drivers/hyperv/transport.ts)
  vmDisks: [v('vmDisks', 1, (s) => scripts.vmDisks(at(s, 0)))],
  layerLinks: [
    v('layerLinks one', 1, (s) => scripts.layerLinks([at(s, 0)])),
    v('layerLinks two', 2, (s) => scripts.layerLinks([at(s, 0), at(s, 1)])),
  ],
  vmFiles: [v('vmFiles', 0, () => scripts.vmFiles())],
  pathAttributes: [
    v('pathAttributes one', 1, (s) => scripts.pathAttributes([at(s, 0)])),
    v('pathAttributes three', 3, (s) => scripts.pathAttributes([at(s, 0), at(s, 1), at(s, 2)])),
  ],
  createNewFile: [v('createNewFile', 1, (s) => scripts.createNewFile(at(s, 0)))],
  removeIfIdentity: [v('removeIfIdentity', 2, (s) => scripts.removeIfIdentity(at(s, 0), at(s, 1)))],
  hardLink: [v('hardLink', 2, (s) => scripts.hardLink(at(s, 0), at(s, 1)))],
  stateFiles: [v('stateFiles', 1, (s) => scripts.stateFiles(at(s, 0)))],
  filesNamed: [v('filesNamed', 2, (s) => scripts.filesNamed(at(s, 0), at(s, 1)))],
  copyConfiguration: [
    v('copyConfiguration, no checkpoint', 2, (s) => scripts.copyConfiguration(at(s, 0), at(s, 1), [])),
    v('copyConfiguration, a checkpoint', 3, (s) =>
      scripts.copyConfiguration(at(s, 0), at(s, 1), [{ id: GUID, stem: at(s, 2) }]),
    ),
    v('copyConfiguration, checkpoints only', 3, (s) =>
      scripts.copyConfiguration(at(s, 0), undefined, [
        { id: at(s, 1), stem: at(s, 2) },
        { id: GUID, stem: 'D:\\VMs\\x' },
      ]),
    ),
  ],
  hardLinks: [
    v('hardLinks one', 2, (s) => scripts.hardLinks([[at(s, 0), at(s, 1)]])),
    v('hardLinks two', 2, (s) =>
      scripts.hardLinks([
        [at(s, 0), at(s, 1)],
        ['D:\\VMs\\x.vmcx', 'D:\\VMs\\x.import\\Virtual Machines\\y.vmcx'],
      ]),
    ),
  ],
  importSavedVm: [
    v('importSavedVm, a drive', 3, (s) =>
      scripts.importSavedVm({
        config: at(s, 0),
        drives: [{ controllerType: at(s, 1), controllerNumber: 0, controllerLocation: 0, path: at(s, 2) }],
      }),
    ),
    v('importSavedVm, two drives', 2, (s) =>
      scripts.importSavedVm({
        config: 'D:\\VMs\\x.import\\Virtual Machines\\y.vmcx',
        drives: [
          { controllerType: 'SCSI', controllerNumber: 0, controllerLocation: 0, path: at(s, 0) },
          { controllerType: 'SCSI', controllerNumber: 1, controllerLocation: 63, path: at(s, 1) },
        ],
      }),
    ),
  ],
  moveVmVhd: [v('moveVmVhd', 3, (s) => scripts.moveVmVhd(at(s, 0), at(s, 1), at(s, 2)))],
  setDrivePath: [v('setDrivePath', 3, (s) => scripts.setDrivePath(at(s, 0), at(s, 1), 0, 1, at(s, 2)))],
  setStartAction: [
    v('setStartAction Start', 1, (s) => scripts.setStartAction(at(s, 0), 'Start')),
    v('setStartAction Nothing', 1, (s) => scripts.setStartAction(at(s, 0), 'Nothing')),
  ],
  vmUptime: [v('vmUptime', 1, (s) => scripts.vmUptime(at(s, 0)))],
  fileHeader: [v('fileHeader', 1, (s) => scripts.fileHeader(at(s, 0)))],
  tcpReachable: [v('tcpReachable', 1, (s) => scripts.tcpReachable(at(s, 0), 22))],
  scpToHost: [
    v('scpToHost', 4, (s) => scripts.scpToHost(at(s, 0), at(s, 1), at(s, 2), 22, at(s, 3))),
    v('scpToHost limited', 4, (s) =>
      scripts.scpToHost(at(s, 0), at(s, 1), at(s, 2), 2222, at(s, 3), { limitKbit: 8000 }),
    ),
  ],
  finishCopy: [v('finishCopy', 3, (s) => scripts.finishCopy(at(s, 0), at(s, 1), at(s, 2)))],
  copyIntoPart: [v('copyIntoPart', 2, (s) => scripts.copyIntoPart(at(s, 0), at(s, 1)))],
};
const VARIANTS = Object.values(TABLE).flat();

/** Ordinary values for the arguments not under test. */
const SAMPLE = ['web01', 'D:\\Hyper-V\\web01\\Virtual Hard Disks', 'hv2.example.org', 'D:\\VMs\\x.vhdx'];

const LONG = "x'’‘‚‛$(Remove-Item C:\\ -Recurse)`;|&\n\"@'–—${env:PATH}".repeat(6);

/** Names and paths a manifest could hold, each to arrive in PowerShell as exactly one string. */
const HOSTILE: string[] = [
  "'",
  '’',
  '‘',
  '‚',
  '‛',
  "''",
  "'’‘‚‛",
  "it's",
  "a'; Remove-Item C:\\ -Recurse; '",
  '’; Remove-Item C:\\ -Recurse; ‘',
  '‚+(Stop-Computer)+‛',
  '$(Remove-Item C:\\ -Recurse)',
  '`',
  '`$x`n`',
  "x`'",
  'a;b',
  'a|b',
  'a&b',
  'a && b || c',
  'line1\nline2',
  'line1\r\nRemove-Item C:\\\r\n',
  'cr\ronly',
  '"',
  '"; Stop-Computer; "',
  '“smart” „double“',
  "@'\nhere\n'@",
  "x\n'@\nStop-Computer\n@'",
  '@"\nhere\n"@',
  '–Force',
  '—Recurse',
  'a – b — c ― d',
  '$env:PATH',
  '${x}',
  '$x',
  '$_',
  '#comment',
  '<# block #>',
  '{ Stop-Computer }',
  '@()',
  '[char]39',
  '-Confirm:$false',
  ' ',
  '',
  'C:\\VMs\\web 01 [1]\\disk*.vhdx',
  '\\\\?\\Volume{4c1b2a3d-0000-0000-0000-100000000000}\\x',
  'ünïcødé 😀',
  '\t\v\f',
  LONG,
];

beforeAll(async () => {
  await powershellParser();
});

describe('Hyper-V scripts', () => {
  it('the table covers every script function', () => {
    const exported = Object.entries(scripts)
      .filter(([, f]) => typeof f === 'function')
      .map(([name]) => name)
      .sort();
    expect(Object.keys(TABLE).sort()).toEqual(exported);
  });

  it.each(VARIANTS.map((x) => [x.label, x] as const))(
    '%s parses with no error or missing node',
    async (_l, x) => {
      const script = x.build(SAMPLE);
      const problems = await withTree(script, (t) => parseProblems(t.rootNode));
      expect(problems).toEqual([]);
      // and it fits one command line of the safe charset
      expect(powershellCommandLine(script)).toMatch(RAW_COMMAND_LINE);
    },
  );

  it.each(VARIANTS.filter((x) => x.strings > 0).map((x) => [x.label, x] as const))(
    '%s: each value is exactly one string literal, whatever it holds',
    async (_l, x) => {
      // The value goes into every argument at once; the tree must be the placeholder's tree with
      // only the literals' text changed. (One full parse per value: about 20 ms each.)
      const placeholder = await withTree(x.build(Array<string>(x.strings).fill('placeholder')), (t) => ({
        count: t.rootNode.descendantCount,
        literals: verbatimLiterals(t.rootNode).length,
      }));
      const failures: string[] = [];
      for (const hostile of HOSTILE) {
        const script = x.build(Array<string>(x.strings).fill(hostile));
        const found = await withTree(script, (t) => {
          const verbatim = verbatimLiterals(t.rootNode).map((n) => ({
            text: n.text,
            ...scanVerbatim(n.text),
          }));
          return {
            problems: parseProblems(t.rootNode),
            count: t.rootNode.descendantCount,
            literals: verbatim.length,
            // PowerShell's tokenizer ends every single-quoted literal where the grammar does
            early: verbatim.filter((l) => l.end !== l.text.length).length,
            holding: verbatim.filter((l) => l.value === hostile),
            // no other kind of string (expandable, here-string) carries it
            others: stringLiterals(t.rootNode).filter(
              (n) =>
                n.firstChild?.type !== 'verbatim_string_characters' &&
                hostile !== '' &&
                n.text.includes(hostile),
            ).length,
          };
        });
        const name = JSON.stringify(hostile.slice(0, 40));
        if (found.problems.length > 0) failures.push(`${name}: parse problems ${found.problems.join('; ')}`);
        if (found.early > 0) failures.push(`${name}: PowerShell would end a literal early`);
        if (found.holding.length !== x.strings)
          failures.push(`${name}: ${found.holding.length} literals hold it, not ${x.strings}`);
        if (found.holding.some((l) => l.text !== psQuote(hostile)))
          failures.push(`${name}: a literal holds more than it`);
        if (found.others !== 0) failures.push(`${name}: in ${found.others} other string literals`);
        // same nodes as with the placeholder: no command, expression or token came from the value
        if (found.count !== placeholder.count || found.literals !== placeholder.literals)
          failures.push(`${name}: the tree changed (${found.count} nodes, not ${placeholder.count})`);
        expect(() => powershellCommandLine(script)).not.toThrow();
      }
      expect(failures).toEqual([]);
    },
  );

  it('refuses values PowerShell cannot take as data, before building anything', () => {
    for (const bad of ['a\0b', 'lone \uD800 high', 'lone \uDC00 low', 'reversed \uDC00\uD800']) {
      expect(() => scripts.getVm(bad)).toThrow(StalledError);
      try {
        scripts.removeFile(bad);
      } catch (e) {
        expect((e as StalledError).reason).toBe('UnsafeScriptValue');
      }
    }
  });

  it('a value too big for one command line is refused when the line is built, never cut', () => {
    const script = scripts.getVhd(`D:\\${'x'.repeat(4000)}`);
    expect(() => powershellCommandLine(script)).toThrow(
      expect.objectContaining({ reason: 'CommandLineTooLong' }),
    );
  });

  it('binds each value to a variable once and names VMs by comparison, never through -Name wildcards', () => {
    const s = scripts.saveVm('web*');
    expect(s).toContain("$n='web*'");
    expect(s.split("'web*'")).toHaveLength(2);
    expect(s).not.toMatch(/Get-VM -Name/);
    expect(s).toContain('Where-Object{$_.Name -eq $n}');
  });

  it('uses -LiteralPath or .NET for files', () => {
    for (const s of [scripts.fileHash('p'), scripts.fileInfo('p'), scripts.removeFile('p')]) {
      expect(s).toContain('-LiteralPath $p');
      expect(s).not.toMatch(/-Path \$p/);
    }
    expect(scripts.newDirectory('p')).toContain('[IO.Directory]::CreateDirectory($p)');
  });

  it('states its switches from the arguments, not from values', () => {
    expect(scripts.stopVm('v', true)).toContain('Stop-VM -VM $v -TurnOff');
    expect(scripts.stopVm('v', false)).toContain('Stop-VM -VM $v -Force');
    expect(scripts.setVhdParent('a', 'b')).not.toContain('-IgnoreIdMismatch');
    expect(scripts.setVhdParent('a', 'b', { ignoreIdMismatch: true })).toContain('-IgnoreIdMismatch');
    expect(scripts.compareVm('a')).not.toContain('-Copy');
    expect(scripts.compareVm('a', 'b')).toContain('-Copy -VhdDestinationPath $d');
  });
});
