package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dabba/dabba/fs"
	"github.com/dabba/dabba/fs/fstest"
	"github.com/dabba/dabba/internal/testenv"
	lt "github.com/dabba/dabba/layers/layertest"
	"github.com/dabba/dabba/store"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.CleanupBinaries()
	os.Exit(code)
}

// testLayers is a small two-layer image.
func testLayers() [][]byte {
	return [][]byte{
		lt.Tar(
			lt.Dir("etc"),
			lt.File("etc/hello", "hello from the image\n"),
			lt.File("etc/shadow", "root:*:::::::\n", lt.Mode(0o640), lt.Owner(0, 42)),
			lt.File("home-file", "user", lt.Owner(1000, 1000)),
			lt.File("gone", "x"),
			lt.File("usr/bin/passwd", "pw", lt.Mode(0o4755)),
			lt.Hardlink("usr/bin/passwd2", "usr/bin/passwd"),
			lt.Symlink("bin", "usr/bin"),
			lt.File("later", "read after the server died"),
		),
		lt.Gzip(lt.Tar(lt.Whiteout("gone"), lt.File("etc/upper", "upper"))),
	}
}

// writeLayers writes the layers into dir and returns the --layers value.
func writeLayers(t *testing.T, dir string, uid, gid int) string {
	t.Helper()
	var paths []string
	for i, b := range testLayers() {
		p := filepath.Join(dir, fmt.Sprintf("layer%d.tar", i))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chown(p, uid, gid)
		paths = append(paths, p)
	}
	return strings.Join(paths, ",")
}

// waitMounted waits until dir is a mount point in the mount namespace of
// pid, or the process exits.
func waitMounted(t *testing.T, pid int, dir string, exited <-chan struct{}) {
	t.Helper()
	for i := 0; i < 400; i++ {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
		if bytes.Contains(b, []byte(" "+dir+" ")) {
			return
		}
		select {
		case <-exited:
			t.Fatal("dabba-fs exited before mounting")
		case <-time.After(25 * time.Millisecond):
		}
	}
	t.Fatalf("%s not mounted", dir)
}

func mounted(dir string) bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	return bytes.Contains(b, []byte(" "+dir+" "))
}

// startMount runs `dabba-fs mount` as this process's user and waits for
// the mount. The mount is detached when the test ends, whatever happened.
func startMount(t *testing.T, args ...string) (*exec.Cmd, string, *bytes.Buffer, <-chan struct{}) {
	t.Helper()
	testenv.RequireFUSE(t)
	_, bin := testenv.Binaries(t)
	mnt := t.TempDir()
	var stderr bytes.Buffer
	cmd := exec.Command(bin, append(append([]string{"mount"}, args...), mnt)...)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		syscall.Unmount(mnt, syscall.MNT_DETACH)
	})
	waitMounted(t, cmd.Process.Pid, mnt, exited)
	return cmd, mnt, &stderr, exited
}

// withTimeout runs f and fails if it does not return: a dead server must
// make reads fail, never hang.
func withTimeout(t *testing.T, what string, f func() error) error {
	t.Helper()
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	select {
	case err := <-ch:
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("%s hangs", what)
		return nil
	}
}

func TestMountLayers(t *testing.T) {
	cmd, mnt, stderr, exited := startMount(t, "--layers", writeLayers(t, t.TempDir(), -1, -1))
	for p, want := range map[string]string{"etc/hello": "hello from the image\n", "etc/upper": "upper", "bin/passwd2": "pw"} {
		b, err := os.ReadFile(filepath.Join(mnt, p))
		if err != nil || string(b) != want {
			t.Errorf("%s: %q, %v; want %q", p, b, err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(mnt, "gone")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("gone: %v, want it whited out", err)
	}
	// SIGTERM unmounts and exits 0.
	cmd.Process.Signal(syscall.SIGTERM)
	<-exited
	if !cmd.ProcessState.Success() || mounted(mnt) {
		t.Errorf("after SIGTERM: %v, still mounted: %v\n%s", cmd.ProcessState, mounted(mnt), stderr)
	}
}

// TestUnmountBusy: SIGINT while a file is open still leaves nothing
// mounted (the mount is detached).
func TestUnmountBusy(t *testing.T) {
	cmd, mnt, stderr, exited := startMount(t, "--layers", writeLayers(t, t.TempDir(), -1, -1))
	f, err := os.Open(filepath.Join(mnt, "etc/hello"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd.Process.Signal(os.Interrupt)
	<-exited
	if !cmd.ProcessState.Success() || mounted(mnt) {
		t.Errorf("after SIGINT with a busy mount: %v, still mounted: %v\n%s", cmd.ProcessState, mounted(mnt), stderr)
	}
}

// TestKill9 kills the server: reads fail with ENOTCONN or EIO, without
// hanging, and the cleanup's lazy unmount leaves nothing behind.
func TestKill9(t *testing.T) {
	cmd, mnt, _, exited := startMount(t, "--layers", writeLayers(t, t.TempDir(), -1, -1))
	if _, err := os.ReadFile(filepath.Join(mnt, "etc/hello")); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Kill()
	<-exited
	err := withTimeout(t, "reading after kill -9", func() error {
		_, err := os.ReadFile(filepath.Join(mnt, "later"))
		return err
	})
	if !errors.Is(err, syscall.ENOTCONN) && !errors.Is(err, syscall.EIO) {
		t.Errorf("read after kill -9: %v, want ENOTCONN or EIO", err)
	}
	if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
		t.Errorf("lazy unmount: %v", err)
	}
	if mounted(mnt) {
		t.Error("still mounted after the lazy unmount")
	}
}

// TestRootlessUserNamespace mounts as the unprivileged test user inside a
// new user and mount namespace, as a container's init would, and reads
// through the mount. With only the user mapped (unshare -r), ids the image
// uses that the namespace does not map show as the overflow id; with the
// user's subordinate range mapped they show as in the image: the kernel
// interprets the server's ids in the mounting namespace. Kernel overlayfs
// (userxattr) over the mount gives the container its writable rootfs.
func TestRootlessUserNamespace(t *testing.T) {
	u := testenv.TestUser(t)
	testenv.RequireFUSE(t)
	unshare := testenv.RequireCommand(t, "unshare", "util-linux")
	_, bin := testenv.Binaries(t)
	home := u.Dir(t)
	layers := writeLayers(t, home, u.UID, u.GID)
	script := `set -e
mnt="$HOME/mnt"; mkdir -p "$mnt"
"$DABBA_FS" mount --layers "$LAYERS" "$mnt" &
pid=$!
i=0; until grep -q " $mnt " /proc/self/mountinfo; do
  i=$((i+1)); [ $i -lt 400 ] || { echo "not mounted"; exit 1; }; kill -0 $pid; sleep 0.025; done
cat "$mnt/etc/hello"
stat -c '%u:%g %a %n' "$mnt/etc/shadow" "$mnt/home-file" "$mnt/usr/bin/passwd"
# The container's writable rootfs: rootless overlayfs over the mount.
o=$(mktemp -d "$HOME/ovl.XXXXXX"); mkdir "$o/u" "$o/w" "$o/m"
mount -t overlay -o "lowerdir=$mnt,upperdir=$o/u,workdir=$o/w,userxattr" overlay "$o/m"
echo written > "$o/m/etc/new"; cat "$o/u/etc/new"; cat "$o/m/etc/hello"
echo appended >> "$o/m/etc/hello"; cat "$o/u/etc/hello"; umount "$o/m"  # copy-up
kill -TERM $pid; wait $pid
grep -q " $mnt " /proc/self/mountinfo && { echo "still mounted"; exit 1; }
echo unmounted
`
	for _, tc := range []struct {
		name   string
		args   []string
		shadow string
		home   string
	}{
		{"map-root-only", []string{"-Urm"}, "0:65534", "65534:65534"},
		{"subordinate-ids", []string{"--map-root-user", "-m",
			fmt.Sprintf("--map-users=%d,1,%d", u.SubUID, min(u.SubCount, 65536)),
			fmt.Sprintf("--map-groups=%d,1,%d", u.SubGID, min(u.SubCount, 65536))}, "0:42", "1000:1000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := u.Command(ctx, home, unshare, append(tc.args, "sh", "-c", script)...)
			cmd.Env = append(cmd.Env, "DABBA_FS="+bin, "LAYERS="+layers)
			out, err := cmd.CombinedOutput()
			if err != nil {
				if tc.name == "subordinate-ids" && strings.Contains(string(out), "newuidmap") {
					testenv.Missing(t, "newuidmap failed: "+string(out), "install the uidmap package, or run `make deps` as root")
				}
				t.Fatalf("%v\n%s", err, out)
			}
			s := string(out)
			for _, want := range []string{
				"hello from the image\n",
				tc.shadow + " 640 " + filepath.Join(home, "mnt/etc/shadow"),
				tc.home + " 644 ",
				"0:0 4755 ",
				"written\nhello from the image\nhello from the image\nappended\n",
				"unmounted\n",
			} {
				if !strings.Contains(s, want) {
					t.Errorf("output lacks %q:\n%s", want, s)
				}
			}
		})
	}
}

// TestUnprivilegedFusermount mounts as the test user without a user
// namespace, through fusermount3.
func TestUnprivilegedFusermount(t *testing.T) {
	u := testenv.TestUser(t)
	testenv.RequireFUSE(t)
	testenv.RequireCommand(t, "fusermount3", "fuse3")
	_, bin := testenv.Binaries(t)
	home := u.Dir(t)
	layers := writeLayers(t, home, u.UID, u.GID)
	mnt := filepath.Join(home, "mnt")
	os.Mkdir(mnt, 0o755)
	os.Chown(mnt, u.UID, u.GID)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := u.Command(ctx, home, bin, "mount", "--layers", layers, mnt)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		syscall.Unmount(mnt, syscall.MNT_DETACH)
	})
	waitMounted(t, cmd.Process.Pid, mnt, exited)
	// Without allow_other only the user may use the mount: read as the user.
	out, err := u.Command(ctx, home, "cat", filepath.Join(mnt, "etc/hello")).CombinedOutput()
	if err != nil || string(out) != "hello from the image\n" {
		t.Errorf("cat as the user: %q, %v", out, err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	<-exited
	if !cmd.ProcessState.Success() || mounted(mnt) {
		t.Errorf("after SIGTERM: %v, still mounted: %v\n%s", cmd.ProcessState, mounted(mnt), &stderr)
	}
}

// TestMountFromStore pulls the Alpine image into a store from a local
// registry, prints its tree and mounts it by name; the mount matches GNU
// tar's extraction.
func TestMountFromStore(t *testing.T) {
	testenv.RequireRoot(t)
	tar := testenv.RequireCommand(t, "tar", "tar")
	ref := testenv.Push(t, testenv.AlpineImage(t), testenv.Registry(t), "alpine:3.20")
	root := t.TempDir()
	s, err := store.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pull(context.Background(), ref, store.PullOptions{Quiet: true}); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := realMain([]string{"index", "--root", root, ref}, &out, &errb); code != 0 || !strings.Contains(out.String(), " /etc/os-release\n") {
		t.Errorf("dabba-fs index %s: exit %d\n%s%s", ref, code, &errb, &out)
	}
	_, mnt, _, _ := startMount(t, "--root", root, ref)
	refDir := t.TempDir()
	if out, err := exec.Command(tar, "--numeric-owner", "-xpzf", testenv.AlpineTarball(t), "-C", refDir).CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	got, err := fstest.Snapshot(mnt)
	if err != nil {
		t.Fatal(err)
	}
	want, err := fstest.Snapshot(refDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range fstest.Compare(got, want, fstest.Options{}) {
		t.Error(d)
	}
}

func TestIndex(t *testing.T) {
	var out, errb bytes.Buffer
	if code := realMain([]string{"index", "--layers", writeLayers(t, t.TempDir(), -1, -1)}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, &errb)
	}
	for _, want := range []string{
		"-rw-r----- ", " 0/42 ", " /etc/shadow\n",
		"-rwsr-xr-x  2 0/0 ", " /usr/bin/passwd\n", " /usr/bin/passwd2 link to /usr/bin/passwd\n",
		" /bin -> usr/bin\n", " /etc/upper\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("index output lacks %q:\n%s", want, &out)
		}
	}
	if strings.Contains(out.String(), "gone") || strings.Contains(out.String(), ".wh.") {
		t.Errorf("index shows a deleted entry:\n%s", &out)
	}
}

func TestCommandLineErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.tar.gz")
	os.WriteFile(bad, lt.Gzip(lt.Tar(lt.File("a", strings.Repeat("x", 100000))))[:200], 0o644)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "Usage"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"mount"}, 2, "want IMAGE and MOUNTPOINT"},
		{[]string{"mount", "--layers", "a.tar"}, 2, "want one argument"},
		{[]string{"--log-level", "loud", "index", "x"}, 2, `--log-level "loud"`},
		{[]string{"index", "--layers", filepath.Join(dir, "nope.tar")}, 1, "nope.tar: no such file"},
		{[]string{"index", "--layers", bad}, 1, "corrupt or truncated"},
		{[]string{"index", "--root", filepath.Join(dir, "store"), "nosuchimage"}, 1, "nosuchimage"},
		{[]string{"mount", "--layers", writeLayers(t, dir, -1, -1), filepath.Join(dir, "nodir")}, 1, "mount point"},
	} {
		var out, errb bytes.Buffer
		code := realMain(tc.args, &out, &errb)
		if code != tc.code || !strings.Contains(out.String()+errb.String(), tc.want) {
			t.Errorf("dabba-fs %q: exit %d, output %q; want exit %d and %q", tc.args, code, out.String()+errb.String(), tc.code, tc.want)
		}
	}
}

// TestServeFUSEFD: the process that mounts is not the server. This test
// opens /dev/fuse and mounts it, as a container's init does, and
// `dabba-fs mount --fuse-fd 3` serves the inherited descriptor until the
// mount goes away.
func TestServeFUSEFD(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireFUSE(t)
	_, bin := testenv.Binaries(t)
	mnt := t.TempDir()
	dev, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	typ, flags, data := fs.KernelMountArgs(int(dev.Fd()), 0, 0, fs.MountOptions{})
	if err := syscall.Mount("dabba-test", mnt, typ, flags, data); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	cmd := exec.Command(bin, "mount", "--layers", writeLayers(t, t.TempDir(), -1, -1), "--fuse-fd", "3")
	cmd.ExtraFiles = []*os.File{dev}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	dev.Close() // the server's copy is the only one left
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	err = withTimeout(t, "reading through the passed descriptor", func() error {
		b, err := os.ReadFile(filepath.Join(mnt, "etc/upper"))
		if err == nil && string(b) != "upper" {
			err = fmt.Errorf("read %q", b)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	withTimeout(t, "dabba-fs exiting after the unmount", func() error { <-exited; return nil })
	if !cmd.ProcessState.Success() {
		t.Errorf("dabba-fs: %v\n%s", cmd.ProcessState, &stderr)
	}
}
