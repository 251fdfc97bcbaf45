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
    ['without Docker', ['--no-docker'], /runs without containers/],
    ['with Docker and the local registry', [], /Docker is here: containers run/],
  ])('publishes two snapshots and shows the update land, %s', async (_, flags, docker) => {
    const work = await tempDir('agent-devnet-');
    try {
      const { stdout } = await run(process.execPath, [DEVNET, '--demo', '--dir', work.path, ...flags], { timeout: 120_000 });
      expect(stdout).toMatch(docker);
      expect(stdout).toContain('— snapshot 1 applied —');
      expect(stdout).toContain('— snapshot 2 landed; the runtime acknowledged it —');
      expect(stdout).toMatch(/applied sequence\s+2/);
      expect(stdout).toContain('dev network stopped.');
    } finally {
      await work.cleanup();
    }
  });
});
