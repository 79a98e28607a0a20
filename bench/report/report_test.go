package report

import (
	"bytes"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{2, 2, 9, 1, 2}, 2},
	} {
		in := append([]float64(nil), tc.in...)
		if got := Median(tc.in); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", tc.in, got, tc.want)
		}
		for i := range in {
			if in[i] != tc.in[i] {
				t.Fatalf("Median modified its input: %v, was %v", tc.in, in)
			}
		}
	}
	if !math.IsNaN(Median(nil)) {
		t.Error("Median(nil) is not NaN")
	}
}

func run(sc, im, c string, rep int, s float64, bytes, rss int64, err string) Run {
	return Run{Scenario: sc, Image: im, Form: "gzip", Contender: c, Rep: rep, Seconds: s, BytesFetched: bytes, MaxRSSKiB: rss, Err: err}
}

func TestSummarize(t *testing.T) {
	// Alternated as the harness runs them: rep by rep, contender by contender.
	runs := []Run{
		run("cold-pull", "alpine", "podman", 1, 2.0, 100, 50, ""),
		run("cold-pull", "alpine", "dabba", 1, 0.5, 90, 30, ""),
		run("cold-pull", "alpine", "skopeo", 1, 0, 0, 0, "exit status 1: no such image"),
		run("cold-pull", "alpine", "dabba", 2, 0.7, 110, 35, ""),
		run("cold-pull", "alpine", "podman", 2, 1.0, 100, 55, ""),
		run("cold-pull", "alpine", "skopeo", 2, 0, 0, 0, "exit status 1: again"),
		run("cold-pull", "alpine", "podman", 3, 4.0, 100, 40, ""),
		run("cold-pull", "alpine", "dabba", 3, 0.1, 70, 20, ""),
		run("warm-start", "alpine", "dabba", 1, 0.2, 0, 10, ""),
		run("warm-start", "alpine", "dabba", 2, 9.0, 0, 10, "timeout"),
		run("warm-start", "minbase", "podman", 1, 1.0, 0, 10, ""),
		run("warm-start", "minbase", "dabba", 1, 0.25, 0, 10, ""),
	}
	rows := Summarize(runs, "podman")
	want := []Row{
		{Scenario: "cold-pull", Image: "alpine", Form: "gzip", Contender: "podman", Runs: 3, Median: 2, Min: 1, Max: 4, Ratio: 1, BytesFetched: 100, MaxRSSKiB: 55},
		{Scenario: "cold-pull", Image: "alpine", Form: "gzip", Contender: "dabba", Runs: 3, Median: 0.5, Min: 0.1, Max: 0.7, Ratio: 0.25, BytesFetched: 90, MaxRSSKiB: 35},
		{Scenario: "cold-pull", Image: "alpine", Form: "gzip", Contender: "skopeo", Failed: 2, Err: "exit status 1: no such image"},
		// No podman row for alpine warm-start: no ratio.
		{Scenario: "warm-start", Image: "alpine", Form: "gzip", Contender: "dabba", Runs: 1, Failed: 1, Median: 0.2, Min: 0.2, Max: 0.2, MaxRSSKiB: 10, Err: "timeout"},
		{Scenario: "warm-start", Image: "minbase", Form: "gzip", Contender: "podman", Runs: 1, Median: 1, Min: 1, Max: 1, Ratio: 1, MaxRSSKiB: 10},
		{Scenario: "warm-start", Image: "minbase", Form: "gzip", Contender: "dabba", Runs: 1, Median: 0.25, Min: 0.25, Max: 0.25, Ratio: 0.25, MaxRSSKiB: 10},
	}
	if len(rows) != len(want) {
		t.Fatalf("got %d rows, want %d:\n%+v", len(rows), len(want), rows)
	}
	for i := range want {
		if rows[i] != want[i] {
			t.Errorf("row %d:\n got %+v\nwant %+v", i, rows[i], want[i])
		}
	}
	wantWinners := []string{
		"cold-pull, alpine: dabba (500 ms, 0.25× podman)",
		"warm-start, alpine: dabba (200 ms)",
		"warm-start, minbase: dabba (250 ms, 0.25× podman)",
	}
	if got := Winners(rows, "podman"); !slices.Equal(got, wantWinners) {
		t.Errorf("Winners:\n got %q\nwant %q", got, wantWinners)
	}
	if got := Winners(rows[2:3], "podman"); len(got) != 1 || got[0] != "cold-pull, alpine: no successful run" {
		t.Errorf("Winners of a failed row: %q", got)
	}
	// A lazy contender on another form competes with the gzip rows, and
	// its form is named.
	lazy := append(rows[:2:2], Row{Scenario: "cold-pull", Image: "alpine", Form: "estargz", Contender: "dabba-lazy", Runs: 3, Median: 0.1, Ratio: 0.05})
	if got := Winners(lazy, "podman"); !slices.Equal(got, []string{"cold-pull, alpine: dabba-lazy on estargz (100 ms, 0.05× podman)"}) {
		t.Errorf("Winners across forms: %q", got)
	}
}

func TestSummarizeEvenBytes(t *testing.T) {
	rows := Summarize([]Run{
		run("cold-pull", "a", "x", 1, 1, 10, 0, ""),
		run("cold-pull", "a", "x", 2, 3, 21, 0, ""),
	}, "podman")
	if len(rows) != 1 || rows[0].Median != 2 || rows[0].BytesFetched != 16 || rows[0].Ratio != 0 {
		t.Fatalf("got %+v; want median 2, bytes 16 (15.5 rounded), no ratio without a peer", rows)
	}
}

func TestOutputs(t *testing.T) {
	runs := []Run{
		run("cold-pull-to-shell", "alpine", "podman", 1, 2.0, 3<<20, 50<<10, ""),
		run("cold-pull-to-shell", "alpine", "dabba-lazy", 1, 0, 0, 0, "dabba run: unknown flag: --lazy\n| second line"),
		run("cold-pull-to-shell", "alpine", "dabba-overlay", 1, 0.4, 3<<20, 20<<10, ""),
	}
	res := &Result{
		Meta: Meta{Started: time.Date(2026, 11, 28, 20, 0, 0, 0, time.UTC), Machine: "test box", Link: "loopback",
			Registry: "docker-registry", Reps: 1, Peer: "podman",
			Images: []ImageInfo{{Name: "alpine", Form: "gzip", Layers: 1, Compressed: 3 << 20, Uncompressed: 8 << 20, Command: "sh -c 'ls /'"}}},
		Runs: runs,
		Rows: Summarize(runs, "podman"),
	}
	var md bytes.Buffer
	if err := WriteMarkdown(&md, res); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| cold-pull-to-shell | alpine | dabba-overlay | 400 ms | 400 ms | 400 ms | 0.20× | 3.00 MiB | 20.0 MiB | 1 |",
		"| cold-pull-to-shell | alpine | dabba-lazy | FAILED | | | | | | 0 ok, 1 failed: dabba run: unknown flag: --lazy / second line |",
		"2026-11-28 20:00 UTC",
	} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md.String())
		}
	}
	var js bytes.Buffer
	if err := WriteJSON(&js, res); err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Rows) != 3 || back.Rows[2].Ratio != 0.2 || back.Runs[1].Err == "" {
		t.Errorf("JSON round trip lost data: %+v", back)
	}
	var svg bytes.Buffer
	if err := WriteSVG(&svg, "test", res.Rows, []string{"dabba-overlay", "podman"}); err != nil {
		t.Fatal(err)
	}
	s := svg.String()
	if !strings.HasPrefix(s, "<svg") || strings.Count(s, "<rect") != 1+3+2 || !strings.Contains(s, "dabba-lazy failed") {
		t.Errorf("unexpected SVG:\n%s", s)
	}
}

func TestFormats(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{Seconds(0), "0"},
		{Seconds(0.0004), "400 µs"},
		{Seconds(0.0123), "12 ms"},
		{Seconds(1.234), "1.23 s"},
		{Seconds(12.34), "12.3 s"},
		{HumanBytes(0), ""},
		{HumanBytes(512), "512 B"},
		{HumanBytes(1536), "1.50 KiB"},
		{HumanBytes(250 << 20), "250.0 MiB"},
		{HumanBytes(3 << 30), "3.00 GiB"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}
