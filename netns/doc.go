// Package netns connects a rootless container's network namespace to the
// world through slirp4netns (the Debian package), podman-style.
//
// The sandbox parent calls Hook.Setup (or Start) once the child's user and
// network namespaces exist and before the child is released:
//
//	parent (user)                     slirp4netns                   child (new userns+netns)
//	clone child ─────────────────────────────────────────────────▶ waits on the handshake
//	Start(ctx, pid, opts)
//	  pre-checks: binary, /dev/net/tun, host ports free
//	  exec slirp4netns --configure --mtu --ready-fd=3 --exit-fd=4
//	       --userns-path=/proc/PID/ns/user --netns-type=pid PID tap0
//	                                  joins the child's userns+netns,
//	                                  creates tap0 (10.0.2.100/24, lo up),
//	                                  sandbox + seccomp, writes "1" on fd 3
//	  reads fd 3: tap is up
//	  add_hostfwd for each -p via the API socket
//	release child ───────────────────────────────────────────────▶ SetupLoopback, exec CMD
//	wait for child; teardown (Close) kills slirp4netns, removes the socket
//
// slirp4netns ends with the container on every path: Close stops it (the
// teardown of Hook.Setup); if dabba itself dies, the write end of the exit
// pipe (fd 4) closes and slirp4netns exits, and Pdeathsig (SIGKILL) is set on
// it from a thread that lives as long as it does.
//
// Inside, the gateway 10.0.2.2 is the host (its 127.0.0.1 only with
// allow_host_loopback), 10.0.2.3 forwards DNS to the nameservers in the
// host's /etc/resolv.conf (as slirp4netns sees it), and the container is
// 10.0.2.100. ResolvConf and Hosts give the files the sandbox writes.
// SetupLoopback brings lo up from inside the namespace, in every mode.
//
// Port forwards (-p) go through slirp4netns's API socket (add_hostfwd), in
// a private runtime directory (RuntimeDir). A taken host port fails Start,
// before the container's command runs. libslirp sends the replies of a
// forwarded UDP port towards 10.0.2.2, which --disable-host-loopback drops:
// UDP clients on the host's own loopback are answered only with
// allow_host_loopback=true (so a UDP forward bound to 127.0.0.0/8 without it
// is refused); clients on other addresses always are.
package netns
