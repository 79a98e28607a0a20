package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/pflag"
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

func newInspectCmd(g *globals) *command {
	fs := pflag.NewFlagSet("inspect", pflag.ContinueOnError)
	return &command{
		name:  "inspect",
		usage: "IMAGE...",
		short: "print an image's manifest and config as JSON",
		flags: fs,
		run: func(ctx context.Context, g *globals, args []string) error {
			if len(args) == 0 {
				return &exitError{code: exitUsageStatus, err: errors.New("want at least one IMAGE")}
			}
			s, err := openStore(g)
			if err != nil {
				return err
			}
			out := make([]inspectJSON, 0, len(args))
			for _, a := range args {
				img, err := s.Lookup(a)
				if err != nil {
					return err
				}
				m, err := s.RawManifest(img)
				if err != nil {
					return fmt.Errorf("image %s: %w", a, err)
				}
				c, err := s.RawConfig(img)
				if err != nil {
					return fmt.Errorf("image %s: %w", a, err)
				}
				ij := inspectJSON{ID: img.ID, Name: img.Name, Names: img.Names, Digest: img.ManifestDigest.String(),
					Size: img.Size, Manifest: m, Config: c}
				if img.IndexDigest != nil {
					ij.IndexDigest = img.IndexDigest.String()
				}
				out = append(out, ij)
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
