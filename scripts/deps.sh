#!/usr/bin/env bash
# Installs, as root and idempotently, what dabba needs at run time and what its
# tests need: Debian packages, usable /dev/fuse and /dev/net/tun, and an
# unprivileged test user with subordinate id ranges.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
	echo "make deps: run as root (it installs packages and creates the test user)" >&2
	exit 1
fi

TEST_USER=${DABBA_TEST_USER:-dabbatest}
SUB_START=${DABBA_TEST_SUBID_START:-200000}
SUB_COUNT=65536

# Runtime: uidmap (newuidmap/newgidmap), slirp4netns, fuse3 (fusermount3).
# Tests: docker-registry, busybox-static, iproute2, util-linux (unshare, setpriv),
# iperf3 and tmux for network and terminal tests.
pkgs=(uidmap slirp4netns fuse3 docker-registry busybox-static iproute2 util-linux
	iperf3 tmux ca-certificates git make)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Debian registry package starts a system service on :5000 where an init
# system runs; the tests start their own instances on 127.0.0.1, so none is needed.

# Distributions ship these 0666; some machines have them 0600.
for dev in /dev/fuse /dev/net/tun; do
	if [ -e "$dev" ]; then
		chmod 0666 "$dev"
	else
		echo "deps: warning: $dev does not exist (load the fuse / tun kernel modules)" >&2
	fi
done

if ! id "$TEST_USER" >/dev/null 2>&1; then
	echo "deps: creating test user $TEST_USER"
	useradd --create-home --shell /bin/bash "$TEST_USER"
fi
for f in /etc/subuid /etc/subgid; do
	touch "$f"
	if ! grep -q "^$TEST_USER:" "$f"; then
		echo "$TEST_USER:$SUB_START:$SUB_COUNT" >>"$f"
	fi
done
echo "deps: ok (test user $TEST_USER, $(grep "^$TEST_USER:" /etc/subuid))"
