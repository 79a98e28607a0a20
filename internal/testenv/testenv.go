package testenv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/dabba/dabba/internal/imagebuild"
)

// UserName is the unprivileged user `make deps` creates; DABBA_TEST_USER
// overrides it.
func UserName() string {
	if u := os.Getenv("DABBA_TEST_USER"); u != "" {
		return u
	}
	return "dabbatest"
}

// Missing skips t because a prerequisite is missing, or fails it under CI,
// where everything must be installed. how says what to do about it.
func Missing(t testing.TB, what, how string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("prerequisite missing under CI: %s (%s)", what, how)
	}
	t.Skipf("skipping: %s (%s)", what, how)
}

// RequireRoot skips (or fails under CI) when the test is not run as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "test needs root to act as the unprivileged test user", "run `make test` as root after `make deps`")
	}
}

// RequireCommand skips (or fails under CI) when a program is not on PATH.
func RequireCommand(t testing.TB, cmd, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(cmd)
	if err != nil {
		Missing(t, cmd+" not found", "install the Debian package "+pkg+", or run `make deps` as root")
	}
	return p
}

// User is the unprivileged test user.
type User struct {
	Name     string
	UID, GID int
	Home     string
	// SubUID and SubGID are the first subordinate ids and their count.
	SubUID, SubGID, SubCount int
}

// TestUser returns the unprivileged test user, requiring root (to act as it)
// and its subordinate id ranges.
func TestUser(t testing.TB) *User {
	t.Helper()
	RequireRoot(t)
	name := UserName()
	u, err := user.Lookup(name)
	if err != nil {
		Missing(t, "test user "+name+" does not exist", "run `make deps` as root")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	tu := &User{Name: name, UID: uid, GID: gid, Home: u.HomeDir}
	var ok1, ok2 bool
	tu.SubUID, tu.SubCount, ok1 = subRange("/etc/subuid", name, uid)
	tu.SubGID, _, ok2 = subRange("/etc/subgid", name, uid)
	if !ok1 || !ok2 {
		Missing(t, "no /etc/subuid or /etc/subgid range for "+name, "run `make deps` as root")
	}
	return tu
}

func subRange(file, name string, uid int) (start, count int, ok bool) {
	f, err := os.Open(file)
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		p := strings.Split(strings.TrimSpace(s.Text()), ":")
		if len(p) != 3 || (p[0] != name && p[0] != strconv.Itoa(uid)) {
			continue
		}
		a, err1 := strconv.Atoi(p[1])
		b, err2 := strconv.Atoi(p[2])
		if err1 == nil && err2 == nil {
			return a, b, true
		}
	}
	return 0, 0, false
}

// Dir makes a temporary directory owned by the user (mode 0755 so root can
// look inside too) and removes it when the test ends. Tests put the user's
// HOME and dabba's store there.
func (u *User) Dir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "dabba-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(d, u.UID, u.GID); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { RemoveAll(t, d) })
	return d
}

// RemoveAll removes a test directory, first unmounting anything a failed
// test left mounted below it, and making read-only directories writable.
func RemoveAll(t testing.TB, dir string) {
	t.Helper()
	unmountBelow(dir)
	if err := os.RemoveAll(dir); err != nil {
		filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.IsDir() {
				os.Chmod(p, 0o700)
			}
			return nil
		})
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("cleanup of %s: %v", dir, err)
		}
	}
}

func unmountBelow(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			points = append(points, f[4])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		syscall.Unmount(points[i], syscall.MNT_DETACH)
	}
}

// Env is the environment the user's commands get: a clean login-like
// environment with HOME in home. No XDG_RUNTIME_DIR: nothing creates one for
// the user on machines without systemd, and dabba must cope.
func (u *User) Env(home string) []string {
	return []string{
		"HOME=" + home,
		"USER=" + u.Name,
		"LOGNAME=" + u.Name,
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"LANG=C.UTF-8",
	}
}

// Command runs name as the user, with Env(home) and home as working
// directory. Further environment may be appended to cmd.Env.
func (u *User) Command(ctx context.Context, home, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = u.Env(home)
	cmd.Dir = home
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uint32(u.UID), Gid: uint32(u.GID), Groups: []uint32{}},
		Setpgid:    true,
	}
	cmd.Cancel = func() error {
		// Kill the whole process group we started, and only that.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// Binaries builds bin/dabba and bin/dabba-fs once per test process into a
// directory everyone can read, and returns their paths.
func Binaries(t testing.TB) (dabba, dabbaFS string) {
	t.Helper()
	buildOnce.Do(func() {
		root, err := RepoRoot()
		if err != nil {
			buildErr = err
			return
		}
		binDir, err = os.MkdirTemp("", "dabba-testbin-")
		if err != nil {
			buildErr = err
			return
		}
		os.Chmod(binDir, 0o755)
		for _, c := range []string{"dabba", "dabba-fs"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, c), "./cmd/"+c)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build ./cmd/%s: %v\n%s", c, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatalf("building the binaries: %v", buildErr)
	}
	return filepath.Join(binDir, "dabba"), filepath.Join(binDir, "dabba-fs")
}

// CleanupBinaries removes the binaries Binaries built; call it from TestMain
// after m.Run.
func CleanupBinaries() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// RepoRoot is the directory holding go.mod.
func RepoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the dabba module")
	}
	return filepath.Dir(mod), nil
}

// AlpineTarball returns the path of the Alpine minirootfs in ../shared/images,
// after checking it against its .sha512 file. A user's clone has no
// ../shared: the test skips there (and fails under CI).
func AlpineTarball(t testing.TB) string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	matches, _ := filepath.Glob(filepath.Join(root, "..", "shared", "images", "alpine-minirootfs-*.tar.gz"))
	if len(matches) == 0 {
		Missing(t, "no Alpine minirootfs in ../shared/images", "tests that use it run where the project's shared folder sits beside the clone")
	}
	p := matches[0]
	alpineOnce.Do(func() { alpineErr = verifySHA512(p) })
	if alpineErr != nil {
		t.Fatalf("alpine minirootfs: %v", alpineErr)
	}
	return p
}

var (
	alpineOnce sync.Once
	alpineErr  error
)

func verifySHA512(p string) error {
	want, err := os.ReadFile(p + ".sha512")
	if err != nil {
		return fmt.Errorf("checksum file: %w", err)
	}
	fields := strings.Fields(string(want))
	if len(fields) == 0 {
		return fmt.Errorf("empty checksum file %s.sha512", p)
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha512.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != fields[0] {
		return fmt.Errorf("%s: sha512 %s, want %s", p, got, fields[0])
	}
	return nil
}

// AlpineImage is a one-layer image of the Alpine minirootfs.
func AlpineImage(t testing.TB) v1.Image {
	t.Helper()
	img, err := imagebuild.FromTarballFile(AlpineTarball(t), imagebuild.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// BusyboxImage is a one-layer image of Debian's static busybox.
func BusyboxImage(t testing.TB) v1.Image {
	t.Helper()
	bb, err := imagebuild.BusyboxPath()
	if err != nil {
		Missing(t, "busybox not found", "install busybox-static, or run `make deps` as root")
	}
	img, err := imagebuild.Busybox(bb, imagebuild.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// Registry starts an in-process registry (go-containerregistry's
// pkg/registry) on 127.0.0.1 and returns its host:port.
func Registry(t testing.TB) string {
	t.Helper()
	r, err := imagebuild.StartRegistry("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r.Host
}

// CountingRegistry is a Registry that counts the requests it answers
// (pushes included), and that a test can stop.
type CountingRegistry struct {
	Host string
	n    atomic.Int64
	r    *imagebuild.Registry
}

// Requests returns the number of requests answered so far.
func (c *CountingRegistry) Requests() int64 { return c.n.Load() }

// Close stops the registry (also done at the test's end).
func (c *CountingRegistry) Close() { c.r.Close() }

// lineCounter counts the lines the registry logs: one per request.
type lineCounter struct{ n *atomic.Int64 }

func (w lineCounter) Write(p []byte) (int, error) {
	w.n.Add(int64(bytes.Count(p, []byte("\n"))))
	return len(p), nil
}

// NewCountingRegistry starts a CountingRegistry on 127.0.0.1.
func NewCountingRegistry(t testing.TB) *CountingRegistry {
	t.Helper()
	c := &CountingRegistry{}
	r, err := imagebuild.StartRegistry("127.0.0.1:0", registry.Logger(log.New(lineCounter{&c.n}, "", 0)), registry.WithReferrersSupport(true))
	if err != nil {
		t.Fatal(err)
	}
	c.r, c.Host = r, r.Host
	t.Cleanup(func() { r.Close() })
	return c
}

// Push pushes img to host/repo:tag and returns the reference.
func Push(t testing.TB, img v1.Image, host, repoTag string) string {
	t.Helper()
	ref := host + "/" + repoTag
	if err := imagebuild.Push(img, ref); err != nil {
		t.Fatal(err)
	}
	return ref
}

// DockerRegistry starts Debian's docker-registry (the distribution registry)
// on a free 127.0.0.1 port with its storage in a temporary directory, and
// stops it (the process this test started, by PID) when the test ends.
func DockerRegistry(t testing.TB) string {
	t.Helper()
	bin := RequireCommand(t, "docker-registry", "docker-registry")
	dir := t.TempDir()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfgPath, err := imagebuild.WriteDockerRegistryConfig(dir, addr)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting docker-registry: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("docker-registry did not answer on %s: %v\n%s", addr, err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
