#!/usr/bin/env bash
# Debian's chromium for the console's browser tests (Playwright drives /usr/bin/chromium; nothing is
# downloaded at test time). A no-op where it is installed; else apt-get, as root or through sudo.
set -euo pipefail
command -v chromium >/dev/null && exit 0
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
$sudo apt-get update -qq
$sudo apt-get install -y -qq chromium >/dev/null
