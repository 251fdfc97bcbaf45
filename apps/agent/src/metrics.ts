import { Counter, Gauge, Histogram, Registry } from 'prom-client';

import type { MetricsSink } from './ports.js';

/** Prometheus metrics on a registry of their own (never prom-client's global one). */
export function createMetrics(): { registry: Registry; sink: MetricsSink } {
  const registry = new Registry();
  const applied = new Gauge({ name: 'resultity_agent_applied_sequence', help: 'Sequence of the applied snapshot', registers: [registry] });
  const results = new Counter({ name: 'resultity_agent_sync_results_total', help: 'Sync cycles by result code', labelNames: ['code'], registers: [registry] });
  const durations = new Histogram({
    name: 'resultity_agent_apply_duration_seconds',
    help: 'Duration of applies',
    buckets: [0.1, 0.5, 1, 5, 15, 60, 300, 1800],
    registers: [registry],
  });
  const bytes = new Counter({ name: 'resultity_agent_downloaded_bytes_total', help: 'Bytes downloaded by kind', labelNames: ['kind'], registers: [registry] });
  const mirrorFailures = new Counter({
    name: 'resultity_agent_mirror_failures_total',
    help: 'Mirrors given up on during model downloads, by failure code (whether or not another mirror completed the download)',
    labelNames: ['code'],
    registers: [registry],
  });
  const collected = new Counter({
    name: 'resultity_agent_collected_bytes_total',
    help: 'Bytes freed from the model store by collection',
    registers: [registry],
  });
  return {
    registry,
    sink: {
      appliedSequence: (sequence) => applied.set(sequence),
      syncResult: (code) => results.inc({ code }),
      applyDuration: (seconds) => durations.observe(seconds),
      bytesDownloaded: (kind, n) => bytes.inc({ kind }, n),
      mirrorFailure: (code) => mirrorFailures.inc({ code }),
      collectedBytes: (n) => collected.inc(n),
    },
  };
}
