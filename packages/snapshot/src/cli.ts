#!/usr/bin/env node
import { runCli } from './cli/program.js';

// The bin: wires the real process to the CLI program and turns its result into an exit code.
const stopped = new Promise<void>((resolve) => {
  process.once('SIGINT', () => resolve());
  process.once('SIGTERM', () => resolve());
});

const code = await runCli(process.argv.slice(2), {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  now: () => new Date(),
  untilStopped: () => stopped,
});
process.exitCode = code;
