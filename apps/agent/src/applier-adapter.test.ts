import { mkdtemp, rm } from 'node:fs/promises';
import { type Server, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { ContainerEngine, EngineContainer } from '@resultity/applier';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { optionalEngine, socketMissing } from './applier-adapter.js';
import { AgentError, errorCode } from './errors.js';

/** An engine behind the port that counts what it is asked; `up` says whether it answers. */
function countingEngine() {
  const asked = { ping: 0, list: 0 };
  const state = { up: true };
  const down = () => new AgentError('ENGINE_UNAVAILABLE', 'connect ENOENT');
  const engine = {
    ping: async () => {
      asked.ping += 1;
      if (!state.up) throw down();
    },
    listContainers: async () => {
      asked.list += 1;
      if (!state.up) throw down();
      return [] as EngineContainer[];
    },
    inspectContainer: async () => null,
    imageRepoDigests: async () => null,
    pullImage: async () => undefined,
    createContainer: async () => 'id',
    startContainer: async () => undefined,
    stopContainer: async () => undefined,
    removeContainer: async () => undefined,
  } satisfies ContainerEngine;
  return { engine, asked, state };
}

describe('optionalEngine', () => {
  it('pings an engine that answered only once, then only lists (one request per apply, not two)', async () => {
    const { engine, asked } = countingEngine();
    const optional = optionalEngine(engine);
    for (let apply = 0; apply < 3; apply++) {
      // What planning does on every apply: a ping, then the listing.
      await optional.ping();
      await optional.listContainers('label');
    }
    expect(asked).toEqual({ ping: 1, list: 3 });
  });

  it('lists nothing once the engine is gone, warns once, and sees it again when it is back', async () => {
    const { engine, asked, state } = countingEngine();
    const warnings: unknown[] = [];
    const optional = optionalEngine(engine, (error) => warnings.push(error));
    await optional.ping();
    expect(await optional.listContainers('label')).toEqual([]);
    state.up = false;
    await optional.ping();
    expect(await optional.listContainers('label')).toEqual([]);
    await optional.ping();
    expect(await optional.listContainers('label')).toEqual([]);
    expect(warnings.map(errorCode)).toEqual(['ENGINE_UNAVAILABLE']);
    expect(await optional.available()).toBe(false);
    state.up = true;
    await optional.ping();
    await optional.listContainers('label');
    expect(await optional.available()).toBe(true);
    expect(asked.list).toBeGreaterThan(2);
  });

  it('asks no engine at all when its socket does not exist, and warns once', async () => {
    const { engine, asked } = countingEngine();
    const warnings: unknown[] = [];
    const optional = optionalEngine(
      engine,
      (error) => warnings.push(error),
      () => 'no socket',
    );
    for (let apply = 0; apply < 3; apply++) {
      await optional.ping();
      expect(await optional.listContainers('label')).toEqual([]);
    }
    expect(asked).toEqual({ ping: 0, list: 0 });
    expect(warnings.map(errorCode)).toEqual(['ENGINE_UNAVAILABLE']);
  });
});

describe('socketMissing', () => {
  let dir: string;
  let server: Server | null = null;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'agent-socket-'));
  });
  afterEach(async () => {
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    server = null;
    await rm(dir, { recursive: true, force: true });
  });

  it('says ENGINE_UNAVAILABLE for a path where nothing exists, and nothing for a listening socket', async () => {
    const path = join(dir, 'docker.sock');
    expect(socketMissing(path)()).toBe(`there is no Docker engine socket at ${path}`);
    const listening = createServer();
    server = listening;
    await new Promise<void>((resolve) => listening.listen(path, resolve));
    expect(socketMissing(path)()).toBeNull();
  });
});
