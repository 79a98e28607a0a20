package netns

import (
	"errors"
	"strings"
	"testing"
)

func TestParseNetworkOption(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Network
	}{
		{"", Network{Mode: ModeSlirp4netns}},
		{"slirp4netns", Network{Mode: ModeSlirp4netns}},
		{"none", Network{Mode: ModeNone}},
		{"host", Network{Mode: ModeHost}},
		{"slirp4netns:allow_host_loopback=true", Network{Mode: ModeSlirp4netns, Options: Options{AllowHostLoopback: true}}},
		{"slirp4netns:allow_host_loopback=true,mtu=1500", Network{Mode: ModeSlirp4netns, Options: Options{AllowHostLoopback: true, MTU: 1500}}},
		{"slirp4netns:enable_ipv6=true,port_handler=slirp4netns,allow_host_loopback=false", Network{Mode: ModeSlirp4netns, Options: Options{EnableIPv6: true}}},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseNetworkOption(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got.Mode != tc.want.Mode || got.Options.AllowHostLoopback != tc.want.Options.AllowHostLoopback ||
				got.Options.MTU != tc.want.Options.MTU || got.Options.EnableIPv6 != tc.want.Options.EnableIPv6 {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseNetworkOptionErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"bridge", `network mode "bridge" is not supported: use slirp4netns, none or host`},
		{"pasta", "not supported"},
		{"none:mtu=1500", "takes no options"},
		{"slirp4netns:cidr=10.1.0.0/24", `unknown slirp4netns option "cidr"`},
		{"slirp4netns:allow_host_loopback", "is not KEY=VALUE"},
		{"slirp4netns:allow_host_loopback=maybe", "option allow_host_loopback"},
		{"slirp4netns:mtu=70000", "mtu 70000 out of range"},
		{"slirp4netns:mtu=big", "option mtu"},
		{"slirp4netns:port_handler=rootlesskit", "only port_handler=slirp4netns"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			_, err := ParseNetworkOption(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestParsePortForward(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want PortForward
		str  string
	}{
		{"8080:80", PortForward{Proto: "tcp", HostPort: 8080, ContainerPort: 80}, "8080:80/tcp"},
		{"8080:80/udp", PortForward{Proto: "udp", HostPort: 8080, ContainerPort: 80}, "8080:80/udp"},
		{"127.0.0.1:8080:80/TCP", PortForward{Proto: "tcp", HostIP: "127.0.0.1", HostPort: 8080, ContainerPort: 80}, "127.0.0.1:8080:80/tcp"},
		{"0.0.0.0:53:53/udp", PortForward{Proto: "udp", HostIP: "0.0.0.0", HostPort: 53, ContainerPort: 53}, "0.0.0.0:53:53/udp"},
		{"65535:1", PortForward{Proto: "tcp", HostPort: 65535, ContainerPort: 1}, "65535:1/tcp"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParsePortForward(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			if got.String() != tc.str {
				t.Fatalf("String() = %q, want %q", got.String(), tc.str)
			}
		})
	}
}

func TestParsePortForwardErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"80", "give the host port too"},
		{"", "give the host port too"},
		{":8080:80", "give the host port too"},
		{"8080:80/sctp", `protocol "sctp" is not supported`},
		{"8080-8081:80-81", "port ranges"},
		{"0:80", "host port"},
		{"8080:0", "container port"},
		{"70000:80", "not a port number"},
		{"http:80", "not a port number"},
		{"localhost:8080:80", `host address "localhost" is not an IPv4 address`},
		{"::1:8080:80", "IPv6 host addresses are not supported"},
		{"[::1]:8080:80", "IPv6 host addresses are not supported"},
		{"1.2.3.4.5:8080:80", "not an IPv4 address"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			_, err := ParsePortForward(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if tc.in != "" && !strings.Contains(err.Error(), tc.in) {
				t.Fatalf("error %v does not name %q", err, tc.in)
			}
		})
	}
}

func TestCheckPortForwards(t *testing.T) {
	// A port this test holds is in use.
	tcp := listenTCP(t)
	port := uint16(tcp)
	err := CheckPortForwards([]PortForward{{Proto: "tcp", HostIP: "127.0.0.1", HostPort: port, ContainerPort: 80}})
	if !errors.Is(err, ErrPortInUse) || !strings.Contains(err.Error(), "127.0.0.1") || !strings.Contains(err.Error(), itoa(int(port))) {
		t.Fatalf("error %v, want ErrPortInUse naming 127.0.0.1 and port %d", err, port)
	}
	// The same port number over udp is free (unless by chance; then skip
	// that half).
	if err := CheckPortForwards([]PortForward{{Proto: "udp", HostIP: "127.0.0.1", HostPort: port, ContainerPort: 80}}); err != nil && !errors.Is(err, ErrPortInUse) {
		t.Fatal(err)
	}
	// Publishing one port twice.
	free := uint16(freeTCPPort(t))
	err = CheckPortForwards([]PortForward{
		{Proto: "tcp", HostPort: free, ContainerPort: 80},
		{Proto: "tcp", HostIP: "127.0.0.1", HostPort: free, ContainerPort: 81},
	})
	if !errors.Is(err, ErrPortInUse) || !strings.Contains(err.Error(), "published twice") {
		t.Fatalf("error %v, want a port published twice", err)
	}
	// An address that is not the host's.
	err = CheckPortForwards([]PortForward{{Proto: "tcp", HostIP: "192.0.2.77", HostPort: free, ContainerPort: 80}})
	if err == nil || !strings.Contains(err.Error(), "192.0.2.77 is not an address of this host") {
		t.Fatalf("error %v, want the address named", err)
	}
	if err := CheckPortForwards([]PortForward{{Proto: "sctp", HostPort: 1, ContainerPort: 1}}); err == nil {
		t.Fatal("sctp accepted")
	}
}

func TestNetworkPublish(t *testing.T) {
	n, _ := ParseNetworkOption("slirp4netns")
	if err := n.Publish([]string{"8080:80", "127.0.0.1:5353:53/udp"}); err == nil || !strings.Contains(err.Error(), "allow_host_loopback=true") {
		t.Fatalf("error %v, want the loopback UDP forward refused", err)
	}
	n, _ = ParseNetworkOption("slirp4netns:allow_host_loopback=true")
	if err := n.Publish([]string{"8080:80", "127.0.0.1:5353:53/udp"}); err != nil {
		t.Fatal(err)
	}
	if len(n.Options.PortForwards) != 2 || n.Options.PortForwards[1].Proto != "udp" {
		t.Fatalf("forwards %+v", n.Options.PortForwards)
	}
	if err := n.Publish([]string{"80"}); err == nil || !strings.Contains(err.Error(), `"80"`) {
		t.Fatalf("error %v, want the bad spec named", err)
	}
	for _, mode := range []string{"none", "host"} {
		n, _ := ParseNetworkOption(mode)
		if err := n.Publish(nil); err != nil {
			t.Fatal(err)
		}
		if err := n.Publish([]string{"8080:80"}); err == nil || !strings.Contains(err.Error(), "needs --network slirp4netns, not "+mode) {
			t.Fatalf("%s: error %v", mode, err)
		}
	}
}
