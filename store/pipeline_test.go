package store

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/dabba/dabba/internal/testenv"
	"github.com/dabba/dabba/layers/layertest"
)

// TestPullMixedCompressions pulls more layers than the CPU gate has tokens
// and the pull has jobs, in every compression, with sizes in no order: each
// passes through the gated pipeline (gzip) or the ungated one (zstd, whose
// decoder reads in goroutines of its own; plain tar), and verifies.
func TestPullMixedCompressions(t *testing.T) {
	host := testenv.Registry(t)
	var ls []v1.Layer
	for i, kind := range []string{"gzip", "zstd", "tar", "gzip", "zstd", "gzip"} {
		var files []layertest.Entry
		for j := range (i%3 + 1) * 40 {
			files = append(files, layertest.File(fmt.Sprintf("l%d/f%03d", i, j), string(make([]byte, 1000*(j%7)))+fmt.Sprint(i, j)))
		}
		tarb := layertest.Tar(files...)
		var b []byte
		switch kind {
		case "gzip":
			b = layertest.Gzip(tarb)
		case "zstd":
			b = layertest.Zstd(tarb)
		default:
			b = tarb
		}
		ls = append(ls, testenv.RawLayer(b, sha256Hash(tarb)))
	}
	img := testenv.ImageOfLayers(t, ls...)
	ref := testenv.Push(t, img, host, "test/mixed:1")
	s := openTemp(t)
	got, err := s.Pull(context.Background(), ref, PullOptions{Quiet: true, Jobs: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range got.Layers {
		ix, err := s.LayerIndex(l.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if want := (i%3 + 1) * 40; len(ix.Entries) != want {
			t.Errorf("layer %d: %d entries, want %d", i, len(ix.Entries), want)
		}
		_, err = s.Checkpoints(l.Digest)
		if gz := i == 0 || i == 3 || i == 5; gz != (err == nil) {
			t.Errorf("layer %d: checkpoints: %v", i, err)
		}
	}
	if n := listDir(t, s.tmpDir()); len(n) != 0 {
		t.Errorf("tmp/ not empty after pull: %v", n)
	}
}

// TestCPUGateOrder: freed tokens go to the waiters with the most work
// left, then by arrival.
func TestCPUGateOrder(t *testing.T) {
	g := &cpuGate{free: 1}
	g.acquire(0)
	var mu sync.Mutex
	var order []int64
	var wg sync.WaitGroup
	queued := func(n int) {
		for {
			g.mu.Lock()
			k := len(g.waiters)
			g.mu.Unlock()
			if k == n {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	for i, left := range []int64{10, 30, 20, 40, 30} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.acquire(left)
			mu.Lock()
			order = append(order, left+int64(i))
			mu.Unlock()
			g.release()
		}()
		queued(i + 1)
	}
	g.release()
	wg.Wait()
	want := []int64{43, 31, 34, 22, 10}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Errorf("order %v, want %v", order, want)
	}
	if g.free != 1 || len(g.waiters) != 0 {
		t.Errorf("gate left with %d free, %d waiting", g.free, len(g.waiters))
	}
}

// TestFeedReaderFollowsWriter: a reader of a file being written reads
// exactly what was published, waiting for the rest, and gets the writer's
// error at the end.
func TestFeedReaderFollowsWriter(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "feed")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	feed := newFileFeed()
	go func() {
		for i := range 50 {
			b := []byte(fmt.Sprintf("%04d", i))
			f.WriteAt(b, int64(4*i))
			feed.advance(4)
			if i%10 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		feed.finish(errCutShort)
	}()
	slot := newGateSlot(withGate(context.Background(), newCPUGate(), 200))
	slot.acquire() // given back while the reader waits
	r := &feedReader{f: f, feed: feed, slot: slot, size: 200}
	var got []byte
	buf := make([]byte, 7)
	for {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			if err != errCutShort {
				t.Fatalf("end: %v", err)
			}
			break
		}
	}
	if slot.left.Load() != 0 || !slot.held {
		t.Errorf("slot: %d bytes left, held %v", slot.left.Load(), slot.held)
	}
	if len(got) != 200 || string(got[:8]) != "00000001" || string(got[196:]) != "0049" {
		t.Errorf("read %q", got)
	}
}
