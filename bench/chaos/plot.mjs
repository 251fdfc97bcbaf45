#!/usr/bin/env node
// Draws a soak run (results/soak.json) as an SVG: the daemon's RSS (MiB) and open file
// descriptors against the rollout count. No plotting library: a soak figure is two lines.
//
//   node bench/chaos/plot.mjs bench/chaos/results/soak.json docs/soak.svg
import { readFile, writeFile } from 'node:fs/promises';

const [input = 'bench/chaos/results/soak.json', output = 'docs/soak.svg'] = process.argv.slice(2);
const { samples, rollouts, seed } = JSON.parse(await readFile(input, 'utf8'));
const W = 720;
const H = 360;
const M = { left: 60, right: 60, top: 40, bottom: 50 };
const xs = samples.map((s) => s.n);
const rss = samples.map((s) => s.rss / 1048576);
const fds = samples.map((s) => s.fds);
const xMax = Math.max(...xs, 1);
const rssMax = Math.ceil(Math.max(...rss) * 1.2);
const fdMax = Math.ceil(Math.max(...fds) * 1.2);
const x = (n) => M.left + (n / xMax) * (W - M.left - M.right);
const y = (v, max) => H - M.bottom - (v / max) * (H - M.top - M.bottom);
const line = (values, max) => values.map((v, i) => `${i === 0 ? 'M' : 'L'}${x(xs[i]).toFixed(1)},${y(v, max).toFixed(1)}`).join(' ');
const ticks = (max, side) =>
  [0, 0.25, 0.5, 0.75, 1]
    .map((f) => {
      const v = max * f;
      const px = side === 'left' ? M.left - 6 : W - M.right + 6;
      return `<text x="${px}" y="${y(v, max) + 4}" text-anchor="${side === 'left' ? 'end' : 'start'}">${v.toFixed(side === 'left' ? 0 : 0)}</text>`;
    })
    .join('');
const growth = ((rss.at(-1) - rss[0]) / rss[0]) * 100;
const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="${W / 2}" y="20" text-anchor="middle" font-size="13">Agent soak: ${rollouts} rollouts (seed ${seed}); RSS ${rss[0].toFixed(1)} → ${rss.at(-1).toFixed(1)} MiB (${growth >= 0 ? '+' : ''}${growth.toFixed(1)} %)</text>
<line x1="${M.left}" y1="${H - M.bottom}" x2="${W - M.right}" y2="${H - M.bottom}" stroke="#333"/>
<line x1="${M.left}" y1="${M.top}" x2="${M.left}" y2="${H - M.bottom}" stroke="#333"/>
<line x1="${W - M.right}" y1="${M.top}" x2="${W - M.right}" y2="${H - M.bottom}" stroke="#333"/>
${ticks(rssMax, 'left')}${ticks(fdMax, 'right')}
${[0, 0.25, 0.5, 0.75, 1].map((f) => `<text x="${x(xMax * f)}" y="${H - M.bottom + 16}" text-anchor="middle">${Math.round(xMax * f)}</text>`).join('')}
<text x="${W / 2}" y="${H - 12}" text-anchor="middle">rollouts</text>
<text x="16" y="${H / 2}" transform="rotate(-90 16 ${H / 2})" text-anchor="middle" fill="#1f77b4">RSS (MiB)</text>
<text x="${W - 14}" y="${H / 2}" transform="rotate(90 ${W - 14} ${H / 2})" text-anchor="middle" fill="#d62728">open fds</text>
<path d="${line(rss, rssMax)}" fill="none" stroke="#1f77b4" stroke-width="2"/>
<path d="${line(fds, fdMax)}" fill="none" stroke="#d62728" stroke-width="2" stroke-dasharray="5,3"/>
</svg>
`;
await writeFile(output, svg);
console.log(`wrote ${output}: RSS ${rss[0].toFixed(1)} → ${rss.at(-1).toFixed(1)} MiB (${growth.toFixed(1)} %), fds ${fds[0]} → ${fds.at(-1)}`);
