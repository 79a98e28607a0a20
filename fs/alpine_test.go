package fs

import (
	"os/exec"
	"testing"

	"github.com/dabba/dabba/fs/fstest"
	"github.com/dabba/dabba/internal/testenv"
)

// alpine unpacks the Alpine minirootfs for serving (not mounted).
func alpine(t testing.TB) *image {
	t.Helper()
	tgz := testenv.AlpineTarball(t)
	tree, src, err := OpenLayers(t.TempDir(), []Layer{{Path: tgz}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	im := &image{tree: tree, src: src}
	if im.fs, err = New(tree, src, Options{}); err != nil {
		t.Fatal(err)
	}
	return im
}

// extractAlpine extracts the Alpine minirootfs with GNU tar as root: the
// reference every rootfs is compared with.
func extractAlpine(t testing.TB) string {
	t.Helper()
	testenv.RequireRoot(t)
	tar := testenv.RequireCommand(t, "tar", "tar")
	dir := t.TempDir()
	out, err := exec.Command(tar, "--numeric-owner", "--same-owner", "-xpzf", testenv.AlpineTarball(t),
		"--xattrs", "--xattrs-include=*", "-C", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("extracting the Alpine minirootfs: %v\n%s", err, out)
	}
	return dir
}

// TestAlpineConformance compares a dabba-fs mount of the real Alpine
// minirootfs with GNU tar's extraction of it, and with the merged tree.
func TestAlpineConformance(t *testing.T) {
	testenv.RequireFUSE(t)
	ref := extractAlpine(t)
	im := alpine(t)
	im.mount(t)
	got, err := fstest.Snapshot(im.dir)
	if err != nil {
		t.Fatal(err)
	}
	want, err := fstest.Snapshot(ref)
	if err != nil {
		t.Fatal(err)
	}
	if len(want) < 400 {
		t.Fatalf("reference extraction has %d entries, want the whole minirootfs", len(want))
	}
	for _, d := range fstest.Compare(got, want, fstest.Options{}) {
		t.Errorf("against GNU tar: %s", d)
	}
	fromTree, err := fstest.FromTree(im.tree, im.src)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range fstest.Compare(got, fromTree, fstest.Options{}) {
		t.Errorf("against the tree: %s", d)
	}
	t.Logf("%d entries agree", len(got))
}
