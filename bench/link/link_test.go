package link

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/dabba/dabba/internal/testenv"
)

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{in: "100mbit", want: 100e6},
		{in: "1gbit", want: 1e9},
		{in: "1.5Mbit", want: 1.5e6},
		{in: "500kbit", want: 500e3},
		{in: "8000bit", want: 8000},
		{in: "100", bad: true},
		{in: "mbit", bad: true},
		{in: "-1mbit", bad: true},
		{in: "100mb", bad: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseRate(tc.in)
			if tc.bad {
				if err == nil {
					t.Fatalf("ParseRate(%q) = %d, want an error", tc.in, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseRate(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
		})
	}
}

// serveBytes answers each connection's request line "N\n" with N bytes.
func serveBytes(t *testing.T, ln net.Listener) {
	t.Helper()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					return
				}
				n, _ := strconv.ParseInt(line[:len(line)-1], 10, 64)
				io.CopyN(c, zeros{}, n)
			}()
		}
	}()
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

// fetch asks addr for n bytes and returns the time to the first byte and to
// the last.
func fetch(t *testing.T, addr string, n int64) (first, all time.Duration) {
	t.Helper()
	start := time.Now()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := fmt.Fprintf(c, "%d\n", n); err != nil {
		t.Fatal(err)
	}
	var one [1]byte
	if n > 0 {
		if _, err := io.ReadFull(c, one[:]); err != nil {
			t.Fatal(err)
		}
		first = time.Since(start)
	}
	got, err := io.Copy(io.Discard, c)
	if err != nil {
		t.Fatal(err)
	}
	if n > 0 {
		got++
	}
	if got != n {
		t.Fatalf("received %d bytes through %s, want %d", got, addr, n)
	}
	return first, time.Since(start)
}

func TestProxyCountsBytes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serveBytes(t, ln)
	for _, rtt := range []time.Duration{0, 2 * time.Millisecond} {
		t.Run(rtt.String(), func(t *testing.T) {
			p, err := StartProxy("127.0.0.1:0", ln.Addr().String(), rtt)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			const n = 3<<20 + 17
			fetch(t, p.Addr(), n)
			fetch(t, p.Addr(), 0)
			down, up := p.Bytes()
			req := int64(len(fmt.Sprintf("%d\n", n)) + len("0\n"))
			if down != n || up != req || p.Conns() != 2 {
				t.Fatalf("proxy counted down %d, up %d, %d conns; want %d, %d, 2", down, up, p.Conns(), n, req)
			}
			p.Reset()
			if d, u := p.Bytes(); d != 0 || u != 0 || p.Conns() != 0 {
				t.Fatalf("after Reset: down %d, up %d, conns %d", d, u, p.Conns())
			}
		})
	}
}

func TestProxyErrors(t *testing.T) {
	if _, err := StartProxy("127.0.0.1:0", "127.0.0.1:1", -time.Second); err == nil {
		t.Fatal("negative rtt accepted")
	}
	if _, err := StartProxy("256.0.0.1:0", "127.0.0.1:1", 0); err == nil {
		t.Fatal("bad listen address accepted")
	}
	// An upstream that refuses: the client sees its connection closed.
	p, err := StartProxy("127.0.0.1:0", "127.0.0.1:1", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read through a proxy whose upstream refuses succeeded")
	}
}

// TestLinkRateAndDelay measures the instrument the benchmark relies on: a
// registry-like server inside a shaped namespace, reached through the
// delaying proxy. The bands are wide on purpose; this checks that shaping
// and delay happen at all and are of the right size, not the kernel's
// precision.
func TestLinkRateAndDelay(t *testing.T) {
	testenv.RequireRoot(t)
	for _, c := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(c); err != nil {
			testenv.Missing(t, c+" not found", "install the Debian package iproute2")
		}
	}
	ctx := context.Background()
	pid := os.Getpid()
	n, err := NewNetns(ctx, fmt.Sprintf("dabba-benchtest-%d", pid), fmt.Sprintf("dbt%d", pid%1000000), 16000+pid%16000)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := n.Close(); err != nil {
			t.Errorf("removing %s: %v", n.Name, err)
		}
	}()
	const rate = 40e6 // bit/s
	if err := n.Shape(ctx, "40mbit"); err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	if err := n.Do(func() (err error) {
		ln, err = net.Listen("tcp", n.NSIP.String()+":0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serveBytes(t, ln)
	const rtt = 60 * time.Millisecond
	p, err := StartProxy("127.0.0.1:0", ln.Addr().String(), rtt)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	// Delay: a tiny transfer's first byte comes after the handshake round
	// trip plus the request's and the answer's one-way delays: 2 × rtt.
	first, _ := fetch(t, p.Addr(), 1)
	t.Logf("first byte after %v (rtt %v: expect about %v)", first, rtt, 2*rtt)
	if first < 2*rtt-5*time.Millisecond || first > 2*rtt+500*time.Millisecond {
		t.Errorf("first byte after %v, want about %v", first, 2*rtt)
	}
	// Rate: 6 MB at 40 Mbit/s is 1.2 s.
	const size = 6 << 20
	_, all := fetch(t, p.Addr(), size)
	got := float64(size*8) / (all - 2*rtt).Seconds()
	t.Logf("%d bytes in %v: %.1f Mbit/s through a %.0f Mbit/s link", size, all, got/1e6, rate/1e6)
	if got < 0.6*rate || got > 1.15*rate {
		t.Errorf("measured %.1f Mbit/s, want within [0.6, 1.15] × %.0f Mbit/s", got/1e6, rate/1e6)
	}
	if down, _ := p.Bytes(); down != size+1 {
		t.Errorf("proxy counted %d bytes down, want %d", down, size+1)
	}
}
