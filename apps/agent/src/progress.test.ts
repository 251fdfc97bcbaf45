import { describe, expect, it } from 'vitest';

import { terminalProgress } from './progress.js';

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
});
