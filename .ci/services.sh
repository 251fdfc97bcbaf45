#!/usr/bin/env bash
# Installs and starts what the integration tests use for real: a Docker Engine (no bridge, so
# containers get no private-range address), a container registry on 127.0.0.1:5000, nginx
# (for serving a published origin tree), and Debian's static busybox for test images.
# Idempotent: what is already installed or running is left alone. Needs root.
set -euo pipefail

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx sh && file -L /bin/busybox 2>/dev/null | grep -q static || need+=(busybox-static)
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v file >/dev/null 2>&1 || need+=(file)
command -v openssl >/dev/null 2>&1 || need+=(openssl)  # the applier tests make a throwaway TLS certificate
if [ ${#need[@]} -gt 0 ]; then
  echo "services: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  echo "services: starting dockerd"
  setsid dockerd --bridge=none --iptables=false --ip-masq=false >/tmp/resultity-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "services: dockerd did not start"; tail -20 /tmp/resultity-dockerd.log; exit 1; }
fi

if ! curl -fsS http://127.0.0.1:5000/v2/ >/dev/null 2>&1; then
  echo "services: starting the registry on 127.0.0.1:5000"
  mkdir -p /tmp/resultity-registry
  cat > /tmp/resultity-registry/config.yml <<'YML'
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: /tmp/resultity-registry/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
YML
  setsid docker-registry serve /tmp/resultity-registry/config.yml >/tmp/resultity-registry.log 2>&1 < /dev/null &
  for _ in $(seq 1 30); do curl -fsS http://127.0.0.1:5000/v2/ >/dev/null 2>&1 && break; sleep 1; done
  curl -fsS http://127.0.0.1:5000/v2/ >/dev/null || { echo "services: registry did not start"; tail -20 /tmp/resultity-registry.log; exit 1; }
fi

export RESULTITY_TEST_REGISTRY=127.0.0.1:5000
export RESULTITY_BUSYBOX=/bin/busybox
echo "services: docker $(docker version --format '{{.Server.Version}}'), registry at $RESULTITY_TEST_REGISTRY"
