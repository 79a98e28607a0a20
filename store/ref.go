package store

import (
	"fmt"
	"net"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// dockerHub is how podman spells Docker Hub in normalised names;
// go-containerregistry says index.docker.io.
const (
	dockerHub    = "docker.io"
	dockerHubAPI = "index.docker.io"
)

// ParseReference parses an image reference the way podman does: alpine is
// docker.io/library/alpine:latest, a tag or an @sha256: digest may follow,
// and a first component with a dot, a colon or "localhost" names a
// registry (host:port allowed). Loopback registries (127.0.0.0/8, ::1,
// localhost) and insecure ones speak plain HTTP.
func ParseReference(s string, insecure bool) (name.Reference, error) {
	if s == "" {
		return nil, fmt.Errorf("empty image reference: give NAME[:TAG] or NAME@sha256:DIGEST")
	}
	if s != strings.TrimSpace(s) {
		return nil, fmt.Errorf("image reference %q has surrounding spaces", s)
	}
	ref, err := name.ParseReference(s, name.WeakValidation)
	if err != nil {
		return nil, fmt.Errorf("invalid image reference %q: %v (want NAME[:TAG] or NAME@sha256:DIGEST, lowercase)", s, err)
	}
	if insecure || IsLoopback(ref.Context().RegistryStr()) {
		ref, err = name.ParseReference(s, name.WeakValidation, name.Insecure)
		if err != nil {
			return nil, fmt.Errorf("invalid image reference %q: %v", s, err)
		}
	}
	return ref, nil
}

// Normalize returns the podman-style full name of an image reference:
// docker.io/library/alpine:latest, host:5000/x/y@sha256:....
func Normalize(s string) (string, error) {
	ref, err := ParseReference(s, false)
	if err != nil {
		return "", err
	}
	return refString(ref), nil
}

// repoString is the podman-style repository of ref: docker.io/library/alpine.
func repoString(r name.Repository) string {
	reg := r.RegistryStr()
	if reg == dockerHubAPI {
		reg = dockerHub
	}
	return reg + "/" + r.RepositoryStr()
}

func refString(ref name.Reference) string {
	switch r := ref.(type) {
	case name.Tag:
		return repoString(r.Repository) + ":" + r.TagStr()
	case name.Digest:
		return repoString(r.Repository) + "@" + r.DigestStr()
	}
	return ref.Name()
}

// splitName splits a normalised name into repository and tag or digest;
// isDigest tells which.
func splitName(n string) (repo, tagOrDigest string, isDigest bool) {
	if i := strings.LastIndexByte(n, '@'); i >= 0 {
		return n[:i], n[i+1:], true
	}
	if i := strings.LastIndexByte(n, ':'); i >= 0 && !strings.Contains(n[i:], "/") {
		return n[:i], n[i+1:], false
	}
	return n, "", false
}

// IsLoopback reports whether a registry host[:port] is on the loopback
// interface: localhost, 127.0.0.0/8 or ::1.
func IsLoopback(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ParsePlatform parses os/arch[/variant], as podman's --platform.
func ParsePlatform(s string) (*v1.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 {
		return nil, fmt.Errorf("platform %q: want os/arch or os/arch/variant, e.g. linux/arm64", s)
	}
	for _, p := range parts {
		if p == "" || strings.ContainsAny(p, " \t:") {
			return nil, fmt.Errorf("platform %q: want os/arch or os/arch/variant, e.g. linux/arm64", s)
		}
	}
	p := &v1.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// HostPlatform is the platform images are chosen for by default.
func HostPlatform() *v1.Platform {
	p := &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	if runtime.GOARCH == "arm" {
		p.Variant = "v7"
	}
	return p
}

func platformString(p *v1.Platform) string {
	if p == nil {
		return "unknown"
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// platformMatches reports whether have (from an index) satisfies want. An
// empty wanted variant accepts any; arm64's variant v8 is its default.
func platformMatches(have, want *v1.Platform) bool {
	if have == nil || want == nil {
		return false
	}
	if have.OS != want.OS || have.Architecture != want.Architecture {
		return false
	}
	if want.Variant == "" {
		return true
	}
	hv, wv := have.Variant, want.Variant
	if have.Architecture == "arm64" {
		if hv == "" {
			hv = "v8"
		}
		if wv == "" {
			wv = "v8"
		}
	}
	return hv == wv
}
