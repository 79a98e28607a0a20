package main

import (
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/dabba/dabba/internal/testenv"
	"github.com/dabba/dabba/layers/layertest"
)

// versionImage is busybox with /etc/v holding v.
func versionImage(t *testing.T, v string) v1.Image {
	t.Helper()
	return testenv.ImageOfTars(t, busyboxTar(t), layertest.Tar(layertest.Dir("etc"), layertest.File("etc/v", v+"\n")))
}

// TestRunPullPolicy runs the real binary with each --pull policy, lazy and
// not, while the tag moves and then while the registry is gone: missing
// (the default) runs what the store knows, and a warm lazy run makes no
// request at all; newer follows the tag and falls back with a warning;
// always fails without the registry; never refuses an unknown image.
func TestRunPullPolicy(t *testing.T) {
	reg := testenv.NewCountingRegistry(t)
	ref := testenv.Push(t, versionImage(t, "one"), reg.Host, "policy/app:1")
	publisher := newDabbaUser(t)
	publisher.ok("index", "push", "-q", ref)
	lazy, whole := newLazyUser(t), newDabbaUser(t)
	cat := func(d *dabbaUser, want string, args ...string) {
		t.Helper()
		out := d.ok(append(append([]string{"run", "--network", "none"}, args...), ref, "cat", "/etc/v")...)
		if out != want+"\n" {
			t.Errorf("dabba run %s: /etc/v is %q, want %q", strings.Join(args, " "), out, want)
		}
	}

	cat(lazy, "one", "--lazy")
	cat(whole, "one")
	n := reg.Requests()
	cat(lazy, "one", "--lazy")
	cat(whole, "one")
	if got := reg.Requests() - n; got != 0 {
		t.Errorf("warm runs (lazy and pulled) made %d registry requests, want none", got)
	}

	testenv.Push(t, versionImage(t, "two"), reg.Host, "policy/app:1")
	publisher.ok("index", "push", "-q", ref)
	cat(lazy, "one", "--lazy")
	cat(lazy, "one", "--lazy", "--pull", "never")
	cat(whole, "one", "--pull", "never")
	cat(lazy, "two", "--lazy", "--pull", "newer")
	cat(whole, "two", "--pull", "always")
	cat(lazy, "two", "--lazy") // the tag as the last run resolved it
	cat(whole, "two")

	reg.Close()
	for _, d := range []*dabbaUser{lazy, whole} {
		mode := []string{"--lazy"}
		if d == whole {
			mode = nil
		}
		out, errs, code := d.run(append(append([]string{"run", "--network", "none", "--pull", "newer"}, mode...), ref, "cat", "/etc/v")...)
		if code != 0 || out != "two\n" || !strings.Contains(errs, "warning: --pull newer") {
			t.Errorf("--pull newer %v, registry gone: exit %d, stdout %q, stderr %q; want the known image and a warning", mode, code, out, errs)
		}
		errs = d.fails(append(append([]string{"run", "--network", "none", "--pull", "always"}, mode...), ref, "true")...)
		if !strings.Contains(errs, "connection refused") {
			t.Errorf("--pull always %v, registry gone: %q, want the connection error", mode, errs)
		}
		cat(d, "two", mode...)
	}
	errs := newDabbaUser(t).fails("run", "--pull", "never", ref, "true")
	if !strings.Contains(errs, "--pull never") || !strings.Contains(errs, "image not known") {
		t.Errorf("--pull never, unknown image: %q", errs)
	}
	errs = whole.fails("run", "--pull", "sometimes", ref, "true")
	if !strings.Contains(errs, "want missing, newer, always or never") {
		t.Errorf("--pull sometimes: %q", errs)
	}
}
