#!/usr/bin/env node
import { Command } from 'commander';

import { isBridgeError } from './errors.js';
import { nonNegativeInt } from './cli-args.js';
import { cliLogger } from './logger.js';
import { startSidecar } from './sidecar.js';
import { runCli } from './run-cli.js';

const program = new Command()
  .name('resultity-runtime-bridge')
  .description(
    'Sidecar for runtimes not written in Node: takes each environment from the Agent, writes it to a file and/or POSTs it to the runtime, and acknowledges only when that worked.',
  )
  .option('--bridge <url>', 'the Agent endpoint: ws://127.0.0.1:PORT or a unix socket path (default: $RESULTITY_BRIDGE_SOCKET)')
  .option('--token-file <file>', 'file holding the bearer token, mode 0600 (default: $RESULTITY_BRIDGE_TOKEN_FILE)')
  .option('--runtime-id <id>', 'what the Agent knows this runtime by', 'runtime')
  .option('--write <file>', 'write the environment here as JSON, atomically')
  .option('--post <url>', "POST the environment to the runtime's local admin URL")
  .option('--post-timeout-ms <ms>', 'how long the runtime has to answer the POST', nonNegativeInt, 10_000)
  .option('--connect-timeout-ms <ms>', 'give up when no environment arrives in this time (0 waits forever)', nonNegativeInt, 0)
  .option('--log-level <level>', 'pino log level', 'info');

async function main(): Promise<number> {
  program.parse();
  const opts = program.opts<{
    bridge?: string;
    tokenFile?: string;
    runtimeId: string;
    write?: string;
    post?: string;
    postTimeoutMs: number;
    connectTimeoutMs: number;
    logLevel: string;
  }>();
  const logger = cliLogger(opts.logLevel);
  const abort = new AbortController();
  let bridge: Awaited<ReturnType<typeof startSidecar>> | null = null;
  const stop = () => {
    abort.abort();
    void bridge?.close();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  try {
    bridge = await startSidecar({
      ...(opts.bridge !== undefined ? { url: opts.bridge } : {}),
      ...(opts.tokenFile !== undefined ? { tokenFile: opts.tokenFile } : {}),
      runtimeId: opts.runtimeId,
      ...(opts.write !== undefined ? { writeFile: opts.write } : {}),
      ...(opts.post !== undefined ? { postUrl: opts.post } : {}),
      postTimeoutMs: opts.postTimeoutMs,
      connectTimeoutMs: opts.connectTimeoutMs,
      signal: abort.signal,
      logger,
    });
  } catch (error) {
    if (abort.signal.aborted) return 0;
    const code = isBridgeError(error) || (error instanceof Error && 'code' in error) ? (error as { code: string }).code : 'FAILED';
    logger.error({ code, err: (error as Error).message }, 'the sidecar could not start');
    return code === 'SIDECAR_CONFIG' || code === 'URL_INVALID' || code === 'NOT_LOOPBACK' || code === 'TOKEN_INVALID' ? 2 : 1;
  }
  logger.info({ digest: bridge.environment.digest }, 'sidecar running');
  await new Promise<void>((resolve) => abort.signal.addEventListener('abort', () => resolve(), { once: true }));
  await bridge.close();
  return 0;
}

runCli('resultity-runtime-bridge', main);
