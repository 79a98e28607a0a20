// Package remote reads image layers lazily from a registry: HTTP Range
// requests on the layer blob, only for the bytes a read needs, each piece
// verified against a digest before use and kept in a content-addressed
// cache on local disk. It serves two kinds of layers:
//
//   - eStargz layers (OpenEStargz): the footer and TOC come from the blob's
//     tail, the TOC is checked against the layer's
//     containerd.io/snapshot/stargz/toc.digest annotation, and each file is
//     read by its chunks, each checked against its chunkDigest.
//   - gzip layers with a dabba index (NewGzipLayer): the layer's
//     gzran.Index (checkpoints of the inflater's state) plus a SpanIndex
//     (a SHA-256 per span of compressed bytes, BuildSpans) let a read fetch
//     only the spans from the checkpoint before its offset to its end.
//     The index may be detached from its windows (gzran.Index.Detach):
//     the 32 KiB of history at each checkpoint, most of an index's size,
//     then live in a blob of their own (BuildWindows), and a read fetches
//     by range, verifies and caches just the window of the checkpoint it
//     starts from, beside its spans (NewGzipLayerWindows). The index a
//     lazy run fetches whole stays small: for the benchmark's large image
//     (4 layers, 398 MiB gzip, checkpoints every 256 KiB, spans of at most
//     64 KiB) about 0.67 MB, where it was 13.4 MB with the windows inline
//     and checkpoints every 1 MiB.
//
// Both give an io.ReaderAt the fs package can read at layers.Entry
// offsets; Layers puts an image's readers behind fs.LayerReader's
// ReadAt(layer, p, off). The package imports no FUSE, store or registry-client code: the
// caller (store, cmd/dabba) hands it an authenticated http.RoundTripper and
// the blob URL.
//
// # Fetching
//
// A Fetcher is an io.ReaderAt over a compressed blob by HTTP Range
// requests ("Range: bytes=A-B", one range per request: multi-range requests
// are never sent, as many registries' storage backends refuse them or
// answer with a single range, and parallel single ranges on kept-alive
// connections cost no more round trips). ReadMany takes many ranges at once:
// neighbours at most Options.MergeGap (64 KiB) apart are fetched by one
// request of at most Options.MaxRequest (4 MiB), the others in parallel,
// with at most Options.MaxConcurrent (6) requests in flight per blob.
//
//   - Redirects (registries send blob GETs to object storage) are followed
//     by net/http; go-containerregistry's transports add credentials only
//     for the registry's own host, and net/http drops an Authorization
//     header on a redirect to another host. The storage URL is then used
//     directly for a minute (redirectTTL), saving a round trip to the
//     registry per range; at its first failure (an expired signature) the
//     request goes to the registry again, without counting as a retry.
//   - 401: Options.Refresh is called for a new transport (a fresh token)
//     and the request retried once; without it the error says to log in.
//   - Retries: connection errors, bodies cut short, 429 and 5xx are retried
//     up to Options.Retries (4) times with exponential backoff (100 ms,
//     doubling, at most 5 s); a retry asks only for the bytes not yet
//     received. Other statuses (403, 404, 416) fail at once, naming the
//     blob, the URL (its query, which may hold a storage signature, is
//     redacted) and what to do. Cancelling the context ends a read at once.
//   - A response that receives nothing for Options.StallTimeout (30 s) is
//     ended and retried like a broken connection: a registry that stops
//     sending never hangs a read (and so never hangs the FUSE server).
//   - A 206 whose Content-Range does not cover the request, or whose total
//     differs from the blob's size, is an error.
//   - A registry that ignores Range answers 200 with the whole blob. The
//     Fetcher then keeps that response: it writes the body to an unlinked
//     file in Options.TempDir, serves every read from it as soon as the
//     bytes it needs have arrived, resumes the download when the connection
//     breaks, and checks the whole blob's digest at the end. So such a
//     registry costs one download of the blob, never one per read. The
//     download outlives the read that started it (that read may be
//     cancelled). A copy that fails its digest is dropped and fetched again
//     once.
//
// Download writes a whole blob in order, fetching several ranges at once
// (for layers without an index, fetched whole while one is built, and for
// `dabba index push`). Stats counts requests, bytes, retries and
// range-ignoring answers, for tests and benchmarks.
//
// # Verification: never unverified bytes
//
// The Fetcher returns what the registry sent. Every byte that leaves
// GzipLayer or EStargz has been checked first:
//
//   - gzip layers: each span of compressed bytes is hashed (SHA-256) when
//     fetched and compared with its digest in the SpanIndex, before the
//     inflater sees it. Spans start at every gzran checkpoint and are at
//     most MaxSpanSize (64 KiB) long, so verification costs at most 64 KiB
//     of extra fetch per read beyond what the inflater needs (none for the
//     ranges of a prefetch list, which get spans of their own ending where
//     they end: BuildSpansCut). This guards
//     against a registry, a storage backend or a network that damages the
//     blob's bytes. It does not make the index trustworthy: the gzran
//     windows and the TOC come from the dabba index artifact, which anyone
//     able to push to the repository can attach to the image. The caller
//     must vouch for the artifact (its digest recorded when it was built or
//     pushed, or a signature), and a background fetch of the whole layer
//     can check the layer's diff_id in the end.
//   - eStargz: the TOC JSON is hashed and compared with the annotation (the
//     manifest, verified by its digest, carries it) before it is parsed;
//     each chunk is inflated and its uncompressed bytes compared with the
//     TOC's chunkDigest. The chunk cache keeps the checked JSON (hashed
//     again when read back) and a compact copy made from it (tocbin.go),
//     which later opens decode instead: that copy is guarded by a CRC
//     against damage only, as the store's own index files are.
//   - A mismatch is fetched once more (after waiting for a whole-blob copy
//     to finish and be re-checked); a second mismatch is a *VerifyError
//     naming the blob, the span or chunk (with the file), its compressed
//     range and both digests, wrapping ErrVerify: fs turns it into EIO.
//   - The cache hashes a piece again on every read from disk.
//
// # Measured
//
// Against go-containerregistry's registry on 127.0.0.1 (go test -bench
// .): a cold read of a 7.5 KB file of a 1.7 MB gzip layer indexed every
// 512 KiB of output fetches 151 KB in one request (8.9% of the blob: the
// compressed bytes from the checkpoint before the file to the file's end,
// rounded out to spans); reading every file fetches each span once. For
// the Alpine minirootfs as eStargz (3.6 MB, 518 entries), opening costs one
// 64 KiB request for footer and TOC and reading etc/os-release 222 bytes
// more: 1.8% of the blob. With gzran's default 4 MiB checkpoint spacing a
// cold read inflates from about 1 MB of compressed bytes before its
// offset; `dabba index push` indexes lazy layers every 256 KiB, windows
// detached (store.IndexSpan).
//
// Background fetches (PrefetchAllPaced) go a batch at a time, each after a
// wait the caller supplies: the store waits until no read has been in
// flight for 50 ms, so a command's reads queue behind at most one batch
// (1 MiB) of the background fetch.
//
// # Cache
//
// Cache is a directory of verified pieces named by the SHA-256 of their
// content: gzip spans (compressed bytes) and eStargz chunks (uncompressed
// bytes), so identical chunks of different images are stored once:
//
//	DIR/sha256/ab/abcdef…   a piece
//	DIR/tmp/piece-*         being written; renamed into place when complete
//
// It is shared by all images, containers and dabba processes of a user.
// Writes are atomic (temporary file, rename), so a reader sees a whole
// piece or none; a reader whose piece is evicted under it keeps its open
// descriptor, or sees a miss and fetches again. Recency is the file's
// mtime, set on every hit; a Put that takes the cache over its cap
// (DefaultCacheSize, 10 GiB, or --cache-size) removes the least recently
// used pieces down to 90% of it. Prune(n) and Clear serve `dabba gc`.
// Temporary files older than an hour (a writer killed mid-write) are
// removed by the next scan. A second read of the same data, by any
// process, fetches nothing.
//
// Each layer reader also keeps its last 4 MiB of verified pieces in
// memory: the inflater reads a span in 64 KiB steps.
//
// # eStargz as a layers.Index
//
// The TOC lists the layer's tar entries (metadata, link targets, xattrs,
// devices) but not their offsets in the uncompressed tar. EStargz.Index
// therefore places regular files' contents one after the other in a
// "content space" in TOC order: Entry.Offset is a file's start there, and
// EStargz.ReadAt reads that space (the same contract as a tar offset for
// package fs). Entries are converted as layers.Reader converts tar
// headers (cleaned paths, whiteouts and opaque markers, overlay xattrs
// dropped, the same refusals), and the landmark files are left out. Chunks
// gives a file's chunks; PrefetchFiles the files before the
// .prefetch.landmark (none with .no.prefetch.landmark); Prefetch fetches
// them.
//
// github.com/containerd/stargz-snapshotter/estargz supplies the TOC types
// and the footer parsers (both the eStargz and the older stargz footer);
// the TOC stream itself is read here, bounded in size and hashed before
// it is parsed. The tests build their eStargz blobs with its Build.
package remote
