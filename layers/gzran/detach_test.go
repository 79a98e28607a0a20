package gzran

import (
	"bytes"
	"errors"
	"io"
	"sync/atomic"
	"testing"
)

// TestDetach: a detached index marshals without its windows, reads the
// same bytes as the whole index when given them one by one, asks only for
// the windows the reads start from, and fails clearly without them.
func TestDetach(t *testing.T) {
	raw := textish(7, 4<<20)
	gz := gzKlauspost(t, raw, 6)
	_, ix := inflateAll(t, gz, 64<<10)
	wins := ix.Windows()
	if len(wins) != len(ix.Checkpoints()) || len(wins) < 8 {
		t.Fatalf("%d windows for %d checkpoints", len(wins), len(ix.Checkpoints()))
	}

	d := ix.Detach()
	if !d.Detached() || ix.Detached() || d.Windows() != nil {
		t.Fatal("Detach changed the original or kept windows")
	}
	whole, _ := ix.MarshalBinary()
	b, err := d.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, w := range wins {
		total += len(w)
	}
	if len(b) >= len(whole)-total+len(wins) {
		t.Fatalf("detached index is %d bytes, whole %d with %d of windows", len(b), len(whole), total)
	}
	var d2 Index
	if err := d2.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if !d2.Detached() {
		t.Fatal("unmarshalled index is not detached")
	}
	if b2, _ := d2.MarshalBinary(); !bytes.Equal(b, b2) {
		t.Fatal("detached index does not marshal to the same bytes again")
	}

	// Without windows: a clear error, not wrong bytes.
	r, err := d2.NewReaderAt(bytes.NewReader(gz), int64(len(gz)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadAt(make([]byte, 100), int64(len(raw)/2)); !errors.Is(err, ErrNoWindow) {
		t.Fatalf("read without windows: %v, want ErrNoWindow", err)
	}

	// With them: the asked windows are exactly those of the checkpoints
	// the reads start from.
	var asked atomic.Int64
	with := d2.WithWindows(func(i int) ([]byte, error) {
		asked.Add(1)
		return wins[i], nil
	})
	r, err = with.NewReaderAt(bytes.NewReader(gz), int64(len(gz)))
	if err != nil {
		t.Fatal(err)
	}
	off := int64(len(raw) / 2)
	k := with.CheckpointAt(off)
	if k < 1 || with.Checkpoints()[k].UncompressedOffset > off || (k+1 < len(wins) && with.Checkpoints()[k+1].UncompressedOffset <= off) {
		t.Fatalf("CheckpointAt(%d) = %d", off, k)
	}
	p := make([]byte, 5000)
	if n, err := r.ReadAt(p, off); n != len(p) || err != nil || !bytes.Equal(p, raw[off:off+int64(n)]) {
		t.Fatalf("ReadAt = %d, %v (or wrong bytes)", n, err)
	}
	if asked.Load() != 1 {
		t.Fatalf("%d windows asked for one read", asked.Load())
	}
	if with.CheckpointAt(-1) != -1 || with.CheckpointAt(int64(len(raw))) != -1 {
		t.Fatal("CheckpointAt outside the stream is not -1")
	}

	// A window that is not the checkpoint's fails the read.
	bad := d2.WithWindows(func(i int) ([]byte, error) { return wins[(i+1)%len(wins)], nil })
	r, _ = bad.NewReaderAt(bytes.NewReader(gz), int64(len(gz)))
	if n, err := r.ReadAt(p, off); err == nil && bytes.Equal(p[:n], raw[off:off+int64(n)]) {
		t.Fatal("a wrong window gave the right bytes: the test proves nothing")
	}
	// A failing WindowFunc's error comes through.
	boom := errors.New("boom")
	failing := d2.WithWindows(func(int) ([]byte, error) { return nil, boom })
	r, _ = failing.NewReaderAt(bytes.NewReader(gz), int64(len(gz)))
	if _, err := r.ReadAt(p, off); !errors.Is(err, boom) {
		t.Fatalf("read with a failing WindowFunc: %v", err)
	}

	// Sequential reads from the start continue one decoder: one window.
	asked.Store(0)
	r, _ = with.NewReaderAt(bytes.NewReader(gz), int64(len(gz)))
	got, err := io.ReadAll(io.NewSectionReader(r, 0, int64(len(raw))))
	if err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("sequential read: %v", err)
	}
	if asked.Load() > 1 {
		t.Fatalf("a sequential read asked for %d windows", asked.Load())
	}
}

// TestBuildIndexAt: a checkpoint at the last block boundary before each
// wanted offset, reads still right everywhere, and without offsets the
// same index as BuildIndex.
func TestBuildIndexAt(t *testing.T) {
	raw := textish(11, 4<<20)
	gz := gzKlauspost(t, raw, 6)
	const span = 1 << 20
	plain, err := BuildIndex(bytes.NewReader(gz), span)
	if err != nil {
		t.Fatal(err)
	}
	same, err := BuildIndexAt(bytes.NewReader(gz), span, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := plain.MarshalBinary()
	b, _ := same.MarshalBinary()
	if !bytes.Equal(a, b) {
		t.Fatal("BuildIndexAt without offsets differs from BuildIndex")
	}
	want := []int64{3 << 20, 123457, 2<<20 + 99, 123457, 0}
	ix, err := BuildIndexAt(bytes.NewReader(gz), span, want)
	if err != nil {
		t.Fatal(err)
	}
	if len(ix.Checkpoints()) <= len(plain.Checkpoints()) {
		t.Fatalf("%d checkpoints with wanted offsets, %d without", len(ix.Checkpoints()), len(plain.Checkpoints()))
	}
	cs := ix.Checkpoints()
	for _, w := range want {
		k := ix.CheckpointAt(w)
		dist := w - cs[k].UncompressedOffset
		// Within a block: klauspost's blocks of this text are about
		// 260 KiB of output, span is 1 MiB.
		if dist < 0 || dist > span/2 {
			t.Errorf("offset %d: nearest checkpoint %d bytes before", w, dist)
		}
		if pk := plain.CheckpointAt(w); w-plain.Checkpoints()[pk].UncompressedOffset < dist {
			t.Errorf("offset %d: farther from a checkpoint (%d) than without wanting it", w, dist)
		}
	}
	for i := 1; i < len(cs); i++ {
		if cs[i].UncompressedOffset <= cs[i-1].UncompressedOffset {
			t.Fatalf("checkpoints out of order at %d", i)
		}
	}
	checkRandomReads(t, ix, gz, raw, 40)
}
