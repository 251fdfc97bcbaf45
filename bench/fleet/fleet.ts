// 10,000 simulated nodes (nodes.ts: the Agent's real sync code, many per process, over real
// HTTP) against one origin, before and after a publish.
//
//   pnpm build
//   cd bench && node --import tsx fleet/fleet.ts --nodes 10000 --workers 2 --origin nginx
//   cd bench && node --import tsx fleet/fleet.ts --nodes 10000 --workers 2 --origin dev
//
// nginx: requests are read from its access log ($msec: millisecond timestamps). dev: the dev
// origin (startOriginServer, long-poll) runs in its own process and writes its request counts,
// held requests and resident memory every 100 ms. State directories are on /dev/shm.
import { type ChildProcess, fork } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { startNginx } from '@resultity/testkit';
import { createDevNetwork, devSnapshot } from '@resultity/testkit/devnet';

import { freePort, percentile, waitFor } from './lib.js';

const here = new URL('.', import.meta.url).pathname;
const { values } = parseArgs({
  allowNegative: true,
  options: {
    nodes: { type: 'string', default: '10000' },
    workers: { type: 'string', default: '2' },
    origin: { type: 'string', default: 'nginx' },
    'poll-s': { type: 'string', default: '60' },
    'spread-ms': { type: 'string', default: '100' },
    // How long nodes take to start (random phases) and the steady wait before the publish; default one poll interval.
    'warm-s': { type: 'string' },
    // Nodes start from a copy of one node's state on snapshot 1 (random phases kept); --no-seeded: each applies it.
    seeded: { type: 'boolean', default: true },
    out: { type: 'string' },
  },
});
const N = Number(values.nodes);
const W = Number(values.workers);
const kind = values.origin as 'nginx' | 'dev';
const pollS = Number(values['poll-s']);
const spreadMs = Number(values['spread-ms']);
const warmS = Number(values['warm-s'] ?? values['poll-s']);
const work = `/dev/shm/fleet-${process.pid}`;
const network = 'fleetnet';

const workers: ChildProcess[] = [];
let originChild: ChildProcess | null = null;
let nginx: Awaited<ReturnType<typeof startNginx>> | null = null;

function snapshot(sequence: number) {
  const s = devSnapshot({ network, sequence, pollSeconds: pollS, maxTokens: 1000 + sequence });
  // Default retry timers; heartbeats out of the way (they are steady and unrelated to a publish).
  return { ...s, ttl: { poll_interval_s: pollS, heartbeat_interval_s: 86_400, retry_initial_ms: 1000, retry_max_ms: 300_000, cache_ttl_s: 3600 } };
}

function ask<T>(child: ChildProcess, message: object, reply: string): Promise<T> {
  return new Promise((resolve) => {
    const on = (m: { kind: string }) => {
      if (m.kind !== reply) return;
      child.off('message', on);
      resolve(m as T);
    };
    child.on('message', on);
    child.send(message);
  });
}

interface Report {
  applied: number[];
  rss: number;
  cpu: { user: number; system: number };
}
async function reports(): Promise<Report[]> {
  return Promise.all(workers.map((w) => ask<Report>(w, { kind: 'report' }, 'report')));
}

function procRssMb(pid: number): Promise<number> {
  return readFile(`/proc/${pid}/status`, 'utf8').then((s) => Number(/VmRSS:\s+(\d+) kB/.exec(s)?.[1]) / 1024);
}

try {
  await mkdir(work, { recursive: true });
  const net = await createDevNetwork(join(work, 'net'), network);
  await net.publish(snapshot(1));
  const accessLog = join(work, 'access.log');
  const statsFile = join(work, 'origin-stats.jsonl');
  let url: string;
  if (kind === 'nginx') {
    nginx = await startNginx({ root: net.originDir, work, connections: N + 1024, accessLog, defaultType: 'application/json' });
    url = nginx.url;
  } else {
    const port = await freePort();
    originChild = fork(join(here, 'dev-origin.ts'), [net.originDir, String(port), String(N + 1000), statsFile], { execArgv: ['--import', 'tsx'] });
    const listening = await new Promise<{ url: string }>((resolve) => originChild?.once('message', (m) => resolve(m as { url: string })));
    url = listening.url;
  }

  const per = Math.ceil(N / W);
  for (let w = 0; w < W; w++) {
    const child = fork(join(here, 'nodes.ts'), [], { execArgv: ['--import', 'tsx', '--max-old-space-size=4096'] });
    workers.push(child);
    const count = Math.min(per, N - w * per);
    await ask(
      child,
      {
        kind: 'start',
        origin: url,
        network,
        rootFile: net.rootFile,
        stateBase: join(work, 'state'),
        first: w * per,
        count,
        startWithinMs: warmS * 1000,
        longPoll: true,
        spreadMs,
        target: 1,
        pollS,
        seeded: values.seeded !== false,
      },
      'started',
    );
  }
  const t1 = Date.now();
  await waitFor(
    'every node on snapshot 1',
    async () => {
      const applied = (await reports()).reduce((n, r) => n + r.applied.length, 0);
      if (process.env.FLEET_DEBUG) console.error(`${applied} nodes on snapshot 1`);
      return applied >= N;
    },
    pollS * 3000 + 60_000,
    2000,
  );
  console.error(`all ${N} nodes on snapshot 1 after ${((Date.now() - t1) / 1000).toFixed(1)} s`);
  // Seeded nodes are "on snapshot 1" before they have started: let them all start first.
  if (values.seeded !== false) await new Promise((r) => setTimeout(r, warmS * 1000));
  // One more interval, so that what is measured is a fleet in its steady state.
  await new Promise((r) => setTimeout(r, warmS * 1000));

  const before = await reports();
  const originRssBefore = kind === 'nginx' ? await procRssMb(nginx?.pid ?? 0) : null;
  for (const w of workers) w.send({ kind: 'target', sequence: 2 });
  // nginx's ETag is mtime and size: the new latest.json is written in another second.
  await new Promise((r) => setTimeout(r, 1100));
  // From the start of the publish call: publish may set latest.json's mtime ahead, so it is no clock.
  const t0 = Date.now();
  await net.publish(snapshot(2));
  const progress: { t: number; applied: number }[] = [];
  let after: Report[] = [];
  await waitFor(
    'every node on snapshot 2',
    async () => {
      after = await reports();
      const applied = after.reduce((n, r) => n + r.applied.length, 0);
      progress.push({ t: Date.now() - t0, applied });
      return applied >= N;
    },
    pollS * 3000 + 60_000,
    kind === 'dev' ? 100 : 1000,
  );
  const latencies = after.flatMap((r) => r.applied.map((t) => t - t0));
  const t99 = percentile(latencies, 99);
  const tEnd = Math.max(...latencies);
  // What the origin does for a while after the last node has applied (long-polls re-held).
  await new Promise((r) => setTimeout(r, 3000));
  const originRssAfter = kind === 'nginx' ? await procRssMb(nginx?.pid ?? 0) : null;
  const workerRss = after.map((r) => +(r.rss / 2 ** 20).toFixed(0));
  const workerCpuS = after.map((r, i) => +((r.cpu.user + r.cpu.system - ((before[i]?.cpu.user ?? 0) + (before[i]?.cpu.system ?? 0))) / 1e6).toFixed(1));

  for (const w of workers) w.kill('SIGTERM');

  // Requests per 1 s bucket (and 100 ms), relative to the publish.
  const series: { t: number; status: number; bytes: number; what: string }[] = [];
  let originStats: { t: number; held: number; rss: number; counts: Record<string, number> }[] = [];
  if (kind === 'nginx') {
    await nginx?.close();
    nginx = null;
    const logText = await readFile(accessLog, 'utf8');
    if (process.env.FLEET_DEBUG) console.error(`access log: ${logText.split('\n').length} lines, first ${logText.split('\n')[0]}, t0 ${t0}`);
    for (const line of logText.split('\n')) {
      const m = /^(\d+\.\d+) (\d+) (\d+) "(\S+) (\S+)/.exec(line);
      if (!m) continue;
      const path = m[5] ?? '';
      const what = path.includes('wait=')
        ? 'wait'
        : path.includes('latest.json')
          ? 'latest'
          : path.includes('/snapshots/')
            ? 'snapshot'
            : path.includes('/root/')
              ? 'root'
              : 'other';
      series.push({ t: Number(m[1]) * 1000 - t0, status: Number(m[2]), bytes: Number(m[3]), what });
    }
  } else {
    await new Promise((r) => setTimeout(r, 300));
    originStats = (await readFile(statsFile, 'utf8'))
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { t: number; held: number; rss: number; counts: Record<string, number> })
      .map((s) => ({ ...s, t: s.t - t0 }));
  }

  if (process.env.FLEET_DEBUG && kind === 'dev')
    console.error(
      originStats
        .filter((x) => x.t > -300 && x.t < tEnd + 300)
        .map((x) => `${x.t} held ${x.held} ${JSON.stringify(x.counts)}`)
        .join('\n'),
    );
  if (process.env.FLEET_DEBUG) {
    const secs = new Map<number, number>();
    for (const r of series) secs.set(Math.floor(r.t / 1000), (secs.get(Math.floor(r.t / 1000)) ?? 0) + 1);
    console.error('requests per second relative to the publish', JSON.stringify([...secs.entries()].sort((a, b) => a[0] - b[0])));
  }
  const bucket = (ms: number, from: number, to: number) => {
    const counts = new Map<number, number>();
    if (kind === 'nginx') {
      for (const r of series) if (r.t >= from && r.t < to) counts.set(Math.floor(r.t / ms), (counts.get(Math.floor(r.t / ms)) ?? 0) + 1);
    } else {
      for (const s of originStats) {
        if (s.t < from || s.t >= to) continue;
        const n = Object.values(s.counts).reduce((a, b) => a + b, 0);
        counts.set(Math.floor(s.t / ms), (counts.get(Math.floor(s.t / ms)) ?? 0) + n);
      }
    }
    const all: number[] = [];
    for (let b = Math.floor(from / ms); b < Math.ceil(to / ms); b++) all.push(counts.get(b) ?? 0);
    const mean = all.reduce((a, b) => a + b, 0) / all.length;
    return {
      bucket_ms: ms,
      peak_per_s: (Math.max(...all) * 1000) / ms,
      mean_per_s: (mean * 1000) / ms,
      peak_over_mean: +(Math.max(...all) / mean).toFixed(2),
      series: all,
    };
  };
  // When 99 % of the fleet had fetched the new envelope (it knew of the change), read on the
  // origin's side: the simulated nodes' own apply work comes after this.
  let fetched99: number | null = null;
  if (kind === 'nginx') {
    const times = series.filter((r) => r.t >= 0 && r.what === 'snapshot').map((r) => r.t);
    fetched99 = times.length >= N * 0.99 ? Math.round(percentile(times, (N * 99) / times.length)) : null;
  } else {
    let total = 0;
    for (const x of originStats.filter((x) => x.t >= 0)) {
      total += x.counts.snapshot ?? 0;
      if (total >= N * 0.99) {
        fetched99 = x.t;
        break;
      }
    }
  }
  const windowEnd = Math.max(t99, 1000);
  const afterPublish = bucket(1000, 0, windowEnd);
  const steady = bucket(1000, -warmS * 1000, 0);
  const fine = bucket(100, 0, windowEnd);
  const served = kind === 'nginx' ? series.filter((r) => r.t >= 0 && r.t <= tEnd) : [];
  const byWhat = (rows: typeof series) =>
    Object.fromEntries(['latest', 'wait', 'snapshot', 'root', 'other'].map((w) => [w, rows.filter((r) => r.what === w).length]));
  const result = {
    node: process.version,
    origin: kind,
    nodes: N,
    workers: W,
    poll_s: pollS,
    warm_s: warmS,
    uv_threadpool_size: Number(process.env.UV_THREADPOOL_SIZE ?? 4),
    jitter: 0.1,
    spread_ms: spreadMs,
    seeded: values.seeded !== false,
    ulimit_n: Number((await readFile('/proc/self/limits', 'utf8')).match(/Max open files\s+(\d+)/)?.[1]),
    time_to_99_fetched_ms: fetched99,
    time_to_99_ms: Math.round(t99),
    time_to_100_ms: Math.round(tEnd),
    latency_p50_ms: Math.round(percentile(latencies, 50)),
    requests_after_publish_1s: {
      peak_per_s: afterPublish.peak_per_s,
      mean_per_s: +afterPublish.mean_per_s.toFixed(1),
      peak_over_mean: afterPublish.peak_over_mean,
    },
    requests_after_publish_100ms: { peak_per_s: fine.peak_per_s, mean_per_s: +fine.mean_per_s.toFixed(1), peak_over_mean: fine.peak_over_mean },
    requests_steady_1s: { peak_per_s: steady.peak_per_s, mean_per_s: +steady.mean_per_s.toFixed(1), peak_over_mean: steady.peak_over_mean },
    ...(kind === 'nginx'
      ? {
          served_publish_to_last: { requests: served.length, bytes: served.reduce((a, r) => a + r.bytes, 0), by_kind: byWhat(served) },
          served_steady_interval: {
            requests: series.filter((r) => r.t >= -pollS * 1000 && r.t < 0).length,
            bytes: series.filter((r) => r.t >= -pollS * 1000 && r.t < 0).reduce((a, r) => a + r.bytes, 0),
          },
          nginx_rss_mb: { before: originRssBefore, after: originRssAfter },
        }
      : {
          held_peak: Math.max(...originStats.map((s) => s.held)),
          held_at_publish: originStats.filter((s) => s.t < 0).at(-1)?.held ?? null,
          origin_rss_mb: {
            steady_max: +(Math.max(...originStats.filter((s) => s.t < 0 && s.t > -warmS * 1000).map((s) => s.rss)) / 2 ** 20).toFixed(0),
            after_publish_max: +(Math.max(...originStats.filter((s) => s.t >= 0).map((s) => s.rss)) / 2 ** 20).toFixed(0),
          },
          requests_publish_to_last: Object.fromEntries(
            ['wait', 'latest', 'snapshot', 'root', 'other'].map((k) => [
              k,
              originStats.filter((s) => s.t >= 0 && s.t <= tEnd + 100).reduce((a, s) => a + (s.counts[k] ?? 0), 0),
            ]),
          ),
        }),
    worker_rss_mb: workerRss,
    worker_cpu_s_publish_to_end: workerCpuS,
  };
  console.log(JSON.stringify(result, null, 1));
  if (values.out) {
    await writeFile(
      values.out,
      JSON.stringify({
        ...result,
        progress,
        after_publish_1s: afterPublish.series,
        steady_1s: steady.series,
        after_publish_100ms: fine.series,
        origin_stats: kind === 'dev' ? originStats.filter((s) => s.t > -5000 && s.t < tEnd + 3000) : undefined,
      }),
    );
  }
} finally {
  for (const w of workers) if (w.exitCode === null) w.kill('SIGKILL');
  if (originChild && originChild.exitCode === null) originChild.kill('SIGKILL');
  await nginx?.close();
  await rm(work, { recursive: true, force: true });
}
