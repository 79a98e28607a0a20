#!/usr/bin/env bash
# Installs and configures, as root and idempotently, the peers the benchmarks
# measure dabba against: rootless podman (runc, cgroupfs, file events, overlay
# storage), skopeo and runc. It configures them for the unprivileged test user
# that `make deps` creates, with plain HTTP allowed for registries on 127.0.0.1.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
	echo "make bench-deps: run as root" >&2
	exit 1
fi
"$(dirname "$0")/deps.sh"
TEST_USER=${DABBA_TEST_USER:-dabbatest}
pkgs=(podman skopeo runc uidmap fuse-overlayfs debootstrap time)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq "${missing[@]}" >/dev/null
fi
home=$(getent passwd "$TEST_USER" | cut -d: -f6)
conf="$home/.config/containers"
install -d -o "$TEST_USER" -g "$TEST_USER" "$home/.config" "$conf"
# crun 1.8.1 refuses hybrid cgroup machines; runc works. No systemd: cgroupfs
# and file events. The store is chosen per run with --root/--runroot.
cat >"$conf/containers.conf" <<'CONF'
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
cat >"$conf/registries.conf" <<'CONF'
unqualified-search-registries = []
[[registry]]
location = "127.0.0.1"
insecure = true
CONF
cat >"$conf/storage.conf" <<'CONF'
[storage]
driver = "overlay"
CONF
chown -R "$TEST_USER:" "$conf"
echo "bench-deps: ok (podman $(podman --version | awk '{print $3}') for $TEST_USER)"
