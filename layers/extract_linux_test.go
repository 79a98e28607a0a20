package layers_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dabba/dabba/internal/testenv"
	"github.com/dabba/dabba/layers"
	lt "github.com/dabba/dabba/layers/layertest"
)

// dumpDir lists dir as extracted: path, type, mode, owner, then content,
// link target, device numbers, link count and opaque xattr where relevant.
func dumpDir(t *testing.T, dir string) string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		typ := map[uint32]string{unix.S_IFREG: "reg", unix.S_IFDIR: "dir", unix.S_IFLNK: "symlink",
			unix.S_IFCHR: "char", unix.S_IFBLK: "block", unix.S_IFIFO: "fifo"}[st.Mode&unix.S_IFMT]
		line := fmt.Sprintf("%s %s %o %d:%d", rel, typ, st.Mode&0o7777, st.Uid, st.Gid)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, _ := os.ReadFile(p)
			line += fmt.Sprintf(" %q", b)
			if st.Nlink > 1 {
				line += fmt.Sprintf(" n%d", st.Nlink)
			}
		case unix.S_IFLNK:
			target, _ := os.Readlink(p)
			line += " ->" + target
		case unix.S_IFCHR, unix.S_IFBLK:
			line += fmt.Sprintf(" %d,%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		case unix.S_IFDIR:
			buf := make([]byte, 8)
			if n, err := unix.Lgetxattr(p, layers.OpaqueXattrUser, buf); err == nil {
				line += " opaque=" + string(buf[:n])
			}
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return strings.Join(out, "\n") + "\n"
}

func lines(s ...string) string {
	sort.Strings(s)
	return strings.Join(s, "\n") + "\n"
}

func requireRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Missing(t, "extraction tests set owners and device nodes as root", "run the tests as root (the userns test covers the rootless case)")
	}
}

func TestExtract(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name    string
		entries []lt.Entry
		want    string
	}{
		{"all types", []lt.Entry{
			lt.Dir("etc", lt.Mode(0o750), lt.Owner(1, 2)),
			lt.File("etc/passwd", "root\n", lt.Mode(0o4755), lt.Owner(1000, 1000)),
			lt.Hardlink("etc/hl", "etc/passwd"),
			lt.Symlink("bin/sh", "/bin/busybox"),
			lt.Char("dev/null", 1, 3),
			lt.Block("dev/loop9", 7, 9),
			lt.Fifo("run/p", lt.Mode(0o620)),
			lt.Whiteout("var/gone"),
			lt.Dir("usr", lt.Mode(0o1777)),
			lt.Opaque("usr"),
			lt.File("usr/x", "x", lt.Mode(0o2711)),
		}, lines(
			". dir 755 0:0",
			"bin dir 755 0:0",
			"bin/sh symlink 777 0:0 ->/bin/busybox",
			"dev dir 755 0:0",
			"dev/loop9 block 660 0:0 7,9",
			"dev/null char 666 0:0 1,3",
			"etc dir 750 1:2",
			`etc/hl reg 4755 1000:1000 "root\n" n2`,
			`etc/passwd reg 4755 1000:1000 "root\n" n2`,
			"run dir 755 0:0",
			"run/p fifo 620 0:0",
			"usr dir 1777 0:0 opaque=y",
			`usr/x reg 2711 0:0 "x"`,
			"var dir 755 0:0",
			"var/gone char 0 0:0 0,0",
		)},
		{"symlink parent replaced, never followed", []lt.Entry{
			lt.Symlink("a", "OUTSIDE"), lt.File("a/evil", "e"),
		}, lines(". dir 755 0:0", "a dir 755 0:0", `a/evil reg 644 0:0 "e"`)},
		{"file replaces symlink, never writes through", []lt.Entry{
			lt.Symlink("x", "OUTSIDE/target"), lt.File("x", "mine"),
		}, lines(". dir 755 0:0", `x reg 644 0:0 "mine"`)},
		{"file replaces dir in one layer", []lt.Entry{
			lt.Dir("d"), lt.File("d/in", "i"), lt.Dir("d/sub"), lt.File("d", "f"),
		}, lines(". dir 755 0:0", `d reg 644 0:0 "f"`)},
		{"nested dir replaced by file in one layer", []lt.Entry{
			lt.Dir("p"), lt.Dir("p/d"), lt.File("p/d/x", "x"), lt.File("p/a", "a"), lt.File("p/d", "f"), lt.File("p/b", "b"),
		}, lines(". dir 755 0:0", "p dir 755 0:0", `p/a reg 644 0:0 "a"`, `p/b reg 644 0:0 "b"`, `p/d reg 644 0:0 "f"`)},
		{"dir replaced by dir in one layer loses contents", []lt.Entry{
			lt.Dir("p"), lt.Dir("p/d", lt.Mode(0o700)), lt.File("p/d/x", "x"), lt.File("p/d", "f"), lt.Dir("p/d"), lt.File("p/z", ""),
		}, lines(". dir 755 0:0", "p dir 755 0:0", "p/d dir 755 0:0", `p/z reg 644 0:0 ""`)},
		{"dir replaces file in one layer", []lt.Entry{
			lt.File("d", "f"), lt.Dir("d", lt.Mode(0o700)), lt.File("d/in", "i"),
		}, lines(". dir 755 0:0", "d dir 700 0:0", `d/in reg 644 0:0 "i"`)},
		{"dir over dir keeps contents", []lt.Entry{
			lt.Dir("d", lt.Mode(0o700)), lt.File("d/in", "i"), lt.Dir("d", lt.Mode(0o751)),
		}, lines(". dir 755 0:0", "d dir 751 0:0", `d/in reg 644 0:0 "i"`)},
		{"whiteout replaces same-layer dir", []lt.Entry{
			lt.Dir("d"), lt.File("d/in", "i"), lt.Whiteout("d"),
		}, lines(". dir 755 0:0", "d char 0 0:0 0,0")},
		{"duplicate file last wins", []lt.Entry{
			lt.File("f", "one"), lt.File("f", "two", lt.Mode(0o600)),
		}, lines(". dir 755 0:0", `f reg 600 0:0 "two"`)},
		{"read-only dir filled", []lt.Entry{
			lt.Dir("ro", lt.Mode(0o555)), lt.File("ro/f", "f", lt.Mode(0o400)),
		}, lines(". dir 755 0:0", "ro dir 555 0:0", `ro/f reg 400 0:0 "f"`)},
		{"root entry and opaque root", []lt.Entry{
			lt.Dir("./", lt.Mode(0o700)), lt.Opaque(""), lt.File("a", ""),
		}, lines(". dir 700 0:0 opaque=y", `a reg 644 0:0 ""`)},
		{"implicit parents", []lt.Entry{lt.File("a/b/c", "x")},
			lines(". dir 755 0:0", "a dir 755 0:0", "a/b dir 755 0:0", `a/b/c reg 644 0:0 "x"`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			outside := t.TempDir()
			if err := os.WriteFile(filepath.Join(outside, "target"), []byte("untouched"), 0o644); err != nil {
				t.Fatal(err)
			}
			for i := range tt.entries {
				h := &tt.entries[i].Header
				h.Linkname = strings.Replace(h.Linkname, "OUTSIDE", outside, 1)
			}
			dir := filepath.Join(t.TempDir(), "layer")
			os.Mkdir(dir, 0o755)
			var skipped []string
			err := layers.Extract(dir, bytes.NewReader(lt.Gzip(lt.Tar(tt.entries...))), layers.ExtractOptions{
				Layer:  "sha256:t",
				OnSkip: func(p string, err error) { skipped = append(skipped, p+": "+err.Error()) },
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := dumpDir(t, dir); got != tt.want {
				t.Errorf("extracted:\n%s\nwant:\n%s", got, tt.want)
			}
			if len(skipped) > 0 {
				t.Errorf("skipped: %q", skipped)
			}
			if got := dumpDir(t, outside); strings.Count(got, "\n") != 2 || !strings.Contains(got, `target reg 644 0:0 "untouched"`) {
				t.Errorf("outside directory changed:\n%s", got)
			}
		})
	}
}

func TestExtractMetadata(t *testing.T) {
	requireRoot(t)
	mt := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	dir := t.TempDir()
	b := lt.Tar(
		lt.Dir("d", lt.Mtime(mt)),
		lt.File("d/f", "x", lt.Mtime(mt.Add(time.Hour)), lt.Xattr("user.k", "v"), lt.Xattr("trusted.overlay.opaque", "y")),
		lt.Symlink("d/l", "f", lt.Mtime(mt.Add(2*time.Hour))),
		lt.File("d/g", "", lt.Xattr("bogus.ns", "x")), // refused by the kernel: logged, not fatal
	)
	if err := layers.Extract(dir, bytes.NewReader(lt.Zstd(b)), layers.ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]time.Time{"d": mt, "d/f": mt.Add(time.Hour), "d/l": mt.Add(2 * time.Hour)} {
		fi, err := os.Lstat(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		if !fi.ModTime().Equal(want) {
			t.Errorf("%s: mtime %v, want %v", p, fi.ModTime(), want)
		}
	}
	buf := make([]byte, 16)
	if n, err := unix.Lgetxattr(filepath.Join(dir, "d/f"), "user.k", buf); err != nil || string(buf[:n]) != "v" {
		t.Errorf("xattr user.k = %q, %v", buf[:n], err)
	}
	if _, err := unix.Lgetxattr(filepath.Join(dir, "d/f"), "trusted.overlay.opaque", buf); err == nil {
		t.Error("an overlay xattr from the layer was kept")
	}
}

func TestExtractOptions(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	b := lt.Tar(lt.Dir("o"), lt.Opaque("o"))
	if err := layers.Extract(dir, bytes.NewReader(b), layers.ExtractOptions{OpaqueXattr: layers.OpaqueXattrTrusted}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if n, err := unix.Lgetxattr(filepath.Join(dir, "o"), layers.OpaqueXattrTrusted, buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("trusted opaque xattr = %q, %v", buf[:n], err)
	}
}

func TestExtractErrors(t *testing.T) {
	requireRoot(t)
	good := lt.Tar(lt.File("a", strings.Repeat("data ", 1000)))
	tests := []struct {
		name string
		in   []byte
		want error
		msg  string
	}{
		{"hardlink through symlink", lt.Tar(lt.Dir("d"), lt.File("d/f", ""), lt.Symlink("s", "d"), lt.Hardlink("h", "s/f")),
			layers.ErrBadLink, `layer sha256:e: entry "h": invalid hard link`},
		{"hardlink to host file", lt.Tar(lt.Hardlink("h", "/etc/passwd")), layers.ErrBadLink, "not found in this layer"},
		{"hardlink to dir", lt.Tar(lt.Dir("d"), lt.Hardlink("h", "d")), layers.ErrBadLink, ""},
		{"escape", lt.Tar(lt.File("../../x", "")), layers.ErrPathEscapes, `entry "../../x"`},
		{"gzip truncated", lt.Gzip(good)[:len(lt.Gzip(good))/2], layers.ErrCorrupt, "layer sha256:e"},
		{"zstd truncated", lt.Zstd(good)[:20], layers.ErrCorrupt, ""},
		{"tar truncated", good[:1000], layers.ErrCorrupt, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			err := layers.Extract(dir, bytes.NewReader(tt.in), layers.ExtractOptions{Layer: "sha256:e"})
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want %v containing %q", err, tt.want, tt.msg)
			}
		})
	}
	if err := layers.Extract("/nonexistent/dir", bytes.NewReader(good), layers.ExtractOptions{Layer: "sha256:e"}); err == nil ||
		!strings.Contains(err.Error(), "/nonexistent/dir") {
		t.Errorf("missing dir: %v", err)
	}
	// A symlink already on disk is not followed either.
	dir, outside := t.TempDir(), t.TempDir()
	os.Symlink(outside, filepath.Join(dir, "pre"))
	if err := layers.Extract(dir, bytes.NewReader(lt.Tar(lt.File("pre/x", "x"))), layers.ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("wrote through a symlink on disk: %v", ents)
	}
}

// usernsChildEnv carries the work directory to the test binary re-executed
// in a user namespace.
const usernsChildEnv = "DABBA_LAYERS_USERNS_CHILD"

// TestExtractUserns extracts a layer as an unprivileged user inside a user
// namespace of its own (unshare -Ur: only its own id mapped, as 0), the way
// the overlay rootfs does it: whiteouts as 0/0 devices and user.overlay
// xattrs must work there; owners outside the map and real devices cannot.
func TestExtractUserns(t *testing.T) {
	if dir := os.Getenv(usernsChildEnv); dir != "" {
		usernsChild(t, dir)
		return
	}
	unshare := testenv.RequireCommand(t, "unshare", "util-linux")
	var work string
	var run func(args ...string) *exec.Cmd
	uid := os.Geteuid()
	if uid == 0 {
		u := testenv.TestUser(t)
		uid = u.UID
		work = u.Dir(t)
		run = func(args ...string) *exec.Cmd { return u.Command(t.Context(), work, args[0], args[1:]...) }
	} else {
		work = t.TempDir()
		run = func(args ...string) *exec.Cmd { return exec.CommandContext(t.Context(), args[0], args[1:]...) }
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(work, "layers.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	layer := lt.Tar(
		lt.Dir("usr"), lt.Opaque("usr"),
		lt.File("usr/suid", "s", lt.Mode(0o4755), lt.Owner(1000, 1000)),
		lt.File("usr/mine", "m", lt.Mode(0o4755)),
		lt.Whiteout("gone"),
		lt.Char("dev/null", 1, 3),
		lt.Fifo("fifo"),
		lt.Hardlink("usr/hl", "usr/mine"),
	)
	if err := os.WriteFile(filepath.Join(work, "layer.tar"), lt.Gzip(layer), 0o644); err != nil {
		t.Fatal(err)
	}
	if uid != os.Geteuid() {
		os.Chown(filepath.Join(work, "layer.tar"), uid, -1)
	}
	cmd := run(unshare, "-Ur", bin, "-test.run=^TestExtractUserns$", "-test.v")
	cmd.Env = append(cmd.Env, usernsChildEnv+"="+work)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("unshare failed")) || bytes.Contains(out, []byte("Operation not permitted")) {
			testenv.Missing(t, "unprivileged user namespaces unavailable: "+strings.TrimSpace(string(out)),
				"enable them (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0)")
		}
		t.Fatalf("child: %v\n%s", err, out)
	}
	t.Logf("child output:\n%s", out)
	got := dumpDir(t, filepath.Join(work, "out"))
	own := fmt.Sprintf("%d:%d", uid, uid)
	if os.Geteuid() != 0 {
		own = fmt.Sprintf("%d:%d", os.Geteuid(), os.Getegid())
	}
	want := lines(
		". dir 755 "+own,
		"usr dir 755 "+own+" opaque=y",
		`usr/suid reg 755 `+own+` "s"`, // owner unmappable: setuid dropped
		`usr/mine reg 4755 `+own+` "m" n2`,
		`usr/hl reg 4755 `+own+` "m" n2`,
		"gone char 0 "+own+" 0,0",
		"dev dir 755 "+own,
		"fifo fifo 644 "+own,
	)
	if got != want {
		t.Errorf("extracted in user namespace:\n%s\nwant:\n%s", got, want)
	}
	skipped, _ := os.ReadFile(filepath.Join(work, "skipped"))
	for _, s := range []string{"usr/suid: setuid/setgid bits dropped", "dev/null: char device 1,3 not created"} {
		if !bytes.Contains(skipped, []byte(s)) {
			t.Errorf("skipped report %q lacks %q", skipped, s)
		}
	}
}

func usernsChild(t *testing.T, work string) {
	if os.Geteuid() != 0 {
		t.Fatalf("child runs as uid %d, want 0 in its user namespace", os.Geteuid())
	}
	f, err := os.Open(filepath.Join(work, "layer.tar"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := filepath.Join(work, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	var skipped []string
	err = layers.Extract(out, f, layers.ExtractOptions{
		Layer:             "sha256:userns",
		IgnoreChownErrors: true,
		SkipDevices:       true,
		OnSkip:            func(p string, err error) { skipped = append(skipped, p+": "+err.Error()) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "skipped"), []byte(strings.Join(skipped, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
}
