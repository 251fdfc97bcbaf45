import http from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A registry in the middle, on 127.0.0.1: passes everything through to the real test registry,
 * except that when asked for the manifest `wanted` of `repo` it answers with the bytes of the
 * manifest `served` (and claims they are `wanted`) — a registry or mirror that lies — or, with
 * `stall`, never answers at all (a registry that hangs).
 */
export async function startTamperingRegistry(options: {
  upstream: string;
  repo: string;
  wanted: string;
  served: string;
  stall?: boolean;
}): Promise<{ host: string; close(): Promise<void> }> {
  const tamperedPath = `/v2/${options.repo}/manifests/${options.wanted}`;
  const server = http.createServer((req, res) => {
    if (options.stall && req.url === tamperedPath) return;
    const [upstreamHost, upstreamPort] = options.upstream.split(':');
    const path = req.url === tamperedPath ? `/v2/${options.repo}/manifests/${options.served}` : (req.url ?? '/');
    const headers = { ...req.headers, host: options.upstream };
    const forward = http.request({ host: upstreamHost, port: Number(upstreamPort ?? 80), method: req.method, path, headers }, (upstream) => {
      const out = { ...upstream.headers };
      if (req.url === tamperedPath) out['docker-content-digest'] = options.wanted;
      res.writeHead(upstream.statusCode ?? 502, out);
      upstream.pipe(res);
    });
    forward.on('error', () => res.writeHead(502).end());
    req.pipe(forward);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    host: `127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
