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

// scenarioCmd is the command each run scenario runs in the container; the
// cold pull-to-shell takes the image's own (images.Image.Cold).
var scenarioCmd = map[string][]string{
	scWarm: {"/bin/true"},
	// -xdev: the image's tree, not /proc and /sys.
	scFind: {"sh", "-c", "find / -xdev | wc -l"},
	scTar:  {"sh", "-c", "tar -cf - /usr | wc -c"},
}

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
	repo       string // the repository's root, where dabba is built from
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
	fs.StringSliceVar(&o.forms, "forms", []string{images.FormGzip}, "layer forms: "+strings.Join(images.Forms, ", "))
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

	// Images first: they may take minutes to build the first time.
	b := &images.Builder{Cache: o.cache, Shared: o.shared, Logf: func(f string, a ...any) { slog.Info(fmt.Sprintf(f, a...)) }}
	var built []*images.Image
	for _, name := range o.images {
		for _, form := range o.forms {
			img, err := b.Build(ctx, name, form)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				slog.Warn("image skipped", "image", name, "form", form, "err", err)
				h.meta.Images = append(h.meta.Images, report.ImageInfo{Name: name, Form: form, Err: err.Error()})
				continue
			}
			built = append(built, img)
			h.meta.Images = append(h.meta.Images, report.ImageInfo{Name: name, Form: form, Layers: img.Layers,
				Compressed: img.Compressed, Uncompressed: img.Uncompressed, Command: strings.Join(quoteAll(img.Cold), " ")})
			slog.Info("image ready", "image", name, "form", form, "layers", img.Layers,
				"compressed", report.HumanBytes(img.Compressed), "uncompressed", report.HumanBytes(img.Uncompressed))
		}
	}
	if o.imagesOnly {
		return nil
	}
	if len(built) == 0 {
		return errors.New("no image could be built (see the messages above)")
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

	if err := h.setupNetwork(ctx, built); err != nil {
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

// setupNetwork starts the registry (inside a shaped namespace for the link
// profile), pushes the images, then puts the delaying proxy in front.
func (h *harness) setupNetwork(ctx context.Context, built []*images.Image) error {
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
		repo := "bench/" + img.Name + "-" + strings.ReplaceAll(img.Form, "+", "-") + ":latest"
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
