#!/usr/bin/env bash
# make demo: an offline tour of dabba. It serves an image made from Debian's
# static busybox from a registry on 127.0.0.1, pulls it and runs commands in
# rootless containers. Run as root, it runs dabba as the unprivileged user
# `make deps` created, since that is what dabba is for.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/bin

work=$(mktemp -d /tmp/dabba-demo.XXXXXX)
chmod 0755 "$work"
reg_pid=
cleanup() {
	[ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null && wait "$reg_pid" 2>/dev/null
	rm -rf "$work" 2>/dev/null || true
}
trap cleanup EXIT

as_user=()
if [ "$(id -u)" = 0 ]; then
	user=${DABBA_TEST_USER:-dabbatest}
	if ! id "$user" >/dev/null 2>&1; then
		echo "demo: run 'make deps' first (as root) to create the unprivileged user $user" >&2
		exit 1
	fi
	chown "$user:" "$work"
	as_user=(setpriv --reuid="$user" --regid="$user" --init-groups env -i HOME="$work" USER="$user"
		PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin TERM="${TERM:-xterm}")
	echo "== running as the unprivileged user $user (you are root; dabba is rootless)"
fi

go build -o "$work/demoregistry" ./internal/cmd/demoregistry
# The registry serves until cleanup stops it, by PID.
"$work/demoregistry" </dev/null >"$work/registry.out" 2>"$work/registry.err" &
reg_pid=$!
for _ in $(seq 100); do
	grep -q READY "$work/registry.out" 2>/dev/null && break
	sleep 0.1
done
host=$(awk '/READY/ {print $2}' "$work/registry.out")
[ -n "$host" ] || { cat "$work/registry.err" >&2; exit 1; }
image=$host/demo/busybox:latest
dabba=("${as_user[@]}" "$bin/dabba" --root "$work/store")

say() { printf '\n$ %s\n' "$*"; }
say dabba pull "$image"
"${dabba[@]}" pull "$image"
say dabba images
"${dabba[@]}" images
for cmd in "id" "hostname" "ls /" "tr '\\0' ' ' </proc/1/cmdline; echo" "ps"; do
	say dabba run --network none --hostname demo "$image" sh -c "'$cmd'"
	"${dabba[@]}" run --network none --hostname demo "$image" sh -c "$cmd"
done
# The default network is slirp4netns; allow_host_loopback lets the container
# reach this machine's 127.0.0.1 as 10.0.2.2, here the demo's registry.
port=${host##*:}
say dabba run --network slirp4netns:allow_host_loopback=true "$image" wget -qO- "http://10.0.2.2:$port/v2/_catalog"
"${dabba[@]}" run --network slirp4netns:allow_host_loopback=true "$image" wget -qO- "http://10.0.2.2:$port/v2/_catalog"
echo
say dabba --log-level debug run --network none "$image" true "2>&1 | grep rootfs"
"${dabba[@]}" --log-level debug run --network none "$image" true 2>&1 | grep 'msg=rootfs' || true
say "time dabba run --network none $image /bin/true"
time "${dabba[@]}" run --network none "$image" /bin/true
echo
echo "Done. With internet: dabba run -it alpine"
