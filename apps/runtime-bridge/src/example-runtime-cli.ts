#!/usr/bin/env node
import { Command, Option } from 'commander';

import pkg from '../package.json' with { type: 'json' };

import { type ExampleRuntime, startExampleRuntime } from './example-runtime.js';
import { nonNegativeInt } from './cli-args.js';
import { cliLogger } from './logger.js';
import { runCli } from './run-cli.js';

// In a runtime container (SPEC §6) the Agent's variables name the bridge, its token and the model store.
const program = new Command()
  .name('resultity-example-runtime')
  .description('A stand-in inference server that embeds the runtime bridge and enforces the job limits live.')
  .version(pkg.version)
  .option('--bridge <url>', 'the Agent endpoint: ws://127.0.0.1:PORT or a unix socket path (default: $RESULTITY_BRIDGE_SOCKET)')
  .option('--token-file <file>', 'file holding the bearer token, mode 0600 (default: $RESULTITY_BRIDGE_TOKEN_FILE)')
  .addOption(
    new Option('--models-dir <dir>', 'the model store: every model must be inside it and hash to its sha256 before the environment is taken').env(
      'RESULTITY_MODELS_DIR',
    ),
  )
  .option('--verify-models', 'open and hash every model file before taking an environment (implied by --models-dir)', false)
  // The image sets the variable to name its own version, so an Agent's audit shows which image acked.
  .addOption(new Option('--runtime-id <id>', 'what the Agent knows this runtime by').env('RESULTITY_RUNTIME_ID').default('example-runtime'))
  .option('--host <host>', 'address of the job API (loopback only)', '127.0.0.1')
  .option('--port <port>', 'port of the job API (0 picks a free one)', nonNegativeInt, 0)
  .option('--token-delay-ms <ms>', 'pretend time to generate one token', nonNegativeInt, 5)
  .option('--concurrency <n>', 'jobs generated at once', nonNegativeInt, 2)
  .option('--log-level <level>', 'pino log level', 'info');

async function main(): Promise<number> {
  program.parse();
  const opts = program.opts<{
    bridge?: string;
    tokenFile?: string;
    modelsDir?: string;
    verifyModels: boolean;
    runtimeId: string;
    host: string;
    port: number;
    tokenDelayMs: number;
    concurrency: number;
    logLevel: string;
  }>();
  const logger = cliLogger(opts.logLevel);
  let runtime: ExampleRuntime;
  try {
    runtime = await startExampleRuntime({
      ...(opts.bridge !== undefined ? { bridgeUrl: opts.bridge } : {}),
      ...(opts.tokenFile !== undefined ? { tokenFile: opts.tokenFile } : {}),
      runtimeId: opts.runtimeId,
      http: { host: opts.host, port: opts.port },
      tokenDelayMs: opts.tokenDelayMs,
      concurrency: Math.max(1, opts.concurrency),
      verifyModels: opts.verifyModels,
      ...(opts.modelsDir === undefined ? {} : { modelsDir: opts.modelsDir }),
      logger,
    });
  } catch (error) {
    const code = error instanceof Error && 'code' in error ? String(error.code) : 'FAILED';
    logger.error({ code, err: (error as Error).message }, 'the example runtime could not start');
    return 1;
  }
  // One line on stdout that a parent process (the dev network) can read to find the API.
  process.stdout.write(`${JSON.stringify({ url: runtime.url, runtimeId: opts.runtimeId })}\n`);
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
  });
  await runtime.close();
  return 0;
}

runCli('resultity-example-runtime', main);
