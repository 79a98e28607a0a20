// Package layers reads container image layers: decompression, tar entries
// with their offsets, the per-layer index, the merged view of an image's
// layers (whiteouts resolved), and extraction of one layer in kernel
// overlayfs format. It never imports go-fuse; the FUSE filesystem (package
// fs) and the overlay fallback both consume its Tree.
//
// # Layers and entries
//
// A layer blob is a tar stream, gzip- or zstd-compressed or not.
// Decompress detects the compression from magic bytes (DetectCompression)
// and maps decoder failures (truncated, corrupt) to ErrCorrupt.
//
// Reader reads the uncompressed tar stream and yields checked Entry values:
// the path cleaned and relative (root "."), one of the EntryType values,
// permission bits with setuid/setgid/sticky, uid, gid, size, mtime (int64
// nanoseconds), link target, xattrs (PAX SCHILY.xattr.*), device numbers,
// and for a regular file the Offset of its content in the uncompressed tar
// stream. PAX and GNU long names are handled by archive/tar. A whiteout
// file ".wh.NAME" becomes a TypeWhiteout entry whose Path is the deleted
// path; "DIR/.wh..wh..opq" becomes a TypeOpaque entry whose Path is DIR.
// AUFS metadata (".wh..wh.plnk" and the like) is skipped.
//
// # Index
//
// IndexLayer reads a whole layer into an Index: its entries in archive
// order (duplicates kept; the last wins when merged), the layer digest and
// the tar size. MarshalBinary gives a compact, versioned, checksummed form
// (front-coded paths, varints) to keep beside the blob; UnmarshalBinary
// reads it back and refuses other versions and damaged data with
// ErrCorrupt.
//
// # The merged view
//
// Merge(indexes), bottom layer first, gives the Tree a container sees:
//
//   - Each layer is applied on the result of those below. First its
//     whiteouts and opaque markers act on the layers below, wherever they
//     sit in the archive: ".wh.NAME" deletes NAME (a directory with all it
//     holds), ".wh..wh..opq" empties its directory of everything from below.
//     Then its other entries are applied in archive order, a later entry
//     replacing an earlier one (a file replaces a directory and the
//     reverse; a directory over a directory keeps the entries below and
//     takes the upper metadata). A whiteout later in the same layer than an
//     entry of the same name deletes it, as the overlay format of that
//     layer would.
//   - Missing parent directories are created (0755, 0:0, mtime 0); an
//     existing parent directory keeps its metadata. A non-directory (file,
//     symlink) where a parent directory is needed is replaced by a
//     directory: paths are never resolved through symlinks.
//   - A hard link names the same Node as its target, found in the tree as
//     it stands when the link is applied (this layer's earlier entries and
//     the layers below). The link keeps that node: if a later layer
//     deletes or replaces the target path, the link still shows the
//     content and metadata as of its layer, as overlayfs does (an upper
//     layer never changes a lower inode). A link to nothing or to a
//     directory is an error.
//   - Nlink is the number of names of a node; for a directory 2 plus its
//     subdirectories. Inode numbers are assigned in Walk order (root 1),
//     so they are stable for a given list of layers.
//   - A ".wh." name never appears in the tree.
//
// Each Node says where its bytes are: Layer (index into the slice given to
// Merge), Offset and Size in that layer's uncompressed tar stream. How a
// consumer reaches those bytes is its choice: package fs keeps each layer's
// decompressed tar as a file and reads at offsets; package layers/gzran
// inflates a gzip blob from the nearest checkpoint at or before Offset,
// for lazy reads from a registry.
//
// One consequence of applying a layer's whiteouts before its other entries:
// a hard link may not point to a file its own layer whites out, even if
// the link comes first in the archive (Docker, applying entries strictly
// in order, would accept that order). Real layers never do this.
//
// Memory: names are stored as basenames in sorted per-directory slices,
// nodes are 112 bytes, maps are nil when empty. BenchmarkMergeMemory
// measures the retained heap of a merged 100k-entry tree: about 160 bytes
// per entry (Go 1.26, amd64), within the 200-byte goal of dabba-fs.
//
// # Hostile input
//
// Layers come from the network and are refused or neutralised, never
// followed. Every refusal is an *EntryError naming the layer digest and the
// entry ("layer sha256:ab…: entry \"../etc/passwd\": path escapes the
// root") and wraps a sentinel error:
//
//   - A leading "/" is stripped, as Docker does; a path leaving the root
//     through ".." is refused (ErrPathEscapes). Empty paths, NUL bytes,
//     paths over 4095 bytes (which also bounds the depth of a tree),
//     components over 255 bytes, a ".wh." name used as a directory, a root
//     entry that is not a directory, a symlink with an empty or over-long
//     target: ErrInvalidPath.
//   - Hard links whose target escapes the root, is the root, does not exist
//     or is a directory: ErrBadLink.
//   - Symlinks are kept as they are, whatever their target: they are
//     resolved inside the container. Neither Merge nor Extract ever
//     resolves a path through one.
//   - Device nodes are kept as metadata; Extract skips char and block
//     devices it cannot create when SkipDevices is set, reporting them.
//   - Setuid and setgid bits are kept in the tree; Extract keeps them only
//     where lchown succeeded.
//   - Sizes below 0 or above MaxEntrySize (1 TiB): ErrBadSize. Negative ids
//     or device numbers, or above 2^32-1: ErrBadHeader.
//   - Duplicate entries in one layer: the last wins, as with tar.
//   - Whiteouts of "." or ".." (".wh.", ".wh..", ".wh..."), whiteouts with
//     content, whiteouts that are directories: ErrBadWhiteout.
//   - Xattrs that steer kernel overlayfs (trusted.overlay.*,
//     user.overlay.*) are dropped from every entry.
//   - Sparse files and unknown entry types: ErrUnsupported.
//   - Truncated or corrupt streams: ErrCorrupt.
//
// # Extraction
//
// Extract writes one layer into a directory as a kernel overlayfs lower
// layer (whiteouts as 0/0 character devices, opaque directories marked with
// user.overlay.opaque=y, or trusted.overlay.opaque), for the overlay rootfs
// the run issue falls back to. The caller runs it inside the container's
// user namespace so ownership lands on the mapped ids, into a temporary
// directory it renames when Extract succeeds. Extract never follows a
// symlink: each directory is opened below the root with openat2
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, or one component at a time with
// O_NOFOLLOW. A hard link may point only to a file of the same layer.
//
// One difference with the merged view: a layer that lacks an entry for a
// parent directory gets an implicit 0755 directory in its extraction,
// which overlayfs then shows over a lower directory of the same name;
// Merge keeps the lower directory's metadata, as Docker does. Layers built
// by docker, buildkit or podman always carry their parent directories.
package layers
