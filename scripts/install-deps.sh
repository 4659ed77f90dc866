#!/usr/bin/env bash
# Installs every Debian 12 package hvkit builds, tests and benchmarks with. Idempotent.
set -euo pipefail
pkgs=(
  # build
  cmake ninja-build g++ clang libfuzzer-14-dev libclang-rt-14-dev pkg-config lld
  # libraries
  liburing-dev catch2 libbenchmark-dev libboost-dev liblvm2-dev libdevmapper-dev libfuse3-dev
  # netback's DPDK vifs (optional at build time); their tests also need dpdk-dev's dpdk-testpmd
  libdpdk-dev
  # test oracles and real clients
  libxen-dev xenstore-utils lvm2 util-linux iproute2 iputils-ping procps psmisc
  fio iperf3 libnbd-bin netcat-openbsd fuse3 e2fsprogs kmod
  # lspci/setpci on hv-guest's --pci-sysfs tree (system test)
  pciutils
  # ethtool -k in a guest: its tap's offloads follow what netback offered (netback system test)
  ethtool
  # README command 1's n-tier part: PostgreSQL 15 (pgbench ships in postgresql-15, its
  # wrapper in postgresql-client-common; pg_isready and createdb in postgresql-client-15)
  postgresql postgresql-client-15
  # peers for hvbench
  xen-utils-4.17 openvswitch-switch dpdk dpdk-dev
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
