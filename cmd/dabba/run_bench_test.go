package main

import (
	"context"
	"os/exec"
	"sort"
	"testing"
	"time"

	"github.com/dabba/dabba/internal/testenv"
)

// BenchmarkRunTrue measures a warm `dabba run --network none IMG /bin/true`
// as the unprivileged user and, when podman is installed, the same with
// `podman run --rm --network none`, reporting the medians of 20 and their
// ratio (goal: dabba ≤ 0.25× podman).
func BenchmarkRunTrue(b *testing.B) {
	u := testenv.TestUser(b)
	dabba, _ := testenv.Binaries(b)
	host := testenv.Registry(b)
	ref := testenv.Push(b, testenv.BusyboxImage(b), host, "bench/busybox:1")
	home := u.Dir(b)
	ctx := context.Background()
	median := func(name string, args ...string) time.Duration {
		b.Helper()
		var ds []time.Duration
		for i := 0; i < 21; i++ { // the first run warms up
			start := time.Now()
			if out, err := u.Command(ctx, home, name, args...).CombinedOutput(); err != nil {
				b.Fatalf("%s %q: %v\n%s", name, args, err, out)
			}
			if i > 0 {
				ds = append(ds, time.Since(start))
			}
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[len(ds)/2]
	}
	for i := 0; i < b.N; i++ {
		d := median(dabba, "--root", home+"/store", "run", "--network", "none", ref, "/bin/true")
		b.ReportMetric(float64(d.Microseconds())/1000, "dabba-ms")
		if _, err := exec.LookPath("podman"); err != nil {
			continue
		}
		if out, err := u.Command(ctx, home, "podman", "pull", "-q", "--tls-verify=false", ref).CombinedOutput(); err != nil {
			b.Logf("podman pull: %v\n%s (no comparison)", err, out)
			continue
		}
		p := median("podman", "run", "--rm", "--network", "none", ref, "/bin/true")
		b.ReportMetric(float64(p.Microseconds())/1000, "podman-ms")
		b.ReportMetric(float64(d)/float64(p), "dabba/podman")
	}
}
