package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dabba/dabba/internal/imagebuild"
	"github.com/dabba/dabba/internal/testenv"
	"github.com/dabba/dabba/layers/layertest"
	"github.com/dabba/dabba/sandbox"
)

// container is a `dabba run` the test started and has not ended yet.
type container struct {
	cmd *exec.Cmd
	out *testenv.SyncBuffer
	dir string // its directory in the store, containers/<id>
}

// start runs `dabba --root root run --network none args...` as the test user,
// whose command must print "ready", and finds the container's directory.
func (e *runEnv) start(t *testing.T, root string, args ...string) *container {
	t.Helper()
	before := containerDirs(root)
	a := append([]string{"--root", root, "run", "--network", "none"}, args...)
	cmd := e.u.Command(context.Background(), e.home, e.dabba, a...)
	c := &container{cmd: cmd, out: &testenv.SyncBuffer{}}
	cmd.Stdout, cmd.Stderr = c.out, c.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	c.out.WaitFor(t, 0, "ready")
	for _, d := range containerDirs(root) {
		if !slices.Contains(before, d) {
			c.dir = d
		}
	}
	if c.dir == "" {
		t.Fatalf("no new container directory in %s/containers", root)
	}
	return c
}

func containerDirs(root string) []string {
	d, _ := filepath.Glob(filepath.Join(root, "containers", "*"))
	return d
}

// kill does kill -9 to the dabba process (by PID) and waits until the
// container's process died with it (Pdeathsig).
func (c *container) kill(t *testing.T) {
	t.Helper()
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", c.cmd.Process.Pid))
	var children []string
	for _, task := range tasks {
		b, _ := os.ReadFile(task)
		children = append(children, strings.Fields(string(b))...)
	}
	c.cmd.Process.Kill()
	c.cmd.Wait()
	deadline := time.Now().Add(20 * time.Second)
	for _, child := range children {
		for {
			st, err := os.ReadFile("/proc/" + child + "/stat")
			if err != nil || strings.Contains(string(st), ") Z ") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("container process %s alive after dabba was killed", child)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// stop sends SIGTERM to dabba, which forwards it to the container's init
// and exits when the container does.
func (c *container) stop(t *testing.T) {
	t.Helper()
	c.cmd.Process.Signal(syscall.SIGTERM)
	c.cmd.Wait()
	if code := c.cmd.ProcessState.ExitCode(); code != 128+int(syscall.SIGTERM) {
		t.Fatalf("dabba after SIGTERM: status %d, output %q", code, c.out.String())
	}
}

// dabba runs dabba --root root args... as the test user.
func (e *runEnv) dabbaAt(t *testing.T, root string, args ...string) testenv.Output {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	o := e.u.RunAs(ctx, e.home, nil, "", e.dabba, append([]string{"--root", root}, args...)...)
	if o.Code != 0 {
		t.Fatalf("dabba %q: status %d\nstdout: %s\nstderr: %s", args, o.Code, o.Stdout, o.Stderr)
	}
	return o
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func TestContainers(t *testing.T) {
	e := newRunEnv(t)
	sleeper := []string{"--init", e.bbox, "sh", "-c", "echo ready; exec sleep 1000"}

	t.Run("GCRemovesDeadContainers", func(t *testing.T) {
		root := filepath.Join(e.home, "store-gc")
		running := e.start(t, root, sleeper...)
		// The dead one leaves a tree the user cannot remove alone: a
		// directory of a subordinate id, not writable by the user.
		dead := e.start(t, root, e.bbox, "sh", "-c",
			"mkdir -p /d/e && touch /d/e/f && chown -R 1000:1000 /d && chmod 755 /d && echo ready && exec sleep 1000")
		dead.kill(t)
		if !exists(filepath.Join(dead.dir, "upper", "d", "e", "f")) {
			t.Fatalf("the killed container's directory %s is gone before gc", dead.dir)
		}
		o := e.dabbaAt(t, root, "gc")
		if !strings.Contains(o.Stdout, "Removed 1 dead container") {
			t.Errorf("dabba gc printed %q", o.Stdout)
		}
		if exists(dead.dir) || exists(filepath.Join(root, "locks", "container-"+filepath.Base(dead.dir)+".lock")) {
			t.Errorf("dabba gc left the dead container's directory or lock")
		}
		if !exists(filepath.Join(running.dir, "upper")) {
			t.Fatalf("dabba gc removed the running container's directory %s", running.dir)
		}
		running.stop(t)
		if left := containerDirs(root); len(left) != 0 {
			t.Errorf("container directories left: %q", left)
		}
	})

	t.Run("RunRemovesDeadContainers", func(t *testing.T) {
		root := filepath.Join(e.home, "store-sweep")
		dead := e.start(t, root, e.bbox, "sh", "-c", "touch /x && echo ready && exec sleep 1000")
		dead.kill(t)
		if !exists(dead.dir) {
			t.Fatalf("the killed container's directory %s is gone", dead.dir)
		}
		e.dabbaAt(t, root, "run", "--network", "none", e.bbox, "true")
		if left := containerDirs(root); len(left) != 0 {
			t.Errorf("container directories left after the next run: %q", left)
		}
	})

	t.Run("RemovedImageHeldByContainer", func(t *testing.T) {
		root := filepath.Join(e.home, "store-rmi")
		c := e.start(t, root, append([]string{"--rootfs", "overlay"}, sleeper...)...)
		layerDirs := func() []string {
			d, _ := filepath.Glob(filepath.Join(root, "layers", "*"))
			return d
		}
		held := layerDirs()
		if len(held) != 1 {
			t.Fatalf("extracted layers: %q, want busybox's one", held)
		}
		o := e.dabbaAt(t, root, "rmi", e.bbox)
		if !strings.Contains(o.Stdout, "Untagged: "+e.bbox) {
			t.Errorf("dabba rmi printed %q", o.Stdout)
		}
		o = e.dabbaAt(t, root, "gc")
		if !strings.Contains(o.Stdout, "Kept "+held[0]+": in use by a running container") {
			t.Errorf("dabba gc with the container running printed %q", o.Stdout)
		}
		if got := layerDirs(); !reflect.DeepEqual(got, held) {
			t.Fatalf("layers after gc with the container running: %q, want %q", got, held)
		}
		// Still usable: the container reads its rootfs.
		if !exists(filepath.Join(held[0], "bin", "busybox")) || !exists(c.dir) {
			t.Fatal("the running container's layer or directory is gone")
		}
		c.stop(t)
		o = e.dabbaAt(t, root, "gc")
		if !strings.Contains(o.Stdout, "1 extracted layer") {
			t.Errorf("dabba gc after the container exited printed %q", o.Stdout)
		}
		if got := layerDirs(); len(got) != 0 {
			t.Errorf("layers left after the container exited: %q", got)
		}
	})

	t.Run("LayerVariants", func(t *testing.T) {
		// Busybox and a layer with files of uid 1000 and of root.
		ls, err := testenv.BusyboxImage(t).Layers()
		if err != nil {
			t.Fatal(err)
		}
		owned, err := imagebuild.LayerFromTar(layertest.Tar(
			layertest.Dir("data"),
			layertest.File("data/owned", "x\n", layertest.Owner(1000, 1000)),
			layertest.File("data/root", "r\n"),
		))
		if err != nil {
			t.Fatal(err)
		}
		img := testenv.Push(t, testenv.ImageOfLayers(t, append(ls, owned)...), testenv.Registry(t), "test/owned:1")
		stat := []string{img, "stat", "-c", "%u:%g", "/data/owned", "/data/root"}
		full, single := []string{"1000:1000", "0:0"}, []string{"0:0", "0:0"}
		check := func(t *testing.T, root string, singleID bool) {
			t.Helper()
			args, want := append([]string{"run", "--network", "none", "--rootfs", "overlay"}, stat...), full
			if singleID {
				args, want = append([]string{"run", "--network", "none", "--rootfs", "overlay", "--single-id"}, stat...), single
			}
			if got := lines(e.dabbaAt(t, root, args...).Stdout); !reflect.DeepEqual(got, want) {
				t.Errorf("single-id %v: owners inside %q, want %q", singleID, got, want)
			}
		}
		// Either order: neither map reuses the other's extraction.
		for _, order := range [][]bool{{true, false}, {false, true}} {
			root := filepath.Join(e.home, fmt.Sprintf("store-variants-%v", order[0]))
			for _, s := range order {
				check(t, root, s)
			}
			// On the host: the single-id copy is the user's, the full-map
			// copy belongs to subordinate id 999 (uid 1000 inside).
			for pattern, want := range map[string][2]int{
				"*-single": {e.u.UID, e.u.GID},
				"*-map-*":  {e.u.SubUID + 999, e.u.SubGID + 999},
			} {
				ps, _ := filepath.Glob(filepath.Join(root, "layers", pattern, "data", "owned"))
				if len(ps) != 1 {
					t.Fatalf("layers/%s/data/owned: %q, want one", pattern, ps)
				}
				var st unix.Stat_t
				if err := unix.Lstat(ps[0], &st); err != nil || int(st.Uid) != want[0] || int(st.Gid) != want[1] {
					t.Errorf("%s owned by %d:%d (%v), want %d:%d", ps[0], st.Uid, st.Gid, err, want[0], want[1])
				}
			}
			// gc removes both copies once no image refers to them.
			e.dabbaAt(t, root, "rmi", img)
			e.dabbaAt(t, root, "gc")
			if left, _ := filepath.Glob(filepath.Join(root, "layers", "*")); len(left) != 0 {
				t.Errorf("layers left after rmi and gc: %q", left)
			}
		}
	})
}

func TestLayerVariant(t *testing.T) {
	own := []sandbox.IDMapping{{ContainerID: 0, HostID: 1000, Size: 1}}
	single := &sandbox.IDMaps{UID: own, GID: own, Single: true}
	full := func(sub int) *sandbox.IDMaps {
		m := append(own, sandbox.IDMapping{ContainerID: 1, HostID: sub, Size: 65536})
		return &sandbox.IDMaps{UID: m, GID: m, Helpers: true}
	}
	a, b := layerVariant(full(100000)), layerVariant(full(200000))
	if layerVariant(single) != "single" || a == b || a != layerVariant(full(100000)) {
		t.Errorf("variants: single %q, full %q and %q (another range)", layerVariant(single), a, b)
	}
	if ok, _ := regexp.MatchString(`^map-[0-9a-f]{16}$`, a); !ok {
		t.Errorf("variant %q: want map-<16 hex digits>", a)
	}
}
