import { execFile } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { tempDir } from '@resultity/testkit';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const DEVNET = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'devnet.js');

describe('the dev network', () => {
  it.each([
    ['without Docker', ['--no-docker'], [/runs without containers/, /example runtime at http:\/\/127\.0\.0\.1:\d+ \(a host process\)/]],
    [
      'with Docker and the local registry, the runtime as a container',
      [],
      [
        /containers run \S+\/resultity\/example-runtime@sha256:[0-9a-f]{64}/,
        /the runtime runs in container [0-9a-f]{12}: the Agent's bridge socket at \/run\/resultity\/bridge\.sock/,
        /the runtime container [0-9a-f]{12} took the new model and limits over the bridge: not recreated, not restarted/,
      ],
    ],
  ])(
    'publishes two snapshots and shows the update land, %s',
    async (_, flags, expected) => {
      const work = await tempDir('agent-devnet-');
      try {
        const { stdout } = await run(process.execPath, [DEVNET, '--demo', '--dir', work.path, ...flags], { timeout: 300_000 });
        for (const line of expected) expect(stdout).toMatch(line);
        expect(stdout).toContain('— snapshot 1 applied —');
        expect(stdout).toContain('— snapshot 2 landed; the runtime acknowledged it —');
        expect(stdout).toMatch(/applied sequence\s+2/);
        expect(stdout).toContain('dev network stopped.');
        // The line a newcomer pastes, and what the runtime answered to it before and after the update.
        expect(stdout).toMatch(/curl -s -X POST http:\/\/127\.0\.0\.1:\d+\/v1\/jobs -d '\{"model":"tiny-llm","max_tokens":8\}'/);
        expect(stdout).toMatch(/"tokens":8,.*"limits":\{"max_tokens":1024,/);
        expect(stdout).toMatch(/the same job now: .*"limits":\{"max_tokens":2048,/);
      } finally {
        await work.cleanup();
      }
    },
    300_000,
  );
});
