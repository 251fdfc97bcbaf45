import { writeFile } from 'node:fs/promises';

import { Command, CommanderError, Option } from 'commander';

import { decodeUtf8 } from '../bytes.js';
import { canonicalBytes, configDigest, parseCanonical } from '../canonical.js';
import { envelopePayload } from '../dsse.js';
import { type SigningKey, cryptoReady, generateSigningKey, isSigningKey, toKeyFile } from '../ed25519.js';
import { DEFAULT_MAX_ENVELOPE_BYTES, parseEnvelope } from '../envelope.js';
import { SnapshotError, refuse } from '../errors.js';
import { publishSnapshot } from '../origin/publish.js';
import { startOriginServer } from '../origin/server.js';
import { rotateRoot, signRoot, trustProvisionedRoot, walkRootChain } from '../root.js';
import { ROOT_PAYLOAD_TYPE } from '../schema.js';
import { signSnapshot } from '../sign.js';
import { verifySnapshotEnvelope } from '../verify.js';
import { describeFsError, readFileBounded, readJsonFile, readKey, readSigningKey } from './files.js';
import { addModel, parseChunkSize } from './model.js';

/** Where the CLI writes and when it stops; injected so tests and the bin share one program. */
export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
  now(): Date;
  /** Resolves when the process is asked to stop (serve runs until then). */
  untilStopped(): Promise<void>;
}

export const EXIT_OK = 0;
export const EXIT_REFUSED = 1;
export const EXIT_USAGE = 2;

const ROOT_FILE_LIMIT = 1024 * 1024;

/** Runs one CLI invocation and returns its exit code; never throws, never exits the process. */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  const program = buildProgram(io);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return EXIT_OK;
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version' || error.code === 'commander.help') {
        return EXIT_OK;
      }
      return EXIT_USAGE;
    }
    if (error instanceof SnapshotError) {
      io.stderr(`${error.code}: ${error.message}\n`);
      return error.code === 'USAGE' ? EXIT_USAGE : EXIT_REFUSED;
    }
    // Only a bug lands here; say so plainly without a stack trace or any key material.
    io.stderr(`INTERNAL: ${(error as Error)?.message ?? String(error)}\n`);
    return EXIT_REFUSED;
  }
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

function parseIsoTime(value: string, flag: string): Date {
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/.test(value) || Number.isNaN(Date.parse(value))) {
    refuse('USAGE', `${flag} must be an RFC 3339 UTC time like 2027-01-01T00:00:00Z, found "${value}"`);
  }
  return new Date(value);
}

function parseCount(value: string, flag: string, min: number): number {
  if (!/^\d{1,15}$/.test(value) || Number(value) < min) refuse('USAGE', `${flag} must be an integer ≥ ${min}, found "${value}"`);
  return Number(value);
}

async function writeNewFile(path: string, text: string, mode: number): Promise<void> {
  try {
    await writeFile(path, text, { mode, flag: 'wx' });
  } catch (cause) {
    refuse('IO', `cannot write ${path}: ${describeFsError(cause)}`, cause);
  }
}

function pretty(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

function buildProgram(io: CliIo): Command {
  const program = new Command('resultity-snapshot')
    .description('Sign, verify and publish Resultity configuration snapshots.')
    .exitOverride()
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr })
    .showHelpAfterError('(run with --help for usage)');

  program
    .command('keygen')
    .description('create an Ed25519 signing key (private key file mode 0600, public key beside it as FILE.pub)')
    .requiredOption('--out <file>', 'private key file to create (never overwritten)')
    .action(async (opts: { out: string }) => {
      await cryptoReady();
      const key = generateSigningKey();
      await writeNewFile(opts.out, pretty(toKeyFile(key, true)), 0o600);
      await writeNewFile(`${opts.out}.pub`, pretty(toKeyFile(key, false)), 0o644);
      io.stdout(`keyid: ${key.keyid}\npublic_key: ${toKeyFile(key, false).public_key}\n`);
    });

  const root = program.command('root').description('create and rotate trust roots (SPEC §4)');
  root
    .command('init')
    .description('create root version 1, signed by its own keys')
    .requiredOption('--network <net>', 'network name')
    .requiredOption('--key <file>', 'key file (repeat); private keys present sign the root', collect)
    .requiredOption('--threshold <n>', 'signatures needed')
    .requiredOption('--expires <iso>', 'expiry, RFC 3339 UTC')
    .requiredOption('--out <file>', 'root envelope to write')
    .action(async (opts: { network: string; key: string[]; threshold: string; expires: string; out: string }) => {
      await cryptoReady();
      const keys = await Promise.all(opts.key.map(readKey));
      const threshold = parseCount(opts.threshold, '--threshold', 1);
      const expiresAt = parseIsoTime(opts.expires, '--expires').toISOString().replace('.000Z', 'Z');
      const signers = keys.filter(isSigningKey);
      if (signers.length < threshold) {
        refuse('USAGE', `root needs ${threshold} signatures by its own keys, but only ${signers.length} private keys were given`);
      }
      const { envelope, root: made } = signRoot({ network: opts.network, version: 1, expiresAt, threshold, keys }, signers);
      await writeNewFile(opts.out, pretty(envelope), 0o644);
      io.stdout(`root v${made.version} for ${made.network}: ${made.keys.length} keys, threshold ${made.threshold}\n`);
    });

  root
    .command('rotate')
    .description('create root version N+1, signed by a threshold of version N and of its own keys')
    .requiredOption('--prev <file>', 'current root envelope (version N)')
    .requiredOption('--sign-with <file>', 'private key of version N (repeat)', collect)
    .requiredOption('--key <file>', 'key of version N+1 (repeat); private keys present sign too', collect)
    .requiredOption('--threshold <n>', 'signatures needed for version N+1')
    .requiredOption('--expires <iso>', 'expiry, RFC 3339 UTC')
    .requiredOption('--out <file>', 'root envelope to write')
    .action(async (opts: { prev: string; signWith: string[]; key: string[]; threshold: string; expires: string; out: string }) => {
      await cryptoReady();
      const previous = trustProvisionedRoot(await readFileBounded(opts.prev, ROOT_FILE_LIMIT));
      const oldSigners = await Promise.all(opts.signWith.map(readSigningKey));
      const keys = await Promise.all(opts.key.map(readKey));
      const threshold = parseCount(opts.threshold, '--threshold', 1);
      const expiresAt = parseIsoTime(opts.expires, '--expires').toISOString().replace('.000Z', 'Z');
      const draft = { network: previous.root.network, version: previous.root.version + 1, expiresAt, threshold, keys };
      const signers: SigningKey[] = [...oldSigners, ...keys.filter(isSigningKey)];
      const { envelope } = signRoot(draft, signers);
      // Check the result the way an Agent will, so a rotation that nodes would refuse is never written.
      rotateRoot(previous, new TextEncoder().encode(JSON.stringify(envelope)));
      await writeNewFile(opts.out, pretty(envelope), 0o644);
      io.stdout(`root v${draft.version} for ${draft.network}: ${keys.length} keys, threshold ${threshold}\n`);
    });

  program
    .command('sign')
    .description('canonicalize a snapshot and print its signed DSSE envelope')
    .requiredOption('--key <file>', 'private key file (repeat)', collect)
    .argument('<snapshot>', 'snapshot JSON file')
    .action(async (file: string, opts: { key: string[] }) => {
      await cryptoReady();
      const keys = await Promise.all(opts.key.map(readSigningKey));
      const value = await readJsonFile(file, 'snapshot');
      const { envelope } = signSnapshot(value, keys);
      io.stdout(pretty(envelope));
    });

  program
    .command('verify')
    .description('verify a snapshot envelope; prints its config digest')
    .requiredOption('--root <file>', 'trusted root envelope (repeat, oldest first, to walk a rotation)', collect)
    .option('--network <net>', "network this node belongs to (default: the root's)")
    .option('--applied-sequence <n>', 'sequence already applied (rollback protection)')
    .option('--applied-digest <digest>', 'digest already applied')
    .option('--expect-digest <digest>', 'digest that was asked for')
    .option('--now <iso>', 'verification time (default: now)')
    .addOption(new Option('--max-bytes <n>', 'largest envelope accepted').default(String(DEFAULT_MAX_ENVELOPE_BYTES)))
    .argument('<envelope>', 'envelope file')
    .action(
      async (
        file: string,
        opts: { root: string[]; network?: string; appliedSequence?: string; appliedDigest?: string; expectDigest?: string; now?: string; maxBytes: string },
      ) => {
        await cryptoReady();
        if ((opts.appliedSequence === undefined) !== (opts.appliedDigest === undefined)) {
          refuse('USAGE', '--applied-sequence and --applied-digest go together');
        }
        const maxBytes = parseCount(opts.maxBytes, '--max-bytes', 1);
        const now = opts.now === undefined ? io.now() : parseIsoTime(opts.now, '--now');
        const chain = await Promise.all(opts.root.map((path) => readFileBounded(path, ROOT_FILE_LIMIT)));
        const trusted = walkRootChain(chain);
        const applied =
          opts.appliedSequence === undefined ? null : { sequence: parseCount(opts.appliedSequence, '--applied-sequence', 0), digest: opts.appliedDigest ?? '' };
        const envelope = await readFileBounded(file, maxBytes);
        const verified = verifySnapshotEnvelope({
          envelope,
          root: trusted,
          ...(opts.network === undefined ? {} : { network: opts.network }),
          applied,
          ...(opts.expectDigest === undefined ? {} : { expectedDigest: opts.expectDigest }),
          now,
          maxBytes,
        });
        io.stdout(`${verified.digest}\n`);
      },
    );

  program
    .command('digest')
    .description("print the config digest of a snapshot (canonicalized first) or of an envelope's payload")
    .argument('<file>', 'snapshot or envelope JSON')
    .action(async (file: string) => {
      const value = await readJsonFile(file, 'file');
      io.stdout(`${configDigest(payloadOf(value))}\n`);
    });

  program
    .command('canonicalize')
    .description('print the RFC 8785 canonical bytes of a JSON file (no trailing newline)')
    .argument('<file>', 'JSON file')
    .action(async (file: string) => {
      const value = await readJsonFile(file, 'file');
      io.stdout(decodeUtf8(canonicalBytes(value), 'canonical form'));
    });

  program
    .command('publish')
    .description('write an envelope (and roots) into an origin directory; latest.json last, atomically')
    .requiredOption('--origin <dir>', 'origin directory')
    .option('--root <file>', 'root envelope to publish and verify with (repeat, oldest first)', collect)
    .argument('<envelope>', 'snapshot envelope file')
    .action(async (file: string, opts: { origin: string; root?: string[] }) => {
      await cryptoReady();
      const envelope = await readFileBounded(file, DEFAULT_MAX_ENVELOPE_BYTES);
      const roots = await Promise.all((opts.root ?? []).map((path) => readFileBounded(path, ROOT_FILE_LIMIT)));
      const result = await publishSnapshot({ dir: opts.origin, envelope, roots, now: io.now() }).catch((cause: unknown) => {
        if (cause instanceof SnapshotError) throw cause;
        return refuse('IO', `cannot publish into ${opts.origin}: ${describeFsError(cause)}`, cause);
      });
      io.stdout(`published ${result.network} sequence ${result.sequence} as ${result.digest}\n`);
    });

  const model = program.command('model').description('models of a snapshot (SPEC §3 models[])');
  model
    .command('add')
    .description('hash a model file (whole and in chunks, one pass), write its chunk list into the origin, print its snapshot entry')
    .argument('<file>', 'the model file')
    .requiredOption('--name <name>', 'model name')
    .requiredOption('--version <version>', 'model version')
    .requiredOption('--url <url>', 'a mirror URL of the file (repeat, in the order nodes try them)', collect)
    .requiredOption('--origin <dir>', 'origin directory; the chunk list goes to v1/<network>/chunks/<hex>.json')
    .option('--network <net>', 'network (default: the one network the origin directory serves)')
    .option('--chunk-size <size>', 'chunk length, a power of two from 1MiB to 1GiB', '64MiB')
    .action(async (file: string, opts: { name: string; version: string; url: string[]; origin: string; network?: string; chunkSize: string }) => {
      const { model: entry } = await addModel({
        file,
        name: opts.name,
        version: opts.version,
        urls: opts.url,
        origin: opts.origin,
        chunkSize: parseChunkSize(opts.chunkSize),
        ...(opts.network === undefined ? {} : { network: opts.network }),
      });
      io.stdout(pretty(entry));
    });

  program
    .command('serve')
    .description('serve an origin directory over HTTP (the dev origin), with ETags and heartbeats')
    .requiredOption('--origin <dir>', 'origin directory')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--port <port>', 'port to listen on (0: any free port)', '8780')
    .option('--max-held <n>', 'long-poll requests held at once; more are answered 503 with Retry-After', '1024')
    .action(async (opts: { origin: string; host: string; port: string; maxHeld: string }) => {
      const port = parseCount(opts.port, '--port', 0);
      const maxHeldRequests = parseCount(opts.maxHeld, '--max-held', 1);
      const server = await startOriginServer({ dir: opts.origin, maxHeldRequests }, { host: opts.host, port }).catch((cause: unknown) =>
        refuse('IO', `cannot serve ${opts.origin} on ${opts.host}:${port}: ${describeFsError(cause)}`, cause),
      );
      io.stdout(`serving ${opts.origin} at ${server.url}\n`);
      await io.untilStopped();
      await server.close();
    });

  return program;
}

/** An envelope's payload bytes as they are, or a bare snapshot's canonical bytes. */
function payloadOf(value: unknown): Uint8Array {
  const maybe = value as { payloadType?: unknown; payload?: unknown } | null;
  if (maybe && typeof maybe === 'object' && typeof maybe.payloadType === 'string' && typeof maybe.payload === 'string') {
    const envelope = parseEnvelope(new TextEncoder().encode(JSON.stringify(value)));
    const payload = envelopePayload(envelope);
    if (envelope.payloadType !== ROOT_PAYLOAD_TYPE) parseCanonical(payload, 'envelope payload');
    return payload;
  }
  return canonicalBytes(value);
}
