package netns

import (
	"fmt"
	"strings"
)

// ResolvConf is the container's /etc/resolv.conf with slirp4netns: its DNS
// forwarder 10.0.2.3 (and fd00::3 with IPv6), which relays queries to the
// nameservers of the host's /etc/resolv.conf.
func ResolvConf(opts Options) string {
	s := "nameserver " + DNSIP + "\n"
	if opts.EnableIPv6 {
		s += "nameserver " + DNSIPv6 + "\n"
	}
	return s
}

// Hosts is the container's /etc/hosts: localhost on both loopback addresses
// and hostname on ip (GuestIP with slirp4netns; "" means 127.0.1.1, the
// Debian convention for a host without a network address).
func Hosts(hostname, ip string) string {
	if ip == "" {
		ip = "127.0.1.1"
	}
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost localhost.localdomain\n")
	b.WriteString("::1\tlocalhost ip6-localhost ip6-loopback\n")
	if hostname != "" && hostname != "localhost" {
		fmt.Fprintf(&b, "%s\t%s\n", ip, hostname)
	}
	return b.String()
}
