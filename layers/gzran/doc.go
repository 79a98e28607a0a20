// Package gzran reads gzip streams at random uncompressed offsets, in the
// manner of zlib's examples/zran.c and SOCI's zTOC.
//
// DEFLATE (RFC 1951) cannot be entered in the middle: a block's Huffman codes
// start at an arbitrary bit, and its matches reach up to 32 KiB back into
// earlier output. So while a gzip stream is inflated once from the start,
// the package records a checkpoint at the first block boundary after every
// span bytes of output: the compressed bit offset of the block, its
// uncompressed offset and the 32 KiB of output before it (the window). To
// read at offset off later, a decoder starts at the last checkpoint at or
// before off with the window as history, inflates up to off, discards that
// output and returns what follows. Go's compress/flate neither reports block
// boundaries nor accepts a bit offset, so the package has its own inflater
// (inflate.go, huffman.go): stored, fixed and dynamic Huffman blocks,
// two-level lookup tables (10 primary bits for literal/length codes, 8 for
// distances), a 64-bit bit accumulator refilled eight bytes at a time and
// matches copied within one linear buffer, never wrapping.
//
// # Use
//
// Building: NewIndexer wraps the compressed stream as an io.Reader of the
// decompressed stream (so a store can hash the blob with an io.TeeReader and
// write the tar in the same pass); after io.EOF, Indexer.Index returns the
// index. NewIndexWriter is the same as an io.Writer. Every member of a
// multi-member stream is read, and its CRC-32 and ISIZE are checked.
//
// Reading: Index.NewReaderAt gives an io.ReaderAt over the decompressed
// stream, reading compressed bytes from any io.ReaderAt (a local file, or a
// fetcher of HTTP ranges). Index.CompressedSpan names the compressed bytes
// [cstart, cend) a given uncompressed range needs, from the checkpoint at
// or before it to the first recorded block boundary at or after its end; a
// fresh Reader serving that range reads nothing outside it, so a lazy
// fetcher can fetch (and verify) exactly that span first. If the io.ReaderAt also implements
// Prefetcher, the Reader announces the compressed range it is about to read
// before each ReadAt, so a remote fetcher can get it in one request. A
// Reader keeps a few paused decoders, so reading a file front to back costs
// one inflate, not one per read.
//
// Integrity: a whole-stream read checks each member's CRC-32 and ISIZE, so it
// never returns wrong bytes without an error. A partial read cannot: its
// bytes are right only if the compressed bytes are the ones the index was
// built from. Callers must therefore read from a digest-verified blob, or
// check per-span digests of the compressed bytes they fetch. The index must
// be trusted as much as the blob: its windows become the history of the
// decoded bytes, so an index from elsewhere (a registry artifact) needs its
// own digest check, or the decoded bytes need digests of their own (per
// file or per chunk of uncompressed data, as eStargz keeps). Data that
// breaks DEFLATE is still reported (ErrCorrupt), and reads never panic on
// any input (FuzzInflate).
//
// # Serialized index
//
// Index.MarshalBinary writes a versioned binary format (see marshal.go): an
// 8-byte magic "GZRANIX\x01", the span, the compressed and uncompressed
// sizes, then per checkpoint the deltas of its bit offset and uncompressed
// offset, the window length and the window compressed with raw DEFLATE; a
// CRC-32C of all of it ends the file. The encoding depends only on the
// index, so it is deterministic. UnmarshalBinary rejects a wrong magic,
// another version, a checksum mismatch, truncation and inconsistent values
// with an error wrapping ErrIndex that says to rebuild the index.
// ReadFileDetached reads such a file in one streaming pass, with the same
// checks, keeping only where each window lies and its CRC-32C: a read that
// needs a window reads it from the file then. The windows are most of an
// index (3.3 MB of the bench's large image, 220 checkpoints); loading them
// all at every container start took 20-25 ms there, the streaming pass
// 3.5-4 ms.
//
// # Measurements
//
// On this machine (2 shared cores of an AMD EPYC, heavily loaded by other
// work, so wall-clock MB/s varied by 2x between runs; the cpu-MB/s metric,
// output bytes over process CPU time, is steadier), `go test -bench .` over
// 64 MiB of the Alpine 3.20.3 minirootfs tar repeated and gzipped at level 6
// (about 28 MiB compressed), three runs each:
//
//	whole-stream inflate         cpu-MB/s   vs compress/gzip
//	gzran, no checkpoints        377-387    2.0x
//	gzran, index every 4 MiB     358-373    1.9x
//	compress/gzip                188-191    1
//	klauspost/compress/gzip      245-258    1.3x
//	compress/flate (raw)         191-194
//	klauspost flate (raw)        251-258
//
// so the inflater is faster than both (about 1.5x klauspost); building the
// index (compressing a 32 KiB window every span, with klauspost's flate)
// costs about 4% at 4 MiB spans. (Before the decode loop was tuned, with
// branchless refills, one-shift code+extra consumption, an inner literal
// loop and 8-byte match copies, gzran ran at 288-291 cpu-MB/s here.) Reading the whole stream through a Reader
// in 128 KiB ReadAt calls runs at the speed of one inflate.
//
// A cold 4 KiB read at a random offset (through one Reader, whose paused
// decoders rarely help at random offsets) inflates on average half a span
// from the nearest checkpoint. Per read:
//
//	span      index bytes/MiB   CPU per   compressed   CompressedSpan
//	                            read      bytes read   bytes
//	256 KiB   47,532 (4.5%)     0.8 ms       91 KB        95 KB
//	1 MiB     14,546 (1.4%)     2.2 ms      279 KB       292 KB
//	4 MiB      3,495 (0.33%)    7.8 ms    1,022 KB     1,102 KB
//	16 MiB       867 (0.08%)   27 ms      3,710 KB     4,259 KB
//
// The index costs one compressed window (about 14 KiB for this data) per
// checkpoint, plus a few bytes per block mark; the read amplification grows
// linearly with the span. DefaultSpan is 4 MiB, SOCI's default: 0.33% of
// the uncompressed size in index and about 8 ms of CPU per cold read (warm,
// sequential reads cost nothing extra). For lazy pulls over a slow link,
// where the compressed bytes fetched per cold read dominate, 1 MiB spans
// fetch a quarter as much (292 KB, 23 ms at 100 Mbit/s, against 88 ms) for
// an index four times larger.
//
// Checkpoints fall only on block boundaries, so a stream written as very
// large blocks (highly compressible data, or a single stored run) gets
// fewer checkpoints than its span asks for.
package gzran
