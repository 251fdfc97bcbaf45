// What long_poll.spread_ms buys the origin: N light clients hold long-polls on the dev origin
// (dev-origin.ts, 10 ms slices) as Agents do; on a publish every held request is answered at
// once and each client, after a random 0..spread ms, asks for what an Agent then asks for (the
// envelope, and the next root version, a 404). Per spread: the most requests the origin had in
// progress at once (held waits not counted), the most it answered in a 10 ms slice, and how long
// after the publish the clients had their envelope. The clients are plain node:http requests,
// not Agents, so the CPU of verifying and applying does not smear the burst.
//
//   pnpm build
//   cd bench
//   node --import tsx fleet/burst.ts --clients 2000 --spreads 0,100,250 --rounds 3
import { fork } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { createDevNetwork, devSnapshot } from '@resultity/testkit/devnet';

import { freePort, percentile } from './lib.js';

const here = new URL('.', import.meta.url).pathname;
const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '2000' },
    spreads: { type: 'string', default: '0,100,250' },
    rounds: { type: 'string', default: '3' },
    out: { type: 'string' },
  },
});
const N = Number(values.clients);
const spreads = (values.spreads ?? '').split(',').map(Number);
const rounds = Number(values.rounds);
const network = 'burstnet';
const work = `/dev/shm/fleet-burst-${process.pid}`;

interface Answer {
  status: number;
  etag: string | null;
  body: string;
}
const agent = new Agent({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY });
function get(url: string, headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, etag: (res.headers.etag as string | undefined) ?? null, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

const loadStart = loadavg().map((x) => +x.toFixed(2));
const origin = { child: null as ReturnType<typeof fork> | null };
try {
  await mkdir(work, { recursive: true });
  const net = await createDevNetwork(join(work, 'net'), network);
  const snapshot = (sequence: number) => devSnapshot({ network, sequence, pollSeconds: 600, maxTokens: 1000 + sequence });
  await net.publish(snapshot(1));
  const statsFile = join(work, 'origin-stats.jsonl');
  origin.child = fork(join(here, 'dev-origin.ts'), [net.originDir, String(await freePort()), String(N + 100), statsFile, '10'], {
    execArgv: ['--import', 'tsx'],
    cwd: join(here, '..'),
  });
  const base = await new Promise<string>((resolve) => origin.child?.once('message', (m) => resolve((m as { url: string }).url)));
  const latestUrl = `${base}/v1/${network}/latest.json`;

  let spread = 0;
  let publishedAt = 0;
  /** Per round: when each client had the envelope, ms after the publish call began. */
  let got: number[] = [];
  const first = await get(latestUrl);
  let stopping = false;
  async function client(): Promise<void> {
    let etag = first.etag;
    while (!stopping) {
      const answer = await get(`${latestUrl}?wait=30`, etag ? { 'if-none-match': etag } : {}).catch(() => null);
      if (answer === null || stopping) return;
      if (answer.status !== 200) continue;
      etag = answer.etag;
      const hint = JSON.parse(answer.body) as { config_digest: string };
      await new Promise((r) => setTimeout(r, Math.round(spread * Math.random())));
      await get(`${base}/v1/${network}/snapshots/${hint.config_digest.replace('sha256:', '')}.json`);
      got.push(Date.now() - publishedAt);
      await get(`${base}/v1/${network}/root/2.json`);
    }
  }
  const running = Array.from({ length: N }, () => client());
  const held = async () => {
    for (;;) {
      const lines = (await readFile(statsFile, 'utf8')).trim().split('\n');
      if ((JSON.parse(lines.at(-1) ?? '{}') as { held?: number }).held === N) return;
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  const results: Record<string, unknown>[] = [];
  let sequence = 1;
  for (const s of spreads) {
    for (let round = 0; round < rounds; round++) {
      spread = s;
      got = [];
      await held();
      await new Promise((r) => setTimeout(r, 500));
      sequence += 1;
      publishedAt = Date.now();
      await net.publish(snapshot(sequence));
      while (got.length < N) await new Promise((r) => setTimeout(r, 20));
      await new Promise((r) => setTimeout(r, 100));
      const stats = (await readFile(statsFile, 'utf8'))
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { t: number; inflight_max: number; counts: Record<string, number> })
        .filter((x) => x.t >= publishedAt && x.t < publishedAt + Math.max(...got) + 100);
      const answered = stats.map((x) => Object.entries(x.counts).reduce((a, [k, n]) => a + (k === 'wait' ? 0 : n), 0));
      const row = {
        spread_ms: s,
        round: round + 1,
        origin_inflight_max: Math.max(...stats.map((x) => x.inflight_max)),
        origin_answered_per_10ms_max: Math.max(...answered),
        envelope_ms: { p50: percentile(got, 50), p99: percentile(got, 99), max: Math.max(...got) },
      };
      console.error(JSON.stringify(row));
      results.push(row);
    }
  }
  stopping = true;
  const summary = spreads.map((s) => {
    const rows = results.filter((r) => r.spread_ms === s) as {
      origin_inflight_max: number;
      origin_answered_per_10ms_max: number;
      envelope_ms: { p99: number };
    }[];
    return {
      spread_ms: s,
      origin_inflight_max_p50: percentile(
        rows.map((r) => r.origin_inflight_max),
        50,
      ),
      origin_answered_per_10ms_max_p50: percentile(
        rows.map((r) => r.origin_answered_per_10ms_max),
        50,
      ),
      envelope_p99_ms_p50: percentile(
        rows.map((r) => r.envelope_ms.p99),
        50,
      ),
    };
  });
  const result = { node: process.version, clients: N, rounds, loadavg_start_end: [loadStart, loadavg().map((x) => +x.toFixed(2))], summary, rows: results };
  console.log(JSON.stringify(result, null, 1));
  if (values.out) await writeFile(values.out, JSON.stringify(result));
  origin.child.kill('SIGKILL');
  agent.destroy();
  void running;
} finally {
  if (origin.child && origin.child.exitCode === null) origin.child.kill('SIGKILL');
  await rm(work, { recursive: true, force: true });
}
process.exit(0);
