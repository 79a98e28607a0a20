package netns

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkThroughput sends b.N × 64 MiB from the container to a server on
// the host's 127.0.0.1 (through 10.0.2.2, allow_host_loopback) with tap0's
// MTU at Ethernet's 1500 and at the default 65520. ns/op and MB/s cover
// the transfer only (from the server's accept to EOF), not the setup.
//
//	go test ./netns -run '^$' -bench Throughput -benchtime 4x
func BenchmarkThroughput(b *testing.B) {
	u := requireSlirp(b)
	for _, mtu := range []int{1500, DefaultMTU} {
		b.Run("mtu="+strconv.Itoa(mtu), func(b *testing.B) {
			const chunk = 64 << 20
			ln, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			type result struct {
				n int64
				d time.Duration
			}
			done := make(chan result, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					done <- result{}
					return
				}
				defer c.Close()
				t0 := time.Now()
				n, _ := io.Copy(io.Discard, c)
				done <- result{n, time.Since(t0)}
			}()
			port := ln.Addr().(*net.TCPAddr).Port
			p := startParent(b, u, parentConfig{
				Network: fmt.Sprintf("slirp4netns:allow_host_loopback=true,mtu=%d", mtu),
				Actions: [][]string{{"send", fmt.Sprintf("%s:%d", GatewayIP, port), strconv.Itoa(b.N * chunk)}},
			}, startOpts{})
			r := <-done
			out, err := p.wait()
			if err != nil || r.n != int64(b.N*chunk) {
				b.Fatalf("received %d of %d bytes: %v\n%s", r.n, b.N*chunk, err, out)
			}
			b.ReportMetric(float64(r.d.Nanoseconds())/float64(b.N), "ns/op")
			b.ReportMetric(float64(r.n)/r.d.Seconds()/1e6, "MB/s")
		})
	}
}

// BenchmarkStart measures what a container waits for its network: the
// time from the clone of the child to its release, with --network none
// (nothing to do) and with slirp4netns (Start until tap0 is up). The
// difference is slirp4netns's added start latency. Each op is one
// container in the parent role; ns/start is that mean, ns/teardown the
// mean time of the teardown (Slirp.Close) after the child exited.
//
//	go test ./netns -run '^$' -bench Start -benchtime 20x
func BenchmarkStart(b *testing.B) {
	u := requireSlirp(b)
	for _, network := range []string{"none", "slirp4netns"} {
		b.Run("network="+network, func(b *testing.B) {
			p := startParent(b, u, parentConfig{Network: network, Cycles: b.N}, startOpts{})
			td := p.waitLine(b, "teardown-ns ")
			line := p.waitLine(b, "cycle-ns ")
			out, err := p.wait()
			if err != nil {
				b.Fatalf("parent: %v\n%s", err, out)
			}
			ns, _ := strconv.ParseFloat(strings.TrimPrefix(line, "cycle-ns "), 64)
			b.ReportMetric(ns, "ns/start")
			ns, _ = strconv.ParseFloat(strings.TrimPrefix(td, "teardown-ns "), 64)
			b.ReportMetric(ns, "ns/teardown")
		})
	}
}
