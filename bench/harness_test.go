package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dabba/dabba/bench/report"
	"github.com/dabba/dabba/internal/testenv"
)

// TestHarnessTeardown runs the real harness, small (the Alpine image, one
// cold pull by skopeo, or by dabba where skopeo is not installed), over the emulated link and over
// loopback, and checks its results and that it leaves nothing behind: no
// network namespace, no mount, no process of the user.
func TestHarnessTeardown(t *testing.T) {
	u := testenv.TestUser(t)
	testenv.AlpineTarball(t)
	testenv.RequireCommand(t, "docker-registry", "docker-registry")
	// skopeo (make bench-deps) when installed, else dabba's own pull.
	contender, extra := "skopeo", []string{}
	if _, err := exec.LookPath("skopeo"); err != nil {
		dabba, _ := testenv.Binaries(t)
		contender, extra = "dabba", []string{"--dabba", dabba}
	}
	testenv.RequireCommand(t, "tc", "iproute2")
	for _, profile := range []string{"link", "loopback"} {
		t.Run(profile, func(t *testing.T) {
			out := t.TempDir()
			// The user must reach its stores below work: not t.TempDir,
			// whose parent is private.
			work, err := os.MkdirTemp("", "dabba-bench-test-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { testenv.RemoveAll(t, work) })
			if err := os.Chmod(work, 0o755); err != nil {
				t.Fatal(err)
			}
			cache := os.Getenv("DABBA_BENCH_CACHE") // reuse a warm cache when given
			if cache == "" {
				cache = filepath.Join(work, "cache")
			}
			code := realMain(append([]string{"--profile", profile, "--rate", "50mbit", "--rtt", "10ms",
				"--images", "alpine", "--contenders", contender, "--scenarios", "cold-pull", "--reps", "1",
				"--user", u.Name, "--log-level", "warn", "--work", work, "--cache", cache, "--out", out, "--tag", "test"}, extra...))
			if code != 0 {
				t.Fatalf("harness exit status %d", code)
			}
			raw, err := os.ReadFile(filepath.Join(out, "latest-test.json"))
			if err != nil {
				t.Fatal(err)
			}
			var res report.Result
			if err := json.Unmarshal(raw, &res); err != nil {
				t.Fatal(err)
			}
			if len(res.Runs) != 1 || res.Runs[0].Err != "" || res.Runs[0].BytesFetched < 3<<20 {
				t.Fatalf("runs %+v: want one successful %s pull fetching the Alpine layer", res.Runs, contender)
			}
			for _, ext := range []string{"md", "svg"} {
				if _, err := os.Stat(filepath.Join(out, "latest-test."+ext)); err != nil {
					t.Error(err)
				}
			}
			if nss, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(nss), "dabba-bench-") {
				t.Errorf("network namespace left behind:\n%s", nss)
			}
			if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), work) {
				t.Errorf("mount left below %s", work)
			}
			if ents, _ := filepath.Glob(filepath.Join(work, "tmpfs-*")); len(ents) != 0 {
				t.Errorf("tmpfs directory left: %v", ents)
			}
		})
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.CleanupBinaries()
	os.Exit(code)
}
