package gzran_test

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"io"
	"log"
	"strings"

	"github.com/dabba/dabba/layers/gzran"
)

// A store indexes a layer blob in the pass that hashes it and writes the
// tar, keeps the index beside the blob, and later reads at any offset.
func Example() {
	var blob bytes.Buffer
	zw := gzip.NewWriter(&blob)
	io.WriteString(zw, strings.Repeat("layer data ", 100000))
	zw.Close()

	// One pass: digest of the compressed blob, decompressed tar, index.
	h := sha256.New()
	x := gzran.NewIndexer(io.TeeReader(bytes.NewReader(blob.Bytes()), h), 256<<10)
	var tar bytes.Buffer
	if _, err := io.Copy(&tar, x); err != nil {
		log.Fatal(err)
	}
	ix, err := x.Index()
	if err != nil {
		log.Fatal(err)
	}
	enc, _ := ix.MarshalBinary() // stored beside the blob

	// Later: load the index and read 11 bytes at offset 770000.
	var loaded gzran.Index
	if err := loaded.UnmarshalBinary(enc); err != nil {
		log.Fatal(err)
	}
	r, err := loaded.NewReaderAt(bytes.NewReader(blob.Bytes()), int64(blob.Len()))
	if err != nil {
		log.Fatal(err)
	}
	p := make([]byte, 11)
	if _, err := r.ReadAt(p, 770000); err != nil {
		log.Fatal(err)
	}
	cstart, cend := loaded.CompressedSpan(770000, 11) // what a lazy fetcher fetches
	fmt.Printf("%d bytes, %q, compressed span inside the blob: %v\n",
		r.Size(), p, cstart >= 0 && cend <= int64(blob.Len()) && cstart < cend)
	// Output: 1100000 bytes, "layer data ", compressed span inside the blob: true
}
