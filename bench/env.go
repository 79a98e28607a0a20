package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/dabba/dabba/bench/images"
	"github.com/dabba/dabba/bench/link"
	"github.com/dabba/dabba/internal/imagebuild"
)

// benchUser is the unprivileged user the contenders run as.
type benchUser struct {
	name     string
	uid, gid int
	home     string
}

func lookupUser(name string) (*benchUser, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("benchmark user %s: %w (run `make deps` and `make bench-deps` as root)", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &benchUser{name: name, uid: uid, gid: gid, home: u.HomeDir}, nil
}

// cleanups is a stack of teardown steps, run last first.
type cleanups struct {
	steps []func() error
	names []string
}

func (c *cleanups) add(name string, f func() error) {
	c.steps = append(c.steps, f)
	c.names = append(c.names, name)
}

func (c *cleanups) run() error {
	var errs []error
	for i := len(c.steps) - 1; i >= 0; i-- {
		if err := c.steps[i](); err != nil {
			errs = append(errs, fmt.Errorf("removing %s: %w", c.names[i], err))
		}
	}
	c.steps, c.names = nil, nil
	return errors.Join(errs...)
}

// mountTmpfs mounts a tmpfs the harness owns at dir.
func mountTmpfs(dir, size string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0755"); err != nil {
		return fmt.Errorf("mounting a tmpfs on %s: %w", dir, err)
	}
	return nil
}

func unmountTmpfs(dir string) error {
	if err := syscall.Unmount(dir, 0); err != nil {
		// Something (a contender's leftover) still uses it: detach it, the
		// memory is freed when the last user goes.
		if err2 := syscall.Unmount(dir, syscall.MNT_DETACH); err2 != nil {
			return fmt.Errorf("unmounting %s: %w", dir, err)
		}
	}
	return os.Remove(dir)
}

// registryServer is the registry the harness started.
type registryServer struct {
	kind string // "docker-registry" or "in-process"
	addr string // host:port where it listens (inside the netns under a link profile)
	stop func() error
}

// startDockerRegistry starts Debian's docker-registry with its storage in
// dir, inside ns when not nil, listening on addr.
func startDockerRegistry(ctx context.Context, ns *link.Netns, dir, addr string) (*registryServer, error) {
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		return nil, fmt.Errorf("docker-registry not found: install the Debian package docker-registry (make deps), or use --registry in-process")
	}
	cfgPath, err := imagebuild.WriteDockerRegistryConfig(dir, addr)
	if err != nil {
		return nil, err
	}
	var cmd *exec.Cmd
	if ns != nil {
		cmd = ns.Command(context.Background(), bin, "serve", cfgPath)
	} else {
		cmd = exec.Command(bin, "serve", cfgPath)
	}
	logf, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting docker-registry: %w", err)
	}
	stop := func() error {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		return logf.Close()
	}
	r := &registryServer{kind: "docker-registry", addr: addr, stop: stop}
	if err := waitRegistry(ctx, addr, filepath.Join(dir, "registry.log")); err != nil {
		stop()
		return nil, err
	}
	return r, nil
}

// startInProcessRegistry serves go-containerregistry's registry on addr,
// inside ns when not nil.
func startInProcessRegistry(ns *link.Netns, addr string) (*registryServer, error) {
	var r *imagebuild.Registry
	start := func() (err error) {
		r, err = imagebuild.StartRegistry(addr)
		return err
	}
	var err error
	if ns != nil {
		err = ns.Do(start)
	} else {
		err = start()
	}
	if err != nil {
		return nil, err
	}
	return &registryServer{kind: "in-process", addr: r.Host, stop: r.Close}, nil
}

func waitRegistry(ctx context.Context, addr, logPath string) error {
	deadline := time.Now().Add(20 * time.Second)
	c := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := c.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			log, _ := os.ReadFile(logPath)
			return fmt.Errorf("registry on %s did not answer: %v; its log: %s", addr, err, strings.TrimSpace(string(log)))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// extractImage writes the merged tree of img into dir (as root, keeping
// ownership), for runc's bundle.
func extractImage(ctx context.Context, img *benchImage, dir string) error {
	cmd := exec.CommandContext(ctx, "tar", "-x", "--numeric-owner", "-p", "-C", dir, "-f", "-")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	var tail strings.Builder
	cmd.Stderr = &tail
	if err := cmd.Start(); err != nil {
		return err
	}
	rc := mutate.Extract(img.Image.Image)
	_, cerr := copyClose(stdin, rc)
	werr := cmd.Wait()
	if werr != nil {
		return fmt.Errorf("tar -x into %s: %w: %s", dir, werr, tail.String())
	}
	return cerr
}

func shortHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:6])
}

// benchImage is an image pushed to the benchmark's registry.
type benchImage struct {
	*images.Image
	repo string // repository:tag on the registry
	// indexErr is why `dabba index push` failed for an image whose form
	// needs the index (or, after the learning run, pushing it again with
	// the learned prefetch list); its lazy contenders' rows report it.
	indexErr error
	// err is why the image could not be made or pushed (the estargz form
	// is converted after the learning run); every row of it reports it.
	err error
}

func (b *benchImage) label() string { return b.Name + "/" + b.Form }
