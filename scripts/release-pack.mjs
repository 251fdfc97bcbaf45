#!/usr/bin/env node
// Packs every publishable workspace package into one folder, as `npm publish` would upload it:
// `pnpm pack` turns `workspace:^` ranges into the versions `pnpm version-packages` wrote.
// Refuses to pack when a published manifest would depend on a private package (testkit, devnet,
// node-kit, tooling): users could not install it, and those are never meant to reach them.
//
//   node scripts/release-pack.mjs [--out release] [--json]
//
// `pnpm release:pack` builds the workspace first; this script only packs what is built.
import { execFile } from 'node:child_process';
import { mkdir, readFile, readdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';

const run = promisify(execFile);
const root = dirname(dirname(fileURLToPath(import.meta.url)));
const WORKSPACE_DIRS = ['packages', 'apps'];
const RUNTIME_FIELDS = ['dependencies', 'peerDependencies', 'optionalDependencies'];

/** Every workspace package under packages/ and apps/, with its folder and manifest. */
async function workspacePackages() {
  const found = [];
  for (const group of WORKSPACE_DIRS) {
    for (const entry of await readdir(join(root, group), { withFileTypes: true })) {
      if (!entry.isDirectory()) continue;
      const dir = join(root, group, entry.name);
      try {
        found.push({ dir, manifest: JSON.parse(await readFile(join(dir, 'package.json'), 'utf8')) });
      } catch {
        // A folder without a manifest is not a package.
      }
    }
  }
  return found;
}

/** Packs the publishable packages into `out`; returns `{ name, version, file }` for each. */
export async function releasePack({ out = join(root, 'release') } = {}) {
  const all = await workspacePackages();
  const privateNames = new Set(all.filter((p) => p.manifest.private).map((p) => p.manifest.name));
  const publishable = all.filter((p) => !p.manifest.private);
  for (const { manifest } of publishable) {
    for (const field of RUNTIME_FIELDS) {
      for (const dep of Object.keys(manifest[field] ?? {})) {
        if (privateNames.has(dep)) throw new Error(`${manifest.name} lists the private package ${dep} in ${field}; it would not install for users`);
      }
    }
  }
  await mkdir(out, { recursive: true });
  const packed = [];
  for (const { dir, manifest } of publishable) {
    const { stdout } = await run('pnpm', ['pack', '--json', '--pack-destination', resolve(out)], { cwd: dir, maxBuffer: 16 * 1024 * 1024 });
    const { filename } = JSON.parse(stdout);
    packed.push({ name: manifest.name, version: manifest.version, file: resolve(out, filename) });
  }
  return packed;
}

async function main() {
  const { values } = parseArgs({ options: { out: { type: 'string', default: join(root, 'release') }, json: { type: 'boolean', default: false } } });
  const packed = await releasePack({ out: values.out });
  if (values.json) process.stdout.write(`${JSON.stringify(packed)}\n`);
  else for (const p of packed) process.stdout.write(`${p.name}@${p.version}\t${p.file}\n`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((error) => {
    process.stderr.write(`release-pack: ${error.stderr?.trim() || error.message}\n`);
    process.exitCode = 1;
  });
}
