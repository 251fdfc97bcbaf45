import type { ProgressInfo } from './ports.js';

const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;

/** Seconds as `1h02m`, `3m05s` or `42s`: an ETA reads at a glance. */
function duration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${s}s`;
}

/**
 * One progress line: name, percentage, bytes, and for a model the rate, the time left at that
 * rate and, for a chunked download, each mirror by its position in `urls` (hosts stay out of
 * it, like every text of the Agent) with its bytes and connections, or the code it was dropped with.
 */
export function progressLine(e: ProgressInfo): string {
  const parts = [`${e.kind} ${e.name}`];
  if (e.bytesTotal) parts.push(`${Math.floor((100 * e.bytesDone) / e.bytesTotal)}%`);
  parts.push(`${mib(e.bytesDone)}${e.bytesTotal ? ` / ${mib(e.bytesTotal)}` : ''}`);
  if (e.bytesPerSecond !== undefined && e.bytesPerSecond > 0) {
    parts.push(`${mib(e.bytesPerSecond)}/s`);
    if (e.bytesTotal && e.bytesDone < e.bytesTotal) parts.push(`ETA ${duration((e.bytesTotal - e.bytesDone) / e.bytesPerSecond)}`);
  }
  if (e.mirrors !== undefined && e.mirrors.length > 0) {
    const mirrors = e.mirrors.map((m) => `#${m.index} ${m.failure ? `dropped ${m.failure.code}` : `${mib(m.bytes)} x${m.connections}`}`);
    parts.push(`[${mirrors.join(', ')}]`);
  }
  return parts.join(' ');
}

/** Progress of model and image downloads on a terminal (one rewritten line); nothing when stderr is not one. */
export function terminalProgress(stream: NodeJS.WriteStream = process.stderr, now: () => number = Date.now): ((e: ProgressInfo) => void) | undefined {
  if (!stream.isTTY) return undefined;
  let last = 0;
  return (e) => {
    const at = now();
    const done = e.bytesTotal !== null && e.bytesDone >= e.bytesTotal;
    // At most five redraws a second: a terminal over ssh should not cost the download anything.
    if (!done && at - last < 200) return;
    last = at;
    stream.write(`\r${progressLine(e)}\x1b[K${done ? '\n' : ''}`);
  };
}
