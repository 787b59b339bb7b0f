#!/usr/bin/env bash
# Installs the real servers the observability tests run (Debian packages): Prometheus with promtool,
# Alertmanager (with amtool), and docker-compose (v1, used only as an offline validator:
# `docker-compose config` needs no Docker daemon). Idempotent: does nothing when the binaries are
# already on PATH. Installs as root where apt-get exists; otherwise it says what is missing and
# succeeds, and the tests that need them are skipped (they fail instead under
# MODWATCH_REQUIRE_SERVICES=1).
#
# The tests start their own Prometheus and Alertmanager on free loopback ports, so the services the
# packages install are never started here; if a package's postinst started one anyway, it is stopped
# and disabled.
set -euo pipefail

needed=(prometheus promtool prometheus-alertmanager amtool docker-compose)
missing=()
for bin in "${needed[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
done
if [ "${#missing[@]}" = 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  why="not root"
  command -v apt-get >/dev/null 2>&1 || why="no apt-get"
  echo "setup-services: missing ${missing[*]} ($why): the tests that need them will be skipped." >&2
  echo "setup-services: to install them (Debian/Ubuntu): sudo ./scripts/setup-services.sh" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive

# Keep the packages' postinst from starting daemons: policy-rc.d answering 101 ("action forbidden")
# is how Debian lets an installer say so. An existing policy is left as it is.
policy=/usr/sbin/policy-rc.d
placed_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | tee "$policy" >/dev/null
  chmod 755 "$policy"
  placed_policy=1
fi
cleanup() {
  if [ "$placed_policy" = 1 ]; then
    rm -f "$policy"
  fi
}
trap cleanup EXIT

# Another apt run (a colleague's, unattended upgrades) holds the lock for a while: wait for it.
lock=(-o DPkg::Lock::Timeout=600)
apt-get "${lock[@]}" update -qq
apt-get "${lock[@]}" install -y -qq --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
  prometheus prometheus-alertmanager docker-compose >/dev/null

# Belt and braces: a service that started despite the policy is stopped and disabled.
for service in prometheus prometheus-alertmanager prometheus-node-exporter; do
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now "$service" >/dev/null 2>&1 || true
  elif [ -x "/etc/init.d/$service" ]; then
    "/etc/init.d/$service" stop >/dev/null 2>&1 || true
    update-rc.d "$service" disable >/dev/null 2>&1 || true
  fi
done

for bin in "${needed[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || { echo "setup-services: $bin is still missing after install" >&2; exit 1; }
done
echo "setup-services: $(prometheus --version 2>&1 | head -1); $(prometheus-alertmanager --version 2>&1 | head -1)"
