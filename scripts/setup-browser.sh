#!/usr/bin/env bash
# Headless Chromium for tests/offline/test_report.py (it renders the backtest HTML report and checks the
# screenshot). Idempotent: does nothing when `chromium` is already on PATH. Debian's package: installs
# as root where apt-get exists; otherwise it says what is missing and succeeds, and the tests that
# need Chromium are skipped (they fail instead under MODWATCH_REQUIRE_SERVICES=1).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  why="not root"
  command -v apt-get >/dev/null 2>&1 || why="no apt-get"
  echo "setup-browser: chromium is missing ($why): the report rendering tests will be skipped." >&2
  echo "setup-browser: to install it (Debian/Ubuntu): sudo ./scripts/setup-browser.sh" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# Another apt run (a colleague's, unattended upgrades) holds the lock for a while: wait for it.
lock=(-o DPkg::Lock::Timeout=600)
apt-get "${lock[@]}" update -qq
apt-get "${lock[@]}" install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
command -v chromium >/dev/null
