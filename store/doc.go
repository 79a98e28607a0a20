// Package store holds dabba's images on disk: references, registry access
// through go-containerregistry, the content-addressed blob store, the
// per-layer indexes, the tag database, extracted layers, container
// directories, locks and garbage collection.
//
// # Layout
//
// Everything lives below one root directory (Open creates it):
//
//	blobs/sha256/<hex>     verified blobs: compressed layers, manifests,
//	                       image indexes and configs, named by digest. A file
//	                       appears here only after its bytes were checked.
//	index/sha256/<hex>     the entry index of the layer blob <hex>
//	                       (layers.Index in its binary form), built in the
//	                       same pass that downloaded and verified the blob;
//	                       beside it <hex>.diffid holds the verified diff_id
//	                       and, for gzip blobs, <hex>.gzran the checkpoints
//	                       (layers/gzran) to read the tar at any offset
//	                       straight from the compressed blob.
//	layers/<diffid-hex>-<variant>/
//	                       a layer extracted in kernel-overlayfs form, one
//	                       copy per id map (variant: "single", or a hash of
//	                       the subordinate map), since extraction in a user
//	                       namespace puts ownership on the map's host ids
//	                       (see LayerDir); made on demand by `dabba run`.
//	containers/<id>/       a container's writable upper and work dirs, while
//	                       its dabba holds locks/container-<id>.lock.
//	refs.json              the image database: manifest digest -> names
//	                       (repo:tag, repo@digest), config, layers, sizes.
//	tmp/                   partial downloads (<hex>.partial, kept to resume
//	                       an interrupted pull) and temporary files before
//	                       their atomic rename.
//	locks/                 flock(2) lock files, see below.
//	cache/                 the chunk cache of lazy runs (layers/remote.Cache):
//	                       verified gzip spans and eStargz chunks named by
//	                       their sha256 (cache/sha256/ab/<hex>), shared by
//	                       all images and containers, capped by --cache-size
//	                       (least recently used go first); `dabba gc` empties
//	                       it (PruneCache).
//	lazy/pins/<manifest-hex>
//	                       the digest of the index artifact `dabba index push`
//	                       built here for the image with that manifest
//	                       (trusted: built from verified blobs).
//	lazy/tags/<sha256 of repository:tag>
//	                       the manifest digest a lazy run resolved the tag
//	                       to: the next lazy run takes it as it is (--pull
//	                       missing or never: no request at all) or asks the
//	                       registry with HEAD (--pull newer or always), and
//	                       reads the manifest from blobs/ when unchanged.
//	lazy/found/<manifest-hex>
//	                       the digest of the index artifact a lazy run found
//	                       through the referrers API for that manifest: used
//	                       again while its blobs are in the store, without
//	                       asking the registry (a newer artifact pushed
//	                       since is seen after `dabba gc`).
//	lazy/verified/<artifact-hex>-<layer-hex>
//	                       the diff_id a lazy run's background fetch found
//	                       for the layer read through that unpinned index
//	                       artifact, its entries the artifact's: later runs
//	                       trust the layer at open and do not read it all
//	                       again to check (a fact about digests: kept).
//	lazy/learned/<manifest-hex>
//	                       the files the lazy runs of that image read, one
//	                       path a line in order of first read, and beside
//	                       it <manifest-hex>.json, the ranges of the layers
//	                       they read (4 KiB pages, joined): the next lazy
//	                       run prefetches them at start, and `dabba index
//	                       push` publishes the ranges with the index.
//	lazy/trees/<key>       the merged tree of a lazy image's layer indexes,
//	                       key the SHA-256 of where each index came from
//	                       (the layer, its index artifact or its eStargz
//	                       TOC digest): a warm lazy run reads it instead of
//	                       merging them; gc removes them all.
//	merged/<key>           the merged tree of an image's layer list (key:
//	                       SHA-256 of their digests), saved by the first
//	                       FUSE rootfs of the image and read by the next
//	                       instead of every layer index (MergedTree); gc
//	                       removes those of layer lists no image has.
//	inflated/<layer-hex>/  spans of gzip layers inflated by FUSE mounts
//	                       (fs.Blob.SpanDir), read by later containers
//	                       instead of inflating again; gc removes those of
//	                       layers no image uses.
//
// # Atomicity and locks
//
// Every file is written as a temporary file in tmp/ (same filesystem),
// fsynced and renamed into place, so a killed pull never leaves a half blob
// that looks whole. Locks are flock(2) locks on files in locks/:
//
//	locks/store.lock       shared by pulls and layer extraction, exclusive
//	                       for gc and rmi's cleanup: nothing is collected
//	                       while a pull that may refer to it is running.
//	locks/refs.lock        exclusive around each read-modify-write of
//	                       refs.json.
//	locks/blob-<hex>.lock  exclusive while a blob is downloaded, so two
//	                       pulls of images sharing a layer fetch it once.
//	locks/layer-<hex>.lock shared by running containers using the layer
//	                       <hex> (HoldLayers, any variant); gc keeps a layer
//	                       dir whose lock it cannot take exclusively.
//	locks/extract-<hex>-<variant>.lock
//	                       exclusive while a layer is extracted.
//	locks/container-<id>.lock
//	                       exclusive, held by the dabba process running the
//	                       container <id> from before its directory is made
//	                       until it is removed. The kernel drops it when
//	                       dabba dies, even by kill -9: a container
//	                       directory whose lock is free is dead.
//
// # Pull
//
// Pull resolves a reference like podman does (alpine is
// docker.io/library/alpine:latest), picks the host's platform (or the
// requested one) from a multi-arch index, and fetches the layers in
// parallel. Each layer passes once through download -> sha256 of the blob +
// write to tmp/<hex>.partial -> decompression (gzip through layers/gzran,
// recording checkpoints; zstd through layers.Decompress) -> sha256 of the
// tar (its diff_id) -> layers.IndexLayer, in three goroutines (pipeline.go):
// the producer downloads, hashes and writes the blob, the inflater reads the
// partial file behind it, the indexer hashes and indexes the tar. A CPU
// gate (cpugate.go) with one token per core serves the layer with the most
// bytes left first, so the largest layer does not finish alone at the end.
// Only when both digests
// match is the blob renamed into blobs/; bytes that do not match, a corrupt
// stream or a hostile entry discard the partial file. A download cut short
// is resumed within the pull (a few times), and otherwise keeps its partial
// file: the next pull re-reads it through the same pass and asks the
// registry for the rest with an HTTP Range request (a registry answering
// 200 instead has the held bytes skipped).
//
// # Removing
//
// Remove (dabba rmi) untags; when an image loses its last name, everything
// only it used goes (as GC does, keeping partial downloads). GC (dabba gc)
// removes the directories of dead containers (RemoveDeadContainers, which
// `dabba run` also calls) and everything no image refers to. Extracted layers can hold
// directories owned by subordinate ids, which the user cannot empty;
// Store.RemoveFunc (set by cmd/dabba) removes those inside a user
// namespace. A running container keeps its extracted layers with
// HoldLayers.
package store
