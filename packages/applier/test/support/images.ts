import { execFile } from 'node:child_process';
import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** The registry the tests push to (the CI starts one on 127.0.0.1:5000). */
export const TEST_REGISTRY = process.env.RESULTITY_TEST_REGISTRY ?? '127.0.0.1:5000';

/** An image pushed to the test registry: what a snapshot's container names. */
export interface TestImage {
  image: string;
  tag: string;
  digest: string;
}

/** How to build a busybox-only test image. */
export interface TestImageSpec {
  repo: string;
  tag: string;
  cmd: string[];
  /** A HEALTHCHECK command (exec form); checked every second. */
  healthcheck?: string[];
  /** Makes images with the same command differ, so they get different digests. */
  variant?: string;
}

export async function docker(...args: string[]): Promise<string> {
  const { stdout } = await run('docker', args, { maxBuffer: 16 * 1024 * 1024 });
  return stdout.trim();
}

/**
 * Builds an image FROM scratch holding only Debian's static busybox, pushes it to the test
 * registry and removes the local copy, so the applier has to pull it for real.
 */
export async function buildTestImage(spec: TestImageSpec): Promise<TestImage> {
  const context = await mkdtemp(join(tmpdir(), 'resultity-image-'));
  try {
    await copyFile(process.env.RESULTITY_BUSYBOX ?? '/bin/busybox', join(context, 'busybox'));
    const lines = [
      'FROM scratch',
      'COPY busybox /bin/busybox',
      `LABEL io.resultity.test-variant=${JSON.stringify(spec.variant ?? spec.tag)}`,
      `CMD ${JSON.stringify(spec.cmd)}`,
    ];
    if (spec.healthcheck) {
      lines.push(`HEALTHCHECK --interval=1s --timeout=1s --retries=1 CMD ${JSON.stringify(spec.healthcheck)}`);
    }
    await writeFile(join(context, 'Dockerfile'), `${lines.join('\n')}\n`);
    const image = `${TEST_REGISTRY}/${spec.repo}`;
    const ref = `${image}:${spec.tag}`;
    await docker('build', '-q', '-t', ref, context);
    await docker('push', '-q', ref);
    const repoDigests = JSON.parse(await docker('image', 'inspect', '--format', '{{json .RepoDigests}}', ref)) as string[];
    const digest = repoDigests.find((d) => d.startsWith(`${image}@`))?.slice(image.length + 1);
    if (digest === undefined) throw new Error(`pushed ${ref} but found no repo digest among ${repoDigests.join(', ')}`);
    await removeLocalImage(image, spec.tag, digest);
    return { image, tag: spec.tag, digest };
  } finally {
    await rm(context, { recursive: true, force: true });
  }
}

/** Drops the engine's copy of an image (ignored when a container still uses it). */
export async function removeLocalImage(image: string, tag: string, digest: string): Promise<void> {
  await docker('image', 'rm', `${image}:${tag}`).catch(() => undefined);
  await docker('image', 'rm', `${image}@${digest}`).catch(() => undefined);
}

/** Removes every container carrying a label key (the per-run label of a test file). */
export async function removeContainersLabelled(labelKey: string): Promise<void> {
  const ids = (await docker('ps', '-aq', '--filter', `label=${labelKey}`)).split('\n').filter(Boolean);
  if (ids.length > 0) await docker('rm', '-f', ...ids);
}
