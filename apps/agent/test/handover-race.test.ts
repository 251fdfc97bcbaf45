import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

import { tempDir } from '@resultity/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { CLI } from './helpers.js';

const INDEX = join(CLI, '..', 'index.js');

/**
 * A process that decides hand-overs when told: one line `<id>` on stdin, one line of JSON
 * (`{won, outcome}`) on stdout. The real compare-and-set of the built Agent on real files.
 */
const DECIDER = `
import { createInterface } from 'node:readline';
const { decideHandover } = await import(process.env.AGENT_INDEX);
const [dir, outcome, by] = process.argv.slice(1);
process.stdout.write(JSON.stringify({ ready: true }) + '\\n');
for await (const id of createInterface({ input: process.stdin })) {
  const result = await decideHandover(dir, id, outcome, by);
  process.stdout.write(JSON.stringify({ id, won: result.won, outcome: result.decided.outcome }) + '\\n');
}
`;

interface Decider {
  child: ChildProcess;
  next(): Promise<{ id?: string; won?: boolean; outcome?: string; ready?: boolean }>;
}

function startDecider(dir: string, outcome: string, by: string): Decider {
  const child = spawn(process.execPath, ['--input-type=module', '-e', DECIDER, dir, outcome, by], {
    env: { ...process.env, AGENT_INDEX: INDEX },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines: string[] = [];
  const waiting: ((line: string) => void)[] = [];
  createInterface({ input: child.stdout! }).on('line', (line) => {
    const take = waiting.shift();
    if (take) take(line);
    else lines.push(line);
  });
  const line = () => new Promise<string>((resolve) => (lines.length > 0 ? resolve(lines.shift()!) : waiting.push(resolve)));
  return { child, next: async () => JSON.parse(await line()) };
}

describe('the hand-over outcome, decided by a successor and a predecessor at the same instant', () => {
  let work: { path: string; cleanup: () => Promise<void> };
  let successor: Decider;
  let predecessor: Decider;

  beforeAll(async () => {
    work = await tempDir('agent-handover-race-');
    successor = startDecider(work.path, 'confirmed', 'succ');
    predecessor = startDecider(work.path, 'reverted', 'pred');
    for (const d of [successor, predecessor]) expect(await d.next()).toEqual({ ready: true });
  });

  afterAll(async () => {
    for (const d of [successor, predecessor]) d?.child.stdin?.end();
    await work?.cleanup();
  });

  it('is won by exactly one of two processes racing, and both read the same outcome', async () => {
    const wins = { confirmed: 0, reverted: 0 };
    for (let round = 0; round < 300; round++) {
      const id = round.toString(16).padStart(16, '0');
      // Both told in the same tick: each runs its decision as soon as it reads the line.
      successor.child.stdin!.write(`${id}\n`);
      predecessor.child.stdin!.write(`${id}\n`);
      const [s, p] = await Promise.all([successor.next(), predecessor.next()]);
      expect(s.id).toBe(id);
      expect(p.id).toBe(id);
      expect(Number(s.won) + Number(p.won)).toBe(1);
      expect(s.outcome).toBe(p.outcome);
      wins[s.outcome as 'confirmed' | 'reverted'] += 1;
    }
    expect(wins.confirmed + wins.reverted).toBe(300);
  });
});
