package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/spf13/pflag"

	"github.com/dabba/dabba/sandbox/cgroups"
	"github.com/dabba/dabba/store"
)

// lazyFlags are `dabba run`'s flags for starting before the image is
// downloaded (see store.OpenLazy).
type lazyFlags struct {
	lazy      string // "false", "true" or "nobackground"
	cacheSize string
	pinned    bool
}

// add registers --lazy[=nobackground], --cache-size and --lazy-pinned.
func (lf *lazyFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&lf.lazy, "lazy", "false", "start before the image is downloaded, fetching only what the command reads and the rest in the background; --lazy=nobackground fetches only what is read")
	fs.Lookup("lazy").NoOptDefVal = "true"
	fs.StringVar(&lf.cacheSize, "cache-size", "10g", "size cap of the chunk cache lazy runs share (e.g. 500m, 20g)")
	fs.BoolVar(&lf.pinned, "lazy-pinned", false, "with --lazy, use only a lazy index pushed from this machine (`dabba index push`), never one found in the registry")
}

// lazyMode is what the flags ask for.
type lazyMode struct {
	on, background bool
	opts           store.LazyOptions
}

// parse checks the flags; g.stderr gets the notice of layers fetched whole.
func (lf *lazyFlags) parse(g *globals) (*lazyMode, error) {
	m := &lazyMode{}
	switch lf.lazy {
	case "false", "":
		return m, nil
	case "true":
		m.on, m.background = true, true
	case "nobackground":
		m.on = true
	default:
		return nil, fmt.Errorf("--lazy=%q: want true, false or nobackground", lf.lazy)
	}
	n, err := cgroups.ParseMemory(lf.cacheSize)
	if err != nil || n <= 0 {
		return nil, fmt.Errorf("--cache-size %q: want a size such as 500m or 20g", lf.cacheSize)
	}
	m.opts = store.LazyOptions{CacheSize: n, RequirePinned: lf.pinned, Notice: g.stderr, Progress: g.stderr}
	return m, nil
}

// startLazyImage starts opening ref for a lazy run: manifest and config
// now, the layers and their indexes in the background (while the
// container's namespaces are set up), file bytes when read. The FUSE
// rootfs (prepareLazyFUSE) waits for the opening and serves its Tree with
// the LazyImage as the fs.LayerReader; StartBackground is called once the
// container runs (if m.background), and Close when it has ended (which
// stops the background fetch and saves the files read, for the next run's
// prefetch).
func startLazyImage(ctx context.Context, st *store.Store, ref string, m *lazyMode) (*store.LazyOpening, error) {
	return st.StartLazy(ctx, ref, m.opts)
}

// logLazyImage logs what an opened lazy image is made of.
func logLazyImage(li *store.LazyImage) {
	kinds := map[store.LazyKind]int{}
	for _, l := range li.Layers {
		kinds[l.Kind]++
	}
	slog.Debug("lazy image", "stage", "run", "image", li.Image.Name, "layers", len(li.Layers), "kinds", fmt.Sprint(kinds),
		"artifact", li.IndexArtifact.String(), "pinned", li.IndexPinned, "learned", len(li.Learned()))
}
