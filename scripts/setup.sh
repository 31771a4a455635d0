#!/bin/bash
# Sets up kobako on a Debian 12 machine, as root: the Debian packages it and its
# tests use, a virtualenv at /opt/kobako with the package, console scripts on PATH.
# With no argument it then starts kobakod and runs a container end to end.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(
    gcc libc6-dev python3-venv python3-dev
    busybox-static libseccomp2 iproute2 procps iptables nftables
    docker-registry skopeo umoci containerd runc crun podman debootstrap apache2-utils
    openssl tini docker-compose
)
# The e2e tests drive the docker CLI; Debian's docker.io brings one (its dockerd is
# only started by the benchmarks) where none is installed yet.
command -v docker >/dev/null || DEBIAN_PACKAGES+=(docker.io)
export DEBIAN_FRONTEND=noninteractive
missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
[ -x /opt/kobako/bin/python ] || "$PYTHON" -m venv /opt/kobako
/opt/kobako/bin/pip install -q --disable-pip-version-check '.[test]'
for script in kobako kobakod kobako-runtime; do
    ln -sf "/opt/kobako/bin/$script" "/usr/local/bin/$script"
done

if [ "${1:-}" != "--no-demo" ]; then
    ./scripts/demo.sh
fi
