package report

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// Run is one measured repetition of one contender on one scenario and image.
type Run struct {
	Scenario  string  `json:"scenario"`
	Image     string  `json:"image"`
	Form      string  `json:"form"` // the image's layer form: gzip, estargz, gzip+index
	Contender string  `json:"contender"`
	Rep       int     `json:"rep"`
	Seconds   float64 `json:"seconds"`
	// BytesFetched counts the bytes the registry sent during the run, as the
	// benchmark's proxy saw them.
	BytesFetched int64 `json:"bytes_fetched"`
	// MaxRSSKiB is the peak resident set of the contender's process tree as
	// wait4 reports it (the top process and the children it waited for); 0
	// when not measured.
	MaxRSSKiB int64  `json:"max_rss_kib"`
	Err       string `json:"error,omitempty"`
	// Output is the end of the command's standard output (the count of a
	// find, the byte count of a tar), so runs can be checked against each
	// other.
	Output string `json:"output,omitempty"`
}

// Row summarises the runs of one scenario, image, form and contender.
type Row struct {
	Scenario  string `json:"scenario"`
	Image     string `json:"image"`
	Form      string `json:"form"`
	Contender string `json:"contender"`
	Runs      int    `json:"runs"`   // successful runs
	Failed    int    `json:"failed"` // failed runs
	// Median, Min and Max are seconds over the successful runs.
	Median float64 `json:"median_s"`
	Min    float64 `json:"min_s"`
	Max    float64 `json:"max_s"`
	// Ratio is Median over the peer's Median in the same scenario, image and
	// form; 0 when either has no successful run.
	Ratio        float64 `json:"ratio_to_peer"`
	BytesFetched int64   `json:"bytes_fetched"` // median over successful runs
	MaxRSSKiB    int64   `json:"max_rss_kib"`   // the largest over successful runs
	Err          string  `json:"error,omitempty"`
}

type key struct{ scenario, image, form, contender string }

// Summarize groups runs by scenario, image, form and contender, in the order
// each group first appears, and computes each row's figures; Ratio is taken
// against the contender named peer.
func Summarize(runs []Run, peer string) []Row {
	var order []key
	groups := map[key][]Run{}
	for _, r := range runs {
		k := key{r.Scenario, r.Image, r.Form, r.Contender}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	rows := make([]Row, 0, len(order))
	index := map[key]int{}
	for _, k := range order {
		row := Row{Scenario: k.scenario, Image: k.image, Form: k.form, Contender: k.contender}
		var secs []float64
		var bytes []int64
		for _, r := range groups[k] {
			if r.Err != "" {
				row.Failed++
				if row.Err == "" {
					row.Err = r.Err
				}
				continue
			}
			row.Runs++
			secs = append(secs, r.Seconds)
			bytes = append(bytes, r.BytesFetched)
			row.MaxRSSKiB = max(row.MaxRSSKiB, r.MaxRSSKiB)
		}
		if len(secs) > 0 {
			row.Median = Median(secs)
			row.Min = slices.Min(secs)
			row.Max = slices.Max(secs)
			fb := make([]float64, len(bytes))
			for i, b := range bytes {
				fb[i] = float64(b)
			}
			row.BytesFetched = int64(math.Round(Median(fb)))
		}
		index[k] = len(rows)
		rows = append(rows, row)
	}
	for i := range rows {
		r := &rows[i]
		p, ok := index[key{r.Scenario, r.Image, r.Form, peer}]
		if !ok || r.Runs == 0 || rows[p].Runs == 0 || rows[p].Median == 0 {
			continue
		}
		r.Ratio = r.Median / rows[p].Median
	}
	return rows
}

// Median is the middle value of xs (the mean of the two middle ones for an
// even count); NaN for none. xs is not modified.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// Meta describes the run: when, where, and how the link was emulated.
type Meta struct {
	Started  time.Time         `json:"started"`
	Duration string            `json:"duration"`
	Machine  string            `json:"machine"`
	Link     string            `json:"link"`
	Registry string            `json:"registry"`
	Reps     int               `json:"reps"`
	Peer     string            `json:"peer"`
	Versions map[string]string `json:"versions,omitempty"`
	Images   []ImageInfo       `json:"images,omitempty"`
	Notes    []string          `json:"notes,omitempty"`
}

// ImageInfo describes one benchmark image.
type ImageInfo struct {
	Name         string `json:"name"`
	Form         string `json:"form"`
	Layers       int    `json:"layers"`
	Compressed   int64  `json:"compressed_bytes"`
	Uncompressed int64  `json:"uncompressed_bytes"`
	Command      string `json:"cold_command"`
	Err          string `json:"error,omitempty"`
}

// Result is everything one benchmark run produced.
type Result struct {
	Meta Meta  `json:"meta"`
	Rows []Row `json:"rows"`
	Runs []Run `json:"runs"`
}

// WriteJSON writes res as indented JSON.
func WriteJSON(w io.Writer, res *Result) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(res)
}

// WriteMarkdown writes the header of the run and its table.
func WriteMarkdown(w io.Writer, res *Result) error {
	m := res.Meta
	var b strings.Builder
	fmt.Fprintf(&b, "# dabba benchmark, %s\n\n", m.Started.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "- Machine: %s\n", m.Machine)
	fmt.Fprintf(&b, "- Link: %s; registry: %s\n", m.Link, m.Registry)
	fmt.Fprintf(&b, "- %d repetitions per row, contenders alternated run by run; ratio = median / median of %s; took %s\n", m.Reps, m.Peer, m.Duration)
	if len(m.Versions) > 0 {
		var vs []string
		for _, k := range sortedKeys(m.Versions) {
			vs = append(vs, k+" "+m.Versions[k])
		}
		fmt.Fprintf(&b, "- Versions: %s\n", strings.Join(vs, ", "))
	}
	if len(m.Images) > 0 {
		b.WriteString("\n| image | form | layers | compressed | uncompressed | cold command |\n|---|---|---:|---:|---:|---|\n")
		for _, im := range m.Images {
			if im.Err != "" {
				fmt.Fprintf(&b, "| %s | %s | | | | not built: %s |\n", im.Name, im.Form, cell(im.Err))
				continue
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | `%s` |\n", im.Name, im.Form, im.Layers,
				HumanBytes(im.Compressed), HumanBytes(im.Uncompressed), im.Command)
		}
	}
	b.WriteString("\n")
	WriteTable(&b, res.Rows)
	if w := Winners(res.Rows, m.Peer); len(w) > 0 {
		b.WriteString("\nFastest median per scenario and image:\n\n")
		for _, l := range w {
			fmt.Fprintf(&b, "- %s\n", l)
		}
	}
	for _, n := range m.Notes {
		fmt.Fprintf(&b, "\n- %s", n)
	}
	if len(m.Notes) > 0 {
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteTable writes rows as one Markdown table.
func WriteTable(w io.Writer, rows []Row) {
	fmt.Fprintln(w, "| scenario | image | contender | median | min | max | ratio | fetched | peak RSS | runs |")
	fmt.Fprintln(w, "|---|---|---|---:|---:|---:|---:|---:|---:|---|")
	for _, r := range rows {
		img := r.Image
		if r.Form != "" && r.Form != "gzip" {
			img += " (" + r.Form + ")"
		}
		runs := fmt.Sprintf("%d", r.Runs)
		if r.Failed > 0 {
			runs = fmt.Sprintf("%d ok, %d failed: %s", r.Runs, r.Failed, cell(r.Err))
		}
		if r.Runs == 0 {
			fmt.Fprintf(w, "| %s | %s | %s | FAILED | | | | | | %s |\n", r.Scenario, img, r.Contender, runs)
			continue
		}
		ratio := ""
		if r.Ratio > 0 {
			ratio = fmt.Sprintf("%.2f×", r.Ratio)
		}
		rss := ""
		if r.MaxRSSKiB > 0 {
			rss = HumanBytes(r.MaxRSSKiB << 10)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Scenario, img, r.Contender,
			Seconds(r.Median), Seconds(r.Min), Seconds(r.Max), ratio, HumanBytes(r.BytesFetched), rss, runs)
	}
}

// Winners names, for each scenario and image (in table order), the
// contender with the lowest median among those with successful runs, with
// its ratio to peer.
func Winners(rows []Row, peer string) []string {
	// One winner per scenario and image, over all forms: a lazy
	// contender on an optimized form competes with the others on gzip.
	type group struct{ scenario, image string }
	var order []group
	best := map[group]Row{}
	for _, r := range rows {
		g := group{r.Scenario, r.Image}
		b, seen := best[g]
		if !seen {
			order = append(order, g)
		}
		if r.Runs > 0 && (b.Runs == 0 || r.Median < b.Median) {
			best[g] = r
		}
	}
	var out []string
	for _, g := range order {
		b := best[g]
		if b.Runs == 0 {
			out = append(out, fmt.Sprintf("%s, %s: no successful run", g.scenario, g.image))
			continue
		}
		who := b.Contender
		if b.Form != "" && b.Form != "gzip" {
			who += " on " + b.Form
		}
		line := fmt.Sprintf("%s, %s: %s (%s", g.scenario, g.image, who, Seconds(b.Median))
		if b.Ratio > 0 {
			line += fmt.Sprintf(", %.2f× %s", b.Ratio, peer)
		}
		out = append(out, line+")")
	}
	return out
}

// cell makes s fit in one Markdown table cell: one line, no pipes, short.
func cell(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	s = strings.ReplaceAll(s, "|", "/")
	if len(s) > 160 {
		s = s[:157] + "..."
	}
	return s
}

// Seconds formats a duration in seconds with three significant figures.
func Seconds(s float64) string {
	switch {
	case s == 0:
		return "0"
	case s < 0.001:
		return fmt.Sprintf("%.0f µs", s*1e6)
	case s < 1:
		return fmt.Sprintf("%.0f ms", s*1e3)
	case s < 10:
		return fmt.Sprintf("%.2f s", s)
	default:
		return fmt.Sprintf("%.1f s", s)
	}
}

// HumanBytes formats a byte count in binary units; "" for zero.
func HumanBytes(n int64) string {
	const unit = 1024
	switch {
	case n <= 0:
		return ""
	case n < unit:
		return fmt.Sprintf("%d B", n)
	}
	v := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB"} {
		v /= unit
		if v < unit || u == "TiB" {
			if v < 10 {
				return fmt.Sprintf("%.2f %s", v, u)
			}
			return fmt.Sprintf("%.1f %s", v, u)
		}
	}
	return ""
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
