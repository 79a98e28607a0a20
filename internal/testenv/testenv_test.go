package testenv

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestRegistriesServeBuiltImages pushes the real test images to both kinds of
// registry and reads them back.
func TestRegistriesServeBuiltImages(t *testing.T) {
	for _, reg := range []struct {
		name  string
		start func(testing.TB) string
	}{{"inprocess", Registry}, {"docker-registry", DockerRegistry}} {
		t.Run(reg.name, func(t *testing.T) {
			host := reg.start(t)
			img := BusyboxImage(t)
			ref := Push(t, img, host, "test/busybox:1")
			r, err := name.ParseReference(ref, name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			got, err := remote.Image(r)
			if err != nil {
				t.Fatal(err)
			}
			d1, _ := img.Digest()
			d2, _ := got.Digest()
			if d1 != d2 {
				t.Fatalf("digest %s after push, want %s", d2, d1)
			}
		})
	}
}

func TestAlpineTarballChecksum(t *testing.T) {
	p := AlpineTarball(t)
	if !strings.Contains(p, "alpine-minirootfs") {
		t.Fatalf("unexpected path %s", p)
	}
}

func TestUserRunsCommands(t *testing.T) {
	u := TestUser(t)
	home := u.Dir(t)
	out, err := u.Command(context.Background(), home, "id", "-u").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(out)) == "0" {
		t.Fatal("command ran as root")
	}
}
