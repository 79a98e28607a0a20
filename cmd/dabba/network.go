package main

import (
	"context"

	"github.com/dabba/dabba/netns"
)

// newNetwork prepares a --network slirp4netns container: mode is the whole
// --network value (e.g. "slirp4netns:allow_host_loopback=true"), publish the
// -p values. It checks them, slirp4netns and /dev/net/tun before anything
// slow starts, so a missing helper fails the run at once with what to do.
func newNetwork(ctx context.Context, mode string, publish []string, hostname string) (*networkSetup, error) {
	n, err := netns.ParseNetworkOption(mode)
	if err != nil {
		return nil, err
	}
	if err := n.Publish(publish); err != nil {
		return nil, err
	}
	if err := netns.Check(n.Options); err != nil {
		return nil, err
	}
	return &networkSetup{
		hook:       netns.NewHook(n.Options),
		resolvConf: netns.ResolvConf(n.Options),
		hosts:      netns.Hosts(hostname, netns.GuestIP),
	}, nil
}
