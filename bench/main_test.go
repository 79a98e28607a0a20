package main

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dabba/dabba/bench/images"
	"github.com/dabba/dabba/bench/report"
)

func TestExpand(t *testing.T) {
	got := expand([]string{"{dabba}", "--root", "{store}", "run", "{ref}", "{cmd}", "oci:{store}/oci:bench"},
		map[string]string{"dabba": "/b/dabba", "store": "/s/1.0", "ref": "127.0.0.1:5000/bench/alpine-gzip:latest"},
		[]string{"sh", "-c", "ls / >/dev/null"})
	want := []string{"/b/dabba", "--root", "/s/1.0", "run", "127.0.0.1:5000/bench/alpine-gzip:latest", "sh", "-c", "ls / >/dev/null", "oci:/s/1.0/oci:bench"}
	if !slices.Equal(got, want) {
		t.Fatalf("expand:\n got %q\nwant %q", got, want)
	}
}

func TestRotate(t *testing.T) {
	a, b, c := &Contender{Name: "a"}, &Contender{Name: "b"}, &Contender{Name: "c"}
	cs := []*Contender{a, b, c}
	names := func(cs []*Contender) string {
		var n []string
		for _, c := range cs {
			n = append(n, c.Name)
		}
		return strings.Join(n, "")
	}
	for k, want := range []string{"abc", "bca", "cab", "abc"} {
		if got := names(rotate(cs, k)); got != want {
			t.Errorf("rotate(abc, %d) = %s, want %s", k, got, want)
		}
	}
	if names(cs) != "abc" {
		t.Errorf("rotate modified its input: %s", names(cs))
	}
	if len(rotate(nil, 3)) != 0 {
		t.Error("rotate(nil) not empty")
	}
}

// TestContenders checks the declarations: every contender listed is
// declared, does something, uses only known variables, and the peer pulls
// and runs.
func TestContenders(t *testing.T) {
	cs := contenders()
	known := map[string]bool{"{dabba}": true, "{store}": true, "{ref}": true, "{id}": true, "{bundle}": true, "{cmd}": true}
	for _, name := range allContenders {
		c, ok := cs[name]
		if !ok {
			t.Errorf("contender %s listed but not declared", name)
			continue
		}
		if c.Pull == nil && c.Run == nil {
			t.Errorf("contender %s neither pulls nor runs", name)
		}
		if (c.Bundle == nil) != (c.Prepare == nil) {
			t.Errorf("contender %s: Bundle and Prepare go together", name)
		}
		for _, tmpl := range [][]string{c.Pull, c.Run, c.Warm} {
			for _, w := range tmpl {
				for rest := w; strings.Contains(rest, "{"); {
					i := strings.Index(rest, "{")
					j := strings.Index(rest[i:], "}")
					if j < 0 {
						t.Errorf("contender %s: unclosed variable in %q", name, w)
						break
					}
					if v := rest[i : i+j+1]; !known[v] {
						t.Errorf("contender %s: unknown variable %s in %q", name, v, w)
					}
					rest = rest[i+j+1:]
				}
			}
		}
		if c.Run != nil && !slices.Contains(c.Run, "{cmd}") && c.Bundle == nil {
			t.Errorf("contender %s: Run without {cmd}", name)
		}
	}
	if p := cs[defaultPeer]; p == nil || p.Pull == nil || p.Run == nil {
		t.Errorf("the peer %s must pull and run", defaultPeer)
	}
}

func TestOptionsCheck(t *testing.T) {
	base := options{reps: 1, profile: "link", peer: defaultPeer, rate: "100mbit", registry: "docker-registry",
		images: []string{"alpine"}, forms: []string{"gzip"}, scenarios: []string{scWarm}, contenders: []string{"podman"}}
	for _, tc := range []struct {
		name string
		edit func(o *options)
		want string
	}{
		{"reps", func(o *options) { o.reps = 0 }, "--reps"},
		{"profile", func(o *options) { o.profile = "wifi" }, "--profile"},
		{"rate", func(o *options) { o.rate = "fast" }, "--rate"},
		{"rtt", func(o *options) { o.rtt = -1 }, "--rtt"},
		{"registry", func(o *options) { o.registry = "quay" }, "--registry"},
		{"peer", func(o *options) { o.peer = "docker" }, "--peer"},
		{"tag", func(o *options) { o.tag = "a/b" }, "--tag"},
		{"image", func(o *options) { o.images = []string{"ubuntu"} }, `--images: unknown "ubuntu"`},
		{"contender", func(o *options) { o.contenders = []string{"docker"} }, `--contenders: unknown "docker"`},
		{"scenario", func(o *options) { o.scenarios = []string{"boot"} }, `--scenarios: unknown "boot"`},
		{"form", func(o *options) { o.forms = []string{"zip"} }, `--forms: unknown "zip"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base
			tc.edit(&o)
			err := o.check()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("check: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// TestRunsOn checks the form matrix: by default the lazy contenders run on
// gzip+index and estargz and the others on gzip; with --forms given, every
// contender runs on every form.
func TestRunsOn(t *testing.T) {
	h := &harness{cs: contenders(), opts: options{formMatrix: true, contenders: []string{"podman", "dabba-lazy"}}}
	for _, tc := range []struct {
		contender, form string
		want            bool
	}{
		{"podman", images.FormGzip, true},
		{"podman", images.FormGzipIndex, false},
		{"podman", images.FormEStargz, false},
		{"dabba-overlay", images.FormEStargz, false},
		{"dabba-lazy", images.FormGzip, false},
		{"dabba-lazy", images.FormGzipIndex, true},
		{"dabba-lazy-nobg", images.FormEStargz, true},
	} {
		if got := h.runsOn(h.cs[tc.contender], tc.form); got != tc.want {
			t.Errorf("form matrix: %s on %s: %v, want %v", tc.contender, tc.form, got, tc.want)
		}
	}
	if !h.formNeeded(images.FormEStargz) || !h.lazySelected() {
		t.Error("estargz not needed with dabba-lazy selected")
	}
	h.opts.contenders = []string{"podman"}
	if h.formNeeded(images.FormEStargz) || h.formNeeded(images.FormGzipIndex) || !h.formNeeded(images.FormGzip) || h.lazySelected() {
		t.Error("podman alone: want form gzip only and no lazy contender")
	}
	h.opts.formMatrix = false
	for _, c := range []string{"podman", "dabba-lazy", "runc"} {
		for _, f := range images.Forms {
			if !h.runsOn(h.cs[c], f) {
				t.Errorf("--forms given: %s does not run on %s", c, f)
			}
		}
	}
	for _, name := range allContenders {
		if lazy := strings.HasPrefix(name, "dabba-lazy"); h.cs[name].Lazy != lazy {
			t.Errorf("contender %s: Lazy %v", name, h.cs[name].Lazy)
		}
	}
}

// TestSummarizeCrossForm: rows of a form without the peer take their ratio
// against the peer's gzip row; rows with the peer in their form keep
// report.Summarize's.
func TestSummarizeCrossForm(t *testing.T) {
	runs := []report.Run{
		{Scenario: scColdShell, Image: "large", Form: "gzip", Contender: "podman", Rep: 1, Seconds: 40},
		{Scenario: scColdShell, Image: "large", Form: "gzip", Contender: "dabba-overlay", Rep: 1, Seconds: 38},
		{Scenario: scColdShell, Image: "large", Form: "gzip+index", Contender: "dabba-lazy", Rep: 1, Seconds: 2},
		{Scenario: scColdShell, Image: "large", Form: "estargz", Contender: "dabba-lazy", Rep: 1, Seconds: 1},
		{Scenario: scColdShell, Image: "large", Form: "estargz", Contender: "dabba-lazy-nobg", Rep: 1, Err: "boom"},
		{Scenario: scWarm, Image: "large", Form: "estargz", Contender: "dabba-lazy", Rep: 1, Seconds: 1},
		{Scenario: scColdShell, Image: "small", Form: "gzip+index", Contender: "podman", Rep: 1, Seconds: 4},
		{Scenario: scColdShell, Image: "small", Form: "gzip+index", Contender: "dabba-lazy", Rep: 1, Seconds: 1},
		{Scenario: scColdShell, Image: "small", Form: "gzip", Contender: "podman", Rep: 1, Seconds: 8},
	}
	rows, cross := summarize(runs, "podman")
	got := map[string]float64{}
	for _, r := range rows {
		got[r.Scenario+" "+r.Image+" "+r.Form+" "+r.Contender] = r.Ratio
	}
	want := map[string]float64{
		scColdShell + " large gzip podman":             1,
		scColdShell + " large gzip dabba-overlay":      0.95,
		scColdShell + " large gzip+index dabba-lazy":   0.05,
		scColdShell + " large estargz dabba-lazy":      0.025,
		scColdShell + " large estargz dabba-lazy-nobg": 0, // no successful run
		scWarm + " large estargz dabba-lazy":           0, // no podman row in the scenario
		scColdShell + " small gzip+index podman":       1,
		scColdShell + " small gzip+index dabba-lazy":   0.25, // the peer ran in its form
		scColdShell + " small gzip podman":             1,
	}
	for k, w := range want {
		if g, ok := got[k]; !ok || g < w-1e-9 || g > w+1e-9 {
			t.Errorf("%s: ratio %v (row %v), want %v", k, g, ok, w)
		}
	}
	if !cross {
		t.Error("crossForm false, want true")
	}
	if _, cross := summarize(runs[6:], "podman"); cross {
		t.Error("crossForm true with the peer in every form")
	}
}

func TestReadLearned(t *testing.T) {
	store := t.TempDir()
	dir := filepath.Join(store, "lazy", "learned")
	if _, err := readLearned(store, "abc"); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "abc")) {
		t.Errorf("no list: %v, want an error naming %s", err, filepath.Join(dir, "abc"))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "other"), []byte("usr/bin/python3.11\n/usr/lib/x.so\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// dabba's other records beside the lists are not lists.
	if err := os.WriteFile(filepath.Join(dir, "other.json"), []byte(`{"ranges":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	// The only list, under another name: taken.
	if got, err := readLearned(store, "abc"); err != nil || !slices.Equal(got, []string{"usr/bin/python3.11", "/usr/lib/x.so"}) {
		t.Errorf("single list: %q, %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "abc"), []byte("etc/motd\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := readLearned(store, "abc"); err != nil || !slices.Equal(got, []string{"etc/motd"}) {
		t.Errorf("own list: %q, %v", got, err)
	}
	if _, err := readLearned(store, "def"); err == nil {
		t.Error("two lists, neither the image's: want an error")
	}
	if err := os.WriteFile(filepath.Join(dir, "abc"), []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readLearned(store, "abc"); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty list: %v, want an error saying so", err)
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.0.1:5000": true, "localhost:80": true, "[::1]:5000": true,
		"198.18.0.2:5000": false, "registry.example:443": false, "127.0.0.1": true} {
		if got := isLoopback(addr); got != want {
			t.Errorf("isLoopback(%s) = %v, want %v", addr, got, want)
		}
	}
}

// TestMarkWriter: mark lines are noted when they arrive, also when split
// across writes, and kept out of the output; other lines pass through.
func TestMarkWriter(t *testing.T) {
	var out tail
	start := time.Now()
	m := &markWriter{start: start, out: &out}
	for _, w := range []string{mark + "\n6660\n", "dabba-", "bench-mark\n", "6660\n" + mark, "\n", "not a " + mark + "\n"} {
		if n, err := m.Write([]byte(w)); n != len(w) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", w, n, err)
		}
		time.Sleep(time.Millisecond)
	}
	if len(m.at) != 3 {
		t.Fatalf("%d marks noted, want 3", len(m.at))
	}
	if !(m.at[0] < m.at[1] && m.at[1] < m.at[2]) {
		t.Errorf("marks not in order: %v", m.at)
	}
	if got, want := out.String(), "6660\n6660\nnot a "+mark+"\n"; got != want {
		t.Errorf("output %q, want %q", got, want)
	}
}

// TestWithPasses: a read-heavy run is split into the first walk, the
// second, and the run less the second walk; a run without three marks, or
// a failed one, is kept as it is.
func TestWithPasses(t *testing.T) {
	r := report.Run{Scenario: scFind, Image: "alpine", Form: "gzip", Contender: "dabba-fuse", Rep: 2, Seconds: 0.5, BytesFetched: 7, MaxRSSKiB: 9}
	ms := []time.Duration{100 * time.Millisecond, 300 * time.Millisecond, 350 * time.Millisecond}
	got := withPasses(r, ms)
	if len(got) != 3 {
		t.Fatalf("%d runs, want 3", len(got))
	}
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	if g := got[0]; g.Scenario != scFind || !near(g.Seconds, 0.45) || g.BytesFetched != 7 || g.MaxRSSKiB != 9 {
		t.Errorf("the run: %+v, want 0.45 s with its bytes and RSS", g)
	}
	if g := got[1]; g.Scenario != scFind+sfx1st || !near(g.Seconds, 0.2) || g.Rep != 2 || g.Contender != "dabba-fuse" || g.BytesFetched != 0 {
		t.Errorf("first walk: %+v", g)
	}
	if g := got[2]; g.Scenario != scFind+sfx2nd || !near(g.Seconds, 0.05) {
		t.Errorf("second walk: %+v", g)
	}
	if got := withPasses(r, ms[:2]); len(got) != 1 || got[0] != r {
		t.Errorf("two marks: %+v", got)
	}
	r.Err = "exit status 1"
	if got := withPasses(r, ms); len(got) != 1 || got[0] != r {
		t.Errorf("failed run: %+v", got)
	}
}
