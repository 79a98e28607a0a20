package main

import (
	"slices"
	"strings"
	"testing"
)

func TestExpand(t *testing.T) {
	got := expand([]string{"{dabba}", "--root", "{store}", "run", "{ref}", "{cmd}", "oci:{store}/oci:bench"},
		map[string]string{"dabba": "/b/dabba", "store": "/s/1.0", "ref": "127.0.0.1:5000/bench/alpine-gzip:latest"},
		[]string{"sh", "-c", "ls / >/dev/null"})
	want := []string{"/b/dabba", "--root", "/s/1.0", "run", "127.0.0.1:5000/bench/alpine-gzip:latest", "sh", "-c", "ls / >/dev/null", "oci:/s/1.0/oci:bench"}
	if !slices.Equal(got, want) {
		t.Fatalf("expand:\n got %q\nwant %q", got, want)
	}
}

func TestRotate(t *testing.T) {
	a, b, c := &Contender{Name: "a"}, &Contender{Name: "b"}, &Contender{Name: "c"}
	cs := []*Contender{a, b, c}
	names := func(cs []*Contender) string {
		var n []string
		for _, c := range cs {
			n = append(n, c.Name)
		}
		return strings.Join(n, "")
	}
	for k, want := range []string{"abc", "bca", "cab", "abc"} {
		if got := names(rotate(cs, k)); got != want {
			t.Errorf("rotate(abc, %d) = %s, want %s", k, got, want)
		}
	}
	if names(cs) != "abc" {
		t.Errorf("rotate modified its input: %s", names(cs))
	}
	if len(rotate(nil, 3)) != 0 {
		t.Error("rotate(nil) not empty")
	}
}

// TestContenders checks the declarations: every contender listed is
// declared, does something, uses only known variables, and the peer pulls
// and runs.
func TestContenders(t *testing.T) {
	cs := contenders()
	known := map[string]bool{"{dabba}": true, "{store}": true, "{ref}": true, "{id}": true, "{bundle}": true, "{cmd}": true}
	for _, name := range allContenders {
		c, ok := cs[name]
		if !ok {
			t.Errorf("contender %s listed but not declared", name)
			continue
		}
		if c.Pull == nil && c.Run == nil {
			t.Errorf("contender %s neither pulls nor runs", name)
		}
		if (c.Bundle == nil) != (c.Prepare == nil) {
			t.Errorf("contender %s: Bundle and Prepare go together", name)
		}
		for _, tmpl := range [][]string{c.Pull, c.Run, c.Warm} {
			for _, w := range tmpl {
				for rest := w; strings.Contains(rest, "{"); {
					i := strings.Index(rest, "{")
					j := strings.Index(rest[i:], "}")
					if j < 0 {
						t.Errorf("contender %s: unclosed variable in %q", name, w)
						break
					}
					if v := rest[i : i+j+1]; !known[v] {
						t.Errorf("contender %s: unknown variable %s in %q", name, v, w)
					}
					rest = rest[i+j+1:]
				}
			}
		}
		if c.Run != nil && !slices.Contains(c.Run, "{cmd}") && c.Bundle == nil {
			t.Errorf("contender %s: Run without {cmd}", name)
		}
	}
	if p := cs[defaultPeer]; p == nil || p.Pull == nil || p.Run == nil {
		t.Errorf("the peer %s must pull and run", defaultPeer)
	}
}

func TestOptionsCheck(t *testing.T) {
	base := options{reps: 1, profile: "link", peer: defaultPeer, rate: "100mbit", registry: "docker-registry",
		images: []string{"alpine"}, forms: []string{"gzip"}, scenarios: []string{scWarm}, contenders: []string{"podman"}}
	for _, tc := range []struct {
		name string
		edit func(o *options)
		want string
	}{
		{"reps", func(o *options) { o.reps = 0 }, "--reps"},
		{"profile", func(o *options) { o.profile = "wifi" }, "--profile"},
		{"rate", func(o *options) { o.rate = "fast" }, "--rate"},
		{"rtt", func(o *options) { o.rtt = -1 }, "--rtt"},
		{"registry", func(o *options) { o.registry = "quay" }, "--registry"},
		{"peer", func(o *options) { o.peer = "docker" }, "--peer"},
		{"tag", func(o *options) { o.tag = "a/b" }, "--tag"},
		{"image", func(o *options) { o.images = []string{"ubuntu"} }, `--images: unknown "ubuntu"`},
		{"contender", func(o *options) { o.contenders = []string{"docker"} }, `--contenders: unknown "docker"`},
		{"scenario", func(o *options) { o.scenarios = []string{"boot"} }, `--scenarios: unknown "boot"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base
			tc.edit(&o)
			err := o.check()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("check: %v, want an error with %q", err, tc.want)
			}
		})
	}
}
