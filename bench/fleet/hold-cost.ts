// What an Agent spends holding a long-poll open: `resultity-agent run` (runtime bridge and
// status endpoint on, as in bench/agent/idle-rss.mjs) on an applied snapshot, long-polling the
// dev origin (dev-origin.ts counts the wait requests). CPU is utime + stime of the Agent from
// /proc over the measured window, divided by the long-polls it made; RSS is VmRSS.
//
//   pnpm build
//   node --import tsx bench/fleet/hold-cost.ts --wait-s 30 --window-s 300
//   node --import tsx bench/fleet/hold-cost.ts --wait-s 2 --window-s 120
//   node --import tsx bench/fleet/hold-cost.ts --mode poll --wait-s 2 --window-s 120   (the same Agent polling every 2 s, for comparison)
import { execFile, fork, spawn } from 'node:child_process';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';

import { createDevNetwork, devSnapshot, writeAgentConfig } from '@resultity/testkit/devnet';

import { freePort } from './lib.js';

const here = new URL('.', import.meta.url).pathname;
const agentCli = join(here, '../../apps/agent/dist/cli.js');
const { values } = parseArgs({
  options: {
    'wait-s': { type: 'string', default: '30' },
    'window-s': { type: 'string', default: '300' },
    'settle-s': { type: 'string', default: '15' },
    mode: { type: 'string', default: 'long-poll' },
  },
});
const polling = values.mode === 'poll';
const waitS = Number(values['wait-s']);
const windowS = Number(values['window-s']);
const ticks = 100; // USER_HZ on Linux

async function cpuMs(pid: number): Promise<number> {
  const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]?.split(' ') ?? [];
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / ticks;
}
async function rssMb(pid: number): Promise<number> {
  return Number(/VmRSS:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8'))?.[1]) / 1024;
}

const work = join(tmpdir(), `fleet-hold-${process.pid}`);
const children: { kill(s?: NodeJS.Signals): boolean; exitCode: number | null }[] = [];
try {
  await mkdir(work, { recursive: true });
  const net = await createDevNetwork(join(work, 'net'), 'benchnet');
  const s = devSnapshot({ network: 'benchnet', sequence: 1, pollSeconds: polling ? waitS : 600 });
  await net.publish({ ...s, ttl: { ...s.ttl, heartbeat_interval_s: 3600 } });
  const stats = join(work, 'origin-stats.jsonl');
  const origin = fork(join(here, 'dev-origin.ts'), [net.originDir, String(await freePort()), '100', stats], { execArgv: ['--import', 'tsx'] });
  children.push(origin);
  const { url } = await new Promise<{ url: string }>((resolve) => origin.once('message', (m) => resolve(m as { url: string })));
  const config = await writeAgentConfig(join(work, 'agent.json'), {
    network: 'benchnet',
    origin: url,
    node_id: 'bench-node',
    trust_root: [net.rootFile],
    state_dir: 'state',
    bridge: { enabled: true, listen: '127.0.0.1:0' },
    status: { listen: '127.0.0.1:0' },
    docker: { socket_path: join(work, 'no-docker.sock') },
    long_poll: { enabled: !polling, wait_s: waitS },
    log_level: 'warn',
  });
  await promisify(execFile)(process.execPath, [agentCli, 'sync', '--once', '--config', config]);
  const agent = spawn(process.execPath, [agentCli, 'run', '--config', config], { stdio: 'ignore' });
  children.push(agent);
  await new Promise((r) => setTimeout(r, Number(values['settle-s']) * 1000));
  const pid = agent.pid ?? 0;
  const waitsSoFar = async () =>
    (await readFile(stats, 'utf8'))
      .split('\n')
      .filter(Boolean)
      .reduce((n, l) => n + ((JSON.parse(l) as { counts: Record<string, number> }).counts[polling ? 'latest' : 'wait'] ?? 0), 0);
  const cpu0 = await cpuMs(pid);
  const waits0 = await waitsSoFar();
  const rss: number[] = [];
  for (let t = 0; t < windowS; t += 5) {
    await new Promise((r) => setTimeout(r, 5000));
    rss.push(await rssMb(pid));
  }
  const cpu1 = await cpuMs(pid);
  const waits1 = await waitsSoFar();
  const polls = waits1 - waits0;
  console.log(
    JSON.stringify({
      node: process.version,
      mode: polling ? 'poll' : 'long-poll',
      wait_s: waitS,
      window_s: windowS,
      checks: polls,
      agent_cpu_ms: cpu1 - cpu0,
      cpu_ms_per_check: +((cpu1 - cpu0) / Math.max(1, polls)).toFixed(2),
      cpu_ms_per_second_held: +((cpu1 - cpu0) / windowS).toFixed(3),
      rss_mb: { min: +Math.min(...rss).toFixed(1), max: +Math.max(...rss).toFixed(1) },
    }),
  );
} finally {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 500));
  await rm(work, { recursive: true, force: true });
}
