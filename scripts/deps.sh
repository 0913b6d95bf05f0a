#!/bin/sh
# Installs the Debian packages lorac needs to build and test. Idempotent: when every
# package is present it only checks and returns (well under a second). Used by every
# Makefile target that needs them; run it as root on a fresh Debian 12 machine.
set -eu

PKGS="make gcc pkg-config libcjson-dev libyaml-dev libpcre2-dev libutf8proc-dev libopenblas-dev
      libcurl4-openssl-dev clang libclang-rt-14-dev python3 binutils-riscv64-linux-gnu curl nodejs"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
# the serve tests' openai client: npm comes with Debian's "npm" package, or inside other
# builds of nodejs (e.g. NodeSource's, which conflict with Debian's npm): ask only when absent
command -v npm >/dev/null 2>&1 || missing="$missing npm"
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "error: missing Debian packages:$missing; run 'sudo scripts/deps.sh' once" >&2
    exit 2
fi
echo "deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
