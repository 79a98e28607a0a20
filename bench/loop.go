package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dabba/dabba/bench/images"
	"github.com/dabba/dabba/bench/report"
)

// selected returns the chosen contenders that take part in scenario sc on
// img.
func (h *harness) selected(sc string, img *benchImage) []*Contender {
	var out []*Contender
	for _, name := range h.opts.contenders {
		c := h.cs[name]
		if !h.runsOn(c, img.Form) {
			continue
		}
		switch sc {
		case scColdPull:
			if c.Cold && c.Pull != nil {
				out = append(out, c)
			}
		case scColdShell:
			if c.Cold && c.Run != nil {
				out = append(out, c)
			}
		default:
			if c.Run != nil {
				out = append(out, c)
			}
		}
	}
	return out
}

func (h *harness) scenarioSelected(sc string) bool { return contains(h.opts.scenarios, sc) }

// plan counts the runs, for the progress line.
func (h *harness) plan() {
	for _, img := range h.imgs {
		for _, sc := range allScenarios {
			if h.scenarioSelected(sc) {
				h.total += len(h.selected(sc, img)) * h.opts.reps
			}
		}
	}
}

// runsOn says whether contender c runs on images of form. With --forms
// given, every contender runs on every form. By default (the form matrix)
// the lazy contenders run on the forms made for them, gzip+index and
// estargz, and the others on gzip only: they read the other forms as
// plain gzip, so their rows there would repeat the gzip rows at the cost
// of full pulls of every image.
func (h *harness) runsOn(c *Contender, form string) bool {
	if !h.opts.formMatrix {
		return true
	}
	if c.Lazy {
		return form != images.FormGzip
	}
	return form == images.FormGzip
}

// formNeeded says whether some selected contender runs on form.
func (h *harness) formNeeded(form string) bool {
	for _, name := range h.opts.contenders {
		if h.runsOn(h.cs[name], form) {
			return true
		}
	}
	return false
}

// lazySelected says whether a lazy contender (dabba-lazy*) is selected.
func (h *harness) lazySelected() bool {
	for _, name := range h.opts.contenders {
		if h.cs[name].Lazy {
			return true
		}
	}
	return false
}

// rotate returns cs starting at the k-th: contenders alternate run by run,
// so none always runs right after another's cleanup.
func rotate(cs []*Contender, k int) []*Contender {
	if len(cs) == 0 {
		return cs
	}
	k %= len(cs)
	return append(append([]*Contender{}, cs[k:]...), cs[:k]...)
}

func (h *harness) vars(c *Contender, img *benchImage) map[string]string {
	h.runID++
	return map[string]string{
		"dabba": h.dabba,
		"store": h.storeDir(c, img),
		"ref":   h.ref + "/" + img.repo,
		"id":    fmt.Sprintf("bench-%d-%d", os.Getpid(), h.runID),
	}
}

// runArgv is the command line that runs cmd with contender c.
func (h *harness) runArgv(c *Contender, img *benchImage, cmd []string) ([]string, error) {
	v := h.vars(c, img)
	if c.Bundle != nil {
		b, err := c.Bundle(h, c, img, cmd)
		if err != nil {
			return nil, err
		}
		v["bundle"] = b
	}
	return expand(c.Run, v, cmd), nil
}

// benchImage runs every selected scenario on img.
func (h *harness) benchImage(ctx context.Context, img *benchImage) error {
	for _, sc := range []string{scColdPull, scColdShell} {
		if !h.scenarioSelected(sc) {
			continue
		}
		cs := h.selected(sc, img)
		for rep := 1; rep <= h.opts.reps; rep++ {
			for _, c := range rotate(cs, rep-1) {
				store := h.storeDir(c, img)
				if err := h.wipe(store); err != nil {
					return err
				}
				var argv []string
				if sc == scColdPull {
					argv = expand(c.Pull, h.vars(c, img), nil)
				} else {
					argv = expand(c.Run, h.vars(c, img), img.Cold)
				}
				if err := h.measure(ctx, sc, img, c, rep, argv, nil); err != nil {
					return err
				}
			}
		}
		for _, c := range cs {
			if err := h.wipe(h.storeDir(c, img)); err != nil {
				return err
			}
		}
	}

	var warm []string
	for _, sc := range []string{scWarm, scFind, scTar} {
		if h.scenarioSelected(sc) {
			warm = append(warm, sc)
		}
	}
	if len(warm) == 0 {
		return nil
	}
	cs := h.selected(scWarm, img)
	prepErr := map[string]error{}
	for _, c := range cs {
		h.progress(fmt.Sprintf("preparing %s for %s", img.label(), c.Name))
		prepErr[c.Name] = h.prepareWarm(ctx, c, img)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	for _, sc := range warm {
		for rep := 1; rep <= h.opts.reps; rep++ {
			for _, c := range rotate(cs, rep-1) {
				if err := prepErr[c.Name]; err != nil {
					if err := h.measure(ctx, sc, img, c, rep, nil, fmt.Errorf("preparing the warm store: %w", err)); err != nil {
						return err
					}
					continue
				}
				argv, err := h.runArgv(c, img, scenarioCmd[sc])
				if err := h.measure(ctx, sc, img, c, rep, argv, err); err != nil {
					return err
				}
			}
		}
	}
	for _, c := range cs {
		if err := h.wipe(h.storeDir(c, img)); err != nil {
			return err
		}
	}
	return nil
}

// prepareWarm makes img local for c (unmeasured), then runs /bin/true once
// so the measured runs find everything extracted and cached.
func (h *harness) prepareWarm(ctx context.Context, c *Contender, img *benchImage) error {
	store := h.storeDir(c, img)
	if err := h.wipe(store); err != nil {
		return err
	}
	if h.dabbaErr != nil && strings.HasPrefix(c.Name, "dabba") {
		return h.dabbaErr
	}
	if img.err != nil {
		return img.err
	}
	if c.Prepare != nil {
		if err := c.Prepare(ctx, h, c, img); err != nil {
			return err
		}
	} else {
		tmpl := c.Warm
		if c.Lazy && img.Form != images.FormGzip {
			// gzip+index has its index (pushed, with the learned prefetch
			// list, before the measured runs); eStargz needs none.
			tmpl = nil
		}
		if tmpl == nil {
			tmpl = c.Pull
		}
		if tmpl != nil {
			if res := h.exec(ctx, expand(tmpl, h.vars(c, img), nil), store, nil); res.Err != nil {
				return res.Err
			}
		}
	}
	argv, err := h.runArgv(c, img, []string{"/bin/true"})
	if err != nil {
		return err
	}
	if res := h.exec(ctx, argv, store, nil); res.Err != nil {
		return fmt.Errorf("first run of /bin/true: %w", res.Err)
	}
	return nil
}

// measure runs argv (unless failed is set: then it records the failure) and
// records the run. It returns an error only when the benchmark must stop.
func (h *harness) measure(ctx context.Context, sc string, img *benchImage, c *Contender, rep int, argv []string, failed error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	r := report.Run{Scenario: sc, Image: img.Name, Form: img.Form, Contender: c.Name, Rep: rep}
	if failed == nil && h.dabbaErr != nil && strings.HasPrefix(c.Name, "dabba") {
		failed = h.dabbaErr
	}
	if failed == nil && img.err != nil {
		failed = img.err
	}
	if failed == nil && img.indexErr != nil && c.Lazy {
		failed = fmt.Errorf("the image's lazy index was not pushed: %w", img.indexErr)
	}
	var marks []time.Duration
	if failed != nil {
		r.Err = failed.Error()
	} else {
		var log *os.File
		if h.opts.dabbaLog != "" && len(argv) > 0 && argv[0] == h.dabba {
			argv = append([]string{argv[0], "--log-level", "debug"}, argv[1:]...)
			name := fmt.Sprintf("%s-%s-%s-%s-%d.log", sc, img.Name, strings.ReplaceAll(img.Form, "+", "-"), c.Name, rep)
			var err error
			if log, err = os.Create(filepath.Join(h.opts.dabbaLog, name)); err != nil {
				return fmt.Errorf("--dabba-log: %w", err)
			}
			defer log.Close()
		}
		h.proxy.Reset()
		var res result
		if log != nil {
			res = h.execLog(ctx, argv, h.storeDir(c, img), nil, log)
		} else {
			res = h.exec(ctx, argv, h.storeDir(c, img), nil)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		down, _ := h.proxy.Bytes()
		r.Seconds = res.Elapsed.Seconds()
		marks = res.Marks
		r.BytesFetched = down
		r.MaxRSSKiB = res.MaxRSSKiB
		r.Output = strings.TrimSpace(res.Stdout)
		if len(r.Output) > 200 {
			r.Output = r.Output[len(r.Output)-200:]
		}
		if res.Err != nil {
			r.Err = res.Err.Error()
		}
	}
	h.runs = append(h.runs, withPasses(r, marks)...)
	h.done++
	status := report.Seconds(r.Seconds)
	if r.Err != "" {
		status = "failed: " + firstLine(r.Err)
	}
	h.progress(fmt.Sprintf("%s %s %s rep %d/%d: %s", sc, img.label(), c.Name, rep, h.opts.reps, status))
	return nil
}

// withPasses returns run r and, when the command printed the three marks
// of passes, the runs of its two walks timed inside the container; r then
// counts the first walk only (its time less the second walk's).
func withPasses(r report.Run, marks []time.Duration) []report.Run {
	if r.Err != "" || len(marks) != 3 {
		return []report.Run{r}
	}
	first := report.Run{Scenario: r.Scenario + sfx1st, Image: r.Image, Form: r.Form, Contender: r.Contender, Rep: r.Rep,
		Seconds: (marks[1] - marks[0]).Seconds(), Output: r.Output}
	again := first
	again.Scenario, again.Seconds = r.Scenario+sfx2nd, (marks[2] - marks[1]).Seconds()
	r.Seconds -= again.Seconds
	return []report.Run{r, first, again}
}

// summarize is report.Summarize, then, for the rows of a form in which the
// peer has no row (the form matrix runs the peer on gzip only), the ratio
// against the peer's row of the same scenario and image in form gzip;
// crossForm says whether any row took one.
func summarize(runs []report.Run, peer string) (rows []report.Row, crossForm bool) {
	rows = report.Summarize(runs, peer)
	type key struct{ scenario, image, form string }
	peerRow := map[key]*report.Row{}
	for i := range rows {
		if r := &rows[i]; r.Contender == peer {
			peerRow[key{r.Scenario, r.Image, r.Form}] = r
		}
	}
	for i := range rows {
		r := &rows[i]
		if r.Ratio != 0 || r.Runs == 0 || r.Form == images.FormGzip || peerRow[key{r.Scenario, r.Image, r.Form}] != nil {
			continue
		}
		if p := peerRow[key{r.Scenario, r.Image, images.FormGzip}]; p != nil && p.Runs > 0 && p.Median > 0 {
			r.Ratio = r.Median / p.Median
			crossForm = true
		}
	}
	return rows, crossForm
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 100 {
		s = s[:97] + "..."
	}
	return s
}

// progress prints the progress line: rewritten in place on a terminal, one
// line per run otherwise.
func (h *harness) progress(msg string) {
	line := fmt.Sprintf("[%d/%d] %s", h.done, h.total, msg)
	if h.progressTTY {
		w := 120
		if len(line) > w {
			line = line[:w]
		}
		fmt.Fprintf(os.Stderr, "\r\033[K%s", line)
		return
	}
	fmt.Fprintln(os.Stderr, line)
}

// render recomputes the rows of a results file from its raw runs and writes
// its .md and .svg again beside it.
func render(jsonPath string) error {
	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		return err
	}
	var res report.Result
	if err := json.Unmarshal(raw, &res); err != nil {
		return fmt.Errorf("results %s: %w", jsonPath, err)
	}
	res.Rows, _ = summarize(res.Runs, res.Meta.Peer)
	base := strings.TrimSuffix(jsonPath, ".json")
	link := res.Meta.Link
	if i := strings.Index(link, " ("); i > 0 {
		link = link[:i]
	}
	var md, svg bytes.Buffer
	if err := report.WriteMarkdown(&md, &res); err != nil {
		return err
	}
	if err := report.WriteSVG(&svg, plotTitle(res.Meta.Started, link), res.Rows, allContenders, plotScenarios...); err != nil {
		return err
	}
	if err := os.WriteFile(base+".md", md.Bytes(), 0o644); err != nil {
		return err
	}
	return os.WriteFile(base+".svg", svg.Bytes(), 0o644)
}

// plotScenarios orders the plot's panels: pull-to-shell first.
var plotScenarios = []string{scColdShell, scColdPull, scWarm, scFind, scTar}

func plotTitle(started time.Time, link string) string {
	return fmt.Sprintf("dabba benchmark %s — %s (median, whiskers min–max)", started.UTC().Format("2006-01-02 15:04 MST"), link)
}

// write saves the results as Markdown, JSON and SVG, timestamped and as
// latest.*, and prints the table.
func (h *harness) write() error {
	rows, crossForm := summarize(h.runs, h.opts.peer)
	if crossForm {
		h.meta.Notes = append(h.meta.Notes, fmt.Sprintf("Rows in a form where %[1]s did not run (the default form matrix) take their ratio against %[1]s's row of the same image in form gzip: the same files, which %[1]s reads as plain gzip in every form.", h.opts.peer))
	}
	res := &report.Result{Meta: h.meta, Runs: h.runs, Rows: rows}
	if err := os.MkdirAll(h.opts.out, 0o755); err != nil {
		return fmt.Errorf("results directory %s: %w", h.opts.out, err)
	}
	stamp, latest := h.meta.Started.UTC().Format("2006-01-02T150405Z"), "latest"
	if h.opts.tag != "" {
		stamp += "-" + h.opts.tag
		latest += "-" + h.opts.tag
	}
	title := plotTitle(h.meta.Started, h.linkShort)
	writers := map[string]func(f *os.File) error{
		"md":   func(f *os.File) error { return report.WriteMarkdown(f, res) },
		"json": func(f *os.File) error { return report.WriteJSON(f, res) },
		"svg": func(f *os.File) error {
			return report.WriteSVG(f, title, res.Rows, allContenders, plotScenarios...)
		},
	}
	for ext, wr := range writers {
		for _, name := range []string{stamp + "." + ext, latest + "." + ext} {
			p := filepath.Join(h.opts.out, name)
			f, err := os.Create(p)
			if err != nil {
				return err
			}
			if err := wr(f); err != nil {
				f.Close()
				return fmt.Errorf("writing %s: %w", p, err)
			}
			if err := f.Close(); err != nil {
				return err
			}
		}
	}
	report.WriteMarkdown(os.Stdout, res)
	fmt.Fprintf(os.Stderr, "bench: results in %s (%s.{md,json,svg}, %s.*) after %s\n", h.opts.out, stamp, latest, time.Since(h.meta.Started).Round(time.Second))
	return nil
}
