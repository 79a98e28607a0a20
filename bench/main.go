package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/dabba/dabba/bench/images"
	"github.com/dabba/dabba/bench/link"
	"github.com/dabba/dabba/bench/report"
	"github.com/dabba/dabba/internal/imagebuild"
)

// Scenario names.
const (
	scColdPull  = "cold-pull"
	scColdShell = "cold-pull-to-shell"
	scWarm      = "warm-start"
	scFind      = "read-find"
	scTar       = "read-tar"
)

var allScenarios = []string{scColdPull, scColdShell, scWarm, scFind, scTar}

// defaultForms are the forms of a run without --forms: gzip for the
// contenders that read images whole, gzip+index and estargz for the lazy
// ones (harness.runsOn).
var defaultForms = []string{images.FormGzip, images.FormGzipIndex, images.FormEStargz}

// scenarioCmd is the command each run scenario runs in the container; the
// cold pull-to-shell takes the image's own (images.Image.Cold). The
// read-heavy commands walk the tree twice and print a mark line before,
// between and after (passes): the harness times each walk inside the
// container by when the marks reach it.
var scenarioCmd = map[string][]string{
	scWarm: {"/bin/true"},
	// -xdev: the image's tree, not /proc and /sys.
	scFind: passes("find / -xdev | wc -l"),
	scTar:  passes("tar -cf - /usr 2>/dev/null | wc -c"),
}

// mark is the line a read-heavy command prints around each walk.
const mark = "dabba-bench-mark"

// passes returns the command running the shell command cmd twice in the
// container, with mark lines around.
func passes(cmd string) []string {
	return []string{"sh", "-c", fmt.Sprintf("echo %[1]s; %[2]s; echo %[1]s; %[2]s; echo %[1]s", mark, cmd)}
}

// Rows derived from the marks of a read-heavy run: the first walk in a
// fresh container (sc+sfx1st: every cache of a dabba-fs mount cold, as it
// lives as long as its container) and the same walk again (sc+sfx2nd). The
// row of the scenario itself is the run's time less the second walk: start
// the container, walk once, exit.
const (
	sfx1st = "-1st"
	sfx2nd = "-2nd"
)

type options struct {
	reps       int
	quick      bool
	profile    string
	rate       string
	rtt        time.Duration
	registry   string
	images     []string
	forms      []string
	scenarios  []string
	contenders []string
	work       string
	cache      string
	shared     string
	out        string
	userName   string
	dabba      string
	timeout    time.Duration
	tmpfsSize  string
	logLevel   string
	imagesOnly bool
	peer       string
	tag        string
	render     string
	dabbaLog   string // directory for the debug logs of measured dabba runs
	repo       string // the repository's root, where dabba is built from
	// formMatrix: --forms was not given, so each contender runs on the
	// forms made for it (harness.runsOn), not on every form.
	formMatrix bool
}

// repoRoot is the directory of dabba's go.mod, found from the working
// directory as the go command finds it.
func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w (run the benchmark with Go installed)", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside dabba's repository: run the benchmark from its clone (make bench)")
	}
	return filepath.Dir(mod), nil
}

func main() {
	os.Exit(realMain(os.Args[1:]))
}

func realMain(args []string) int {
	var o options
	fs := pflag.NewFlagSet("bench", pflag.ContinueOnError)
	fs.IntVar(&o.reps, "reps", 5, "repetitions of each scenario, image and contender")
	fs.BoolVar(&o.quick, "quick", false, "a first look in under 3 minutes: 3 repetitions, small images only")
	fs.StringVar(&o.profile, "profile", "link", "link: shaped rate and round trip (--rate, --rtt); loopback: no shaping")
	fs.StringVar(&o.rate, "rate", "100mbit", "emulated link rate (tc syntax)")
	fs.DurationVar(&o.rtt, "rtt", 20*time.Millisecond, "emulated link round-trip time")
	fs.StringVar(&o.peer, "peer", defaultPeer, "the contender ratios are taken against (e.g. dabba-overlay to compare dabba's modes)")
	fs.StringVar(&o.registry, "registry", "docker-registry", "docker-registry (Debian's) or in-process (go-containerregistry's)")
	fs.StringSliceVar(&o.images, "images", []string{"alpine", "minbase", "large"}, "images: "+strings.Join(images.Names, ", "))
	fs.StringSliceVar(&o.forms, "forms", defaultForms, "layer forms: "+strings.Join(images.Forms, ", ")+"; by default the lazy contenders run on gzip+index and estargz and the others on gzip (--quick: no estargz); given, every contender runs on every form named")
	fs.StringSliceVar(&o.scenarios, "scenarios", allScenarios, "scenarios: "+strings.Join(allScenarios, ", "))
	fs.StringSliceVar(&o.contenders, "contenders", defaultContenders(), "contenders: "+strings.Join(allContenders, ", "))
	fs.StringVar(&o.work, "work", "/var/tmp/dabba-bench", "working directory (the tmpfs is mounted below it)")
	fs.StringVar(&o.cache, "cache", "", "image cache (default WORK/cache)")
	fs.StringVar(&o.shared, "shared", "", "directory holding the Alpine minirootfs (default: ../shared/images beside the repository)")
	fs.StringVar(&o.out, "out", "", "results directory (default: bench/results in the repository)")
	fs.StringVar(&o.userName, "user", "dabbatest", "unprivileged user the contenders run as")
	fs.StringVar(&o.dabba, "dabba", "", "dabba binary (default: built from ./cmd/dabba)")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "limit for one command")
	fs.StringVar(&o.tmpfsSize, "tmpfs-size", "16g", "size of the tmpfs for stores and the registry")
	fs.StringVar(&o.logLevel, "log-level", "info", "error, warn, info or debug")
	fs.StringVar(&o.tag, "tag", "", "name the results TIMESTAMP-TAG.* and latest-TAG.* instead of latest.* (--quick: quick)")
	fs.StringVar(&o.render, "render", "", "write the .md and .svg of a results .json again (e.g. after a change of the report code) and stop")
	fs.StringVar(&o.dabbaLog, "dabba-log", "", "diagnostics: run dabba's measured commands with --log-level debug and keep each one's stderr in this directory (slows them a little)")
	fs.BoolVar(&o.imagesOnly, "images-only", false, "build (or check) the cached images and stop")
	help := fs.BoolP("help", "h", false, "show help")
	fs.SetOutput(os.Stderr)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *help {
		fmt.Fprintln(os.Stderr, "Usage: go run ./bench [flags]   (as root; or make bench)")
		fs.PrintDefaults()
		return 0
	}
	level := slog.LevelInfo
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "bench: --log-level %q: %v\n", o.logLevel, err)
		return 2
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
	if !fs.Changed("forms") {
		o.formMatrix = true
		if o.quick {
			o.forms = []string{images.FormGzip, images.FormGzipIndex}
		}
	}
	if o.quick {
		if !fs.Changed("reps") {
			o.reps = 3
		}
		if !fs.Changed("images") {
			o.images = []string{"alpine", "minbase"}
		}
		if !fs.Changed("tag") {
			o.tag = "quick"
		}
	}
	if o.render != "" {
		if err := render(o.render); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			return 1
		}
		return 0
	}
	if o.cache == "" {
		o.cache = filepath.Join(o.work, "cache")
	}
	root, err := repoRoot()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 2
	}
	o.repo = root
	if o.shared == "" {
		o.shared = filepath.Join(root, "..", "shared", "images")
	}
	if o.out == "" {
		o.out = filepath.Join(root, "bench", "results")
	}
	if err := o.check(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	h := &harness{opts: o, cs: contenders(), progressTTY: term.IsTerminal(int(os.Stderr.Fd()))}
	err = h.run(ctx)
	if cerr := h.clean.run(); cerr != nil {
		fmt.Fprintf(os.Stderr, "bench: teardown: %v\n", cerr)
		if err == nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	return 0
}

func (o *options) check() error {
	if o.reps < 1 {
		return fmt.Errorf("--reps %d: want at least 1", o.reps)
	}
	if o.profile != "link" && o.profile != "loopback" {
		return fmt.Errorf("--profile %q: want link or loopback", o.profile)
	}
	if _, err := link.ParseRate(o.rate); err != nil {
		return fmt.Errorf("--rate: %w", err)
	}
	if o.rtt < 0 {
		return fmt.Errorf("--rtt %v: want zero or more", o.rtt)
	}
	if !contains(allContenders, o.peer) {
		return fmt.Errorf("--peer %q: want one of %s", o.peer, strings.Join(allContenders, ", "))
	}
	if strings.ContainsAny(o.tag, "/ ") {
		return fmt.Errorf("--tag %q: want a name without slashes or spaces", o.tag)
	}
	if o.registry != "docker-registry" && o.registry != "in-process" {
		return fmt.Errorf("--registry %q: want docker-registry or in-process", o.registry)
	}
	for _, l := range []struct {
		flag      string
		got, want []string
	}{{"images", o.images, images.Names}, {"forms", o.forms, images.Forms}, {"scenarios", o.scenarios, allScenarios}, {"contenders", o.contenders, allContenders}} {
		for _, g := range l.got {
			if !contains(l.want, g) {
				return fmt.Errorf("--%s: unknown %q; want some of %s", l.flag, g, strings.Join(l.want, ", "))
			}
		}
	}
	if o.dabbaLog != "" {
		abs, err := filepath.Abs(o.dabbaLog)
		if err != nil {
			return fmt.Errorf("--dabba-log: %w", err)
		}
		if err := os.MkdirAll(abs, 0o755); err != nil {
			return fmt.Errorf("--dabba-log: %w", err)
		}
		o.dabbaLog = abs
	}
	if os.Geteuid() != 0 {
		return errors.New("run as root: the harness mounts a tmpfs, makes a network namespace and runs the contenders as the unprivileged user (sudo go run ./bench, or make bench)")
	}
	return nil
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// harness holds one benchmark run's state.
type harness struct {
	opts        options
	cs          map[string]*Contender
	clean       cleanups
	user        *benchUser
	tmpfs       string // the harness's tmpfs
	binDir      string // dabba and dabba-fs
	runtimeDir  string // the user's XDG_RUNTIME_DIR
	tmpDir      string // the user's TMPDIR
	dabba       string
	proxy       *link.Proxy
	registry    *registryServer
	ref         string // host:port contenders use
	imgs        []*benchImage
	builder     *images.Builder
	meta        report.Meta
	runs        []report.Run
	total, done int
	progressTTY bool
	runID       int
	dabbaErr    error  // why dabba could not be built: every dabba row fails with it
	timeBin     string // GNU time, for the peak RSS; "" when absent
	rssN        int
	linkShort   string // "100mbit, 20ms RTT" or "loopback", for the plot's title
}

// storeDir is contender c's store for img. Its name is short because
// podman refuses a runroot path over 50 characters: s/<contender>.<image>,
// indexes into allContenders and the run's images.
func (h *harness) storeDir(c *Contender, img *benchImage) string {
	ci, ii := indexOf(allContenders, c.Name), 0
	for i, im := range h.imgs {
		if im == img {
			ii = i
		}
	}
	return filepath.Join(h.tmpfs, "s", fmt.Sprintf("%d.%d", ci, ii))
}

func indexOf(xs []string, x string) int {
	for i, y := range xs {
		if y == x {
			return i
		}
	}
	return -1
}

func (h *harness) run(ctx context.Context) error {
	o := h.opts
	start := time.Now()
	var err error
	if h.user, err = lookupUser(o.userName); err != nil {
		return err
	}
	h.meta = report.Meta{Started: start, Machine: machine(), Reps: o.reps, Peer: o.peer, Versions: versions()}
	if p, err := exec.LookPath("/usr/bin/time"); err == nil {
		h.timeBin = p
		h.meta.Notes = append(h.meta.Notes, "Peak RSS: the largest resident set of the contender's process tree (GNU time %M: the process and the descendants it waited for; podman's conmon and container processes are not its waited children).")
	} else {
		h.meta.Notes = append(h.meta.Notes, "Peak RSS: wait4's figure, which includes the harness's own RSS at exec as a floor (install the Debian package time for GNU time).")
	}

	// Images first: they may take minutes to build the first time. The
	// estargz form is converted from the gzip form after the learning run
	// (setupNetwork), which needs the registry: only its source is built
	// here.
	h.builder = &images.Builder{Cache: o.cache, Shared: o.shared, Logf: func(f string, a ...any) { slog.Info(fmt.Sprintf(f, a...)) }}
	var built, esgz []*images.Image
	for _, name := range o.images {
		for _, form := range o.forms {
			if !h.formNeeded(form) {
				continue
			}
			src := form
			if form == images.FormEStargz {
				src = images.FormGzip
			}
			img, err := h.builder.Build(ctx, name, src)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				slog.Warn("image skipped", "image", name, "form", form, "err", err)
				h.meta.Images = append(h.meta.Images, report.ImageInfo{Name: name, Form: form, Err: err.Error()})
				continue
			}
			if form == images.FormEStargz {
				esgz = append(esgz, img)
				continue
			}
			built = append(built, img)
			h.imageReady(img)
		}
	}
	if o.imagesOnly {
		for _, img := range esgz {
			slog.Info("image source ready: its estargz form is converted after the learning run of a benchmark run", "image", img.Name, "form", img.Form)
		}
		return nil
	}
	if len(built)+len(esgz) == 0 {
		return errors.New("no image could be built (see the messages above)")
	}
	if o.formMatrix {
		var lazyForms []string
		for _, f := range o.forms {
			if f != images.FormGzip {
				lazyForms = append(lazyForms, f)
			}
		}
		h.meta.Notes = append(h.meta.Notes, fmt.Sprintf("Forms (the default matrix): the lazy contenders run on %s, the others on gzip, which they read alike in every form (`--forms` runs every contender on every form named).", strings.Join(lazyForms, " and ")))
	}

	if err := os.MkdirAll(o.work, 0o755); err != nil {
		return fmt.Errorf("working directory: %w", err)
	}
	for d := o.work; ; d = filepath.Dir(d) {
		if st, err := os.Stat(d); err == nil && st.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("working directory %s: %s is not searchable by others, so %s cannot reach its store (chmod o+x %s, or choose another --work)", o.work, d, h.user.name, d)
		}
		if d == filepath.Dir(d) {
			break
		}
	}
	cleanStale(o.work, h.user.uid)
	// The tmpfs for every store, the registry's storage and the binaries.
	h.tmpfs = filepath.Join(o.work, fmt.Sprintf("tmpfs-%d", os.Getpid()))
	if err := mountTmpfs(h.tmpfs, o.tmpfsSize); err != nil {
		return err
	}
	h.clean.add("tmpfs "+h.tmpfs, func() error { return unmountTmpfs(h.tmpfs) })
	h.clean.add("leftover processes of the runs", h.stopLeftovers)
	h.binDir = filepath.Join(h.tmpfs, "bin")
	h.runtimeDir = filepath.Join(h.tmpfs, "xdg-runtime")
	h.tmpDir = filepath.Join(h.tmpfs, "tmp")
	for _, d := range []string{h.binDir, filepath.Join(h.tmpfs, "s")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := h.mkdirUser(h.runtimeDir); err != nil {
		return err
	}
	os.Chmod(h.runtimeDir, 0o700)
	if err := os.MkdirAll(h.tmpDir, 0o1777); err != nil {
		return err
	}
	os.Chmod(h.tmpDir, 0o1777)
	wantDabba := false
	for _, c := range o.contenders {
		wantDabba = wantDabba || strings.HasPrefix(c, "dabba")
	}
	if !wantDabba {
		// Nothing to build.
	} else if err := h.buildDabba(ctx); err != nil {
		// Reported on every dabba row, not fatal: the peers still run.
		slog.Warn("dabba not built", "err", err)
		h.dabba = "dabba-not-built"
		h.dabbaErr = err
	}

	if err := h.setupNetwork(ctx, built, esgz); err != nil {
		return err
	}

	h.plan()
	for _, img := range h.imgs {
		if err := h.benchImage(ctx, img); err != nil {
			return err
		}
	}
	if h.progressTTY {
		fmt.Fprintln(os.Stderr)
	}
	h.meta.Duration = time.Since(start).Round(time.Second).String()
	return h.write()
}

func quoteAll(ws []string) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		if strings.ContainsAny(w, " '\"|>$") {
			out[i] = "'" + w + "'"
		} else {
			out[i] = w
		}
	}
	return out
}

// imageReady records img in the results' list of images.
func (h *harness) imageReady(img *images.Image) {
	h.meta.Images = append(h.meta.Images, report.ImageInfo{Name: img.Name, Form: img.Form, Layers: img.Layers,
		Compressed: img.Compressed, Uncompressed: img.Uncompressed, Command: strings.Join(quoteAll(img.Cold), " ")})
	slog.Info("image ready", "image", img.Name, "form", img.Form, "layers", img.Layers,
		"compressed", report.HumanBytes(img.Compressed), "uncompressed", report.HumanBytes(img.Uncompressed))
}

// repoOf is the repository:tag of an image form on the registry.
func repoOf(name, form string) string {
	return "bench/" + name + "-" + strings.ReplaceAll(form, "+", "-") + ":latest"
}

// setupNetwork starts the registry (inside a shaped namespace for the link
// profile), pushes the images and the lazy indexes, runs the learning runs
// and converts and pushes the estargz forms (esgz holds their gzip
// sources), then shapes the link and puts the delaying proxy in front.
func (h *harness) setupNetwork(ctx context.Context, built, esgz []*images.Image) error {
	o := h.opts
	var ns *link.Netns
	listen := "127.0.0.1:0"
	if o.profile == "link" {
		pid := os.Getpid()
		var err error
		ns, err = link.NewNetns(ctx, fmt.Sprintf("dabba-bench-%d", pid), fmt.Sprintf("dbb%d", pid%10000000), pid%16000)
		if err != nil {
			return err
		}
		h.clean.add("netns "+ns.Name, ns.Close)
		listen = ns.NSIP.String() + ":0"
	}
	var err error
	switch o.registry {
	case "docker-registry":
		addr := ""
		if ns != nil {
			addr = ns.NSIP.String() + ":5000" // the namespace is ours alone
		} else if addr, err = freeLoopbackAddr(); err != nil {
			return err
		}
		h.registry, err = startDockerRegistry(ctx, ns, filepath.Join(h.tmpfs, "registry"), addr)
	case "in-process":
		h.registry, err = startInProcessRegistry(ns, listen)
	}
	if err != nil {
		return err
	}
	h.clean.add(h.registry.kind+" registry", h.registry.stop)
	for _, img := range built {
		repo := repoOf(img.Name, img.Form)
		slog.Info("pushing", "image", img.Name, "form", img.Form, "registry", h.registry.addr)
		if err := imagebuild.Push(img.Image, h.registry.addr+"/"+repo); err != nil {
			return err
		}
		h.imgs = append(h.imgs, &benchImage{Image: img, repo: repo})
	}
	// Setup, not measured: the lazy index goes beside the images whose
	// form needs it, before the link is shaped and straight to the
	// registry (not through the proxy), so no run pays for it and the cold
	// lazy rows already read through it.
	for _, bi := range h.imgs {
		if images.NeedsIndex(bi.Form) {
			bi.indexErr = h.pushIndex(ctx, h.registry.addr+"/"+bi.repo)
			if bi.indexErr != nil {
				slog.Warn("lazy index not pushed: the image's dabba-lazy rows fail", "image", bi.label(), "err", bi.indexErr)
			}
		}
	}
	if err := h.optimize(ctx, esgz); err != nil {
		return err
	}
	h.sortImages()
	rtt := time.Duration(0)
	if ns != nil {
		if err := ns.Shape(ctx, o.rate); err != nil {
			return err
		}
		rtt = o.rtt
		h.linkShort = fmt.Sprintf("%s, %v RTT", o.rate, o.rtt)
		h.meta.Link = fmt.Sprintf("%s, %v round trip (tbf on a veth into netns %s; delaying proxy on 127.0.0.1)", o.rate, o.rtt, ns.Name)
	} else {
		h.linkShort = "loopback"
		h.meta.Link = "loopback, no shaping (counting proxy on 127.0.0.1)"
	}
	h.proxy, err = link.StartProxy("127.0.0.1:0", h.registry.addr, rtt)
	if err != nil {
		return err
	}
	h.clean.add("proxy", h.proxy.Close)
	h.ref = h.proxy.Addr()
	storage := "storage on tmpfs"
	if h.registry.kind == "in-process" {
		storage = "storage in memory"
	}
	h.meta.Registry = fmt.Sprintf("%s (%s), reached at %s", h.registry.kind, storage, h.ref)
	return nil
}

// sortImages orders the images as --images and --forms name them.
func (h *harness) sortImages() {
	sort.SliceStable(h.imgs, func(i, j int) bool {
		a, b := h.imgs[i], h.imgs[j]
		if a.Name != b.Name {
			return indexOf(h.opts.images, a.Name) < indexOf(h.opts.images, b.Name)
		}
		return indexOf(h.opts.forms, a.Form) < indexOf(h.opts.forms, b.Form)
	})
}

// optimize is the setup of the lazy forms, after the images and indexes are
// pushed and before the link is shaped. For each image with a lazy
// contender on gzip+index or estargz, one learning run (learn) records the
// files the cold command reads; `dabba index push` publishes them with the
// gzip+index image's index (as its prefetch list), and the estargz form is
// converted with them prioritized, as `ctr-remote image optimize` does.
// Then each estargz form (esgz: their gzip sources) is converted and
// pushed. Failures go on the rows they affect and in the notes; only a
// cancelled context stops the benchmark.
func (h *harness) optimize(ctx context.Context, esgz []*images.Image) error {
	type learning struct {
		src   *images.Image // the gzip form
		index *benchImage   // the gzip+index form, nil when not run
		esgz  bool
	}
	var order []string
	todo := map[string]*learning{}
	get := func(name string) *learning {
		if todo[name] == nil {
			order = append(order, name)
			todo[name] = &learning{}
		}
		return todo[name]
	}
	for _, bi := range h.imgs {
		if bi.Form == images.FormGzipIndex {
			l := get(bi.Name)
			l.src, l.index = bi.Image, bi
		}
	}
	for _, img := range esgz {
		l := get(img.Name)
		l.src, l.esgz = img, true
	}
	lazy := false
	for _, name := range h.opts.contenders {
		if c := h.cs[name]; c.Lazy && (h.runsOn(c, images.FormGzipIndex) || h.runsOn(c, images.FormEStargz)) {
			lazy = true
		}
	}
	learned := map[string][]string{}
	why := map[string]string{} // why an image has no learned list
	for _, name := range order {
		l := todo[name]
		if !lazy {
			why[name] = "no dabba-lazy contender selected, so no learning run"
			continue
		}
		if h.dabbaErr != nil {
			why[name] = "dabba could not be built for the learning run: " + h.dabbaErr.Error()
			continue
		}
		if l.index != nil && l.index.indexErr != nil {
			why[name] = "its lazy index was not pushed, so no learning run: " + l.index.indexErr.Error()
			continue
		}
		files, repushErr, err := h.learn(ctx, l.src, l.index)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			slog.Warn("learning run failed: the lazy forms are not optimized", "image", name, "err", err)
			why[name] = "the learning run failed: " + err.Error()
			continue
		}
		learned[name] = files
		var forms []string
		if l.index != nil {
			if repushErr != nil {
				slog.Warn("lazy index not pushed again with the learned list: the image's dabba-lazy rows fail", "image", l.index.label(), "err", repushErr)
				l.index.indexErr = fmt.Errorf("pushing it again after the learning run: %w", repushErr)
			} else {
				forms = append(forms, "gzip+index (`dabba index push` from the learning run's store, publishing what the run read as the index's prefetch list)")
			}
		}
		if l.esgz {
			forms = append(forms, "estargz (converted with the files before each layer's prefetch landmark)")
		}
		h.meta.Notes = append(h.meta.Notes, fmt.Sprintf("%s: optimized by one learning run of the cold command, as `ctr-remote image optimize` does for eStargz: `dabba run --lazy=nobackground` in a throwaway store, before the link was shaped, read %d files; forms %s.",
			name, len(files), strings.Join(forms, " and ")))
	}
	for _, name := range order {
		if why[name] != "" {
			h.meta.Notes = append(h.meta.Notes, fmt.Sprintf("%s: NOT optimized (%s): its gzip+index index has no learned prefetch list and its estargz form no prioritized files.", name, why[name]))
		}
	}

	for _, src := range esgz {
		bi := &benchImage{repo: repoOf(src.Name, images.FormEStargz)}
		img, err := h.builder.BuildEStargz(ctx, src.Name, learned[src.Name])
		if err == nil {
			slog.Info("pushing", "image", img.Name, "form", img.Form, "registry", h.registry.addr)
			err = imagebuild.Push(img.Image, h.registry.addr+"/"+bi.repo)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			slog.Warn("estargz form not made: its rows fail", "image", src.Name, "err", err)
			cp := *src
			cp.Form = images.FormEStargz
			bi.Image, bi.err = &cp, fmt.Errorf("the estargz form was not made: %w", err)
			h.meta.Images = append(h.meta.Images, report.ImageInfo{Name: src.Name, Form: images.FormEStargz, Err: err.Error()})
		} else {
			bi.Image = img
			h.imageReady(img)
			if len(learned[src.Name]) > 0 {
				slog.Info("estargz form optimized", "image", img.Name, "prioritized", img.Prioritized, "missed", len(img.Missed))
			}
			if len(img.Missed) > 0 {
				h.meta.Notes = append(h.meta.Notes, fmt.Sprintf("%s/estargz: %d of the %d learned files are not in the image as files (e.g. %s) and were not prioritized.",
					img.Name, len(img.Missed), len(learned[src.Name]), strings.Join(img.Missed[:min(3, len(img.Missed))], ", ")))
			}
		}
		h.imgs = append(h.imgs, bi)
	}
	return nil
}

// learn is the learning run of src (the gzip form): as the unprivileged
// user, in a throwaway store on the tmpfs (removed after), it runs the
// image's cold command with `dabba run --lazy=nobackground` against the
// gzip+index image index (or, when that form is not run, against a copy of
// src pushed with its index to a repository of its own), and returns the
// files dabba recorded as read, in order of first read (the store's
// lazy/learned/<manifest hex>). With index, it then runs `dabba index
// push` from the same store, which publishes the learned list with the
// index; repushErr is that step's failure.
//
// Setup, not measured: it runs before the link is shaped, through a proxy
// without delay when the registry is not on loopback (dabba run speaks
// plain HTTP only to loopback registries).
func (h *harness) learn(ctx context.Context, src *images.Image, index *benchImage) (files []string, repushErr, err error) {
	repo := ""
	if index != nil {
		repo = index.repo
	} else {
		repo = "bench/" + src.Name + "-learn:latest"
		if err := imagebuild.Push(src.Image, h.registry.addr+"/"+repo); err != nil {
			return nil, nil, fmt.Errorf("pushing %s for the learning run: %w", repo, err)
		}
		if err := h.pushIndex(ctx, h.registry.addr+"/"+repo); err != nil {
			return nil, nil, err
		}
	}
	host := h.registry.addr
	if !isLoopback(host) {
		p, err := link.StartProxy("127.0.0.1:0", h.registry.addr, 0)
		if err != nil {
			return nil, nil, fmt.Errorf("learning run: %w", err)
		}
		defer p.Close()
		host = p.Addr()
	}
	store := filepath.Join(h.tmpfs, "learn-store")
	if err := h.wipe(store); err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(store)
	start := time.Now()
	argv := append([]string{h.dabba, "--root", store, "run", "--rm", "--network", "none", "--lazy=nobackground", host + "/" + repo}, src.Cold...)
	if res := h.exec(ctx, argv, store, nil); res.Err != nil {
		return nil, nil, fmt.Errorf("%s: %w", strings.Join(quoteAll(argv), " "), res.Err)
	}
	md, err := src.Image.Digest()
	if err != nil {
		return nil, nil, err
	}
	if files, err = readLearned(store, md.Hex); err != nil {
		return nil, nil, err
	}
	slog.Info("learning run", "image", src.Name, "files", len(files), "took", time.Since(start).Round(time.Millisecond))
	if index != nil {
		ref := h.registry.addr + "/" + repo
		res := h.exec(ctx, []string{h.dabba, "--root", store, "index", "push", "-q", "--tls-verify=false", ref}, store, nil)
		if res.Err != nil {
			return files, fmt.Errorf("dabba index push %s: %w", ref, res.Err), nil
		}
		slog.Info("lazy index pushed with the learned list", "ref", ref, "artifact", strings.TrimSpace(res.Stdout))
	}
	return files, nil, nil
}

// readLearned reads the list of files dabba's lazy runs in store recorded
// for the image of manifest hex md: lazy/learned/<md>, one path per line,
// in order of first read (other files there, such as <md>.json, the
// ranges read, are dabba's own). When no file has that name and exactly
// one list is there (the manifest's digest as dabba saw it differs), that
// one.
func readLearned(store, md string) ([]string, error) {
	dir := filepath.Join(store, "lazy", "learned")
	b, err := os.ReadFile(filepath.Join(dir, md))
	if errors.Is(err, os.ErrNotExist) {
		var lists []string
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if e.Type().IsRegular() && !strings.Contains(e.Name(), ".") {
				lists = append(lists, e.Name())
			}
		}
		if len(lists) == 1 {
			slog.Warn("learned list under another manifest digest", "want", md, "found", lists[0])
			b, err = os.ReadFile(filepath.Join(dir, lists[0]))
		}
	}
	if err != nil {
		return nil, fmt.Errorf("the learning run left no list of the files it read (want %s): %w", filepath.Join(dir, md), err)
	}
	var files []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			files = append(files, l)
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("the learning run's list of files read, %s, is empty", filepath.Join(dir, md))
	}
	return files, nil
}

// isLoopback says whether host:port is on the loopback interface.
func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// pushIndex runs `dabba index push` on ref as the unprivileged user, from
// a throwaway store on the tmpfs, removed after.
func (h *harness) pushIndex(ctx context.Context, ref string) error {
	if h.dabbaErr != nil {
		return h.dabbaErr
	}
	store := filepath.Join(h.tmpfs, "index-store")
	if err := h.wipe(store); err != nil {
		return err
	}
	defer os.RemoveAll(store)
	start := time.Now()
	res := h.exec(ctx, []string{h.dabba, "--root", store, "index", "push", "-q", "--tls-verify=false", ref}, store, nil)
	if res.Err != nil {
		return fmt.Errorf("dabba index push %s: %w", ref, res.Err)
	}
	slog.Info("lazy index pushed", "ref", ref, "artifact", strings.TrimSpace(res.Stdout), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// buildDabba builds dabba and dabba-fs into the tmpfs, or copies --dabba
// (and a dabba-fs beside it), and records dabba's version.
func (h *harness) buildDabba(ctx context.Context) error {
	dst := filepath.Join(h.binDir, "dabba")
	if h.opts.dabba != "" {
		out, err := exec.CommandContext(ctx, "cp", h.opts.dabba, dst).CombinedOutput()
		if err != nil {
			return fmt.Errorf("copying %s: %w: %s", h.opts.dabba, err, out)
		}
		if fsBin := filepath.Join(filepath.Dir(h.opts.dabba), "dabba-fs"); fileExists(fsBin) {
			exec.CommandContext(ctx, "cp", fsBin, filepath.Join(h.binDir, "dabba-fs")).Run()
		}
	} else {
		version := "bench"
		git := exec.CommandContext(ctx, "git", "describe", "--always", "--dirty")
		git.Dir = h.opts.repo
		if out, err := git.Output(); err == nil {
			version = strings.TrimSpace(string(out))
		}
		for _, c := range []string{"dabba", "dabba-fs"} {
			build := exec.CommandContext(ctx, "go", "build", "-ldflags", "-X main.version="+version, "-o", filepath.Join(h.binDir, c), "./cmd/"+c)
			build.Dir = h.opts.repo
			if out, err := build.CombinedOutput(); err != nil {
				return fmt.Errorf("go build ./cmd/%s: %w: %s", c, err, strings.TrimSpace(string(out)))
			}
		}
	}
	h.dabba = dst
	if v, err := exec.CommandContext(ctx, dst, "version").Output(); err == nil {
		h.meta.Versions["dabba"] = strings.TrimPrefix(strings.TrimSpace(string(v)), "dabba ")
	}
	return nil
}

func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// stopLeftovers kills, by PID, the processes our runs left behind: rootless
// podman's pause process (catatonit) and anything else of the user's that
// carries the runtime directory the harness made for this run in its
// environment, which no other process can have.
func (h *harness) stopLeftovers() error {
	if h.runtimeDir == "" {
		return nil
	}
	return killByRuntimeDir(h.user.uid, h.runtimeDir)
}

// killByRuntimeDir kills the processes of uid whose environment has
// XDG_RUNTIME_DIR=dir.
func killByRuntimeDir(uid int, dir string) error {
	mark := []byte("\x00XDG_RUNTIME_DIR=" + dir + "\x00")
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var errs []error
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 1 || pid == os.Getpid() {
			continue
		}
		st, err := os.Stat("/proc/" + e.Name())
		if err != nil {
			continue
		}
		if sys, ok := st.Sys().(*syscall.Stat_t); !ok || int(sys.Uid) != uid {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !bytes.Contains(append([]byte{0}, env...), mark) {
			continue
		}
		slog.Debug("stopping a leftover process", "pid", pid)
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("pid %d: %w", pid, err))
		}
	}
	return errors.Join(errs...)
}

func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "MemTotal:") {
				fmt.Sscan(strings.TrimSpace(strings.TrimPrefix(l, "MemTotal:")), &kb)
			}
		}
		mem = report.HumanBytes(kb << 10)
	}
	var u syscall.Utsname
	syscall.Uname(&u)
	rel := func(a [65]int8) string {
		var b []byte
		for _, c := range a {
			if c == 0 {
				break
			}
			b = append(b, byte(c))
		}
		return string(b)
	}
	deb, _ := os.ReadFile("/etc/debian_version")
	return fmt.Sprintf("%s, %d CPUs, %s RAM, Linux %s, Debian %s", model, runtime.NumCPU(), mem, rel(u.Release), strings.TrimSpace(string(deb)))
}

func versions() map[string]string {
	v := map[string]string{"go": runtime.Version()}
	for _, c := range [][]string{{"podman", "--version"}, {"skopeo", "--version"}, {"runc", "--version"}} {
		out, err := exec.Command(c[0], c[1:]...).Output()
		if err != nil {
			continue
		}
		f := strings.Fields(strings.SplitN(string(out), "\n", 2)[0])
		if len(f) >= 3 {
			v[c[0]] = f[2]
		}
	}
	return v
}
