#!/usr/bin/env bash
# Debian packages the test suite uses as real parts: ogrinfo (gdal-bin) opens every query export,
# headless Chromium + chromedriver drive the review page, PostgreSQL + PostGIS back the STAC API
# test server (pgstac), iproute2 + util-linux (ip netns, unshare) give the separate-hosts fixture
# its namespaces, Node's npm fetches the review page's OpenLayers (`make install`).
# Installed only where one is missing; a machine without apt-get says so.
set -euo pipefail
packages=(gdal-bin chromium chromium-driver postgresql-15 postgresql-15-postgis-3 iproute2 util-linux)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
command -v npm >/dev/null || missing+=(nodejs npm)  # any Node will do: this one may not be Debian's
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "warning: no apt-get; the tests that need ${missing[*]} will skip or fail" >&2
  exit 0
fi
echo "installing Debian packages: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
