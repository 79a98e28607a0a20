package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrremote "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/spf13/pflag"

	"github.com/dabba/dabba/internal/testenv"
)

var artifactLine = regexp.MustCompile(`^sha256:[a-f0-9]{64}\n$`)

// TestIndexPush runs `dabba index push` as the test user against both
// registries: it prints the artifact's digest, which the registry lists
// as a referrer of the image (API or tag fallback), and pins it in the
// store.
func TestIndexPush(t *testing.T) {
	d := newDabbaUser(t)
	img := testenv.MultiLayerImage(t)
	for _, reg := range registries() {
		t.Run(reg.name, func(t *testing.T) {
			host := reg.start(t)
			ref := testenv.Push(t, img, host, "idx/app:1")
			out := d.ok("index", "push", "-q", ref)
			if !artifactLine.MatchString(out) {
				t.Fatalf("stdout %q, want the artifact digest", out)
			}
			art := strings.TrimSpace(out)
			md, err := img.Digest()
			if err != nil {
				t.Fatal(err)
			}
			r, err := name.ParseReference(ref, name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			idx, err := ggcrremote.Referrers(r.Context().Digest(md.String()))
			if err != nil {
				t.Fatal(err)
			}
			im, err := idx.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			if len(im.Manifests) != 1 || im.Manifests[0].Digest.String() != art {
				t.Errorf("referrers %+v, want %s", im.Manifests, art)
			}
			pin, err := os.ReadFile(filepath.Join(d.root(), "lazy", "pins", md.Hex))
			if err != nil || strings.TrimSpace(string(pin)) != art {
				t.Errorf("pin %q (%v), want %s", pin, err, art)
			}
			// Again: the same artifact (the index is deterministic), and
			// the summary on stderr.
			out, errs, code := d.run("index", "push", ref)
			if code != 0 || strings.TrimSpace(out) != art || !strings.Contains(errs, "Indexed 3 of 3 layers") {
				t.Errorf("second push: exit %d, stdout %q, stderr %q", code, out, errs)
			}
		})
	}
}

func TestIndexPushErrors(t *testing.T) {
	d := newDabbaUser(t)
	host := testenv.Registry(t)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"index"}, []string{"dabba index push IMAGE"}},
		{[]string{"index", "pull", "x"}, []string{"dabba index push IMAGE"}},
		{[]string{"index", "push", host + "/no/such:1"}, []string{host + "/no/such:1", "not found"}},
		{[]string{"index", "push", "Bad:Ref"}, []string{"Bad:Ref", "invalid image reference"}},
		{[]string{"index", "push", "--platform", "linux", "x"}, []string{"platform \"linux\"", "os/arch"}},
	} {
		errs := d.fails(tc.args...)
		for _, w := range tc.want {
			if !strings.Contains(errs, w) {
				t.Errorf("dabba %s: error %q lacks %q", strings.Join(tc.args, " "), strings.TrimSpace(errs), w)
			}
		}
	}
}

func TestLazyFlags(t *testing.T) {
	g := newGlobals(nil, nil)
	for _, tc := range []struct {
		args           []string
		on, background bool
		cache          int64
		pinned         bool
		err            string
	}{
		{args: nil},
		{args: []string{"--lazy"}, on: true, background: true, cache: 10 << 30},
		{args: []string{"--lazy=nobackground", "--cache-size", "500m"}, on: true, cache: 500 << 20},
		{args: []string{"--lazy", "--lazy-pinned"}, on: true, background: true, cache: 10 << 30, pinned: true},
		{args: []string{"--lazy=false"}},
		{args: []string{"--lazy=maybe"}, err: `--lazy="maybe": want true, false or nobackground`},
		{args: []string{"--lazy", "--cache-size", "lots"}, err: `--cache-size "lots"`},
	} {
		var lf lazyFlags
		fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
		lf.add(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		m, err := lf.parse(g)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: error %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if m.on != tc.on || m.background != tc.background || m.opts.CacheSize != tc.cache || m.opts.RequirePinned != tc.pinned {
			t.Errorf("%v: got %+v", tc.args, m)
		}
	}
}
