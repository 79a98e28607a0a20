package main

import (
	"bufio"
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/spf13/pflag"

	"github.com/dabba/dabba/layers"
)

func newIndexCmd(g *globals) *command {
	flags := pflag.NewFlagSet("index", pflag.ContinueOnError)
	layerList := flags.String("layers", "", "serve these layer files (tar, tar.gz or tar.zst; comma-separated, bottom first) instead of IMAGE")
	return &command{
		name:  "index",
		usage: "[flags] IMAGE | --layers A.tar,B.tar.gz",
		short: "print the merged tree of an image, ls -lR style",
		flags: flags,
		run: func(ctx context.Context, g *globals, args []string) error {
			ref := ""
			switch {
			case *layerList != "" && len(args) == 0:
			case *layerList == "" && len(args) == 1:
				ref = args[0]
			default:
				return usagef("want IMAGE, or --layers and no IMAGE")
			}
			tree, err := mergeImage(g, ref, *layerList)
			if err != nil {
				return err
			}
			w := bufio.NewWriter(g.stdout)
			printTree(w, tree)
			return w.Flush()
		},
	}
}

// printTree writes one line per name: mode, links, owner, size (or device
// numbers), mtime, path, and the target of a symlink or, for the second
// and later names of a hard-linked file, the first name.
//
//	-rwsr-xr-x  2 0/0          20 2020-01-02 03:04 /usr/bin/passwd
//	lrwxrwxrwx  1 0/0           7 2020-01-02 03:04 /bin -> usr/bin
//	drwxr-xr-x  2 0/0           5 2020-01-02 03:04 /etc  (size: number of entries)
func printTree(w *bufio.Writer, t *layers.Tree) {
	first := map[*layers.Node]string{}
	t.Walk(func(p string, n *layers.Node) error {
		if p == "." {
			p = "/"
		} else {
			p = "/" + p
		}
		size := fmt.Sprint(n.Size)
		switch n.Type {
		case layers.TypeChar, layers.TypeBlock:
			size = fmt.Sprintf("%d, %d", n.Devmajor, n.Devminor)
		case layers.TypeSymlink:
			size = fmt.Sprint(len(n.Linkname))
		case layers.TypeDir:
			size = fmt.Sprint(len(n.Children()))
		}
		mt := time.Unix(0, n.Mtime).UTC().Format("2006-01-02 15:04")
		fmt.Fprintf(w, "%s %2d %d/%d %11s %s %s", modeString(n), n.Nlink, n.UID, n.GID, size, mt, p)
		switch {
		case n.Type == layers.TypeSymlink:
			fmt.Fprintf(w, " -> %s", n.Linkname)
		case n.Type != layers.TypeDir && first[n] != "":
			fmt.Fprintf(w, " link to %s", first[n])
		default:
			first[n] = p
		}
		keys := make([]string, 0, len(n.Xattrs))
		for k := range n.Xattrs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, " [%s=%q]", k, n.Xattrs[k])
		}
		w.WriteByte('\n')
		return nil
	})
}

// modeString is ls's mode column.
func modeString(n *layers.Node) string {
	b := []byte("?rwxrwxrwx")
	b[0] = map[layers.EntryType]byte{layers.TypeReg: '-', layers.TypeDir: 'd', layers.TypeSymlink: 'l',
		layers.TypeChar: 'c', layers.TypeBlock: 'b', layers.TypeFifo: 'p'}[n.Type]
	for i := 0; i < 9; i++ {
		if n.Mode&(1<<(8-i)) == 0 {
			b[i+1] = '-'
		}
	}
	special := func(bit uint32, at int, set, unset byte) {
		if n.Mode&bit != 0 {
			if b[at] == '-' {
				b[at] = unset
			} else {
				b[at] = set
			}
		}
	}
	special(0o4000, 3, 's', 'S')
	special(0o2000, 6, 's', 'S')
	special(0o1000, 9, 't', 'T')
	return string(b)
}
