import type { ProgressInfo } from './ports.js';

/** Progress of model and image downloads on a terminal (one rewritten line); nothing when stderr is not one. */
export function terminalProgress(stream: NodeJS.WriteStream = process.stderr): ((e: ProgressInfo) => void) | undefined {
  if (!stream.isTTY) return undefined;
  let last = 0;
  return (e) => {
    const now = Date.now();
    const done = e.bytesTotal !== null && e.bytesDone >= e.bytesTotal;
    if (!done && now - last < 200) return;
    last = now;
    const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;
    const pct = e.bytesTotal ? ` ${Math.floor((100 * e.bytesDone) / e.bytesTotal)}%` : '';
    stream.write(`\r${e.kind} ${e.name}${pct} ${mib(e.bytesDone)}${e.bytesTotal ? ` / ${mib(e.bytesTotal)}` : ''}\x1b[K${done ? '\n' : ''}`);
  };
}
