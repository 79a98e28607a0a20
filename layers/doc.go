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
//
// # Reaching a stored layer's bytes (dabba run --rootfs fuse)
//
// The FUSE rootfs reads file contents from the layer blobs in the store as
// they are, without extracting or decompressing them first (fs.OpenBlobs):
// a gzip blob through its gzran checkpoints (4 MiB spans, taken at pull),
// inflating from the nearest one, with the inflated prefix of each layer's
// 4 most recently used spans kept in memory (20 MiB at most) so that reads
// in any order inflate a span once; an uncompressed blob by pread; a zstd
// blob (no random access) decompressed at each start into an unlinked
// file, as fs.OpenLayers does for every layer. The alternative measured
// was fs.OpenLayers for all layers (decompress every blob at every start,
// then pread). Times of `dabba run --network none IMG CMD` as an unprivileged
// user, median of 5 (3 for first runs), on 2 shared cores loaded by other
// work (the bench's images: Alpine minirootfs, 1 layer, 3 MB; Debian
// minbase, 1 layer, 49 MB; "large", minbase plus python3, gcc, numpy in 4
// layers, 400 MB compressed, 14,350 names). Run A compared the three ways;
// run B is the final code (gzran with the span cache), with overlay again
// beside it:
//
//	                          run A                            run B
//	                          overlay  OpenLayers  gzran       overlay  gzran+cache
//	first run, /bin/true
//	  alpine                     138        80        84          122        53 ms
//	  minbase                   1155       664       134         2830        93
//	  large                     9043      6269       149        12124       118
//	later runs, /bin/true
//	  alpine                      21        81        92           22        54
//	  minbase                     22       743       153           27        88
//	  large                       29      4637       164           26       108
//	find / -xdev | wc -l
//	  large                       67      4812       497           56       374
//	tar -cf - /usr | wc -c
//	  alpine                      30       106       148           29        82
//	  large                      557      6741      5179          520      3907
//
// So gzran over the compressed blob beats decompressing at each start
// everywhere, and starts an image 2 to 100 times faster than extracting it
// (the larger the image, the more). Once the layers are extracted,
// overlayfs starts and reads faster (later starts 2.5 to 4 times, reading
// all of /usr 3 to 8 times): each container is a fresh FUSE mount whose
// kernel caches start cold, and reading a whole tree inflates it again,
// where overlayfs reads the host's page cache. Where that matters,
// `--rootfs overlay` extracts once. In the large image's later /bin/true
// without the span cache, 28 ms went to reading and merging the 4 indexes
// and 95 ms from exec to exit, inflating what ld.so and libc fault in,
// again from a checkpoint at every fault that goes backwards.
//
// Integrity: a partial gzip read cannot check the stream's CRC-32, and a
// flipped bit in a Huffman-coded block can decode to other bytes without
// any DEFLATE error. So the pull records, in the pass that verifies the
// blob's digest, a CRC-32C of every 64 KiB of the blob (store.ChunkSums;
// 0.006% of its size; recomputed once from the blob, digest checked, for
// stores pulled before), and every read of the blob checks the chunks it
// touches: a blob changed on disk since gives EIO in the container and one
// line from dabba at exit, never wrong bytes; a truncated one is refused
// at start. The checkpoints and the index carry their own checksums.
package layers
