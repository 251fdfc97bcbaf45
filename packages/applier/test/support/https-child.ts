// A ranged read over TLS in a process of its own, so that the test's certificate can be made
// trusted the only way node allows after start-up: NODE_EXTRA_CA_CERTS. argv: key, cert, host.
// Prints the number of bytes read and whether they are the ones served, or the error's code.
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';

import { HttpDownloader } from '../../src/index.js';

const [key, cert, host] = process.argv.slice(2);
const data = randomBytes(3 * 1024 * 1024 + 5);
const server = https.createServer({ key: readFileSync(key!), cert: readFileSync(cert!) }, (req, res) => {
  const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
  const start = Number(m?.[1] ?? 0);
  const end = Number(m?.[2] ?? data.length - 1);
  res.writeHead(206, { 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${data.length}` });
  res.end(data.subarray(start, end + 1));
});
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
const { port } = server.address() as AddressInfo;
const hash = createHash('sha256');
let read = 0;
try {
  await new HttpDownloader({ allowPrivateAddresses: true, idleTimeoutMs: 5000 }).readRange(
    `https://${host}:${port}/m`,
    { start: 100, end: 2 * 1024 * 1024 + 7, size: data.length },
    (batch) => {
      hash.update(batch);
      read += batch.length;
    },
  );
  const same =
    hash.digest('hex') ===
    createHash('sha256')
      .update(data.subarray(100, 2 * 1024 * 1024 + 7))
      .digest('hex');
  process.stdout.write(`${JSON.stringify({ read, same })}\n`);
} catch (error) {
  process.stdout.write(`${JSON.stringify({ error: (error as NodeJS.ErrnoException).code ?? String(error) })}\n`);
} finally {
  server.close();
}
