// A plain file server for the download benchmark, in its own process so that curl and the
// applier fetch from the same server under the same conditions. Prints its port on stdout.
import { createReadStream, statSync } from 'node:fs';
import http from 'node:http';

const file = process.argv[2];
const size = statSync(file).size;
const server = http.createServer((req, res) => {
  const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
  const start = m ? Number(m[1]) : 0;
  if (m) res.writeHead(206, { 'content-length': size - start, 'content-range': `bytes ${start}-${size - 1}/${size}` });
  else res.writeHead(200, { 'content-length': size });
  createReadStream(file, { start, highWaterMark: 1 << 20 }).pipe(res);
});
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
