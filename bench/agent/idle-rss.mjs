#!/usr/bin/env node
// Resident memory of an idle `resultity-agent run`: a dev network with one snapshot applied
// before (by `sync --once`), then the daemon started and polling it (304s) with the status
// endpoint up and the runtime bridge enabled, as a node runs between changes. RSS is read from
// /proc after the daemon has settled.
//
//   pnpm --filter @resultity/agent... build
//   node bench/agent/idle-rss.mjs [--settle-s 20]
import { execFile, spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';

const here = new URL('.', import.meta.url);
const agent = await import(new URL('../../apps/agent/dist/index.js', here).href);
const origin = await import(new URL('../../packages/snapshot/dist/origin/index.js', here).href);
// The dev network's helpers live in the private testkit (TypeScript source): run this with tsx.
const devnet = await import('@resultity/testkit/devnet');
const cli = new URL('../../apps/agent/dist/cli.js', here).pathname;

const { values } = parseArgs({ options: { 'settle-s': { type: 'string', default: '20' } } });
const settleMs = Number(values['settle-s']) * 1000;

async function rssKb(pid) {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]);
}

const work = await mkdtemp(join(tmpdir(), 'agent-rss-'));
let child;
try {
  const net = await devnet.createDevNetwork(join(work, 'net'), 'benchnet');
  await mkdir(net.originDir, { recursive: true });
  const server = await origin.startOriginServer({ dir: net.originDir });
  await net.publish(devnet.devSnapshot({ network: 'benchnet', sequence: 1, pollSeconds: 1 }));
  const config = await devnet.writeAgentConfig(join(work, 'agent.json'), {
    network: 'benchnet',
    origin: server.url,
    node_id: 'bench-node',
    trust_root: [net.rootFile],
    state_dir: 'state',
    bridge: { enabled: true, listen: '127.0.0.1:0' },
    status: { listen: '127.0.0.1:0' },
    log_level: 'warn',
  });
  // Not spawnSync: the origin serving it runs in this process.
  await promisify(execFile)(process.execPath, [cli, 'sync', '--once', '--config', config]);
  child = spawn(process.execPath, [cli, 'run', '--config', config], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, settleMs));
  const state = JSON.parse(await readFile(join(work, 'state', 'state.json'), 'utf8'));
  if (!state.applied || state.last_error) throw new Error(`the daemon is not idle on an applied snapshot: ${JSON.stringify(state.last_error)}`);
  const samples = [];
  for (let i = 0; i < 5; i++) {
    samples.push(await rssKb(child.pid));
    await new Promise((r) => setTimeout(r, 1000));
  }
  console.log(JSON.stringify({ node: process.version, settle_s: settleMs / 1000, rss_mb: samples.map((kb) => (kb / 1024).toFixed(1)) }, null, 2));
  child.kill('SIGTERM');
  await server.close();
} finally {
  if (child && child.exitCode === null) child.kill('SIGKILL');
  await rm(work, { recursive: true, force: true });
}
