import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { startOriginServer } from '@resultity/snapshot/origin';
import { tempDir } from '@resultity/testkit';
import { createDevNetwork, devSnapshot, writeAgentConfig } from '@resultity/testkit/devnet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type PackedPackage, releasePack } from '../../../scripts/release-pack.mjs';

const run = promisify(execFile);

/** Packages that exist for the workspace only; a user's install must never contain them. */
const NEVER_SHIPPED = ['@resultity/testkit', '@resultity/devnet', '@resultity/node-kit', '@resultity/tooling'];

interface NpmTree {
  dependencies?: Record<string, NpmTree & { resolved?: string; version?: string }>;
}

function namesIn(tree: NpmTree, into = new Map<string, string | undefined>()): Map<string, string | undefined> {
  for (const [name, node] of Object.entries(tree.dependencies ?? {})) {
    into.set(name, node.resolved);
    namesIn(node, into);
  }
  return into;
}

async function manifestOf(tarball: string): Promise<{ dependencies?: Record<string, string> }> {
  const { stdout } = await run('tar', ['-xOzf', tarball, 'package/package.json']);
  return JSON.parse(stdout);
}

/** The packed Agent and every packed @resultity package it needs, found through the packed manifests. */
async function agentClosure(packed: readonly PackedPackage[]): Promise<string[]> {
  const byName = new Map(packed.map((p) => [p.name, p]));
  const wanted = ['@resultity/agent'];
  const files: string[] = [];
  for (let name = wanted.shift(); name !== undefined; name = wanted.shift()) {
    const p = byName.get(name);
    if (p === undefined) throw new Error(`${name} was not packed`);
    if (files.includes(p.file)) continue;
    files.push(p.file);
    for (const dep of Object.keys((await manifestOf(p.file)).dependencies ?? {})) {
      if (dep.startsWith('@resultity/')) wanted.push(dep);
    }
  }
  return files;
}

describe('the released Agent, installed with npm from the packed tarballs', () => {
  let work: { path: string; cleanup: () => Promise<void> };
  let app: string;
  let agentBin: string;
  let packed: PackedPackage[];

  beforeAll(async () => {
    work = await tempDir('agent-release-');
    packed = await releasePack({ out: join(work.path, 'packed') });
    app = join(work.path, 'app');
    await run('mkdir', ['-p', app]);
    await writeFile(join(app, 'package.json'), '{ "private": true }\n');
    // No workspace here: npm resolves the third-party dependencies from its registry (its cache
    // first), and the @resultity ones from the tarballs given on the command line.
    await run('npm', ['install', '--no-audit', '--no-fund', '--ignore-scripts', '--prefer-offline', ...(await agentClosure(packed))], {
      cwd: app,
      timeout: 240_000,
      maxBuffer: 16 * 1024 * 1024,
    });
    agentBin = join(app, 'node_modules', '.bin', 'resultity-agent');
  }, 300_000);
  afterAll(async () => {
    await work?.cleanup();
  });

  it('packs every publishable package at its workspace version', async () => {
    const names = packed.map((p) => p.name).sort();
    expect(names).toEqual([
      '@resultity/agent',
      '@resultity/applier',
      '@resultity/bridge-endpoint',
      '@resultity/bridge-protocol',
      '@resultity/runtime-bridge',
      '@resultity/snapshot',
    ]);
    const agentManifest = JSON.parse(await readFile(join(import.meta.dirname, '..', 'package.json'), 'utf8')) as { version: string };
    expect(packed.find((p) => p.name === '@resultity/agent')?.version).toBe(agentManifest.version);
  });

  it('has no workspace-only package in the installed tree, and every @resultity package came from a tarball', async () => {
    const { stdout } = await run('npm', ['ls', '--all', '--json'], { cwd: app, maxBuffer: 16 * 1024 * 1024 });
    const installed = namesIn(JSON.parse(stdout) as NpmTree);
    expect(installed.has('@resultity/agent')).toBe(true);
    for (const name of NEVER_SHIPPED) expect(installed.has(name), name).toBe(false);
    for (const [name, resolved] of installed) {
      if (name.startsWith('@resultity/')) expect(resolved, name).toMatch(/^file:.*\.tgz$/);
    }
  });

  it('prints its version', async () => {
    const { stdout } = await run(agentBin, ['--version'], { cwd: app });
    expect(stdout.trim()).toBe(packed.find((p) => p.name === '@resultity/agent')?.version);
  });

  it('syncs once against a dev origin serving a snapshot signed by a test key', async () => {
    const net = await createDevNetwork(join(work.path, 'net'), 'testnet');
    const { digest } = await net.publish(devSnapshot({ network: 'testnet', sequence: 1 }));
    const origin = await startOriginServer({ dir: net.originDir });
    try {
      const config = await writeAgentConfig(join(work.path, 'agent.json'), {
        network: 'testnet',
        origin: origin.url,
        node_id: 'node-release-1',
        trust_root: ['net/root/1.json'],
        state_dir: 'state',
        bridge: { enabled: false },
        status: { listen: null },
      });
      const { stdout, stderr } = await run(agentBin, ['sync', '--once', '--config', config], { cwd: app, timeout: 60_000 });
      expect(stderr).toBe('');
      expect(stdout).toContain(`applied ${digest}`);
    } finally {
      await origin.close();
    }
  });
});
