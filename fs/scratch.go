package fs

import "sync"

// scratchPool holds the buffers reads check whole chunks in, shared by
// every layer and span file of the process. A pool per file made each
// file's first read touch fresh memory, and on the virtual machines
// measured the first touch of a page costs 6-15 µs (a user page fault
// under the hypervisor, against well under 1 µs to copy a page that is
// already mapped): a 4 KiB read of a file whose span had no buffer yet
// took 500 µs, most of it faulting in its 192 KiB of scratch.
var scratchPool sync.Pool // *[]byte

// scratchCap is the capacity of a new scratch buffer: a 256 KiB read
// (the largest the kernel asks of a mount with go-fuse's defaults) at any
// alignment in 64 KiB chunks. Only the pages a read uses are touched.
const scratchCap = (256<<10)/chunkSize*chunkSize + 2*chunkSize

// getScratch returns a buffer of length n from the pool; putScratch gives
// it back.
func getScratch(n int) *[]byte {
	if bp, ok := scratchPool.Get().(*[]byte); ok {
		if cap(*bp) >= n {
			*bp = (*bp)[:n]
			return bp
		}
		scratchPool.Put(bp)
	}
	b := make([]byte, n, max(n, scratchCap))
	return &b
}

func putScratch(bp *[]byte) { scratchPool.Put(bp) }
