/** `vmplace daemon`: parse its options, build the daemon (app/compose), run it until a signal. */
import * as os from 'node:os';
import * as path from 'node:path';
import { type Command, Option } from 'commander';
import { EXIT, trustFor } from '../app/commands';
import { createDaemon } from '../app/compose';
import { readWebhookSecret } from '../daemon/http';
import { readUiToken } from '../ui/page';
import { parseDuration } from '../duration';
import { createLogger } from '../log';
import { readGitCredentials } from '../status/git';
import { TRUST_FILE_HELP } from './io';
import {
  checkReplicaId,
  DEFAULT_ETCD_PREFIX,
  MIN_LEASE_TTL_MS,
  parseEndpoints,
  readAuthFile,
  type EtcdOptions,
} from '../coord/etcd/options';
import { StalledError } from '../errors';

export function addDaemonCommand(program: Command, setExit: (code: number) => void): void {
  program
    .command('daemon')
    .description(
      'follow a GitOps repository: fetch, plan, migrate, commit status; serve health, metrics, webhooks',
    )
    .requiredOption('--repo <url-or-path>', 'the GitOps repository to follow (a URL or a local path)')
    .option('--branch <name>', 'branch to follow and to push status to', 'main')
    .option('--workdir <dir>', "the daemon's own clone", '/var/lib/vmplace/repo')
    .option('--state-dir <dir>', 'where migration state is kept', '/var/lib/vmplace')
    .option('--interval <duration>', 'poll interval (500ms, 2s, 5m)', '30s')
    .option('--listen <host:port>', 'health, readiness, metrics and webhook address', '127.0.0.1:9464')
    .option(
      '--webhook-secret-file <file>',
      'require GitHub-style X-Hub-Signature-256 webhooks signed with this secret',
    )
    .option(
      '--ui-token-file <file>',
      'the fleet page (GET /) needs this token (16+ characters); required for the page beyond loopback',
    )
    .option(
      '--git-credentials-file <file>',
      'USER:TOKEN for an https --repo, given to git by a credential helper (never in argv or .git/config)',
    )
    .option('--trust-file <file>', TRUST_FILE_HELP)
    .option('--author-name <name>', 'author of status commits', 'vmplace')
    .option('--author-email <email>', 'email of status commits', 'vmplace@localhost')
    .option(
      '--signing-key <key>',
      'sign status commits (a GnuPG key id, or an ssh public key with --signing-format ssh)',
    )
    .addOption(
      new Option('--signing-format <format>', 'gpg.format for signing').choices(['openpgp', 'ssh', 'x509']),
    )
    .option(
      '--shutdown-timeout <duration>',
      'how long SIGTERM waits for migrations to reach a checkpoint',
      '120s',
    )
    .option(
      '--etcd-endpoints <urls>',
      'share the fleet with other replicas through etcd: http(s)://HOST:PORT,... (default: this daemon alone)',
    )
    .option('--etcd-prefix <prefix>', 'replicas with the same prefix share a fleet', DEFAULT_ETCD_PREFIX)
    .option('--replica-id <name>', 'this replica among the others (default: host name and pid)')
    .option('--lease-ttl <duration>', "how long a dead replica's VMs wait before another takes them", '3s')
    .option('--etcd-cacert <file>', 'PEM CA of the etcd servers (TLS)')
    .option('--etcd-cert <file>', 'PEM client certificate for etcd')
    .option('--etcd-key <file>', 'PEM client key for etcd')
    .option('--etcd-auth-file <file>', 'USER:PASSWORD for etcd on its first line (mode 600)')
    .addOption(
      new Option('--log-format <format>', 'log format on stderr').choices(['json', 'pretty']).default('json'),
    )
    .action(
      async (opts: {
        repo: string;
        branch: string;
        workdir: string;
        stateDir: string;
        interval: string;
        listen: string;
        webhookSecretFile?: string;
        uiTokenFile?: string;
        gitCredentialsFile?: string;
        trustFile?: string;
        authorName: string;
        authorEmail: string;
        signingKey?: string;
        signingFormat?: 'openpgp' | 'ssh' | 'x509';
        shutdownTimeout: string;
        logFormat: 'json' | 'pretty';
        etcdEndpoints?: string;
        etcdPrefix: string;
        replicaId?: string;
        leaseTtl: string;
        etcdCacert?: string;
        etcdCert?: string;
        etcdKey?: string;
        etcdAuthFile?: string;
      }) => {
        const logger = createLogger({ format: opts.logFormat });
        const secret = opts.webhookSecretFile ? await readWebhookSecret(opts.webhookSecretFile) : undefined;
        const uiToken = opts.uiTokenFile ? await readUiToken(opts.uiTokenFile) : undefined;
        const gitCredentials = opts.gitCredentialsFile
          ? await readGitCredentials(opts.gitCredentialsFile)
          : undefined;
        const trust = trustFor(opts.trustFile, { stateDir: opts.stateDir, workdir: opts.workdir });
        const repo =
          /^[a-z][a-z0-9+.-]*:\/\//i.test(opts.repo) || /^[^/]+@[^:]+:/.test(opts.repo)
            ? opts.repo
            : path.resolve(opts.repo);
        const daemon = createDaemon({
          repo,
          branch: opts.branch,
          workdir: path.resolve(opts.workdir),
          stateDir: path.resolve(opts.stateDir),
          intervalMs: parseDuration(opts.interval),
          listen: opts.listen,
          ...(secret ? { webhookSecret: secret } : {}),
          ...(uiToken ? { uiToken } : {}),
          ...(gitCredentials ? { gitCredentials } : {}),
          trust,
          author: { name: opts.authorName, email: opts.authorEmail },
          ...(opts.signingKey ? { signingKey: opts.signingKey } : {}),
          ...(opts.signingFormat ? { signingFormat: opts.signingFormat } : {}),
          shutdownTimeoutMs: parseDuration(opts.shutdownTimeout),
          logger,
          ...(opts.etcdEndpoints
            ? { etcd: etcdOptionsOf({ ...opts, etcdEndpoints: opts.etcdEndpoints }) }
            : {}),
        });
        await daemon.start();
        let stopFailed = false;
        await new Promise<void>((resolve) => {
          const onSignal = (sig: string) => {
            logger.info({ signal: sig }, 'signal received');
            // detached (a signal handler cannot wait): it settles the promise awaited here; a
            // failed stop is logged and ends the process with EXIT.failed, not as an unhandled rejection
            void daemon.stop().then(resolve, (err: unknown) => {
              logger.error({ err }, 'stop failed');
              stopFailed = true;
              resolve();
            });
          };
          process.once('SIGTERM', () => onSignal('SIGTERM'));
          process.once('SIGINT', () => onSignal('SIGINT'));
        });
        setExit(stopFailed ? EXIT.failed : EXIT.ok);
      },
    );
}

/** `--etcd-*`, `--replica-id`, `--lease-ttl` as the coordination wants them; checked here, before anything starts. */
function etcdOptionsOf(o: {
  etcdEndpoints: string;
  etcdPrefix: string;
  replicaId?: string;
  leaseTtl: string;
  etcdCacert?: string;
  etcdCert?: string;
  etcdKey?: string;
  etcdAuthFile?: string;
  listen: string;
}): EtcdOptions {
  const leaseTtlMs = parseDuration(o.leaseTtl);
  if (leaseTtlMs < MIN_LEASE_TTL_MS)
    throw new StalledError(
      'InvalidCoordinationOptions',
      `--lease-ttl ${o.leaseTtl}: at least 2s (etcd's own minimum)`,
    );
  if (!o.etcdPrefix.startsWith('/'))
    throw new StalledError('InvalidCoordinationOptions', `--etcd-prefix ${o.etcdPrefix}: must start with /`);
  if ((o.etcdCert === undefined) !== (o.etcdKey === undefined))
    throw new StalledError('InvalidCoordinationOptions', '--etcd-cert and --etcd-key go together');
  if (o.etcdCert && !o.etcdCacert)
    throw new StalledError('InvalidCoordinationOptions', '--etcd-cert needs --etcd-cacert');
  if (o.etcdAuthFile) readAuthFile(o.etcdAuthFile); // fail now, not at the first call
  return {
    endpoints: parseEndpoints(o.etcdEndpoints),
    prefix: o.etcdPrefix,
    replicaId: checkReplicaId(o.replicaId ?? `${os.hostname().split('.')[0]}-${process.pid}`),
    leaseTtlMs,
    ...(o.etcdCacert
      ? { tls: { ca: o.etcdCacert, ...(o.etcdCert ? { cert: o.etcdCert, key: o.etcdKey! } : {}) } }
      : {}),
    ...(o.etcdAuthFile ? { authFile: o.etcdAuthFile } : {}),
    advertise: o.listen,
  };
}
