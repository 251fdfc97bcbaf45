import { type ChildProcess, spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

import { tempDir } from '@resultity/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { parseHolder } from '../src/lock.js';
import { CLI, waitForExit } from './helpers.js';

const INDEX = pathToFileURL(join(CLI, '..', 'index.js')).href;

/**
 * A real process that takes the lock when told "go" on stdin, says "won" or the error code,
 * and holds the lock until killed.
 */
const CONTENDER = `
const { acquireLock } = await import(process.argv[1]);
process.stdout.write('ready\\n');
process.stdin.once('data', async () => {
  try {
    await acquireLock(process.argv[2]);
    process.stdout.write('won\\n');
    setInterval(() => {}, 1 << 30);
  } catch (error) {
    process.stdout.write(String(error.code) + '\\n');
    process.exit(0);
  }
});
`;

interface Contender {
  child: ChildProcess;
  answer: Promise<string>;
}

async function contender(dir: string): Promise<Contender> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', CONTENDER, INDEX, dir], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines: string[] = [];
  let wake: (() => void) | null = null;
  child.stdout?.on('data', (d: Buffer) => {
    lines.push(...d.toString().split('\n').filter(Boolean));
    wake?.();
  });
  const line = async (n: number) => {
    while (lines.length <= n) {
      if (child.exitCode !== null) throw new Error('contender exited early');
      await new Promise<void>((resolve) => {
        wake = resolve;
        child.once('exit', () => resolve());
      });
    }
    return lines[n] as string;
  };
  expect(await line(0)).toBe('ready');
  return { child, answer: line(1) };
}

describe('the state lock across processes', () => {
  let work: { path: string; cleanup: () => Promise<void> };
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    work = await tempDir('agent-lock-race-');
  });
  afterAll(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await work.cleanup();
  });

  it('has exactly one holder among racing processes, and passes to one racer each time the holder is killed -9', async () => {
    const dir = join(work.path, 'state');
    const first = await contender(dir);
    children.push(first.child);
    first.child.stdin?.write('go\n');
    expect(await first.answer).toBe('won');
    let holder = first;

    for (let round = 0; round < 3; round++) {
      const racers = await Promise.all(Array.from({ length: 5 }, () => contender(dir)));
      children.push(...racers.map((r) => r.child));
      // While the holder lives, nobody gets the lock.
      const blocked = racers[0] as Contender;
      blocked.child.stdin?.write('go\n');
      expect(await blocked.answer).toBe('LOCKED');

      holder.child.kill('SIGKILL');
      await waitForExit(holder.child);
      const rest = racers.slice(1);
      // All at once, against the lock the killed holder left behind.
      for (const r of rest) r.child.stdin?.write('go\n');
      const answers = await Promise.all(rest.map((r) => r.answer));
      expect(answers.filter((a) => a === 'won')).toHaveLength(1);
      expect(answers.filter((a) => a !== 'won')).toEqual(['LOCKED', 'LOCKED', 'LOCKED']);
      holder = rest[answers.indexOf('won')] as Contender;
      const onDisk = parseHolder(await readFile(join(dir, 'agent.lock'), 'utf8'));
      expect(onDisk?.pid).toBe(holder.child.pid);
    }
  });
});
