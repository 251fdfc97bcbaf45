// Shared helpers of the fleet benchmarks: percentiles, a liveness wait, and nginx serving a
// published tree with an access log whose timestamps have millisecond resolution ($msec).
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';

export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank] as number;
}

export async function waitFor(what: string, probe: () => Promise<boolean> | boolean, ms: number, everyMs = 50): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      if (await probe()) return;
    } catch {
      // not ready yet
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Debian's nginx on a free loopback port serving `dir` statically; `accessLog` gets `$msec $status $bytes_sent $request`. */
export async function startNginx(options: {
  dir: string;
  work: string;
  connections: number;
  accessLog?: string;
}): Promise<{ url: string; pid: number; close(): Promise<void> }> {
  await mkdir(join(options.work, 'logs'), { recursive: true });
  const port = await freePort();
  const conf = join(options.work, 'nginx.conf');
  const log = options.accessLog
    ? `log_format fleet '$msec $status $bytes_sent "$request"';\n  access_log ${options.accessLog} fleet buffer=256k flush=1s;`
    : 'access_log off;';
  await writeFile(
    conf,
    `daemon off;
${process.getuid?.() === 0 ? 'user root;' : ''}
worker_processes 1;
worker_rlimit_nofile ${options.connections + 256};
pid ${options.work}/nginx.pid;
error_log ${options.work}/logs/error.log warn;
events { worker_connections ${options.connections}; }
http {
  ${log}
  client_body_temp_path ${options.work}/body;
  proxy_temp_path ${options.work}/proxy;
  fastcgi_temp_path ${options.work}/fastcgi;
  uwsgi_temp_path ${options.work}/uwsgi;
  scgi_temp_path ${options.work}/scgi;
  default_type application/json;
  keepalive_requests 100000;
  keepalive_timeout 120s;
  server {
    listen 127.0.0.1:${port} backlog=4096;
    root ${options.dir};
    etag on;
    location / { try_files $uri =404; }
  }
}
`,
  );
  const child: ChildProcess = spawn('/usr/sbin/nginx', ['-p', options.work, '-c', conf], { stdio: ['ignore', 'ignore', 'inherit'] });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(
    'nginx',
    async () => {
      if (child.exitCode !== null) throw new Error('nginx exited');
      await fetch(`${url}/`);
      return true;
    },
    10_000,
  );
  return {
    url,
    pid: child.pid ?? 0,
    close: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGQUIT');
      await exited;
    },
  };
}
