#!/usr/bin/env node
// Notification -> listener latency of the runtime bridge on loopback.
//
// For each bridge count, starts a real endpoint on 127.0.0.1, connects that many bridges over
// real WebSockets, then publishes `--rounds` environments one after another. A sample is the
// time from the setEnvironment() call to one bridge's onChange listener running with that
// environment. With --workers N the bridges live in N child processes (as runtimes would);
// their clocks are compared through performance.timeOrigin + performance.now().
//
//   pnpm --filter @resultity/bridge-endpoint --filter @resultity/runtime-bridge build
//   node bench/bridge/latency.mjs --bridges 1,100 --rounds 200 --workers 0
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = new URL('.', import.meta.url);
const endpointModule = new URL('../../packages/bridge-endpoint/dist/index.js', here).href;
const bridgeModule = new URL('../../apps/runtime-bridge/dist/index.js', here).href;
const TOKEN = 'bench-token-0123456789abcdef';

const now = () => performance.timeOrigin + performance.now();

function environment(n) {
  return {
    digest: `sha256:${n.toString(16).padStart(64, '0')}`,
    sequence: n,
    job: {
      max_tokens: 1000 + (n % 3000),
      max_queue_size: 64,
      execution_timeout_ms: 120_000,
      validation: [{ field: 'max_tokens', op: 'lte', value: 4096 }],
    },
    models: [{ name: 'llama-3.1-8b-q4', version: '1.2.0', sha256: 'a'.repeat(64), path: '/var/lib/resultity/models/llama-3.1-8b-q4' }],
    participation: { mode: 'testnet', subclouds: ['eu-gpu'] },
  };
}

/** Connects `count` bridges in this process; each listener reports (sequence, time). */
async function connectBridges(address, count, offset, report) {
  const { connect } = await import(bridgeModule);
  const bridges = [];
  for (let i = 0; i < count; i++) {
    bridges.push(
      await connect({
        url: address,
        token: TOKEN,
        runtimeId: `bench-${offset + i}`,
        onChange: (env) => report(env.sequence, now()),
      }),
    );
  }
  return bridges;
}

// Child process: connect bridges, stream (sequence, time) pairs to the parent.
if (process.argv[2] === '--child') {
  const [address, count, offset] = [process.argv[3], Number(process.argv[4]), Number(process.argv[5])];
  const batch = [];
  const bridges = await connectBridges(address, count, offset, (sequence, at) => {
    batch.push([sequence, at]);
    if (batch.length >= count) process.send({ samples: batch.splice(0) });
  });
  process.send({ ready: true });
  process.on('message', async (message) => {
    if (message === 'flush') process.send({ samples: batch.splice(0), flushed: true });
    if (message === 'stop') {
      await Promise.all(bridges.map((bridge) => bridge.close()));
      process.exit(0);
    }
  });
} else {
  const { values } = parseArgs({
    options: {
      bridges: { type: 'string', default: '1,100' },
      rounds: { type: 'string', default: '200' },
      workers: { type: 'string', default: '0' },
      json: { type: 'boolean', default: false },
    },
  });
  const { startBridgeEndpoint } = await import(endpointModule);
  const rows = [];
  for (const count of values.bridges.split(',').map(Number)) {
    rows.push(await run(startBridgeEndpoint, count, Number(values.rounds), Number(values.workers)));
  }
  if (values.json) console.log(JSON.stringify(rows, null, 2));
  else {
    console.log(`node ${process.version}, ${values.rounds} rounds, workers=${values.workers}`);
    console.log('bridges | samples | p50 ms | p99 ms | max ms');
    for (const row of rows) console.log(`${row.bridges} | ${row.samples} | ${row.p50.toFixed(3)} | ${row.p99.toFixed(3)} | ${row.max.toFixed(3)}`);
  }
}

async function run(startBridgeEndpoint, count, rounds, workers) {
  const endpoint = await startBridgeEndpoint({ listen: { host: '127.0.0.1', port: 0 }, token: TOKEN, maxConnections: count + 8 });
  await endpoint.setEnvironment(environment(1));
  const arrivals = new Map(); // sequence -> times
  const record = (sequence, at) => {
    const list = arrivals.get(sequence) ?? [];
    list.push(at);
    arrivals.set(sequence, list);
  };
  let bridges = [];
  const children = [];
  if (workers > 0) {
    const per = Math.ceil(count / workers);
    for (let w = 0; w < workers && w * per < count; w++) {
      const n = Math.min(per, count - w * per);
      const child = fork(fileURLToPath(import.meta.url), ['--child', endpoint.address, String(n), String(w * per)]);
      child.on('message', (message) => {
        for (const [sequence, at] of message.samples ?? []) record(sequence, at);
      });
      await new Promise((resolve) => child.once('message', resolve));
      children.push(child);
    }
  } else {
    bridges = await connectBridges(endpoint.address, count, 0, record);
  }
  arrivals.clear();

  const latencies = [];
  const warmup = Math.min(20, Math.floor(rounds / 10));
  for (let round = 0; round < rounds + warmup; round++) {
    const sequence = round + 2;
    const sent = now();
    const acks = await endpoint.setEnvironment(environment(sequence));
    if (acks.some((ack) => !ack.ok)) throw new Error(`a bridge refused round ${round}: ${JSON.stringify(acks.find((a) => !a.ok))}`);
    if (workers > 0) {
      // The listener ran before each ack; the child's report may still be in flight.
      while ((arrivals.get(sequence)?.length ?? 0) < count) await new Promise((resolve) => setTimeout(resolve, 1));
    }
    const times = arrivals.get(sequence) ?? [];
    if (times.length !== count) throw new Error(`expected ${count} listener calls in round ${round}, found ${times.length}`);
    if (round >= warmup) for (const at of times) latencies.push(at - sent);
    arrivals.delete(sequence);
  }

  await Promise.all(bridges.map((bridge) => bridge.close()));
  for (const child of children) {
    child.send('stop');
    await new Promise((resolve) => child.once('exit', resolve));
  }
  await endpoint.close();
  latencies.sort((a, b) => a - b);
  const pick = (q) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))];
  return { bridges: count, samples: latencies.length, p50: pick(0.5), p99: pick(0.99), max: latencies[latencies.length - 1] };
}
