package netns

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Addresses of slirp4netns's default network (10.0.2.0/24) with --configure.
const (
	// GuestIP is the container's address on tap0.
	GuestIP = "10.0.2.100"
	// GatewayIP is the host as seen from the container; it reaches the
	// host's 127.0.0.1 only with AllowHostLoopback.
	GatewayIP = "10.0.2.2"
	// DNSIP forwards DNS to the nameservers of the host's /etc/resolv.conf.
	DNSIP = "10.0.2.3"
	// DNSIPv6 is the DNS forwarder with EnableIPv6.
	DNSIPv6 = "fd00::3"
	// TapName is the device slirp4netns creates in the container.
	TapName = "tap0"
)

// DefaultMTU is the MTU of tap0 unless told otherwise: 65520, podman's
// default, far faster than Ethernet's 1500 because slirp4netns's cost is
// per packet. slirp4netns accepts up to 65521.
const (
	DefaultMTU = 65520
	maxMTU     = 65521
	minMTU     = 68 // the smallest IPv4 MTU (RFC 791)
)

// Mode is a container's network mode, with podman's names.
type Mode string

// The network modes.
const (
	// ModeSlirp4netns gives the container its own network namespace
	// connected through slirp4netns (the default).
	ModeSlirp4netns Mode = "slirp4netns"
	// ModeNone gives the container its own namespace with only lo.
	ModeNone Mode = "none"
	// ModeHost shares the caller's network namespace.
	ModeHost Mode = "host"
)

// Network is a parsed --network value.
type Network struct {
	Mode Mode
	// Options applies to ModeSlirp4netns only.
	Options Options
}

// Options configures slirp4netns for one container.
type Options struct {
	// MTU of tap0; 0 means DefaultMTU.
	MTU int
	// AllowHostLoopback lets the container reach the host's 127.0.0.1 as
	// 10.0.2.2 (slirp4netns's --disable-host-loopback is given otherwise).
	AllowHostLoopback bool
	// EnableIPv6 turns on slirp4netns's experimental IPv6 (fd00::/64).
	EnableIPv6 bool
	// PortForwards are added through the API socket before Start returns.
	PortForwards []PortForward
	// Binary is the slirp4netns program; "" looks it up in PATH.
	Binary string
	// RuntimeDir holds the API socket; "" means RuntimeDir().
	RuntimeDir string
}

func (o Options) mtu() int {
	if o.MTU == 0 {
		return DefaultMTU
	}
	return o.MTU
}

func (o Options) validate() error {
	if m := o.mtu(); m < minMTU || m > maxMTU {
		return fmt.Errorf("slirp4netns mtu %d out of range: use %d to %d", m, minMTU, maxMTU)
	}
	for _, pf := range o.PortForwards {
		if err := checkPortForward(pf); err != nil {
			return err
		}
		// libslirp sends a forwarded UDP port's replies to 10.0.2.2, which
		// --disable-host-loopback forbids (podman issue 4586): a UDP forward
		// that only loopback clients can reach would never answer.
		if ip, err := netip.ParseAddr(pf.HostIP); err == nil && ip.IsLoopback() && pf.Proto == "udp" && !o.AllowHostLoopback {
			return fmt.Errorf("publishing %s: slirp4netns drops the replies to UDP clients on the host's loopback unless --network slirp4netns:allow_host_loopback=true: add that option, or publish on another host address", pf)
		}
	}
	return nil
}

// ParseNetworkOption parses a --network value the way podman spells it:
// "" or "slirp4netns" (the default), "slirp4netns:OPT=VALUE,..." with the
// options allow_host_loopback=true|false, mtu=N, enable_ipv6=true|false and
// port_handler=slirp4netns, "none", or "host".
func ParseNetworkOption(s string) (Network, error) {
	name, opts, hasOpts := strings.Cut(s, ":")
	switch Mode(name) {
	case "", ModeSlirp4netns:
	case ModeNone, ModeHost:
		if hasOpts {
			return Network{}, fmt.Errorf("network %q: mode %s takes no options", s, name)
		}
		return Network{Mode: Mode(name)}, nil
	default:
		return Network{}, fmt.Errorf("network mode %q is not supported: use slirp4netns, none or host", name)
	}
	n := Network{Mode: ModeSlirp4netns}
	if !hasOpts {
		return n, nil
	}
	for _, kv := range strings.Split(opts, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return Network{}, fmt.Errorf("network %q: option %q is not KEY=VALUE", s, kv)
		}
		var err error
		switch k {
		case "allow_host_loopback":
			n.Options.AllowHostLoopback, err = strconv.ParseBool(v)
		case "enable_ipv6":
			n.Options.EnableIPv6, err = strconv.ParseBool(v)
		case "mtu":
			n.Options.MTU, err = strconv.Atoi(v)
			if err == nil {
				err = n.Options.validate()
			}
		case "port_handler":
			if v != "slirp4netns" {
				err = fmt.Errorf("only port_handler=slirp4netns is supported")
			}
		default:
			return Network{}, fmt.Errorf("network %q: unknown slirp4netns option %q (known: allow_host_loopback, mtu, enable_ipv6, port_handler)", s, k)
		}
		if err != nil {
			return Network{}, fmt.Errorf("network %q: option %s: %w", s, k, err)
		}
	}
	return n, nil
}

// Publish parses -p values (see ParsePortForward) into n.Options; it fails
// when the mode has no network of its own to publish from.
func (n *Network) Publish(specs []string) error {
	if len(specs) == 0 {
		return nil
	}
	if n.Mode != ModeSlirp4netns {
		return fmt.Errorf("-p %s: publishing ports needs --network slirp4netns, not %s", specs[0], n.Mode)
	}
	for _, spec := range specs {
		pf, err := ParsePortForward(spec)
		if err != nil {
			return err
		}
		n.Options.PortForwards = append(n.Options.PortForwards, pf)
	}
	return n.Options.validate()
}

// PortForward publishes a container port on the host (podman's -p).
//
// A UDP forward answers clients on the host's loopback only with
// AllowHostLoopback (Start refuses one bound to 127.0.0.0/8 without it);
// clients on other addresses are answered either way. TCP has no such limit.
type PortForward struct {
	// Proto is "tcp" or "udp".
	Proto string
	// HostIP is the host address to listen on; "" means every address
	// (0.0.0.0).
	HostIP string
	// HostPort and ContainerPort are 1 to 65535.
	HostPort      uint16
	ContainerPort uint16
}

// String is the -p spelling of p.
func (p PortForward) String() string {
	s := fmt.Sprintf("%d:%d/%s", p.HostPort, p.ContainerPort, p.Proto)
	if p.HostIP != "" {
		s = p.HostIP + ":" + s
	}
	return s
}

func (p PortForward) hostAddr() string {
	if p.HostIP == "" {
		return "0.0.0.0"
	}
	return p.HostIP
}

// ParsePortForward parses "[HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|/udp]".
// HOSTIP is an IPv4 address (slirp4netns's API forwards IPv4 only); the
// protocol defaults to tcp. Ranges and a missing host port are refused.
func ParsePortForward(spec string) (PortForward, error) {
	pf := PortForward{Proto: "tcp"}
	rest := spec
	if i := strings.LastIndexByte(rest, '/'); i >= 0 {
		pf.Proto = strings.ToLower(rest[i+1:])
		rest = rest[:i]
		if pf.Proto != "tcp" && pf.Proto != "udp" {
			return PortForward{}, fmt.Errorf("port forward %q: protocol %q is not supported: use tcp or udp", spec, pf.Proto)
		}
	}
	var hostPort, ctrPort string
	parts := strings.Split(rest, ":")
	switch len(parts) {
	case 1:
		return PortForward{}, fmt.Errorf("port forward %q: give the host port too, as HOSTPORT:CONTAINERPORT", spec)
	case 2:
		hostPort, ctrPort = parts[0], parts[1]
	case 3:
		pf.HostIP, hostPort, ctrPort = parts[0], parts[1], parts[2]
		if pf.HostIP == "" {
			return PortForward{}, fmt.Errorf("port forward %q: give the host port too, as HOSTIP:HOSTPORT:CONTAINERPORT", spec)
		}
		ip, err := netip.ParseAddr(pf.HostIP)
		if err != nil || !ip.Is4() {
			return PortForward{}, fmt.Errorf("port forward %q: host address %q is not an IPv4 address", spec, pf.HostIP)
		}
		pf.HostIP = ip.String()
	default:
		return PortForward{}, fmt.Errorf("port forward %q: want [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|/udp] (IPv6 host addresses are not supported)", spec)
	}
	var err error
	if pf.HostPort, err = parsePort(hostPort); err != nil {
		return PortForward{}, fmt.Errorf("port forward %q: host port: %w", spec, err)
	}
	if pf.ContainerPort, err = parsePort(ctrPort); err != nil {
		return PortForward{}, fmt.Errorf("port forward %q: container port: %w", spec, err)
	}
	return pf, nil
}

func parsePort(s string) (uint16, error) {
	if strings.Contains(s, "-") {
		return 0, fmt.Errorf("port ranges like %q are not supported: repeat -p for each port", s)
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a port number from 1 to 65535", s)
	}
	return uint16(n), nil
}
