import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';

/** Debian's nginx serving a directory statically on loopback ports, as a CDN or mirror would (sendfile, Range, ETag, 304). */
export interface Nginx {
  /** One base URL per port (each port a "mirror"), e.g. http://127.0.0.1:41234 */
  readonly urls: string[];
  /** The first of `urls`. */
  readonly url: string;
  readonly pid: number;
  close(): Promise<void>;
}

export interface NginxOptions {
  /** The directory served at `/`. */
  readonly root: string;
  /** Where nginx keeps its configuration, pid file and logs (a `nginx/` folder is made in it). */
  readonly work: string;
  /** How many loopback ports to listen on; default 1. */
  readonly ports?: number;
  /** Caps each connection's rate (nginx `limit_rate`, e.g. "2m"), to stand in for a WAN link. */
  readonly limitRate?: string;
  /** nginx `worker_connections`; default 256. */
  readonly connections?: number;
  /** `Content-Type` of files nginx cannot type by extension; default application/octet-stream. */
  readonly defaultType?: string;
  /**
   * A file that gets one line per request, `$msec $status $bytes_sent "$request"` ($msec has
   * millisecond resolution), flushed at least every second; default: no access log.
   */
  readonly accessLog?: string;
}

export async function freeLoopbackPort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as net.AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

function answers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

export async function startNginx(options: NginxOptions): Promise<Nginx> {
  const prefix = join(options.work, 'nginx');
  await mkdir(join(prefix, 'logs'), { recursive: true });
  const ports = await Promise.all(Array.from({ length: options.ports ?? 1 }, () => freeLoopbackPort()));
  const conf = join(prefix, 'nginx.conf');
  const connections = options.connections ?? 256;
  const accessLog = options.accessLog
    ? `log_format requests '$msec $status $bytes_sent "$request"';\n  access_log ${options.accessLog} requests buffer=256k flush=1s;`
    : 'access_log off;';
  // nginx workers run as www-data unless told otherwise, and test directories are often 0700.
  // The file and connection limits and the listen backlog let a benchmark hold thousands of clients.
  await writeFile(
    conf,
    `daemon off;
${process.getuid?.() === 0 ? 'user root;' : ''}
worker_processes 1;
worker_rlimit_nofile ${connections + 256};
pid ${prefix}/nginx.pid;
error_log ${prefix}/logs/error.log warn;
events { worker_connections ${connections}; }
http {
  ${accessLog}
  sendfile on;
  keepalive_requests 100000;
  keepalive_timeout 120s;
  client_body_temp_path ${prefix}/body;
  proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fastcgi;
  uwsgi_temp_path ${prefix}/uwsgi;
  scgi_temp_path ${prefix}/scgi;
  default_type ${options.defaultType ?? 'application/octet-stream'};
  server {
${ports.map((p) => `    listen 127.0.0.1:${p} backlog=4096;`).join('\n')}
    root ${options.root};
    etag on;
    ${options.limitRate ? `limit_rate ${options.limitRate};` : ''}
    location / { try_files $uri =404; }
  }
}
`,
  );
  const child: ChildProcess = spawn('/usr/sbin/nginx', ['-p', prefix, '-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  for (let attempt = 0; !(await answers(ports[0] as number)); attempt++) {
    if (child.exitCode !== null) throw new Error(`nginx exited: ${stderr}`);
    if (attempt === 200) {
      child.kill('SIGKILL');
      throw new Error(`nginx did not answer on 127.0.0.1:${ports[0]} within 10 s: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const urls = ports.map((p) => `http://127.0.0.1:${p}`);
  return {
    urls,
    url: urls[0] as string,
    pid: child.pid ?? 0,
    close: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGQUIT');
      await exited;
    },
  };
}
