package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/pflag"

	"github.com/dabba/dabba/sandbox"
	"github.com/dabba/dabba/sandbox/cgroups"
	"github.com/dabba/dabba/store"
)

// runOptions are the flags of `dabba run`, with podman's names.
type runOptions struct {
	reg              registryFlags // for the pull of an image not in the store
	pull             string        // --pull: store.PullPolicy
	interactive, tty bool
	env              []string
	entrypoint       string
	workdir          string
	user             string
	hostname         string
	name             string
	rm               bool
	init             bool
	singleID         bool
	network          string
	publish          []string
	memory           string
	pidsLimit        int64
	cpus             string
	rootfs           string
	readOnly         bool
	lazy             lazyFlags
}

// networkSetup is what a private network needs: the hook that connects the
// namespace, and the container's /etc/resolv.conf and /etc/hosts.
type networkSetup struct {
	hook              sandbox.NetworkHook
	resolvConf, hosts string
}

func newRunCmd(g *globals) *command {
	o := &runOptions{}
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	fs.BoolVarP(&o.interactive, "interactive", "i", false, "keep stdin open")
	fs.BoolVarP(&o.tty, "tty", "t", false, "give the command a pseudo-terminal")
	fs.StringArrayVarP(&o.env, "env", "e", nil, "set an environment variable (K=V, or K to take it from dabba's environment)")
	fs.StringVar(&o.entrypoint, "entrypoint", "", "replace the image's entrypoint (a command, or a JSON array); \"\" clears it")
	fs.StringVarP(&o.workdir, "workdir", "w", "", "working directory inside the container")
	fs.StringVarP(&o.user, "user", "u", "", "user[:group] to run as (name or id, looked up in the image)")
	fs.StringVar(&o.hostname, "hostname", "", "the container's hostname (default: the start of its id)")
	fs.StringVar(&o.name, "name", "", "name the container")
	fs.BoolVar(&o.rm, "rm", true, "remove the container when it exits (always, for now: containers are temporary)")
	fs.BoolVar(&o.init, "init", false, "run the command under a minimal init that reaps zombies and forwards signals")
	fs.BoolVar(&o.singleID, "single-id", false, "map only your own uid and gid (no /etc/subuid ranges needed; chown inside fails)")
	fs.StringVar(&o.network, "network", "", "network: slirp4netns[:allow_host_loopback=true,mtu=N] (default), none or host")
	fs.StringArrayVarP(&o.publish, "publish", "p", nil, "publish a port: [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|/udp] (slirp4netns)")
	fs.StringVarP(&o.memory, "memory", "m", "", "memory limit (e.g. 512m, 1g)")
	fs.Int64Var(&o.pidsLimit, "pids-limit", 0, "limit the number of processes")
	fs.StringVar(&o.cpus, "cpus", "", "CPU limit as a number of CPUs (e.g. 1.5)")
	fs.BoolVar(&o.readOnly, "read-only", false, "mount the image read-only (/tmp, /run and /dev stay writable)")
	fs.StringVar(&o.pull, "pull", "missing", "when to ask the registry about the image: missing (only when the store does not know it), newer (check the tag and fetch what changed; the store's image when the registry does not answer), always (as newer, but the registry must answer), never")
	fs.StringVar(&o.rootfs, "rootfs", "", "root filesystem: fuse (the image served from its layers in the store by dabba-fs, nothing extracted; the default where /dev/fuse is usable), overlay (layers extracted once, kernel overlayfs; the default elsewhere), or an absolute directory path to run in instead of an image (then no IMAGE argument)")
	o.lazy.add(fs)
	o.reg.add(fs)
	return &command{
		name:  "run",
		usage: "[flags] IMAGE [COMMAND [ARG...]]",
		short: "run a command in a new container (temporary: it is removed when it exits)",
		// Flags after IMAGE belong to the command.
		noInterspersed: true,
		flags:          fs,
		run: func(ctx context.Context, g *globals, args []string) error {
			return o.run(ctx, g, fs, args)
		},
	}
}

func usageErr(format string, a ...any) error {
	return &exitError{code: exitUsageStatus, err: fmt.Errorf(format, a...)}
}

func (o *runOptions) run(ctx context.Context, g *globals, fs *pflag.FlagSet, args []string) error {
	// Check everything the user typed before any slow work.
	dirRootfs := strings.HasPrefix(o.rootfs, "/")
	if !dirRootfs && o.rootfs != "" && o.rootfs != rootfsOverlay && o.rootfs != rootfsFUSE {
		return usageErr("--rootfs %q: want fuse, overlay or an absolute directory path", o.rootfs)
	}
	if !dirRootfs && len(args) == 0 {
		return usageErr("no image given: dabba run [flags] IMAGE [COMMAND [ARG...]]")
	}
	lm, err := o.lazy.parse(g)
	if err != nil {
		return usageErr("%w", err)
	}
	platform, insecure, err := o.reg.parse()
	if err != nil {
		return err
	}
	policy, err := store.ParsePullPolicy(o.pull)
	if err != nil {
		return usageErr("%w", err)
	}
	lm.opts.Platform, lm.opts.Insecure, lm.opts.Pull = platform, insecure, policy
	pull := store.PullOptions{Platform: platform, Insecure: insecure, Progress: g.stderr}
	if lm.on && (dirRootfs || o.rootfs == rootfsOverlay) {
		return usageErr("--lazy needs --rootfs fuse (the image is served over FUSE as it is fetched): drop --rootfs %s, or drop --lazy to pull the image first", o.rootfs)
	}
	var ep *[]string
	if fs.Changed("entrypoint") {
		e, err := parseEntrypoint(o.entrypoint)
		if err != nil {
			return usageErr("%w", err)
		}
		ep = &e
	}
	netMode, err := o.networkMode()
	if err != nil {
		return usageErr("%w", err)
	}
	limits, err := o.limits()
	if err != nil {
		return usageErr("%w", err)
	}
	if o.name != "" && !validName(o.name) {
		return usageErr("--name %q: want letters, digits, '_', '.', '-', starting with a letter or digit", o.name)
	}
	for _, kv := range o.env {
		if k, _, _ := strings.Cut(kv, "="); k == "" {
			return usageErr("-e %q: want KEY=VALUE or KEY", kv)
		}
	}

	id := newID()
	if o.name != "" {
		st, err := openStore(g)
		if err != nil {
			return err
		}
		release, err := st.ClaimName(o.name, id)
		if err != nil {
			return err
		}
		defer release()
	}
	hostname := o.hostname
	if hostname == "" {
		hostname = id[:12]
	}
	var nw *networkSetup
	if netMode != "none" && netMode != "host" {
		if nw, err = newNetwork(ctx, o.network, o.publish, hostname); err != nil {
			return &exitError{code: exitDabba, err: err}
		}
	}
	// The cgroup first: without delegation, fail before any slow work.
	var cgroup sandbox.Cgroup
	if !limits.IsZero() {
		cg, err := cgroups.New(id[:12], limits)
		switch {
		case err != nil && cgroups.Ignorable(err):
			// What podman does on cgroup v1 without delegation: say so and
			// run without limits.
			fmt.Fprintf(g.stderr, "dabba run: warning: resource limits ignored: %v\n", err)
		case err != nil:
			return &exitError{code: exitDabba, err: err}
		default:
			defer func() {
				if err := cg.Remove(); err != nil {
					fmt.Fprintf(g.stderr, "dabba run: removing the cgroup: %v\n", err)
				}
			}()
			cgroup = cg
		}
	}

	maps, warning := sandbox.ResolveIDMaps(o.singleID)
	if warning != "" {
		fmt.Fprintln(g.stderr, warning)
	}

	var (
		imgCfg v1.Config
		rootfs sandbox.Rootfs
		rest   []string
		fuse   *fuseRootfs
		prep   *preparedRootfs
	)
	if dirRootfs {
		rootfs = sandbox.Rootfs{Type: sandbox.RootfsDir, Dir: filepath.Clean(o.rootfs)}
		rest = args
	} else {
		mode, why := chooseRootfs(o.rootfs)
		if lm.on {
			mode, why = rootfsFUSE, "--lazy"
		}
		slog.Debug("rootfs", "stage", "run", "type", mode, "why", why)
		if o.rootfs == rootfsFUSE || lm.on {
			if err := fuseUsable(); err != nil {
				flag, alt := "--rootfs fuse", "run with --rootfs overlay"
				if lm.on {
					flag, alt = "--lazy", "run without --lazy (the image is then pulled first)"
				}
				return &exitError{code: exitDabba, err: fmt.Errorf("%s: %w (load the fuse module and make /dev/fuse readable and writable by you, or %s)", flag, err, alt)}
			}
		}
		p, err := prepareRootfs(ctx, g, args[0], id, mode, maps, lm, policy, pull)
		if err != nil {
			return err
		}
		p.cleanup = sync.OnceFunc(p.cleanup) // also run by the fallback below
		defer p.cleanup()
		prep = p
		imgCfg, rootfs, rest, fuse = p.config, p.rootfs, args[1:], p.fuse
	}

	rootfs.ReadOnly = o.readOnly

	argv, err := sandbox.ResolveArgs(imgCfg.Entrypoint, imgCfg.Cmd, ep, rest)
	if err != nil {
		return usageErr("%w", err)
	}
	writeInfo := func() error {
		if prep == nil {
			return nil
		}
		return prep.st.WriteContainerInfo(store.ContainerInfo{ID: id, Name: o.name, Image: prep.image, ImageID: prep.imageID,
			Rootfs: prep.kind, Command: argv, Created: time.Now(), PID: os.Getpid()})
	}
	if err := writeInfo(); err != nil {
		return err
	}
	workdir := o.workdir
	if workdir == "" {
		workdir = imgCfg.WorkingDir
	}
	if workdir != "" && !filepath.IsAbs(workdir) {
		return usageErr("--workdir %q: want an absolute path", workdir)
	}
	user := o.user
	if user == "" {
		user = imgCfg.User
	}
	cfg := &sandbox.Config{
		ID:             id,
		Rootfs:         rootfs,
		Args:           argv,
		Env:            sandbox.BaseEnv(hostname, o.tty, imgCfg.Env, o.env, os.LookupEnv),
		Cwd:            workdir,
		User:           user,
		Hostname:       hostname,
		TTY:            o.tty,
		Init:           o.init,
		IDMaps:         maps,
		Cgroup:         cgroup,
		Stdout:         g.stdout,
		Stderr:         g.stderr,
		ForwardSignals: true,
		LogDebug:       strings.EqualFold(g.logLevel, "debug"),
	}
	if o.interactive {
		cfg.Stdin = os.Stdin
	}
	switch netMode {
	case "none":
		cfg.Network = sandbox.NetworkNone
	case "host":
		cfg.Network = sandbox.NetworkHost
		cfg.Hosts = hostHosts(hostname)
		// The host's resolvers, loopback ones included: same namespace.
		if b, err := os.ReadFile("/etc/resolv.conf"); err == nil && len(b) > 0 {
			cfg.ResolvConf = string(b)
		}
	default:
		cfg.Network = sandbox.NetworkPrivate
		cfg.NetworkHook, cfg.ResolvConf, cfg.Hosts = nw.hook, nw.resolvConf, nw.hosts
		if cfg.ResolvConf == "" {
			cfg.ResolvConf = sandbox.SlirpResolvConf
		}
	}
	if fuse != nil {
		cfg.FUSE = fuse
		if lm.background {
			// Fetching the rest of the image competes with the
			// container's first reads only from here on.
			fuse.startBackground()
		}
	}
	status, err := sandbox.Run(ctx, cfg)
	if fuse != nil && o.rootfs == "" && !lm.on && fuseMountFailed(err, fuse) {
		// The default rootfs could not be mounted (kernel overlayfs over
		// the FUSE mount, or the FUSE mount itself, refused inside the
		// namespaces) and the container's command has not started: run
		// it on the layers extracted instead.
		slog.Debug("rootfs", "stage", "run", "type", rootfsOverlay, "why", fmt.Sprintf("dabba-fs could not be mounted (%v): extracting the layers", err))
		prep.cleanup()
		p, perr := prepareRootfs(ctx, g, args[0], id, rootfsOverlay, maps, lm, policy, pull)
		if perr != nil {
			return perr
		}
		defer p.cleanup()
		prep, fuse = p, nil
		if err := writeInfo(); err != nil {
			return err
		}
		cfg.Rootfs, cfg.FUSE = p.rootfs, nil
		cfg.Rootfs.ReadOnly = o.readOnly
		status, err = sandbox.Run(ctx, cfg)
	}
	if fuse != nil {
		if line := fuse.report(args[0]); line != "" {
			fmt.Fprintln(g.stderr, line)
		}
	}
	if err != nil {
		var loe *lazyOpenError
		if errors.As(err, &loe) {
			// Opened while the namespaces were set up; said as if
			// before (it is no failure of the FUSE mount).
			return &exitError{code: exitDabba, err: loe.err}
		}
		var se *sandbox.StageError
		if errors.As(err, &se) {
			var sce *storeCopyError
			if fuse != nil && (se.Stage == "rootfs" || se.Stage == "fuse") && !errors.As(err, &sce) {
				if lm.on {
					err = fmt.Errorf("%w (the image is served over FUSE; without --lazy, --rootfs overlay pulls and extracts it instead)", err)
				} else {
					err = fmt.Errorf("%w (the image is served over FUSE; --rootfs overlay extracts it instead)", err)
				}
			}
			return &exitError{code: se.Code, err: err}
		}
		return &exitError{code: exitDabba, err: err}
	}
	if status != 0 {
		return &exitError{code: status}
	}
	return nil
}

// fuseMountFailed reports whether err, from running a container on the
// dabba-fs rootfs r, says the rootfs could not be mounted in the
// container's namespaces, before its command started; not that the image
// could not be opened (r's own error: extracting would meet it too).
func fuseMountFailed(err error, r *fuseRootfs) bool {
	var se *sandbox.StageError
	if !errors.As(err, &se) || (se.Stage != "rootfs" && se.Stage != "fuse") {
		return false
	}
	return r.wait() == nil
}

// networkMode checks --network and -p: none, host, or slirp4netns[:options].
func (o *runOptions) networkMode() (string, error) {
	mode := o.network
	if mode == "" {
		mode = "slirp4netns"
		o.network = mode
	}
	base, _, _ := strings.Cut(mode, ":")
	switch base {
	case "none", "host":
		if len(o.publish) > 0 {
			return "", fmt.Errorf("-p needs --network slirp4netns (ports cannot be published with --network %s)", base)
		}
		return base, nil
	case "slirp4netns":
		return base, nil
	}
	return "", fmt.Errorf("--network %q: want none, host or slirp4netns", mode)
}

func (o *runOptions) limits() (cgroups.Limits, error) {
	var l cgroups.Limits
	if o.memory != "" {
		m, err := cgroups.ParseMemory(o.memory)
		if err != nil {
			return l, fmt.Errorf("--memory: %w", err)
		}
		l.MemoryBytes = m
	}
	if o.cpus != "" {
		c, err := cgroups.ParseCPUs(o.cpus)
		if err != nil {
			return l, fmt.Errorf("--cpus: %w", err)
		}
		l.CPUs = c
	}
	l.Pids = o.pidsLimit
	if err := l.Validate(); err != nil {
		return l, err
	}
	return l, nil
}

// parseEntrypoint reads --entrypoint as podman does: a JSON array, or one
// command; "" clears the image's entrypoint.
func parseEntrypoint(s string) ([]string, error) {
	if s == "" {
		return []string{}, nil
	}
	if strings.HasPrefix(strings.TrimSpace(s), "[") {
		var a []string
		if err := json.Unmarshal([]byte(s), &a); err != nil {
			return nil, fmt.Errorf("--entrypoint %q: not a JSON array of strings: %v", s, err)
		}
		return a, nil
	}
	return []string{s}, nil
}

func validName(s string) bool {
	for i, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || i > 0 && (r == '_' || r == '.' || r == '-')
		if !ok {
			return false
		}
	}
	return s != "" && len(s) <= 128
}

func newID() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// hostHosts is /etc/hosts for --network host: the host's, plus the
// container's hostname.
func hostHosts(hostname string) string {
	b, err := os.ReadFile("/etc/hosts")
	if err != nil {
		return sandbox.DefaultHosts(hostname)
	}
	s := string(b)
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return s + "127.0.1.1\t" + hostname + "\n"
}
