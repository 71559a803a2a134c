/**
 * How vmplace gets onto a management box (issue 11): the `npm pack` tarball, installed with
 * `npm install --global --prefix TMP`, runs from the installed copy, not from this checkout;
 * and the systemd unit in examples/systemd passes `systemd-analyze verify` against that install,
 * with only options the installed `vmplace daemon` accepts.
 *
 * The tarball is packed from a copy of the build inputs (so the checkout's dist/ is not rebuilt
 * under other tests), with this checkout's node_modules for the compiler. npm installs the
 * runtime dependencies from its cache when it can (`--prefer-offline`), else from the registry.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cleanupTmp, tmpDir } from '../../support/tmp';

jest.setTimeout(180_000);

const ROOT = path.resolve(__dirname, '../../..');
const VERSION = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string })
  .version;

/** The environment without npm's own variables (jest may run under `npm run`/`npx`). */
const cleanEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k)));

function run(
  cmd: string,
  args: string[],
  cwd: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      cmd,
      args,
      { cwd, env: cleanEnv, timeout: 150_000, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

let prefix: string;
let vmplace: string;
let elsewhere: string;
const timings: Record<string, number> = {};

beforeAll(async () => {
  const build = tmpDir('vmplace-pack-');
  for (const f of ['package.json', 'package-lock.json', 'README.md', 'tsconfig.json', 'tsconfig.build.json'])
    fs.copyFileSync(path.join(ROOT, f), path.join(build, f));
  for (const d of ['bin', 'src', 'schemas', 'web'])
    fs.cpSync(path.join(ROOT, d), path.join(build, d), { recursive: true });
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(build, 'node_modules'));
  const out = tmpDir('vmplace-tgz-');
  let t = Date.now();
  const pack = await run('npm', ['pack', '--pack-destination', out], build);
  timings.pack = Date.now() - t;
  expect(pack.stderr.match(/npm error.*/g) ?? []).toEqual([]);
  expect(pack.code).toBe(0);
  const tgz = path.join(out, `vmplace-${VERSION}.tgz`);
  expect(fs.existsSync(tgz)).toBe(true);

  prefix = tmpDir('vmplace-prefix-');
  elsewhere = tmpDir('vmplace-cwd-');
  t = Date.now();
  const install = await run(
    'npm',
    ['install', '--global', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', tgz],
    elsewhere,
  );
  timings.install = Date.now() - t;
  expect(install.stderr.match(/npm error.*/g) ?? []).toEqual([]);
  expect(install.code).toBe(0);
  vmplace = path.join(prefix, 'bin', 'vmplace');
});

afterAll(() => {
  console.log(`npm pack ${timings.pack} ms, npm install --global ${timings.install} ms`);
  cleanupTmp();
});

describe('the npm pack tarball, installed with npm install --global', () => {
  it('puts a vmplace command in PREFIX/bin that runs the installed copy', () => {
    const real = fs.realpathSync(vmplace);
    expect(real).toBe(path.join(fs.realpathSync(prefix), 'lib/node_modules/vmplace/bin/vmplace.js'));
    const installed = path.join(prefix, 'lib/node_modules/vmplace');
    expect(fs.existsSync(path.join(installed, 'dist/cli/main.js'))).toBe(true);
    expect(fs.existsSync(path.join(installed, 'schemas/virtualmachine.schema.json'))).toBe(true);
    // what a management box does not need
    for (const absent of ['src', 'test', 'dist/lab', 'examples', 'scripts'])
      expect(fs.existsSync(path.join(installed, absent))).toBe(false);
  });

  it('ships the fleet page: its script and style, and preact and htm from the installed dependencies', async () => {
    const page = path.join(prefix, 'lib/node_modules/vmplace/dist/ui/page.js');
    const r = await run(
      process.execPath,
      [
        '-e',
        `const a = require(${JSON.stringify(page)}).pageAssets();` +
          `for (const [p, x] of Object.entries(a)) console.log(p, x.body.length);`,
      ],
      elsewhere,
    );
    expect(r.stderr).toBe('');
    const sizes = Object.fromEntries(
      r.stdout
        .trim()
        .split('\n')
        .map((l) => l.split(' ')),
    );
    expect(Object.keys(sizes).sort()).toEqual([
      '/',
      '/ui/app.css',
      '/ui/app.js',
      '/ui/vendor/htm.js',
      '/ui/vendor/preact.js',
    ]);
    for (const n of Object.values(sizes)) expect(Number(n)).toBeGreaterThan(400);
  });

  it('vmplace --version is the package version', async () => {
    const r = await run(vmplace, ['--version'], elsewhere);
    expect(r).toEqual({ code: 0, stdout: `${VERSION}\n`, stderr: '' });
  });

  it('vmplace validate examples/fleet passes from the installed copy', async () => {
    const r = await run(vmplace, ['validate', path.join(ROOT, 'examples/fleet')], elsewhere);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('valid: 4 host(s), 2 cluster(s), 6 VM(s), 6 VM status file(s)\n');
    expect(r.code).toBe(0);
  });

  it('vmplace status examples/fleet prints the table from the installed copy', async () => {
    const r = await run(vmplace, ['status', path.join(ROOT, 'examples/fleet')], elsewhere);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^VM +HOST +STORAGE +PHASE +STEP +PROGRESS +PAUSE\n/);
  });
});

describe.each(['vmplace.service', 'vmplace-replica.service'])('examples/systemd/%s', (unitName) => {
  const unitText = fs.readFileSync(path.join(ROOT, 'examples/systemd', unitName), 'utf8');
  // continuation lines joined, as systemd reads them
  const execStart = /^ExecStart=(.*)$/m.exec(unitText.replace(/\\\n\s*/g, ' '))![1]!;

  it('starts the command npm install --global puts in /usr/local/bin', () => {
    expect(execStart.split(' ')[0]).toBe('/usr/local/bin/vmplace');
  });

  it('uses only options the installed vmplace daemon accepts', async () => {
    const help = await run(vmplace, ['daemon', '--help'], elsewhere);
    const flags = execStart.match(/--[a-z-]+/g)!;
    expect(flags.length).toBeGreaterThan(5);
    for (const f of flags) expect(help.stdout).toContain(f);
  });

  it('keeps what Node, ssh and git need: no W^X lock, the network, its state dir', () => {
    expect(unitText).not.toMatch(/^MemoryDenyWriteExecute=yes/m);
    expect(unitText).not.toMatch(/^PrivateNetwork=yes/m);
    expect(unitText).toMatch(/^RestrictAddressFamilies=.*AF_INET .*AF_INET6/m);
    expect(unitText).toMatch(/^StateDirectory=vmplace$/m);
    for (const dir of execStart.match(/--(?:workdir|state-dir) (\S+)/g)!)
      expect(dir.split(' ')[1]!.startsWith('/var/lib/vmplace/')).toBe(true);
  });

  const analyze = ['/usr/bin/systemd-analyze', '/bin/systemd-analyze'].find((p) => fs.existsSync(p));
  (analyze ? it : it.skip)('passes systemd-analyze verify, run against the installed command', async () => {
    const unit = path.join(tmpDir('vmplace-unit-'), unitName);
    fs.writeFileSync(unit, unitText.replace('ExecStart=/usr/local/bin/vmplace', `ExecStart=${vmplace}`));
    const r = await run(analyze!, ['verify', unit], elsewhere);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const sec = await run(analyze!, ['security', '--offline=true', unit], elsewhere);
    const level = new RegExp(`Overall exposure level for ${unitName.replace('.', '\\.')}: ([\\d.]+)`).exec(
      sec.stdout,
    );
    // 8.8 ("EXPOSED") for the unit before hardening; 10 is everything open
    expect(Number(level?.[1])).toBeLessThan(2);
  });
});
