// What the applier benchmarks share: nginx on loopback (the server every tool fetches from) and
// the reference tools, each run and timed the same way whichever benchmark asks.
import { execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';

export const run = promisify(execFile);
export const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
/** Starts every timed run from the same state: nothing dirty in the page cache. */
export const settle = () => run('sync');

/** Runs commands one after another under GNU time: wall seconds of all, and the CPU seconds (user + system) they used. */
async function timed(...commands) {
  let cpuSeconds = 0;
  const t0 = process.hrtime.bigint();
  for (const [command, args] of commands) {
    const { stderr } = await run('/usr/bin/time', ['-f', 'cpu %U %S', command, ...args]);
    const m = /cpu ([\d.]+) ([\d.]+)\s*$/.exec(stderr);
    if (m) cpuSeconds += Number(m[1]) + Number(m[2]);
  }
  return { seconds: Number(process.hrtime.bigint() - t0) / 1e9, cpuSeconds };
}

export async function freePort() {
  return new Promise((resolve) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/**
 * One nginx process (no master, one worker, `sendfile on`, like a CDN) serving `root` on a free
 * loopback port, with its files under `prefix`; `limitRate` (e.g. "20m") caps each connection.
 * It logs `$bytes_sent` per request, so a benchmark can tell what was fetched again.
 */
export async function startNginx(prefix, root, limitRate) {
  await mkdir(join(prefix, 'logs'), { recursive: true });
  const port = await freePort();
  const log = join(prefix, 'logs', 'bytes.log');
  await rm(log, { force: true });
  const conf = join(prefix, 'nginx.conf');
  writeFileSync(
    conf,
    `daemon off; master_process off; worker_processes 1; pid ${prefix}/nginx.pid; error_log ${prefix}/logs/error.log;
${process.getuid?.() === 0 ? 'user root;' : ''}
events { worker_connections 256; }
http { log_format bytes '$bytes_sent'; access_log ${log} bytes; sendfile on; default_type application/octet-stream;
  client_body_temp_path ${prefix}/body; proxy_temp_path ${prefix}/proxy; fastcgi_temp_path ${prefix}/fastcgi; uwsgi_temp_path ${prefix}/uwsgi; scgi_temp_path ${prefix}/scgi;
  server { listen 127.0.0.1:${port}; root ${root}; ${limitRate ? `limit_rate ${limitRate};` : ''} } }
`,
  );
  const child = spawn('nginx', ['-p', prefix, '-c', conf], { stdio: 'inherit' });
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise((resolve) =>
      net
        .connect(port, '127.0.0.1')
        .once('connect', function () {
          this.destroy();
          resolve(true);
        })
        .once('error', () => resolve(false)),
    );
    if (ok) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `http://127.0.0.1:${port}`,
    /** Bytes this nginx sent since the log was last cleared (headers included). */
    bytesSent: () =>
      existsSync(log)
        ? readFileSync(log, 'utf8')
            .split('\n')
            .filter(Boolean)
            .reduce((n, l) => n + Number(l), 0)
        : 0,
    clearLog: () => writeFileSync(log, ''),
    stop: () => new Promise((resolve) => child.once('exit', resolve).kill('SIGTERM')),
  };
}

/**
 * Bare curl, one connection, into `out`; then what the caller's guarantee adds: `verify` runs
 * `openssl dgst -sha256` on the file (the fastest command-line check, SHA-NI), `durable` runs
 * `sync -d` on it (fdatasync, as the store does before its rename). `{ seconds, cpuSeconds }` of all of it.
 */
export function curl(url, out, { verify = false, durable = false } = {}) {
  return timed(
    ['curl', ['-sS', '--fail', '-o', out, url]],
    ...(verify ? [['openssl', ['dgst', '-sha256', out]]] : []),
    ...(durable ? [['sync', ['-d', out]]] : []),
  );
}

/** One curl process, `n` connections in parallel, each a range of the file into its own part file (not even joined). */
export function curlRanges(url, size, outDir, n) {
  const per = Math.ceil(size / n);
  const args = ['-sS', '--fail', '--parallel', '--parallel-max', String(n)];
  for (let i = 0; i < n; i++) args.push('-r', `${i * per}-${Math.min(size, (i + 1) * per) - 1}`, '-o', join(outDir, `part${i}`), url);
  return timed(['curl', args]);
}

/** aria2c with `n` connections over `urls` (`-x n -s n`), pieces of at least `splitMiB`, no preallocation, into `outDir/out`. */
export function aria2c(urls, outDir, n, splitMiB) {
  const args = ['-q', '-x', String(n), '-s', String(n), '-k', `${splitMiB}M`, '--file-allocation=none', '--allow-overwrite=true', '--auto-file-renaming=false'];
  return timed(['aria2c', [...args, '-d', outDir, '-o', 'out', ...urls]]);
}
