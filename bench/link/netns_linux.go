package link

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Netns is a network namespace the harness created, joined to the host by a
// veth pair whose two ends can be shaped with tbf.
type Netns struct {
	Name   string // ip netns name, e.g. dabba-bench-1234
	HostIf string // the veth end in the host namespace
	NSIf   string // the veth end inside Name
	HostIP netip.Addr
	NSIP   netip.Addr
}

// NewNetns creates the namespace name (ip netns add), a veth pair named
// after tag (at most 10 characters) and a /30 from 198.18.0.0/15, the range
// RFC 2544 sets aside for benchmarks; index picks the /30. Close removes all
// of it. Needs root.
func NewNetns(ctx context.Context, name, tag string, index int) (*Netns, error) {
	if len(tag) > 10 {
		return nil, fmt.Errorf("netns %s: interface tag %q longer than 10 characters", name, tag)
	}
	if index < 0 || index >= 1<<15 {
		return nil, fmt.Errorf("netns %s: address index %d outside 0..32767", name, index)
	}
	// 198.18.0.0/15 holds 2^15 /30 subnets; subnet i starts at 198.18.0.0 + 4i.
	base := 198<<24 | 18<<16 | uint32(index)*4
	ip4 := func(v uint32) netip.Addr {
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	n := &Netns{Name: name, HostIf: tag + "h", NSIf: tag + "n", HostIP: ip4(base + 1), NSIP: ip4(base + 2)}
	steps := [][]string{
		{"netns", "add", name},
		{"link", "add", n.HostIf, "type", "veth", "peer", "name", n.NSIf},
		{"link", "set", n.NSIf, "netns", name},
		{"addr", "add", n.HostIP.String() + "/30", "dev", n.HostIf},
		{"link", "set", n.HostIf, "up"},
		{"-n", name, "addr", "add", n.NSIP.String() + "/30", "dev", n.NSIf},
		{"-n", name, "link", "set", n.NSIf, "up"},
		{"-n", name, "link", "set", "lo", "up"},
	}
	for i, s := range steps {
		if err := ipCmd(ctx, s...); err != nil {
			if i > 0 {
				n.Close()
			}
			return nil, fmt.Errorf("creating netns %s: %w", name, err)
		}
	}
	return n, nil
}

// Shape puts a tbf qdisc of the given rate (tc syntax, e.g. "100mbit") on
// both veth ends, so traffic in each direction is limited to it.
func (n *Netns) Shape(ctx context.Context, rate string) error {
	bps, err := ParseRate(rate)
	if err != nil {
		return err
	}
	// The bucket must hold at least rate/HZ bytes (HZ up to 1000) plus a
	// full-size GSO segment; latency bounds the queue to 50 ms of traffic.
	burst := max(bps/8/100, 64<<10)
	args := []string{"root", "tbf", "rate", strconv.FormatInt(bps, 10) + "bit",
		"burst", strconv.FormatInt(burst, 10), "latency", "50ms"}
	if err := tcCmd(ctx, append([]string{"qdisc", "replace", "dev", n.HostIf}, args...)...); err != nil {
		return fmt.Errorf("shaping %s: %w", n.HostIf, err)
	}
	if err := tcCmd(ctx, append([]string{"-n", n.Name, "qdisc", "replace", "dev", n.NSIf}, args...)...); err != nil {
		return fmt.Errorf("shaping %s in %s: %w", n.NSIf, n.Name, err)
	}
	return nil
}

// Close deletes the veth pair and the namespace (only these names).
func (n *Netns) Close() error {
	ctx := context.Background()
	var errs []error
	// Deleting one end removes the pair; the namespace's end goes with it.
	if linkExists(n.HostIf) {
		if err := ipCmd(ctx, "link", "del", n.HostIf); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := os.Stat("/run/netns/" + n.Name); err == nil {
		if err := ipCmd(ctx, "netns", "del", n.Name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func linkExists(name string) bool {
	_, err := os.Stat("/sys/class/net/" + name)
	return err == nil
}

// Do runs fn on an OS thread that has joined the namespace: sockets fn
// creates (net.Listen) belong to the namespace and stay there.
func (n *Netns) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("own network namespace: %w", err)
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + n.Name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns %s: %w", n.Name, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("joining netns %s: %w", n.Name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it exits with this goroutine
			// instead of running other goroutines in the wrong namespace.
			errc <- errors.Join(ferr, fmt.Errorf("leaving netns %s: %w", n.Name, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Command returns a command that runs inside the namespace (ip netns exec).
func (n *Netns) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// ParseRate parses a tc-style rate ("100mbit", "1gbit", "500kbit", "8000bit")
// into bits per second.
func ParseRate(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	units := []struct {
		suffix string
		mult   int64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1}}
	for _, u := range units {
		if v, ok := strings.CutSuffix(t, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f <= 0 {
				break
			}
			return int64(f * float64(u.mult)), nil
		}
	}
	return 0, fmt.Errorf("rate %q: want a positive number with bit, kbit, mbit or gbit (e.g. 100mbit)", s)
}

func ipCmd(ctx context.Context, args ...string) error { return run(ctx, "ip", args...) }
func tcCmd(ctx context.Context, args ...string) error { return run(ctx, "tc", args...) }

func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
