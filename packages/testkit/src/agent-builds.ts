// Builds of the Agent image other than the one under test, for the tests and campaigns of
// self-update: the same Agent under another label (so another digest), or one broken on purpose.
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const docker = async (...args: string[]) => (await run('docker', args, { maxBuffer: 16 * 1024 * 1024 })).stdout.trim();

/** The Agent's launcher inside the Agent image. */
export const AGENT_LAUNCHER = '/opt/resultity/agent/node_modules/@resultity/agent/bin/resultity-agent.js';

/**
 * The entry point (CommonJS) of a broken build: the real Agent, except that as the daemon (not in
 * standby) every HTTP request but the engine's (over its unix socket) fails, so it never syncs.
 * It exits `exitAfterMs` after each start (default 5000: a crash loop after the takeover; null:
 * it stays up, unconfirmed). With `originAfterMs`, the origin becomes reachable that long after
 * each start instead (a slow first sync).
 */
export function brokenAgentEntry(options: { exitAfterMs?: number | null; originAfterMs?: number } = {}): string {
  const exitAfterMs = options.exitAfterMs === undefined ? 5000 : options.exitAfterMs;
  const refuse =
    options.originAfterMs === undefined
      ? "throw new Error('this build cannot reach its origin');"
      : "if (Date.now() < reachableAt) throw new Error('this build cannot reach its origin yet');\n    return request.apply(this, args);";
  return `
const http = require('node:http');
const { syncBuiltinESMExports } = require('node:module');
${options.originAfterMs === undefined ? '' : `const reachableAt = Date.now() + ${options.originAfterMs};`}
if (!process.argv.includes('standby')) {
  const request = http.request;
  http.request = function (...args) {
    // The engine's socket stays reachable, so taking the lock and auditing the takeover work; the origin does not.
    if (args.some((a) => a && typeof a === 'object' && !(a instanceof URL) && a.socketPath)) return request.apply(this, args);
    ${refuse}
  };
  syncBuiltinESMExports();
  ${exitAfterMs === null ? '' : `setTimeout(() => { console.error('this build cannot sync; exiting'); process.exit(3); }, ${exitAfterMs});`}
}
import('${AGENT_LAUNCHER}');
`;
}

/**
 * An image FROM `from` (by digest) with the OCI version label `name` and a Dockerfile `tail`,
 * `files` put in its build context, tagged `<from.image>:<tag>` and pushed. `removeLocal` drops the
 * local tag afterwards, so an Agent that is to run it really pulls it.
 */
export async function deriveImage(options: {
  work: string;
  from: { image: string; digest: string };
  name: string;
  tag: string;
  tail?: string;
  files?: Record<string, string>;
  removeLocal?: boolean;
}): Promise<{ ref: string; digest: string }> {
  const { from, name } = options;
  const context = join(options.work, `build-${name}`);
  await mkdir(context, { recursive: true });
  for (const [file, text] of Object.entries(options.files ?? {})) await writeFile(join(context, file), text);
  await writeFile(join(context, 'Dockerfile'), `FROM ${from.image}@${from.digest}\nLABEL org.opencontainers.image.version="${name}"\n${options.tail ?? ''}\n`);
  const ref = `${from.image}:${options.tag}`;
  await docker('build', '-q', '-t', ref, context);
  await docker('push', '-q', ref);
  const digests = JSON.parse(await docker('image', 'inspect', '--format', '{{json .RepoDigests}}', ref)) as string[];
  const digest = digests.find((d) => d.startsWith(`${from.image}@`))?.slice(from.image.length + 1);
  if (digest === undefined) throw new Error(`no repo digest for ${ref}`);
  if (options.removeLocal) await docker('image', 'rm', ref).catch(() => undefined);
  return { ref, digest };
}

/**
 * The documented `docker run` arguments of the Agent image, after `run` and its own options:
 * host network, the engine's socket, the state directory at its own path, the configuration
 * directory read-only at /etc/resultity, and the image. A command may follow.
 */
export function agentRunArgs(options: { stateDir: string; configDir: string; image: string }): string[] {
  const { stateDir, configDir, image } = options;
  return [
    '--network',
    'host',
    '-v',
    '/var/run/docker.sock:/var/run/docker.sock',
    '-v',
    `${stateDir}:${stateDir}`,
    '-v',
    `${configDir}:/etc/resultity:ro`,
    image,
  ];
}
