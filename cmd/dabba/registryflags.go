package main

import (
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/pflag"

	"github.com/dabba/dabba/store"
)

// registryFlags are the flags of the commands that fetch an image from a
// registry: --platform and --tls-verify.
type registryFlags struct {
	platform  string
	tlsVerify bool
}

func (rf *registryFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&rf.platform, "platform", "", "choose os/arch[/variant] from a multi-arch image (default: this host's)")
	fs.BoolVar(&rf.tlsVerify, "tls-verify", true, "require HTTPS with a verified certificate (loopback registries may use HTTP anyway)")
}

// parse returns the platform asked for (nil: the host's) and whether plain
// HTTP and unverified certificates are allowed; a bad --platform is a
// usage error.
func (rf *registryFlags) parse() (platform *v1.Platform, insecure bool, err error) {
	if rf.platform != "" {
		if platform, err = store.ParsePlatform(rf.platform); err != nil {
			return nil, false, &exitError{code: exitUsageStatus, err: err}
		}
	}
	return platform, !rf.tlsVerify, nil
}
