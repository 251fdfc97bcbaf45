import { describe, expect, it } from 'vitest';

import { type StatusReport, renderStatus } from './status.js';

const report: StatusReport = {
  network: 'testnet',
  node_id: 'node-1',
  agent_version: '0.1.0',
  applied: { digest: `sha256:${'a'.repeat(64)}`, sequence: 7 },
  pinned: null,
  latest: { digest: `sha256:${'b'.repeat(64)}`, sequence: 8 },
  last_check: '2026-11-26T00:00:00.000Z',
  last_success_check: '2026-11-26T00:00:00.000Z',
  last_error: { code: 'EXPIRED', message: 'snapshot 8 expired', at: '2026-11-26T00:00:00.000Z' },
  applying: null,
  failed_digests: [],
  containers: [
    { name: 'inference', image: '127.0.0.1:5000/rt@sha256:c', state: 'running' },
    { name: 'sidecar', image: '127.0.0.1:5000/sc@sha256:d', state: 'exited' },
  ],
  models: [{ name: 'llama', version: '1.2.0' }],
  flags: { mode: 'testnet', subclouds: ['eu-gpu'] },
  engine: 'ok',
  store: { bytes: 3 * 1048576, collectable: { bytes: 1048576, count: 2 } },
  runtime: { last: { digest: `sha256:${'a'.repeat(64)}`, outcome: 'ack', at: '2026-11-26T00:00:00.000Z' }, connected: [] },
  pending_update: { agent: { version: '1.3.0', image: 'registry.example/agent', digest: 'sha256:e' } },
};

describe('renderStatus', () => {
  it('shows every section as a readable table, one container per line', () => {
    const text = renderStatus(report);
    expect(text).toMatch(/^network\s+testnet$/m);
    expect(text).toMatch(/^applied sequence\s+7$/m);
    expect(text).toMatch(/^last error\s+EXPIRED: snapshot 8 expired$/m);
    expect(text).toMatch(/^containers\s+inference \[running\]/m);
    expect(text).toMatch(/^\s+sidecar \[exited\]/m);
    expect(text).toMatch(/^models\s+llama@1\.2\.0$/m);
    expect(text).toMatch(/^flags\s+mode testnet; subclouds eu-gpu$/m);
    expect(text).toMatch(/^pending update\s+agent 1\.3\.0/m);
    expect(text).toMatch(/^model store\s+3\.0 MiB; collectable 1\.0 MiB in 2 file\(s\)$/m);
  });

  it('escapes control characters that came from the network, even in a state written before they were escaped', () => {
    const hostile = { ...report, last_error: { code: 'PAYLOAD_TYPE', message: 'payloadType is "\u001b]0;owned\u0007"', at: report.last_check ?? '' } };
    const text = renderStatus(hostile);
    expect(text).toContain('payloadType is "\\x1b]0;owned\\x07"');
    expect(text).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f]/);
  });
});
