package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/dabba/dabba/internal/testenv"
	"github.com/dabba/dabba/layers"
	"github.com/dabba/dabba/layers/layertest"
)

// dabbaUser runs the real dabba binary as the unprivileged test user, with
// a fresh HOME (so the default store, ~/.local/share/dabba, is fresh too).
type dabbaUser struct {
	t    *testing.T
	u    *testenv.User
	home string
	bin  string
}

func newDabbaUser(t *testing.T) *dabbaUser {
	t.Helper()
	u := testenv.TestUser(t)
	bin, _ := testenv.Binaries(t)
	return &dabbaUser{t: t, u: u, home: u.Dir(t), bin: bin}
}

// root is the store: the default for a user without XDG_DATA_HOME.
func (d *dabbaUser) root() string { return filepath.Join(d.home, ".local", "share", "dabba") }

func (d *dabbaUser) command(ctx context.Context, args ...string) *exec.Cmd {
	return d.u.Command(ctx, d.home, d.bin, args...)
}

// run runs dabba ARGS and returns its stdout, stderr and exit status.
func (d *dabbaUser) run(args ...string) (string, string, int) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := d.command(ctx, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		d.t.Fatalf("dabba %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// ok runs dabba ARGS, failing the test unless it succeeds; returns stdout.
func (d *dabbaUser) ok(args ...string) string {
	d.t.Helper()
	out, errs, code := d.run(args...)
	if code != 0 {
		d.t.Fatalf("dabba %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// fails runs dabba ARGS, failing the test if it succeeds; returns stderr.
func (d *dabbaUser) fails(args ...string) string {
	d.t.Helper()
	out, errs, code := d.run(args...)
	if code == 0 {
		d.t.Fatalf("dabba %s succeeded, want a failure\nstdout:\n%s", strings.Join(args, " "), out)
	}
	if strings.Count(strings.TrimSpace(errs), "\n") > 0 && !strings.Contains(errs, "Pulling") {
		d.t.Errorf("dabba %s: error is more than one line:\n%s", strings.Join(args, " "), errs)
	}
	return errs
}

// storeFiles lists the names in a store subdirectory.
func (d *dabbaUser) storeFiles(sub ...string) []string {
	d.t.Helper()
	ents, err := os.ReadDir(filepath.Join(append([]string{d.root()}, sub...)...))
	if err != nil && !os.IsNotExist(err) {
		d.t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func (d *dabbaUser) hasBlob(h v1.Hash) bool {
	_, err := os.Stat(filepath.Join(d.root(), "blobs", "sha256", h.Hex))
	return err == nil
}

var idLine = regexp.MustCompile(`^[a-f0-9]{64}\n$`)

func imageID(t *testing.T, img v1.Image) string {
	t.Helper()
	h, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return h.Hex
}

func registries() []struct {
	name  string
	start func(testing.TB) string
} {
	return []struct {
		name  string
		start func(testing.TB) string
	}{{"inprocess", testenv.Registry}, {"docker-registry", testenv.DockerRegistry}}
}

func TestPullAlpine(t *testing.T) {
	for _, reg := range registries() {
		t.Run(reg.name, func(t *testing.T) {
			d := newDabbaUser(t)
			img := testenv.AlpineImage(t)
			host := reg.start(t)
			ref := testenv.Push(t, img, host, "library/alpine:3.20")

			out, errs, code := d.run("pull", ref)
			if code != 0 {
				t.Fatalf("pull: exit %d\n%s", code, errs)
			}
			if !idLine.MatchString(out) || strings.TrimSpace(out) != imageID(t, img) {
				t.Errorf("pull printed %q, want the image ID %s", out, imageID(t, img))
			}
			layer := testenv.LayerDigests(t, img)[0]
			if !strings.Contains(errs, "Pulling "+ref) || !regexp.MustCompile(`sha256:[a-f0-9]{12} [0-9.]+ [kM]B done\n`).MatchString(errs) {
				t.Errorf("pull progress (not a terminal):\n%s", errs)
			}
			if !d.hasBlob(layer) {
				t.Errorf("layer %s not in the store", layer)
			}

			// Pulled again: nothing fetched, still the ID.
			out, errs, _ = d.run("pull", ref)
			if strings.TrimSpace(out) != imageID(t, img) || !strings.Contains(errs, "already present") {
				t.Errorf("second pull: %q\n%s", out, errs)
			}
			// -q prints only the ID.
			out, errs, _ = d.run("pull", "-q", ref)
			if !idLine.MatchString(out) || errs != "" {
				t.Errorf("pull -q: stdout %q stderr %q", out, errs)
			}

			images := d.ok("images")
			lines := strings.Split(strings.TrimSpace(images), "\n")
			if len(lines) != 2 || !strings.HasPrefix(lines[0], "REPOSITORY") {
				t.Fatalf("images:\n%s", images)
			}
			f := strings.Fields(lines[1])
			if f[0] != host+"/library/alpine" || f[1] != "3.20" || f[2] != imageID(t, img)[:12] || !strings.Contains(lines[1], " ago") || !strings.Contains(lines[1], "MB") {
				t.Errorf("images row: %q", lines[1])
			}

			var insp []struct {
				ID       string `json:"Id"`
				Manifest v1.Manifest
				Config   v1.ConfigFile
			}
			if err := json.Unmarshal([]byte(d.ok("inspect", ref)), &insp); err != nil {
				t.Fatal(err)
			}
			if len(insp) != 1 || insp[0].ID != imageID(t, img) || len(insp[0].Manifest.Layers) != 1 || insp[0].Config.Architecture != "amd64" || insp[0].Config.Config.Cmd[0] != "/bin/sh" {
				t.Errorf("inspect: %+v", insp)
			}
			if out := d.ok("images", "-q"); out != imageID(t, img)[:12]+"\n" {
				t.Errorf("images -q: %q", out)
			}
			var js []struct {
				ID    string `json:"Id"`
				Names []string
				Size  int64
			}
			if err := json.Unmarshal([]byte(d.ok("images", "--format", "json")), &js); err != nil || len(js) != 1 || js[0].ID != imageID(t, img) || js[0].Names[0] != ref || js[0].Size == 0 {
				t.Errorf("images --format json: %+v, %v", js, err)
			}
			// Short ID works for inspect too.
			d.ok("inspect", imageID(t, img)[:12])

			out = d.ok("rmi", ref)
			if !strings.Contains(out, "Untagged: "+ref) || !strings.Contains(out, "Deleted: "+imageID(t, img)) {
				t.Errorf("rmi: %q", out)
			}
			if images := d.ok("images"); strings.Count(images, "\n") != 1 {
				t.Errorf("images after rmi:\n%s", images)
			}
			if n := d.storeFiles("blobs", "sha256"); len(n) != 0 {
				t.Errorf("blobs left after rmi: %v", n)
			}
			if out := d.ok("gc"); !strings.Contains(out, "Nothing to remove") {
				t.Errorf("gc after rmi: %q", out)
			}
		})
	}
}

func TestPullMultiLayerWhiteouts(t *testing.T) {
	for _, reg := range registries() {
		t.Run(reg.name, func(t *testing.T) {
			d := newDabbaUser(t)
			img := testenv.MultiLayerImage(t)
			ref := testenv.Push(t, img, reg.start(t), "test/multi:latest")
			d.ok("pull", ref)
			// The indexes the pull kept merge into the expected tree.
			var ixs []*layers.Index
			for _, h := range testenv.LayerDigests(t, img) {
				b, err := os.ReadFile(filepath.Join(d.root(), "index", "sha256", h.Hex))
				if err != nil {
					t.Fatal(err)
				}
				var ix layers.Index
				if err := ix.UnmarshalBinary(b); err != nil {
					t.Fatal(err)
				}
				ixs = append(ixs, &ix)
			}
			tree, err := layers.Merge(ixs)
			if err != nil {
				t.Fatal(err)
			}
			for p, want := range map[string]bool{"etc/hostname": true, "data/new": true, "keep/file": true, "bin/tool": true, "link": true, "etc/gone": false, "data/old": false} {
				if got := tree.Lookup(p) != nil; got != want {
					t.Errorf("merged view: %s present %v, want %v", p, got, want)
				}
			}
			// name without tag means :latest.
			d.ok("inspect", strings.TrimSuffix(ref, ":latest"))
		})
	}
}

func TestPullSharedLayerStoredOnce(t *testing.T) {
	d := newDabbaUser(t)
	fr := testenv.NewFaultRegistry(t)
	base := layertest.Tar(layertest.Dir("etc"), layertest.File("etc/base", "base\n"))
	a := testenv.ImageOfTars(t, base, layertest.Tar(layertest.File("a", "a\n")))
	b := testenv.ImageOfTars(t, base, layertest.Tar(layertest.File("b", "b\n")))
	refA := testenv.Push(t, a, fr.Host, "test/a:1")
	refB := testenv.Push(t, b, fr.Host, "test/b:1")
	d.ok("pull", refA)
	_, errs, _ := d.run("pull", refB)
	shared := testenv.LayerDigests(t, a)[0]
	if n := fr.BlobGets(shared.String()); n != 1 {
		t.Errorf("shared layer fetched %d times", n)
	}
	if !strings.Contains(errs, shortHash(shared)+" ") || !strings.Contains(errs, "already present") {
		t.Errorf("second pull did not report the shared layer present:\n%s", errs)
	}
	if n := d.storeFiles("blobs", "sha256"); len(n) != 7 {
		t.Errorf("%d blobs for two images sharing a layer, want 7: %v", len(n), n)
	}
	d.ok("rmi", refA)
	if !d.hasBlob(shared) {
		t.Error("shared layer removed with the first image")
	}
	d.ok("inspect", refB)
}

func shortHash(h v1.Hash) string { return h.String()[:len("sha256:")+12] }

func TestPullMultiArch(t *testing.T) {
	for _, reg := range registries() {
		t.Run(reg.name, func(t *testing.T) {
			d := newDabbaUser(t)
			idx, amd, arm := testenv.MultiArchIndex(t)
			ref := testenv.PushIndex(t, idx, reg.start(t), "test/multiarch:1")
			out := d.ok("pull", "-q", "--platform", "linux/amd64", ref)
			if strings.TrimSpace(out) != imageID(t, amd) {
				t.Errorf("linux/amd64 gave %s, want %s", out, imageID(t, amd))
			}
			out = d.ok("pull", "-q", "--platform", "linux/arm64", ref)
			if strings.TrimSpace(out) != imageID(t, arm) {
				t.Errorf("linux/arm64 gave %s, want %s", out, imageID(t, arm))
			}
			// The tag now names the arm64 image, as in podman.
			var insp []struct{ Config v1.ConfigFile }
			json.Unmarshal([]byte(d.ok("inspect", ref)), &insp)
			if len(insp) != 1 || insp[0].Config.Architecture != "arm64" {
				t.Errorf("inspect after arm64 pull: %+v", insp)
			}
			if testenv.UserName() != "" && hostArch() == "amd64" {
				out = d.ok("pull", "-q", ref)
				if strings.TrimSpace(out) != imageID(t, amd) {
					t.Errorf("host platform gave %s, want amd64's %s", out, imageID(t, amd))
				}
			}
			errs := d.fails("pull", "--platform", "linux/s390x", ref)
			if !strings.Contains(errs, "linux/s390x") || !strings.Contains(errs, "linux/amd64, linux/arm64/v8") {
				t.Errorf("missing platform: %s", errs)
			}
		})
	}
}

func TestPullErrors(t *testing.T) {
	d := newDabbaUser(t)
	host := testenv.Registry(t)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"pull", host + "/no/such:1"}, []string{host + "/no/such:1", "not found", "check the name"}},
		{[]string{"pull", "Bad:Ref"}, []string{"Bad:Ref", "invalid image reference"}},
		{[]string{"pull", "127.0.0.1:1/x:1"}, []string{"127.0.0.1:1/x:1", "connection refused"}},
		{[]string{"pull", "--platform", "linux", "alpine"}, []string{"platform \"linux\"", "os/arch"}},
		{[]string{"pull"}, []string{"IMAGE"}},
		{[]string{"rmi", "nothere:1"}, []string{"nothere:1", "not known", "dabba pull"}},
		{[]string{"inspect", "nothere"}, []string{"nothere", "not known"}},
	} {
		errs := d.fails(tc.args...)
		for _, w := range tc.want {
			if !strings.Contains(errs, w) {
				t.Errorf("dabba %s: error %q lacks %q", strings.Join(tc.args, " "), strings.TrimSpace(errs), w)
			}
		}
	}
}

// bigImage is a one-layer image of about 1 MB of incompressible data, so a
// stalled or dropped blob stops well inside it.
func bigImage(t *testing.T) v1.Image {
	data := make([]byte, 1<<20)
	x := uint32(7)
	for i := range data {
		x = x*1664525 + 1013904223
		data[i] = byte(x >> 24)
	}
	return testenv.ImageOfTars(t, layertest.Tar(layertest.File("big", string(data))))
}

// checkConsistent asserts that a failed pull left no visible image and no
// half blob that looks whole.
func checkConsistent(t *testing.T, d *dabbaUser, layer v1.Hash) {
	t.Helper()
	if d.hasBlob(layer) {
		t.Errorf("blob %s in the store after a failed pull", layer)
	}
	if images := d.ok("images"); strings.Count(images, "\n") != 1 {
		t.Errorf("images after a failed pull:\n%s", images)
	}
}

func TestPullFaults(t *testing.T) {
	d := newDabbaUser(t)
	fr := testenv.NewFaultRegistry(t)
	img := bigImage(t)
	ref := testenv.Push(t, img, fr.Host, "test/big:1")
	layer := testenv.LayerDigests(t, img)[0]

	t.Run("500", func(t *testing.T) {
		fr.SetFault(testenv.Fault500, layer.String())
		errs := d.fails("pull", ref)
		for _, w := range []string{ref, layer.String(), "500", "try again later"} {
			if !strings.Contains(errs, w) {
				t.Errorf("error lacks %q: %s", w, errs)
			}
		}
		checkConsistent(t, d, layer)
	})
	t.Run("wrong bytes", func(t *testing.T) {
		fr.SetFault(testenv.FaultWrong, layer.String())
		errs := d.fails("pull", ref)
		for _, w := range []string{ref, layer.String(), "does not match its digest"} {
			if !strings.Contains(errs, w) {
				t.Errorf("error lacks %q: %s", w, errs)
			}
		}
		checkConsistent(t, d, layer)
		if n := d.storeFiles("tmp"); len(n) != 0 {
			t.Errorf("bad bytes kept: %v", n)
		}
	})
	t.Run("dropped connection", func(t *testing.T) {
		fr.SetFault(testenv.FaultDrop, layer.String())
		errs := d.fails("pull", ref)
		for _, w := range []string{ref, layer.String(), "resume"} {
			if !strings.Contains(errs, w) {
				t.Errorf("error lacks %q: %s", w, errs)
			}
		}
		checkConsistent(t, d, layer)
		if n := d.storeFiles("tmp"); len(n) != 1 || !strings.HasSuffix(n[0], ".partial") {
			t.Errorf("partial download not kept: %v", n)
		}
		fr.SetFault(testenv.NoFault, "")
		before := len(fr.Ranges())
		if out := d.ok("pull", "-q", ref); strings.TrimSpace(out) != imageID(t, img) {
			t.Errorf("pull after the fault: %q", out)
		}
		if len(fr.Ranges()) == before {
			t.Error("the pull after a dropped connection sent no Range request")
		}
		d.ok("rmi", ref)
		d.ok("gc")
	})
	t.Run("SIGKILL", func(t *testing.T) {
		fr.SetFault(testenv.FaultStall, layer.String())
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := d.command(ctx, "pull", ref)
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-fr.Stalled():
		case <-ctx.Done():
			t.Fatalf("pull never reached the stalled blob\n%s", errb.String())
		}
		// Wait until the received half is on disk, then kill the pull we
		// started, by PID.
		partial := filepath.Join(d.root(), "tmp", layer.Hex+".partial")
		for {
			if fi, err := os.Stat(partial); err == nil && fi.Size() > 0 {
				break
			}
			if ctx.Err() != nil {
				t.Fatal("no partial download appeared")
			}
			time.Sleep(5 * time.Millisecond)
		}
		syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		fr.Release()
		fr.SetFault(testenv.NoFault, "")

		checkConsistent(t, d, layer)
		before := len(fr.Ranges())
		if out := d.ok("pull", "-q", ref); strings.TrimSpace(out) != imageID(t, img) {
			t.Errorf("pull after SIGKILL: %q", out)
		}
		rs := fr.Ranges()[before:]
		if len(rs) == 0 || !strings.HasPrefix(rs[0], "bytes=") || strings.HasPrefix(rs[0], "bytes=0-") {
			t.Errorf("the pull after SIGKILL did not resume with a Range request: %v", rs)
		}
		if n := d.storeFiles("tmp"); len(n) != 0 {
			t.Errorf("tmp/ after the resumed pull: %v", n)
		}
	})
}

func TestGCRemovesUnreferenced(t *testing.T) {
	d := newDabbaUser(t)
	host := testenv.Registry(t)
	img := testenv.MultiLayerImage(t)
	ref := testenv.Push(t, img, host, "test/gc:1")
	d.ok("pull", "-q", ref)
	if out := d.ok("gc"); !strings.Contains(out, "Nothing to remove") {
		t.Errorf("gc with one image: %q", out)
	}
	d.ok("rmi", ref)
	// Leftovers of killed work: a partial download, a temporary file, an
	// extraction that never finished, with a read-only dir inside.
	tmp := filepath.Join(d.root(), "tmp")
	asUser(t, d, "sh", "-c", "echo half > "+tmp+"/"+strings.Repeat("1", 64)+".partial; echo x > "+tmp+"/write-1.tmp; "+
		"mkdir -p "+d.root()+"/layers/.tmp-abc/d && echo f > "+d.root()+"/layers/.tmp-abc/d/f && chmod 555 "+d.root()+"/layers/.tmp-abc/d")
	out := d.ok("gc")
	for _, w := range []string{"1 partial download", "1 temporary file", "1 extracted layer", "freed"} {
		if !strings.Contains(out, w) {
			t.Errorf("gc output lacks %q: %q", w, out)
		}
	}
	for _, sub := range []string{"blobs/sha256", "index/sha256", "layers", "tmp"} {
		if n := d.storeFiles(strings.Split(sub, "/")...); len(n) != 0 {
			t.Errorf("%s after gc: %v", sub, n)
		}
	}
}

func asUser(t *testing.T, d *dabbaUser, name string, args ...string) {
	t.Helper()
	if out, err := d.u.Command(context.Background(), d.home, name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// TestPullProgressOnTerminal runs a pull whose stderr is a terminal (a
// pty): the display redraws per layer with a total line.
func TestPullProgressOnTerminal(t *testing.T) {
	d := newDabbaUser(t)
	host := testenv.Registry(t)
	ref := testenv.Push(t, testenv.MultiLayerImage(t), host, "test/tty:1")
	ptm, pts, err := pty.Open()
	if err != nil {
		testenv.Missing(t, "cannot open a pty: "+err.Error(), "mount devpts")
	}
	defer ptm.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := d.command(ctx, "pull", ref)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, pts
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pts.Close()
	var screen bytes.Buffer
	done := make(chan struct{})
	go func() {
		io.Copy(&screen, ptm) // ends with EIO once the pull has exited
		close(done)
	}()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("pull on a terminal: %v\n%s", err, screen.String())
	}
	ptm.SetReadDeadline(time.Now().Add(5 * time.Second))
	<-done
	s := screen.String()
	if !strings.Contains(s, "\x1b[2K") || !strings.Contains(s, "total [") || !strings.Contains(s, "====]") {
		t.Errorf("no live display on a terminal:\n%q", s)
	}
	if !idLine.MatchString(out.String()) {
		t.Errorf("stdout %q, want the image ID", out.String())
	}
}

// TestPullTokenAuth pulls from a registry that wants bearer tokens: handed
// out anonymously (Docker Hub's flow for public images), then only for
// credentials that podman's auth file holds.
func TestPullTokenAuth(t *testing.T) {
	d := newDabbaUser(t)
	fr := testenv.NewFaultRegistry(t)
	img := testenv.MultiLayerImage(t)
	ref := testenv.Push(t, img, fr.Host, "private/app:1")

	fr.RequireToken("", "")
	if out := d.ok("pull", "-q", ref); strings.TrimSpace(out) != imageID(t, img) {
		t.Errorf("anonymous token pull: %q", out)
	}
	d.ok("rmi", ref)

	fr.RequireToken("alice", "s3cret")
	errs := d.fails("pull", ref)
	for _, w := range []string{ref, "access denied", "log in"} {
		if !strings.Contains(errs, w) {
			t.Errorf("pull without credentials: error lacks %q: %s", w, errs)
		}
	}
	auth := base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
	asUser(t, d, "mkdir", "-p", filepath.Join(d.home, ".config", "containers"))
	path := filepath.Join(d.home, ".config", "containers", "auth.json")
	if err := os.WriteFile(path, []byte(`{"auths":{"`+fr.Host+`":{"auth":"`+auth+`"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, d.u.UID, d.u.GID); err != nil {
		t.Fatal(err)
	}
	if out := d.ok("pull", "-q", ref); strings.TrimSpace(out) != imageID(t, img) {
		t.Errorf("pull with credentials in ~/.config/containers/auth.json: %q", out)
	}
}

// TestConcurrentPullProcesses runs two dabba pulls of the same image at once
// into one store: both succeed, each blob is fetched once, one image.
func TestConcurrentPullProcesses(t *testing.T) {
	d := newDabbaUser(t)
	fr := testenv.NewFaultRegistry(t)
	img := bigImage(t)
	ref := testenv.Push(t, img, fr.Host, "test/conc:1")
	layer := testenv.LayerDigests(t, img)[0]
	// Hold the layer until both pulls are waiting for it.
	fr.SetFault(testenv.FaultStall, layer.String())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var cmds []*exec.Cmd
	var outs []*bytes.Buffer
	for i := 0; i < 2; i++ {
		cmd := d.command(ctx, "pull", "-q", ref)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds, outs = append(cmds, cmd), append(outs, &out)
	}
	<-fr.Stalled()
	fr.SetFault(testenv.NoFault, "")
	// The stalled response ends cut short; its pull resumes with a range.
	fr.Release()
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("pull %d: %v\n%s", i, err, outs[i])
		}
		if strings.TrimSpace(outs[i].String()) != imageID(t, img) {
			t.Errorf("pull %d printed %q", i, outs[i])
		}
	}
	// One full fetch, and one ranged one to finish the stalled response.
	if n := fr.BlobGets(layer.String()); n != 2 || len(fr.Ranges()) != 1 {
		t.Errorf("layer fetched %d times (ranges %v) by two concurrent pulls, want 2 (the first cut short, then resumed)", n, fr.Ranges())
	}
	if images := d.ok("images"); strings.Count(images, "\n") != 2 {
		t.Errorf("images after two concurrent pulls:\n%s", images)
	}
}

// TestResumeFromDockerRegistry plants the first half of a layer as a partial
// download, as a killed pull leaves it, and pulls from Debian's
// docker-registry (through a proxy that records requests): the pull asks
// for the rest with one Range request, and the result verifies.
func TestResumeFromDockerRegistry(t *testing.T) {
	d := newDabbaUser(t)
	reg := testenv.DockerRegistry(t)
	fr := testenv.NewFaultProxy(t, reg)
	img := bigImage(t)
	ref := testenv.Push(t, img, fr.Host, "test/resume:1")
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := ls[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	blob, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	layer := testenv.LayerDigests(t, img)[0]

	d.ok("images") // creates the store
	partial := filepath.Join(d.root(), "tmp", layer.Hex+".partial")
	if err := os.WriteFile(partial, blob[:len(blob)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(partial, d.u.UID, d.u.GID); err != nil {
		t.Fatal(err)
	}
	if out := d.ok("pull", "-q", ref); strings.TrimSpace(out) != imageID(t, img) {
		t.Errorf("resumed pull printed %q", out)
	}
	want := "bytes=" + strconv.Itoa(len(blob)/2) + "-" + strconv.Itoa(len(blob)-1)
	if rs := fr.Ranges(); len(rs) != 1 || rs[0] != want || fr.BlobGets(layer.String()) != 1 {
		t.Errorf("ranges %v, %d GETs of the layer; want one GET with %s", rs, fr.BlobGets(layer.String()), want)
	}
	if !d.hasBlob(layer) {
		t.Error("layer not stored")
	}
}

// TestGCRemovesSubordinateOwnedLayer: an extracted layer holding a
// directory owned by a subordinate uid (as extraction leaves it) cannot be
// emptied by the user; gc removes it inside a user namespace.
func TestGCRemovesSubordinateOwnedLayer(t *testing.T) {
	d := newDabbaUser(t)
	testenv.RequireCommand(t, "newuidmap", "uidmap")
	d.ok("images") // creates the store
	layerDir := filepath.Join(d.root(), "layers", strings.Repeat("ab", 32))
	sub := filepath.Join(layerDir, "etc")
	for _, p := range []string{layerDir, sub} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(sub, "shadow"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chown(layerDir, d.u.UID, d.u.GID)
	for _, p := range []string{sub, filepath.Join(sub, "shadow")} {
		if err := os.Chown(p, d.u.SubUID, d.u.SubGID); err != nil {
			t.Fatal(err)
		}
	}
	out := d.ok("gc")
	if !strings.Contains(out, "1 extracted layer") {
		t.Errorf("gc: %q", out)
	}
	if _, err := os.Stat(layerDir); !os.IsNotExist(err) {
		t.Errorf("layer dir owned by subordinate ids still there: %v", err)
	}
}

// TestRunPlatform: dabba run pulls (or opens lazily) the image of the
// platform --platform names, as pull does.
func TestRunPlatform(t *testing.T) {
	d := newDabbaUser(t)
	idx, _, _ := testenv.MultiArchIndex(t)
	ref := testenv.PushIndex(t, idx, testenv.Registry(t), "test/multiarch:1")
	for _, args := range [][]string{
		{"run", "--rootfs", "overlay", "--platform", "linux/s390x", ref, "true"},
		{"run", "--lazy", "--platform", "linux/s390x", ref, "true"},
	} {
		errs := d.fails(args...)
		if !strings.Contains(errs, "linux/s390x") || !strings.Contains(errs, "linux/amd64, linux/arm64/v8") {
			t.Errorf("dabba %s: %s", strings.Join(args, " "), errs)
		}
	}
	if errs := d.fails("run", "--platform", "linux", ref, "true"); !strings.Contains(errs, "platform \"linux\"") {
		t.Errorf("bad --platform: %s", errs)
	}
	if d.storeFiles("blobs", "sha256") != nil {
		t.Errorf("failed runs left blobs: %v", d.storeFiles("blobs", "sha256"))
	}
}

// TestPullDiskFull pulls into a store on a tmpfs too small for the layer:
// the error names the full disk and `dabba gc`, the store holds no blob
// that is not whole, and gc frees what the pull left.
func TestPullDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: runs the real binary as the test user (-short)")
	}
	d := newDabbaUser(t)
	small := filepath.Join(d.home, "small")
	if err := os.Mkdir(small, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", small, "tmpfs", 0, fmt.Sprintf("size=512k,uid=%d,gid=%d", d.u.UID, d.u.GID)); err != nil {
		testenv.Missing(t, "cannot mount a tmpfs: "+err.Error(), "run the tests as root")
	}
	t.Cleanup(func() { syscall.Unmount(small, syscall.MNT_DETACH) })
	ref := testenv.Push(t, testenv.BusyboxImage(t), testenv.Registry(t), "test/full:1")
	root := filepath.Join(small, "store")
	errs := d.fails("--root", root, "pull", "-q", ref)
	if !strings.Contains(errs, "no space left on device") || !strings.Contains(errs, "dabba gc") || !strings.Contains(errs, root) {
		t.Errorf("pull into a full store: %q", errs)
	}
	blobs, _ := filepath.Glob(filepath.Join(root, "blobs", "sha256", "*"))
	for _, b := range blobs {
		data, err := os.ReadFile(b)
		if sum := sha256.Sum256(data); err != nil || hex.EncodeToString(sum[:]) != filepath.Base(b) {
			t.Errorf("blob %s in the store is not whole (%v)", filepath.Base(b), err)
		}
	}
	if out := d.ok("--root", root, "gc"); !strings.Contains(out, "freed") {
		t.Errorf("gc after the failed pull: %q", out)
	}
}
