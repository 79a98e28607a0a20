package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math/rand"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/dabba/dabba/internal/imagebuild"
	"github.com/dabba/dabba/internal/testenv"
	"github.com/dabba/dabba/layers/layertest"
	"github.com/dabba/dabba/store"
)

func TestChooseRootfs(t *testing.T) {
	for _, flag := range []string{rootfsFUSE, rootfsOverlay} {
		if mode, why := chooseRootfs(flag); mode != flag || !strings.Contains(why, "--rootfs "+flag) {
			t.Errorf("chooseRootfs(%q) = %q, %q", flag, mode, why)
		}
	}
	dev := fuseDevice
	t.Cleanup(func() { fuseDevice = dev })
	fuseDevice = filepath.Join(t.TempDir(), "no-fuse")
	if mode, why := chooseRootfs(""); mode != rootfsOverlay || !strings.Contains(why, "no-fuse") {
		t.Errorf("without /dev/fuse: %q, %q; want overlay and the reason", mode, why)
	}
}

// richImage is busybox plus three layers, each stored another way (gzip,
// uncompressed, zstd), that delete with whiteouts, hide with an opaque
// directory, replace files by symlinks and directories, and hold hard
// links, symlinks, a fifo, odd modes and owners, and a file of several
// chunks.
func richImage(t *testing.T) v1.Image {
	t.Helper()
	ls, err := testenv.BusyboxImage(t).Layers()
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 700<<10)
	rand.New(rand.NewSource(1)).Read(big[:400<<10])
	mt := layertest.Mtime(time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC))
	l1 := layertest.Tar(
		layertest.Dir("data", mt), layertest.File("data/old", "old\n"), layertest.File("data/keep", "k\n"),
		layertest.File("gone", "gone\n"), layertest.File("replaced", "file\n"), layertest.File("todir", "file\n"),
		layertest.Dir("hard"), layertest.File("hard/a", "linked\n", layertest.Mode(0o640), layertest.Owner(1000, 1000)),
		layertest.Hardlink("hard/b", "hard/a"),
		layertest.Dir("moved"), layertest.Dir("moved/sub"), layertest.File("moved/sub/f", "f\n"),
		layertest.File("secret", "s\n", layertest.Mode(0o600), layertest.Owner(0, 42)),
		layertest.File("big", string(big), mt),
	)
	l2 := layertest.Tar(
		// data/ itself is in the layer, as image builders write it: for a
		// directory a layer only implies, the merged view keeps the
		// lower layer's attributes, while an extracted layer holds a
		// directory of its own that overlayfs shows instead.
		layertest.Whiteout("gone"), layertest.Dir("data"), layertest.Opaque("data"), layertest.File("data/new", "new\n"),
		layertest.Symlink("replaced", "data/new"),
		layertest.Dir("todir", layertest.Mode(0o700)), layertest.File("todir/in", "in\n"),
		layertest.File("setuid", "#!/bin/sh\n", layertest.Mode(0o4755)),
		layertest.Fifo("fifo"),
	)
	l3 := layertest.Tar(
		layertest.Symlink("link", "/hard/a"), layertest.Symlink("dangling", "nowhere"),
		layertest.Dir("h2"), layertest.File("h2/x", "x\n", mt), layertest.Hardlink("h2/y", "h2/x"), layertest.Hardlink("h2/z", "h2/x"),
		layertest.File("empty", ""),
	)
	gz, err := imagebuild.LayerFromTar(l1)
	if err != nil {
		t.Fatal(err)
	}
	diff := func(b []byte) v1.Hash {
		h, _, err := v1.SHA256(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	return testenv.ImageOfLayers(t, append(ls, gz,
		testenv.RawLayer(l2, diff(l2)),                 // uncompressed
		testenv.RawLayer(layertest.Zstd(l3), diff(l3)), // zstd
	)...)
}

// walkScript prints every entry of the image's tree (not the mounts dabba
// adds) with its type and mode, owner, size, mtime, link count, inode and
// symlink target, then the md5 of every regular file.
const walkScript = `cd / && P='( -path ./proc -o -path ./sys -o -path ./dev -o -path ./tmp -o -path ./run )'
find . -xdev $P -prune -o -exec stat -c '%N|%f|%u|%g|%s|%Y|%h|%i' {} + 
echo =====
find . -xdev $P -prune -o -type f -exec md5sum {} +`

// view turns walkScript's output into comparable lines: the inode numbers
// of hard links become the first name of their inode, directory sizes and
// link counts go (filesystem-specific), and what dabba itself adds or
// changes at every start (the root and /etc, where it makes mount points
// and binds /etc/hosts) is left out.
func view(t *testing.T, out string) []string {
	t.Helper()
	stats, sums, ok := strings.Cut(out, "=====\n")
	if !ok {
		t.Fatalf("walk output without its separator: %q", out)
	}
	skip := regexp.MustCompile("^['\"`]?\\.(/etc(/(hosts|hostname|resolv\\.conf))?)?['\"`]?\\|")
	// The first name, in order, of each inode with several names.
	first := map[string]string{}
	for _, l := range lines(stats) {
		f := strings.Split(l, "|")
		if len(f) == 8 {
			name, _, _ := strings.Cut(f[0], " -> ")
			name = strings.Trim(name, "'`\"")
			if fi, ok := first[f[7]]; !ok || name < fi {
				first[f[7]] = name
			}
		}
	}
	var got []string
	for _, l := range lines(stats) {
		f := strings.Split(l, "|")
		if len(f) != 8 {
			t.Fatalf("walk line %q", l)
		}
		if skip.MatchString(l) {
			continue
		}
		name, _, _ := strings.Cut(f[0], " -> ")
		name = strings.Trim(name, "'`\"")
		// Inode numbers only say which names are hard links of one
		// file: overlayfs over layers on two filesystems numbers its
		// directories itself.
		if fi := first[f[7]]; f[6] == "1" || strings.HasPrefix(f[1], "4") && len(f[1]) == 4 || fi == name {
			f[7] = ""
		} else {
			f[7] = "same-as:" + fi
		}
		if strings.HasPrefix(f[1], "4") && len(f[1]) == 4 { // directory: mode 04xxx in hex
			f[4], f[6] = "", ""
		}
		got = append(got, strings.Join(f, "|"))
	}
	for _, l := range lines(sums) {
		if !regexp.MustCompile(`\./etc/(hosts|hostname|resolv\.conf)$`).MatchString(l) {
			got = append(got, l)
		}
	}
	sort.Strings(got)
	return got
}

// TestFUSEConformance runs the same images with --rootfs fuse and --rootfs
// overlay and compares the trees the containers see, entry by entry.
func TestFUSEConformance(t *testing.T) {
	e := newRunEnv(t)
	testenv.RequireFUSE(t)
	rich := testenv.Push(t, richImage(t), testenv.Registry(t), "test/rich:1")
	for _, img := range []string{e.alpine, rich} {
		t.Run(strings.SplitN(filepath.Base(img), ":", 2)[0], func(t *testing.T) {
			var views [2][]string
			for i, mode := range []string{rootfsFUSE, rootfsOverlay} {
				views[i] = view(t, e.ok(t, "--rootfs", mode, img, "sh", "-c", walkScript))
			}
			if len(views[0]) < 10 {
				t.Fatalf("the walk saw %d entries: %q", len(views[0]), views[0])
			}
			if !slices.Equal(views[0], views[1]) {
				var d []string
				for _, l := range views[0] {
					if !slices.Contains(views[1], l) {
						d = append(d, "fuse only:    "+l)
					}
				}
				for _, l := range views[1] {
					if !slices.Contains(views[0], l) {
						d = append(d, "overlay only: "+l)
					}
				}
				t.Fatalf("fuse and overlay differ:\n%s", strings.Join(d, "\n"))
			}
			t.Logf("%d lines agree", len(views[0]))
			if img == rich {
				for _, want := range []string{"'./replaced' -> 'data/new'|a1ff", "./h2/z|81a4|0|0|2|1577934245|3|same-as:./h2/x",
					"./setuid|89ed", "./fifo|11a4", "./data/new|", "./todir/in|", "./todir|41c0",
					"./secret|8180|0|42|2|", "./hard/b|81a0|1000|1000|7|"} {
					if !slices.ContainsFunc(views[0], func(l string) bool { return strings.HasPrefix(l, want) }) {
						t.Errorf("no entry %q in the view", want)
					}
				}
				for _, gone := range []string{"./gone|", "./data/old", "./data/keep", ".wh."} {
					if slices.ContainsFunc(views[0], func(l string) bool { return strings.Contains(l, gone) }) {
						t.Errorf("entry %q in the view", gone)
					}
				}
			}
		})
	}
}

// storeSums hashes every file below the store's blobs/ and index/.
func storeSums(t *testing.T, root string) map[string]string {
	t.Helper()
	sums := map[string]string{}
	for _, d := range []string{"blobs", "index"} {
		filepath.Walk(filepath.Join(root, d), func(p string, fi os.FileInfo, err error) error {
			if err != nil || !fi.Mode().IsRegular() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h := sha256.Sum256(b)
			sums[p] = hex.EncodeToString(h[:])
			return nil
		})
	}
	return sums
}

// TestFUSEWrites writes to every kind of place in a FUSE rootfs: the
// writes land in the container's upper directory, the image is unchanged
// for the next container, and the store is untouched.
func TestFUSEWrites(t *testing.T) {
	e := newRunEnv(t)
	testenv.RequireFUSE(t)
	root := filepath.Join(e.home, "store-writes")
	rich := testenv.Push(t, richImage(t), testenv.Registry(t), "test/rich:2")
	e.dabbaAt(t, root, "pull", rich)
	before := storeSums(t, root)
	if len(before) < 6 {
		t.Fatalf("store holds %d files", len(before))
	}
	c := e.start(t, root, "--rootfs", "fuse", "--init", rich, "sh", "-c", `set -e
		echo created > /created
		echo changed >> /hard/a
		rm /secret
		mv /moved /renamed
		dd if=/dev/zero of=/big bs=1k count=1 seek=10 conv=notrunc 2>/dev/null
		cat /hard/a /renamed/sub/f; test ! -e /moved; test ! -e /secret
		echo ready; exec sleep 1000`)
	if out := c.out.String(); !strings.Contains(out, "linked\nchanged\nf\n") {
		t.Fatalf("inside: %q", out)
	}
	upper := filepath.Join(c.dir, "upper")
	for _, p := range []string{"created", "hard/a", "secret", "renamed/sub/f", "big"} {
		if _, err := os.Lstat(filepath.Join(upper, p)); err != nil {
			t.Errorf("upper dir lacks %s: %v", p, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(upper, "hard/a")); string(b) != "linked\nchanged\n" {
		t.Errorf("upper hard/a = %q", b)
	}
	c.stop(t)
	// The next container sees the image as it was.
	out := e.dabbaAt(t, root, "run", "--network", "none", "--rootfs", "fuse", rich, "sh", "-c",
		"cat /hard/a /secret /moved/sub/f; test ! -e /created && test ! -e /renamed && echo clean").Stdout
	if out != "linked\ns\nf\nclean\n" {
		t.Errorf("the next container sees %q", out)
	}
	after := storeSums(t, root)
	for p, s := range before {
		if after[p] != s {
			t.Errorf("store file %s changed", p)
		}
	}
}

// TestFUSECorruptBlob flips a byte of a layer blob in the store after the
// pull verified it: reads of the damaged part fail with EIO inside the
// container, never give wrong bytes, and dabba says what happened; a
// truncated blob is refused at start.
func TestFUSECorruptBlob(t *testing.T) {
	e := newRunEnv(t)
	testenv.RequireFUSE(t)
	root := filepath.Join(e.home, "store-corrupt")
	img := richImage(t)
	ref := testenv.Push(t, img, testenv.Registry(t), "test/rich:3")
	e.dabbaAt(t, root, "pull", ref)
	ls := testenv.LayerDigests(t, img)
	// Layer 1 of the rich image: the gzip layer holding /big, whose
	// random half spans several 64 KiB chunks of the blob.
	blob := filepath.Join(root, "blobs", "sha256", ls[len(ls)-3].Hex)
	b, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	good := e.dabbaAt(t, root, "run", "--network", "none", "--rootfs", "overlay", ref, "md5sum", "/big").Stdout
	// --lazy of a pulled image reads its local layers the same way, and
	// keeps the spans it inflated as well.
	if got := e.dabbaAt(t, root, "run", "--network", "none", "--lazy", ref, "md5sum", "/big").Stdout; got != good {
		t.Errorf("--lazy md5sum /big: %q, want %q", got, good)
	}
	if inflated, _ := filepath.Glob(filepath.Join(root, "inflated", "*", "*")); len(inflated) == 0 {
		t.Error("a lazy run of a pulled image kept no inflated span")
	}
	os.RemoveAll(filepath.Join(root, "inflated")) // so the damaged bytes are read
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(blob, b, 0o644); err != nil {
		t.Fatal(err)
	}
	var o testenv.Output
	for _, mode := range [][]string{{"--rootfs", "fuse"}, {"--lazy"}} {
		args := append([]string{"--root", root, "run", "--network", "none"}, mode...)
		args = append(args, ref, "sh", "-c", "cat /data/new; md5sum /big; echo status $?")
		o = e.u.RunAs(t.Context(), e.home, nil, "", e.dabba, args...)
		if !strings.Contains(o.Stdout, "new\n") {
			t.Errorf("%s: an undamaged file was not readable: stdout %q", mode, o.Stdout)
		}
		if strings.Contains(o.Stdout, strings.Fields(good)[0]) || !strings.Contains(o.Stdout, "status 1") {
			t.Errorf("%s: md5sum of the damaged file: %q (the good sum is %s)", mode, o.Stdout, good)
		}
		if !strings.Contains(o.Stderr, "Input/output error") {
			t.Errorf("%s: no EIO inside: stderr %q", mode, o.Stderr)
		}
		if !regexp.MustCompile(`dabba run: \d+ reads? of the image's files failed .*checksum mismatch.*the store's copy of .* is damaged.*dabba rmi `).MatchString(o.Stderr) {
			t.Errorf("%s: dabba's report: %q", mode, o.Stderr)
		}
	}
	t.Logf("status %d, stderr:\n%s", o.Code, o.Stderr)

	// Truncated: refused before the container starts.
	if err := os.WriteFile(blob, b[:len(b)-1000], 0o644); err != nil {
		t.Fatal(err)
	}
	o = e.u.RunAs(t.Context(), e.home, nil, "", e.dabba, "--root", root, "run", "--network", "none", "--rootfs", "fuse", ref, "true")
	if o.Code == 0 || !strings.Contains(o.Stderr, "corrupt") || !strings.Contains(o.Stderr, "dabba rmi") {
		t.Errorf("truncated blob: status %d, stderr %q", o.Code, o.Stderr)
	}
	t.Logf("truncated: status %d, stderr: %s", o.Code, o.Stderr)

	// The blob whole again, its gzip checkpoints damaged: refused with the
	// way out, which works (the pull rebuilds them from the local blob).
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(blob, b, 0o644); err != nil {
		t.Fatal(err)
	}
	ckp := filepath.Join(root, "index", "sha256", ls[len(ls)-3].Hex+".gzran")
	ckb, err := os.ReadFile(ckp)
	if err != nil {
		t.Fatal(err)
	}
	ckb[len(ckb)/2] ^= 0x40
	if err := os.WriteFile(ckp, ckb, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, mode := range [][]string{{"--rootfs", "fuse"}, {"--lazy"}} {
		args := append(append([]string{"--root", root, "run", "--network", "none"}, mode...), ref, "true")
		o = e.u.RunAs(t.Context(), e.home, nil, "", e.dabba, args...)
		if o.Code == 0 || !strings.Contains(o.Stderr, "checksum mismatch") || !strings.Contains(o.Stderr, "dabba pull "+ref) || strings.Contains(o.Stderr, "--rootfs overlay") {
			t.Errorf("%s, damaged checkpoints: status %d, stderr %q", mode, o.Code, o.Stderr)
		}
	}
	e.dabbaAt(t, root, "pull", ref)
	for _, mode := range [][]string{{"--rootfs", "fuse"}, {"--lazy"}} {
		args := append(append([]string{"run", "--network", "none"}, mode...), ref, "md5sum", "/big")
		if got := e.dabbaAt(t, root, args...).Stdout; got != good {
			t.Errorf("%s after the pull rebuilt the checkpoints: %q, want %q", mode, got, good)
		}
	}
}

// TestFUSEKill kills dabba serving a running container with SIGKILL: the
// container dies with it, no mount of it is left anywhere, and the next
// run works.
func TestFUSEKill(t *testing.T) {
	e := newRunEnv(t)
	testenv.RequireFUSE(t)
	root := filepath.Join(e.home, "store-kill")
	c := e.start(t, root, "--rootfs", "fuse", "--init", e.bbox, "sh", "-c", "cat /bin/busybox >/dev/null; echo ready; exec sleep 1000")
	mounted := func() []string {
		var found []string
		ms, _ := filepath.Glob("/proc/[0-9]*/mountinfo")
		for _, m := range ms {
			b, _ := os.ReadFile(m)
			if bytes.Contains(b, []byte(c.dir)) {
				found = append(found, m)
			}
		}
		return found
	}
	if len(mounted()) == 0 {
		t.Fatalf("the container's mounts are not visible in any /proc/*/mountinfo")
	}
	c.kill(t)
	if m := mounted(); len(m) != 0 {
		t.Errorf("mounts of the container left in %q", m)
	}
	out := e.dabbaAt(t, root, "run", "--network", "none", "--rootfs", "fuse", e.bbox, "echo", "again").Stdout
	if out != "again\n" {
		t.Errorf("the next run printed %q", out)
	}
}

// TestFUSEPermissions checks that the kernel enforces file modes on the
// FUSE rootfs (default_permissions): /etc/shadow is root's.
func TestFUSEPermissions(t *testing.T) {
	e := newRunEnv(t)
	testenv.RequireFUSE(t)
	o := e.run(t, "", nil, "--rootfs", "fuse", "-u", "nobody", e.alpine, "cat", "/etc/shadow")
	if o.Code == 0 || !strings.Contains(o.Stderr, "Permission denied") {
		t.Errorf("nobody reading /etc/shadow: status %d, stdout %q, stderr %q", o.Code, o.Stdout, o.Stderr)
	}
	if out := e.ok(t, "--rootfs", "fuse", e.alpine, "head", "-c", "5", "/etc/shadow"); out != "root:" {
		t.Errorf("root reading /etc/shadow: %q", out)
	}
	// With only the caller's id mapped, every file is root's, as in the
	// extracted fallback.
	if out := e.ok(t, "--rootfs", "fuse", "--single-id", e.alpine, "stat", "-c", "%u:%g", "/etc/shadow", "/bin/busybox"); out != "0:0\n0:0\n" {
		t.Errorf("owners with --single-id: %q", out)
	}
	// The choice is logged at debug level.
	for _, mode := range []string{rootfsFUSE, rootfsOverlay} {
		args := []string{"--log-level", "debug", "--root", e.root, "run", "--network", "none", "--rootfs", mode, e.bbox, "true"}
		o := e.u.RunAs(t.Context(), e.home, nil, "", e.dabba, args...)
		if o.Code != 0 || !regexp.MustCompile(`msg=rootfs .*type=`+mode).MatchString(o.Stderr) {
			t.Errorf("--rootfs %s --log-level debug: status %d, stderr %q", mode, o.Code, o.Stderr)
		}
	}
}

// TestFUSEFallback: where the default dabba-fs rootfs cannot be mounted in
// the container's namespaces (here the kernel refuses a FUSE mount option),
// dabba run extracts the layers and runs on kernel overlayfs instead, says
// so at debug level and records it for ps and inspect; --rootfs fuse asked
// for explicitly fails instead, and --lazy too (nothing to extract).
func TestFUSEFallback(t *testing.T) {
	e := newRunEnv(t)
	testenv.RequireFUSE(t)
	refuse := []string{"DABBA_FUSE_OPTIONS=no_such_option"}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o := e.u.RunAs(ctx, e.home, refuse, "", e.dabba, append([]string{"--log-level", "debug"}, e.runArgs(e.bbox, "sh", "-c", "echo hello")...)...)
	if o.Code != 0 || o.Stdout != "hello\n" {
		t.Fatalf("default rootfs with FUSE refused: status %d, stdout %q, stderr:\n%s", o.Code, o.Stdout, o.Stderr)
	}
	if !strings.Contains(o.Stderr, "type=overlay") || !strings.Contains(o.Stderr, "dabba-fs could not be mounted") {
		t.Errorf("the debug log does not say the rootfs fell back:\n%s", o.Stderr)
	}

	// A running container shows its rootfs as overlay.
	cmd := e.u.Command(ctx, e.home, e.dabba, e.runArgs("--init", e.bbox, "sh", "-c", "echo ready; exec sleep 30")...)
	cmd.Env = append(cmd.Env, refuse...)
	out := &testenv.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	out.WaitFor(t, 0, "ready")
	var listed []store.ContainerInfo
	if err := json.Unmarshal([]byte(e.dabbaAt(t, e.root, "ps", "--format", "json").Stdout), &listed); err != nil || len(listed) != 1 || listed[0].Rootfs != rootfsOverlay {
		t.Errorf("dabba ps --format json: %+v, %v; want one container on overlay", listed, err)
	}
	cmd.Process.Kill()
	cmd.Wait()

	for _, args := range [][]string{{"--rootfs", "fuse"}, {"--lazy"}} {
		o := e.run(t, "", refuse, append(args, e.bbox, "true")...)
		if o.Code == 0 || !strings.Contains(o.Stderr, "mounting FUSE") {
			t.Errorf("dabba run %s with FUSE refused: status %d, stderr %q; want the mount error", strings.Join(args, " "), o.Code, o.Stderr)
		}
	}
	if d := containerDirs(e.root); len(d) != 0 {
		t.Errorf("container directories left: %v", d)
	}
}

// TestFUSESavedTree: the first FUSE run of an image merges its layer
// indexes and saves the tree; the next ones read the saved tree and see
// the same files; a damaged saved tree is merged again, not served.
func TestFUSESavedTree(t *testing.T) {
	e := newRunEnv(t)
	testenv.RequireFUSE(t)
	root := filepath.Join(e.home, "store-saved-tree")
	ref := testenv.Push(t, richImage(t), testenv.Registry(t), "test/rich:saved")
	e.dabbaAt(t, root, "pull", ref)
	look := []string{"--log-level", "debug", "--root", root, "run", "--network", "none", "--rootfs", "fuse", ref, "sh", "-c", "cd / && ls -lanR bin data hard moved secret big gone replaced todir 2>&1; md5sum /big"}
	run := func(want string) string {
		t.Helper()
		o := e.u.RunAs(t.Context(), e.home, nil, "", e.dabba, look...)
		if o.Code != 0 {
			t.Fatalf("status %d, stderr:\n%s", o.Code, o.Stderr)
		}
		if !strings.Contains(o.Stderr, `msg="merged tree"`) || !strings.Contains(o.Stderr, "from="+want) {
			t.Errorf("want the tree from %s; debug log:\n%s", want, o.Stderr)
		}
		return o.Stdout
	}
	first := run(`"layer indexes"`)
	if !strings.Contains(first, "hard:") || !strings.Contains(first, "/big") {
		t.Fatalf("the listing is not of the image:\n%s", first)
	}
	if second := run("saved"); second != first {
		t.Errorf("the saved tree shows other files:\n%s\nthan the merged one:\n%s", second, first)
	}
	saved, _ := filepath.Glob(filepath.Join(root, "merged", "*"))
	if len(saved) != 1 {
		t.Fatalf("saved trees: %v", saved)
	}
	b, _ := os.ReadFile(saved[0])
	b[len(b)/2] ^= 0x10
	os.WriteFile(saved[0], b, 0o644)
	if third := run(`"layer indexes"`); third != first {
		t.Errorf("after the saved tree was damaged:\n%s\nwant:\n%s", third, first)
	}
}
