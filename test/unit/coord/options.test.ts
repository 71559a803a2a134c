/**
 * The daemon's etcd options (src/coord/etcd/options.ts): endpoints, replica names and the auth
 * file, whose password must never reach an error message.
 */
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { checkReplicaId, parseEndpoints, readAuthFile } from '../../../src/coord/etcd/options';
import { StalledError } from '../../../src/errors';

/** The error `fn` throws (fails the test when it throws none). */
function thrown(fn: () => unknown): StalledError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(StalledError);
    expect((err as StalledError).reason).toBe('InvalidCoordinationOptions');
    return err as StalledError;
  }
  throw new Error('nothing was thrown');
}

describe('parseEndpoints', () => {
  it.each([
    ['http://127.0.0.1:2379', ['http://127.0.0.1:2379']],
    ['http://a:2379,https://b:2379, http://c:2379 ', ['http://a:2379', 'https://b:2379', 'http://c:2379']],
    ['http://a:2379/', ['http://a:2379']],
    ['http://a:2379,,', ['http://a:2379']],
    ['http://[::1]:2379', ['http://[::1]:2379']],
  ])('%s -> %j', (text, want) => {
    expect(parseEndpoints(text)).toEqual(want);
  });

  it.each([
    ['', /no endpoint/],
    [' , ', /no endpoint/],
    ['a:2379', /must be http/],
    ['127.0.0.1:2379', /not a URL/],
    ['ftp://a:2379', /must be http/],
    ['http://a', /must be http/],
    ['http://a:2379/v3', /has a path/],
    ['http://a:2379?x=1', /has a path/],
  ])('refuses %j', (text, why) => {
    expect(thrown(() => parseEndpoints(text)).message).toMatch(why);
  });

  it('refuses credentials in a URL without repeating them', () => {
    const e = thrown(() => parseEndpoints('http://root:pa55-in-url@a:2379'));
    expect(e.message).toMatch(/--etcd-auth-file/);
    expect(e.message).not.toContain('pa55-in-url');
  });
});

describe('checkReplicaId', () => {
  it.each(['a', 'replica-1', 'mgmt01.example.com', 'r_2', 'A'.repeat(63)])('accepts %s', (id) => {
    expect(checkReplicaId(id)).toBe(id);
  });
  it.each(['', '-a', '.a', 'a/b', 'a b', 'ä', 'A'.repeat(64), 'a\nb', '../x'])('refuses %j', (id) => {
    thrown(() => checkReplicaId(id));
  });
});

describe('readAuthFile', () => {
  const password = 'hunter2-Very$ecret';
  let dir: string;
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmplace-auth-'));
  });
  afterEach(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });
  const write = async (text: string, mode: number): Promise<string> => {
    const f = path.join(dir, 'etcd-auth');
    await fs.writeFile(f, text);
    await fs.chmod(f, mode);
    return f;
  };

  it('reads USER:PASSWORD from the first line of a file only its owner may read', async () => {
    const f = await write(`vmplace:${password}\nignored:line\n`, 0o600);
    expect(readAuthFile(f)).toEqual({ username: 'vmplace', password });
    // a password may hold ':'; CRLF files work
    const g = await write(`vmplace:a:b\r\n`, 0o400);
    expect(readAuthFile(g)).toEqual({ username: 'vmplace', password: 'a:b' });
  });

  it.each([0o644, 0o640, 0o604, 0o660, 0o601])(
    'refuses a file of mode %o, naming the mode and not the password',
    async (mode) => {
      const f = await write(`vmplace:${password}\n`, mode);
      const e = thrown(() => readAuthFile(f));
      expect(e.message).toContain(`mode ${mode.toString(8)}`);
      expect(e.message).toContain('chmod 600');
      expect(e.message).not.toContain(password);
      expect(JSON.stringify(e)).not.toContain(password);
      expect(String(e.stack)).not.toContain(password);
    },
  );

  it.each([
    ['no colon', password],
    ['no user', `:${password}`],
    ['no password', `${password}:`],
    ['empty first line', `\nvmplace:${password}`],
  ])('refuses a malformed file (%s) without repeating its content', async (_, text) => {
    const f = await write(text, 0o600);
    const e = thrown(() => readAuthFile(f));
    expect(e.message).toMatch(/USER:PASSWORD/);
    expect(e.message).not.toContain(password);
    expect(String(e.stack)).not.toContain(password);
  });

  it('says it cannot read a missing file', () => {
    expect(thrown(() => readAuthFile(path.join(dir, 'missing'))).message).toMatch(/cannot read it/);
  });
});
