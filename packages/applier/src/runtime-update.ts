import type { ContainerSpec, UpdateTarget } from '@resultity/snapshot';

/**
 * The containers a snapshot asks for once its `updates.runtime` is applied: every container
 * whose `image` is the update's image runs the update's digest (and its version as the tag);
 * containers of other images are left as they are, and an update naming no container's image
 * changes nothing. So the network can move the runtime by publishing one trigger, the container
 * entries keep saying how it runs (env, command, mounts), and the previous snapshot restored
 * by a rollback brings back the previous digest with everything else.
 */
export function withRuntimeUpdate(containers: readonly ContainerSpec[], update: UpdateTarget | undefined): ContainerSpec[] {
  if (update === undefined) return [...containers];
  return containers.map((c) => (c.image === update.image ? { ...c, tag: update.version, digest: update.digest } : c));
}
