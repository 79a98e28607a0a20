package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/dabba/dabba/sandbox"
	"github.com/dabba/dabba/store"
)

// storeRemoveFunc removes directory trees holding files of subordinate ids
// (extracted layers, container upper dirs) that the user cannot remove
// alone: as root of a user namespace mapping the user's ranges. See
// store.Store.RemoveFunc.
var storeRemoveFunc = func(path string) error {
	maps, _ := sandbox.ResolveIDMaps(false)
	return removeInUserNS(path, maps)
}

// openStore opens the store at --root.
func openStore(g *globals) (*store.Store, error) {
	s, err := store.Open(g.root)
	if err != nil {
		return nil, err
	}
	s.RemoveFunc = storeRemoveFunc
	return s, nil
}

func newImagesCmd(g *globals) *command {
	fs := pflag.NewFlagSet("images", pflag.ContinueOnError)
	quiet := fs.BoolP("quiet", "q", false, "print only image IDs")
	format := fs.String("format", "", "output format: table (default) or json")
	noTrunc := fs.Bool("no-trunc", false, "print full image IDs")
	return &command{
		name:  "images",
		usage: "[flags]",
		short: "list the images in the store",
		flags: fs,
		run: func(ctx context.Context, g *globals, args []string) error {
			if len(args) != 0 {
				return &exitError{code: exitUsageStatus, err: errors.New("images takes no arguments")}
			}
			if *format != "" && *format != "table" && *format != "json" {
				return &exitError{code: exitUsageStatus, err: fmt.Errorf("--format %q: want table or json", *format)}
			}
			s, err := openStore(g)
			if err != nil {
				return err
			}
			imgs, err := s.Images()
			if err != nil {
				return err
			}
			return printImages(g, imgs, *quiet, *format == "json", *noTrunc)
		},
	}
}

type imageRow struct {
	repo, tag string
}

// rows are the REPOSITORY/TAG pairs of an image: one per tag; its digest
// names only when it has no tag.
func rows(sum store.Summary) []imageRow {
	var tagged, digested []imageRow
	for _, n := range sum.Names {
		if i := strings.LastIndexByte(n, '@'); i >= 0 {
			digested = append(digested, imageRow{n[:i], "<none>"})
			continue
		}
		if i := strings.LastIndexByte(n, ':'); i >= 0 && !strings.Contains(n[i:], "/") {
			tagged = append(tagged, imageRow{n[:i], n[i+1:]})
		}
	}
	if len(tagged) > 0 {
		return tagged
	}
	if len(digested) > 0 {
		return digested[:1]
	}
	return []imageRow{{"<none>", "<none>"}}
}

type imageJSON struct {
	ID      string    `json:"Id"`
	Names   []string  `json:"Names"`
	Digest  string    `json:"Digest"`
	Created time.Time `json:"Created"`
	Size    int64     `json:"Size"`
}

func printImages(g *globals, imgs []store.Summary, quiet, asJSON, noTrunc bool) error {
	if asJSON {
		out := make([]imageJSON, 0, len(imgs))
		for _, s := range imgs {
			out = append(out, imageJSON{ID: s.ID, Names: s.Names, Digest: s.ManifestDigest.String(), Created: s.Created, Size: s.Size})
		}
		b, err := json.MarshalIndent(out, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(g.stdout, "%s\n", b)
		return nil
	}
	id := func(s string) string {
		if noTrunc || len(s) < 12 {
			return s
		}
		return s[:12]
	}
	if quiet {
		seen := map[string]bool{}
		for _, s := range imgs {
			if !seen[s.ID] {
				seen[s.ID] = true
				fmt.Fprintln(g.stdout, id(s.ID))
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE")
	now := time.Now()
	for _, s := range imgs {
		for _, r := range rows(s) {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.repo, r.tag, id(s.ID), humanAgo(now, s.Created), store.HumanSize(s.Size))
		}
	}
	return tw.Flush()
}

// humanAgo says how long ago t was, in podman's words ("2 days ago").
func humanAgo(now, t time.Time) string {
	if t.IsZero() {
		return "unknown"
	}
	d := now.Sub(t)
	if d < 0 {
		return "in the future"
	}
	var s string
	switch secs := int64(d.Seconds()); {
	case secs < 1:
		s = "Less than a second"
	case secs < 60:
		s = plural(secs, "second")
	case d.Minutes() < 2:
		s = "About a minute"
	case d.Minutes() < 60:
		s = plural(int64(d.Minutes()), "minute")
	case d.Hours() < 2:
		s = "About an hour"
	case d.Hours() < 48:
		s = plural(int64(d.Hours()), "hour")
	case d.Hours() < 24*14:
		s = plural(int64(d.Hours()/24), "day")
	case d.Hours() < 24*60:
		s = plural(int64(d.Hours()/24/7), "week")
	case d.Hours() < 24*365*2:
		s = plural(int64(d.Hours()/24/30), "month")
	default:
		s = plural(int64(d.Hours()/24/365), "year")
	}
	return s + " ago"
}

func plural(n int64, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}
