import { describe, expect, it } from 'vitest';

import { progressLine, terminalProgress } from './progress.js';

function stream(isTTY: boolean) {
  const written: string[] = [];
  return { written, stream: { isTTY, write: (s: string) => written.push(s) > 0 } as unknown as NodeJS.WriteStream };
}

describe('terminalProgress', () => {
  it('rewrites one line with the percentage and ends it when the download is complete', () => {
    const t = stream(true);
    const show = terminalProgress(t.stream);
    show?.({ kind: 'model', name: 'llama', bytesDone: 0, bytesTotal: 2 * 1048576 });
    show?.({ kind: 'model', name: 'llama', bytesDone: 2 * 1048576, bytesTotal: 2 * 1048576 });
    expect(t.written[0]).toMatch(/^\rmodel llama 0% 0\.0 MiB \/ 2\.0 MiB/);
    expect(t.written.at(-1)).toMatch(/100% 2\.0 MiB \/ 2\.0 MiB\x1b\[K\n$/);
  });

  it('shows nothing when the output is not a terminal', () => {
    expect(terminalProgress(stream(false).stream)).toBeUndefined();
  });

  it('shows the rate, the time left and each mirror of a chunked download, a dropped one by its code', () => {
    const line = progressLine({
      kind: 'model',
      name: 'llama@1.0.0',
      bytesDone: 30 * 1048576,
      bytesTotal: 100 * 1048576,
      bytesPerSecond: 2 * 1048576,
      mirrors: [
        { index: 0, bytes: 20 * 1048576, connections: 5, failure: null },
        { index: 1, bytes: 10 * 1048576, connections: 0, failure: { code: 'MIRROR_CHUNK_MISMATCH' } },
      ],
    });
    expect(line).toBe('model llama@1.0.0 30% 30.0 MiB / 100.0 MiB 2.0 MiB/s ETA 35s [#0 20.0 MiB x5, #1 dropped MIRROR_CHUNK_MISMATCH]');
  });

  it('gives the time left in minutes or hours for a long download', () => {
    expect(progressLine({ kind: 'model', name: 'm', bytesDone: 0, bytesTotal: 3 * 3600 * 1048576, bytesPerSecond: 1048576 })).toContain('ETA 3h00m');
    expect(progressLine({ kind: 'model', name: 'm', bytesDone: 0, bytesTotal: 125 * 1048576, bytesPerSecond: 1048576 })).toContain('ETA 2m05s');
  });
});
