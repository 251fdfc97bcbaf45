// Draws the fleet benchmarks' figures as SVG from the JSON the runs wrote (--out), by hand: no
// plotting dependency.
//
//   cd bench && node --import tsx fleet/plot.ts
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

const dir = join(new URL('.', import.meta.url).pathname, 'results');

interface Series {
  readonly label: string;
  readonly color: string;
  readonly points: readonly (readonly [number, number])[];
  readonly step?: boolean;
}

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
}

function niceMax(v: number): number {
  const p = 10 ** Math.floor(Math.log10(v || 1));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/** One chart: axes with five ticks each, a line per series, a legend. */
function chart(options: { title: string; x: string; y: string; series: readonly Series[]; xMax?: number; yMax?: number; logX?: boolean }): string {
  const W = 760;
  const H = 420;
  const m = { l: 70, r: 20, t: 40, b: 55 };
  const all = options.series.flatMap((s) => s.points);
  const xMax = options.xMax ?? niceMax(Math.max(...all.map((p) => p[0])));
  const yMax = options.yMax ?? niceMax(Math.max(...all.map((p) => p[1])));
  const xMin = options.logX ? 10 : 0;
  const sx = (x: number) =>
    options.logX
      ? m.l + ((Math.log10(Math.max(x, xMin)) - Math.log10(xMin)) / (Math.log10(xMax) - Math.log10(xMin))) * (W - m.l - m.r)
      : m.l + (x / xMax) * (W - m.l - m.r);
  const sy = (y: number) => H - m.b - (y / yMax) * (H - m.t - m.b);
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<title>${escapeXml(options.title)}</title>`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${escapeXml(options.title)}</text>`);
  const xTicks = options.logX ? [10, 100, 1000, 10000, 100000].filter((t) => t <= xMax) : [0, 1, 2, 3, 4, 5].map((i) => (xMax * i) / 5);
  for (const t of xTicks) {
    out.push(`<line x1="${sx(t)}" y1="${m.t}" x2="${sx(t)}" y2="${H - m.b}" stroke="#eee"/>`);
    out.push(`<text x="${sx(t)}" y="${H - m.b + 16}" text-anchor="middle">${+t.toFixed(2)}</text>`);
  }
  for (let i = 0; i <= 5; i++) {
    const t = (yMax * i) / 5;
    out.push(`<line x1="${m.l}" y1="${sy(t)}" x2="${W - m.r}" y2="${sy(t)}" stroke="#eee"/>`);
    out.push(`<text x="${m.l - 6}" y="${sy(t) + 4}" text-anchor="end">${+t.toFixed(2)}</text>`);
  }
  out.push(
    `<line x1="${m.l}" y1="${H - m.b}" x2="${W - m.r}" y2="${H - m.b}" stroke="black"/><line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${H - m.b}" stroke="black"/>`,
  );
  out.push(`<text x="${(m.l + W - m.r) / 2}" y="${H - 12}" text-anchor="middle">${escapeXml(options.x)}</text>`);
  out.push(`<text transform="translate(16 ${(m.t + H - m.b) / 2}) rotate(-90)" text-anchor="middle">${escapeXml(options.y)}</text>`);
  options.series.forEach((s, i) => {
    const pts: string[] = [];
    let prev: readonly [number, number] | null = null;
    for (const p of s.points) {
      if (s.step && prev) pts.push(`${sx(p[0]).toFixed(1)},${sy(prev[1]).toFixed(1)}`);
      pts.push(`${sx(p[0]).toFixed(1)},${sy(Math.min(p[1], yMax)).toFixed(1)}`);
      prev = p;
    }
    out.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${pts.join(' ')}"/>`);
    out.push(`<rect x="${m.l + 12}" y="${m.t + 8 + i * 18}" width="14" height="3" fill="${s.color}"/>`);
    out.push(`<text x="${m.l + 32}" y="${m.t + 13 + i * 18}">${escapeXml(s.label)}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

async function load<T>(name: string): Promise<T | null> {
  return readFile(join(dir, name), 'utf8').then(
    (t) => JSON.parse(t) as T,
    () => null,
  );
}

interface FleetRun {
  nodes: number;
  progress: { t: number; applied: number }[];
  after_publish_1s: number[];
  steady_1s: number[];
}
const nginx = await load<FleetRun>('fleet-10000-nginx.json');
const dev = await load<FleetRun>('fleet-10000-dev.json');
const fraction = (r: FleetRun) => [[0, 0] as const, ...r.progress.map((p) => [p.t / 1000, (100 * p.applied) / r.nodes] as const)];
if (nginx && dev) {
  await writeFile(
    join(dir, 'fleet-propagation.svg'),
    chart({
      title: `${nginx.nodes} simulated nodes: share on the new digest after a publish`,
      x: 'seconds since the publish',
      y: '% of the fleet',
      yMax: 100,
      series: [
        { label: 'nginx, polling every 60 s ±10 %', color: '#c0392b', points: fraction(nginx) },
        { label: 'dev origin, long-poll (spread 100 ms)', color: '#2471a3', points: fraction(dev) },
      ],
    }),
  );
  const steadyMean = nginx.steady_1s.reduce((a, b) => a + b, 0) / nginx.steady_1s.length;
  const before = nginx.steady_1s.map((n, i) => [i - nginx.steady_1s.length, n] as const);
  const after = nginx.after_publish_1s.map((n, i) => [i, n] as const);
  await writeFile(
    join(dir, 'fleet-nginx-requests.svg'),
    chart({
      title: `nginx: requests per second, ${nginx.nodes} nodes polling every 60 s (publish at 0)`,
      x: 'seconds since the publish (the minute before is shifted right by 60)',
      y: 'requests per second',
      series: [
        { label: 'the minute before the publish', color: '#7f8c8d', points: before.map(([t, n]) => [t + 60, n] as const), step: true },
        { label: 'from the publish to 99 % of the fleet', color: '#c0392b', points: after, step: true },
        {
          label: `steady mean ${steadyMean.toFixed(0)}/s`,
          color: '#27ae60',
          points: [
            [0, steadyMean],
            [Math.max(after.length, 60), steadyMean],
          ],
        },
      ],
    }),
  );
}

interface AgentsRun {
  agents: number;
  origin: string;
  spread_ms: number;
  samples: { applied: number[] };
}
const cdf = (xs: number[]) => [...xs].sort((a, b) => a - b).map((x, i, a) => [Math.max(x, 10), (100 * (i + 1)) / a.length] as const);
const runs: { file: string; label: string; color: string }[] = [
  { file: 'agents-100-dev-spread250-shm.json', label: 'before: 100 Agents, long-poll, spread 250 ms', color: '#95a5a6' },
  { file: 'agents-100-dev-spread100-b.json', label: '100 Agents, long-poll, spread 100 ms (quiet start)', color: '#2471a3' },
  { file: 'agents-100-dev-spread100.json', label: '100 Agents, long-poll, spread 100 ms (load 16+)', color: '#5dade2' },
  { file: 'agents-100-dev-spread0.json', label: '100 Agents, long-poll, no spread', color: '#17a589' },
  { file: 'agents-100-nginx-poll5-b.json', label: '100 Agents, nginx, polling every 5 s (quiet start)', color: '#c0392b' },
];
const series: Series[] = [];
for (const r of runs) {
  const run = await load<AgentsRun>(r.file);
  if (run) series.push({ label: r.label, color: r.color, points: cdf(run.samples.applied) });
}
if (series.length > 0) {
  await writeFile(
    join(dir, 'agents-applied-cdf.svg'),
    chart({
      title: 'Publish → applied, real Agent processes on loopback (CDF)',
      x: 'milliseconds (log scale)',
      y: '% of applies',
      yMax: 100,
      logX: true,
      xMax: 100000,
      series,
    }),
  );
}
console.log('written to', dir);
