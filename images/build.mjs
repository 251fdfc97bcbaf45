#!/usr/bin/env node
// Builds the images of this repository (the example runtime and the Agent), pushes them and
// prints their registry digests: what a snapshot's `runtime.containers[].digest` and
// `updates.*.digest` name. Offline by default: the base is built from
// this machine's node binary (images/node-local) unless --base names an image to pull.
//
//   node images/build.mjs [--registry 127.0.0.1:5000] [--tag <version>] [--base node:20-slim] [--json] [--only example-runtime|agent]
//
// Needs the workspace built (`pnpm images` does that first) and the docker CLI.
import { execFile } from 'node:child_process';
import { copyFile, cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';

const run = promisify(execFile);
const here = dirname(fileURLToPath(import.meta.url));
const root = dirname(here);

async function docker(...args) {
  const { stdout } = await run('docker', args, { maxBuffer: 64 * 1024 * 1024 });
  return stdout.trim();
}

/** The runtime-bridge example runtime as one ES module with every dependency inside. */
async function bundleExampleRuntime(outDir) {
  const { build } = await import('tsup');
  await build({
    entry: { 'example-runtime': join(root, 'apps/runtime-bridge/src/example-runtime-cli.ts') },
    outDir,
    format: ['esm'],
    outExtension: () => ({ js: '.mjs' }),
    platform: 'node',
    target: 'node20',
    noExternal: [/.*/],
    // ws and pino are CommonJS and require Node's built-ins; an ES bundle needs a real require for that.
    banner: { js: "import { createRequire as __resultityRequire } from 'node:module'; const require = __resultityRequire(import.meta.url);" },
    dts: false,
    sourcemap: false,
    splitting: false,
    clean: false,
    silent: true,
    config: false,
    tsconfig: join(root, 'apps/runtime-bridge/tsconfig.json'),
  });
  return join(outDir, 'example-runtime.mjs');
}

/**
 * An image FROM scratch holding this machine's node at /usr/local/bin/node (where node:20-slim
 * has it) and the shared libraries `ldd` says it loads, at their own paths.
 */
async function buildLocalNodeBase() {
  const node = process.execPath;
  const tag = `resultity-local/node-base:${process.versions.node}`;
  const context = await mkdtemp(join(tmpdir(), 'resultity-node-base-'));
  try {
    const rootfs = join(context, 'rootfs');
    await mkdir(join(rootfs, 'usr/local/bin'), { recursive: true });
    await copyFile(node, join(rootfs, 'usr/local/bin/node'));
    const { stdout } = await run('ldd', [node]);
    for (const line of stdout.split('\n')) {
      // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
      const match = /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line);
      if (!match) continue;
      const lib = match[1];
      await mkdir(join(rootfs, dirname(lib)), { recursive: true });
      await cp(lib, join(rootfs, lib), { dereference: true });
    }
    await copyFile(join(here, 'node-local/Dockerfile'), join(context, 'Dockerfile'));
    await docker('build', '-q', '-t', tag, context);
    return tag;
  } finally {
    await rm(context, { recursive: true, force: true });
  }
}

async function gitRevision() {
  try {
    return (await run('git', ['-C', root, 'rev-parse', 'HEAD'])).stdout.trim();
  } catch {
    return 'unknown';
  }
}

/** `docker build` of `context` on `base` with the OCI labels' build args, then push; returns the registry digest. */
async function buildAndPush({ context, image, ref, version, base }) {
  await docker(
    'build',
    '-q',
    '--build-arg',
    `BASE=${base}`,
    '--build-arg',
    `VERSION=${version}`,
    '--build-arg',
    `REVISION=${await gitRevision()}`,
    '-t',
    ref,
    context,
  );
  await docker('push', '-q', ref);
  const repoDigests = JSON.parse(await docker('image', 'inspect', '--format', '{{json .RepoDigests}}', ref));
  // Several tags of one repository may share the image; any of its repo digests is the same manifest.
  const digest = repoDigests.find((d) => d.startsWith(`${image}@`))?.slice(image.length + 1);
  if (digest === undefined) throw new Error(`pushed ${ref} but found no repo digest among ${repoDigests.join(', ')}`);
  return digest;
}

async function packageVersion(dir) {
  return JSON.parse(await readFile(join(root, dir, 'package.json'), 'utf8')).version;
}

/**
 * Builds, tags, pushes the example runtime; returns the image, its tag and its registry digest.
 * `version` (default: the runtime-bridge package version) is the OCI version label, so two
 * builds with two versions are two images with two digests.
 */
export async function buildExampleRuntimeImage({ registry = '127.0.0.1:5000', tag, base, version } = {}) {
  version ??= await packageVersion('apps/runtime-bridge');
  const image = `${registry}/resultity/example-runtime`;
  const ref = `${image}:${tag ?? version}`;
  const context = await mkdtemp(join(tmpdir(), 'resultity-example-runtime-'));
  try {
    await bundleExampleRuntime(context);
    await copyFile(join(here, 'example-runtime/Dockerfile'), join(context, 'Dockerfile'));
    const baseImage = base ?? (await buildLocalNodeBase());
    const digest = await buildAndPush({ context, image, ref, version, base: baseImage });
    return { image, tag: tag ?? version, version, digest, base: baseImage };
  } finally {
    await rm(context, { recursive: true, force: true });
  }
}

/**
 * The released Agent as users install it: the publishable packages packed
 * (scripts/release-pack.mjs) and the Agent installed from those tarballs with npm into
 * `dir/app`, third-party dependencies from the npm registry (its cache first). No install
 * scripts run: the optional native bindings under dockerode fall back to JavaScript.
 */
async function installPackedAgent(dir) {
  const { releasePack } = await import('../scripts/release-pack.mjs');
  const packed = await releasePack({ out: join(dir, 'packed') });
  const app = join(dir, 'app');
  await mkdir(app, { recursive: true });
  await writeFile(join(app, 'package.json'), '{ "private": true }\n');
  const files = packed.filter((p) => p.name !== '@resultity/runtime-bridge').map((p) => p.file);
  await run('npm', ['install', '--no-audit', '--no-fund', '--ignore-scripts', '--prefer-offline', '--omit=dev', ...files], {
    cwd: app,
    maxBuffer: 64 * 1024 * 1024,
  });
  await rm(join(dir, 'packed'), { recursive: true, force: true });
}

/** Builds, tags, pushes the Agent image (version: the Agent package's unless given, as for the runtime). */
export async function buildAgentImage({ registry = '127.0.0.1:5000', tag, base, version } = {}) {
  version ??= await packageVersion('apps/agent');
  const image = `${registry}/resultity/agent`;
  const ref = `${image}:${tag ?? version}`;
  const context = await mkdtemp(join(tmpdir(), 'resultity-agent-image-'));
  try {
    await installPackedAgent(context);
    await copyFile(join(here, 'agent/Dockerfile'), join(context, 'Dockerfile'));
    const baseImage = base ?? (await buildLocalNodeBase());
    const digest = await buildAndPush({ context, image, ref, version, base: baseImage });
    return { image, tag: tag ?? version, version, digest, base: baseImage };
  } finally {
    await rm(context, { recursive: true, force: true });
  }
}

async function main() {
  const { values } = parseArgs({
    options: {
      registry: { type: 'string', default: process.env.RESULTITY_IMAGE_REGISTRY ?? '127.0.0.1:5000' },
      tag: { type: 'string' },
      base: { type: 'string' },
      json: { type: 'boolean', default: false },
      // One image only: the dev network needs the runtime, not the Agent.
      only: { type: 'string' },
    },
  });
  const builds = { 'example-runtime': buildExampleRuntimeImage, agent: buildAgentImage };
  if (values.only !== undefined && !(values.only in builds)) throw new Error(`--only takes ${Object.keys(builds).join(' or ')}, not ${values.only}`);
  // One base for both images, built once (or named with --base).
  const base = values.base ?? (await buildLocalNodeBase());
  const options = { registry: values.registry, tag: values.tag, base };
  for (const build of values.only === undefined ? Object.values(builds) : [builds[values.only]]) {
    const built = await build(options);
    if (values.json) process.stdout.write(`${JSON.stringify(built)}\n`);
    else process.stdout.write(`${built.image}:${built.tag}\n${built.image}@${built.digest}\n`);
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((error) => {
    process.stderr.write(`images/build.mjs: ${error.stderr?.trim() || error.message}\n`);
    process.exitCode = 1;
  });
}
