package main

import (
	"encoding/json"
	"fmt"
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
			// Only this run's namespace: another harness may run meanwhile.
			own := fmt.Sprintf("dabba-bench-%d", os.Getpid())
			if nss, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(nss), own+" ") || strings.HasSuffix(strings.TrimSpace(string(nss)), own) {
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

// TestHarnessLazyForms runs the real harness on the Alpine image in forms
// gzip+index and estargz over loopback, with the in-process registry: the
// harness pushes the lazy index, runs the learning run, pushes the index
// again from its store and converts the estargz form with the learned
// files prioritized, all before the cold rows; so cold lazy runs succeed
// in both forms and, without the background fetch (dabba-lazy-nobg),
// fetch less than the image's layer: they read through the index or the
// eStargz TOC, where a layer with neither is fetched whole.
func TestHarnessLazyForms(t *testing.T) {
	u := testenv.TestUser(t)
	testenv.AlpineTarball(t)
	testenv.RequireFUSE(t)
	dabba, _ := testenv.Binaries(t)
	out := t.TempDir()
	work, err := os.MkdirTemp("", "dabba-bench-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testenv.RemoveAll(t, work) })
	if err := os.Chmod(work, 0o755); err != nil {
		t.Fatal(err)
	}
	cache := os.Getenv("DABBA_BENCH_CACHE")
	if cache == "" {
		cache = filepath.Join(work, "cache")
	}
	code := realMain([]string{"--profile", "loopback", "--registry", "in-process", "--images", "alpine", "--forms", "gzip+index,estargz",
		"--contenders", "dabba-lazy,dabba-lazy-nobg", "--peer", "dabba-lazy", "--scenarios", "cold-pull-to-shell", "--reps", "1",
		"--user", u.Name, "--log-level", "warn", "--work", work, "--cache", cache, "--out", out, "--tag", "test",
		"--dabba", dabba})
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
	if len(res.Meta.Images) != 2 || len(res.Runs) != 4 {
		t.Fatalf("images %+v runs %+v: want two image forms and four runs", res.Meta.Images, res.Runs)
	}
	compressed := map[string]int64{}
	for _, im := range res.Meta.Images {
		if im.Err != "" {
			t.Fatalf("image %s/%s: %s", im.Name, im.Form, im.Err)
		}
		compressed[im.Form] = im.Compressed
	}
	forms := map[string]int{}
	for _, r := range res.Runs {
		forms[r.Form]++
		if r.Err != "" {
			t.Fatalf("run %+v: want a successful cold %s run", r, r.Contender)
		}
		if r.Contender == "dabba-lazy-nobg" && (r.BytesFetched <= 0 || r.BytesFetched >= compressed[r.Form]) {
			t.Errorf("cold lazy run without background fetch in form %s fetched %d bytes, want fewer than the image's %d compressed bytes", r.Form, r.BytesFetched, compressed[r.Form])
		}
	}
	if forms["gzip+index"] != 2 || forms["estargz"] != 2 {
		t.Errorf("runs by form %v, want two of each", forms)
	}
	notes := strings.Join(res.Meta.Notes, "\n")
	if !strings.Contains(notes, "alpine: optimized by one learning run") || strings.Contains(notes, "NOT optimized") {
		t.Errorf("notes %q: want the image optimized by the learning run", notes)
	}
}
