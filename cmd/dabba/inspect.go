package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/pflag"

	"github.com/dabba/dabba/store"
)

// inspectJSON is what dabba inspect prints for an image.
type inspectJSON struct {
	ID          string          `json:"Id"`
	Name        string          `json:"Name"`
	Names       []string        `json:"Names"`
	Digest      string          `json:"Digest"`
	IndexDigest string          `json:"IndexDigest,omitempty"`
	Size        int64           `json:"Size"`
	Manifest    json.RawMessage `json:"Manifest"`
	Config      json.RawMessage `json:"Config"`
}

// The kinds of object `dabba inspect --type` chooses between.
const (
	inspectImage     = "image"
	inspectContainer = "container"
	inspectAll       = "all"
)

func newInspectCmd(g *globals) *command {
	fs := pflag.NewFlagSet("inspect", pflag.ContinueOnError)
	typ := fs.String("type", inspectAll, "what the names are: image, container (a running one: name, id or id prefix), or all (an image first, then a container)")
	return &command{
		name:  "inspect",
		usage: "[flags] IMAGE|CONTAINER...",
		short: "print an image's manifest and config, or a running container's record, as JSON",
		flags: fs,
		run: func(ctx context.Context, g *globals, args []string) error {
			if len(args) == 0 {
				return &exitError{code: exitUsageStatus, err: errors.New("want at least one IMAGE or CONTAINER")}
			}
			switch *typ {
			case inspectImage, inspectContainer, inspectAll:
			default:
				return &exitError{code: exitUsageStatus, err: fmt.Errorf("--type %q: want image, container or all", *typ)}
			}
			s, err := openStore(g)
			if err != nil {
				return err
			}
			out := make([]any, 0, len(args))
			for _, a := range args {
				v, err := inspectOne(s, a, *typ)
				if err != nil {
					return err
				}
				out = append(out, v)
			}
			b, err := json.MarshalIndent(out, "", "  ")
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "%s\n", b)
			return nil
		},
	}
}

// inspectOne finds a as typ says (for all: an image, else a running
// container) and returns what inspect prints for it.
func inspectOne(s *store.Store, a, typ string) (any, error) {
	if typ == inspectContainer {
		return s.LookupContainer(a)
	}
	img, err := s.Lookup(a)
	if errors.Is(err, store.ErrNotFound) && typ == inspectAll {
		c, cerr := s.LookupContainer(a)
		if cerr == nil {
			return c, nil
		}
		if !errors.Is(cerr, store.ErrNotFound) {
			return nil, cerr
		}
		return nil, fmt.Errorf("%w; no running container is named %q either (see `dabba ps`)", err, a)
	}
	if err != nil {
		return nil, err
	}
	return inspectImageJSON(s, a, img)
}

// inspectImageJSON is what inspect prints for an image.
func inspectImageJSON(s *store.Store, a string, img *store.Image) (*inspectJSON, error) {
	m, err := s.RawManifest(img)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", a, err)
	}
	c, err := s.RawConfig(img)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", a, err)
	}
	ij := &inspectJSON{ID: img.ID, Name: img.Name, Names: img.Names, Digest: img.ManifestDigest.String(),
		Size: img.Size, Manifest: m, Config: c}
	if img.IndexDigest != nil {
		ij.IndexDigest = img.IndexDigest.String()
	}
	return ij, nil
}
