package gzran

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"os"
)

// ReadFileDetached reads the serialized index in the file at path (as
// MarshalBinary wrote it) without keeping its windows, which are most of
// its size: it streams the file once, checking its checksum, and returns
// the index detached with a WindowFunc that reads a checkpoint's window
// from the file when a read needs it, checked against the CRC-32C it had
// in that pass. Memory stays at a few words per checkpoint.
//
// A reader of a local blob whose inflated spans are mostly kept elsewhere
// needs few windows or none; loading them all cost the bench's large image
// 6.6 MB of fresh memory and 20 ms at every container start.
func ReadFileDetached(path string) (*Index, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() < int64(len(magic))+1+4 {
		return nil, badIndex("not a gzran index (%d bytes)", fi.Size())
	}
	br := bufio.NewReaderSize(f, 64<<10)
	head := make([]byte, len(magic)+1)
	if _, err := io.ReadFull(br, head); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if string(head[:len(magic)]) != magic {
		return nil, badIndex("not a gzran index (bad magic)")
	}
	if err := checkVersion(head[len(magic)]); err != nil {
		return nil, err
	}
	src := &streamSource{r: br, off: int64(len(head)), size: fi.Size() - 4, crc: crc32.Checksum(head, castagnoli)}
	ix, err := decode(src, head[len(magic)] == detachedVersion)
	if err != nil {
		if src.err != nil {
			return nil, fmt.Errorf("reading %s: %w", path, src.err)
		}
		// Say what UnmarshalBinary says of the same bytes: a damaged
		// file is a checksum mismatch, whatever field it reached first.
		if b, rerr := os.ReadFile(path); rerr == nil {
			if uerr := new(Index).UnmarshalBinary(b); uerr != nil {
				return nil, uerr
			}
		}
		return nil, err
	}
	var sum [4]byte
	if _, err := io.ReadFull(br, sum[:]); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if want := binary.BigEndian.Uint32(sum[:]); src.crc != want {
		return nil, badIndex("checksum mismatch (stored %08x, computed %08x): the index file is corrupt or truncated", want, src.crc)
	}
	if ix.detached {
		return &ix, nil // a detached index has no windows to read
	}
	ix.detached = true
	refs := src.refs
	ix.windowFn = func(i int) ([]byte, error) {
		if i < 0 || i >= len(refs) {
			return nil, fmt.Errorf("no checkpoint %d", i)
		}
		r := refs[i]
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		w := make([]byte, r.n)
		if _, err := f.ReadAt(w, r.off); err != nil {
			return nil, fmt.Errorf("reading %s: %w", path, err)
		}
		if crc32.Checksum(w, castagnoli) != r.crc {
			return nil, badIndex("%s: the window of checkpoint %d changed since the index was read", path, i)
		}
		return w, nil
	}
	return &ix, nil
}

// windowRef is where a window lies in a serialized index, and its CRC-32C.
type windowRef struct {
	off, n int64
	crc    uint32
}

// streamSource reads a serialized index from a file as decode asks,
// keeping the running checksum and, for each window, only its windowRef.
type streamSource struct {
	r    *bufio.Reader
	off  int64 // bytes read
	size int64 // of the serialization without its checksum
	crc  uint32
	refs []windowRef
	buf  []byte
	err  error // of the file, not of its contents
	one  [1]byte
}

func (s *streamSource) ReadByte() (byte, error) {
	if s.off >= s.size {
		return 0, io.ErrUnexpectedEOF
	}
	b, err := s.r.ReadByte()
	if err != nil {
		s.err = err
		return 0, err
	}
	s.one[0] = b
	s.crc = crc32.Update(s.crc, castagnoli, s.one[:])
	s.off++
	return b, nil
}

func (s *streamSource) next() (int64, error) {
	at := s.off
	v, err := binary.ReadUvarint(s)
	if err != nil || v > 1<<62 {
		return 0, badIndex("malformed number at byte %d", at)
	}
	return int64(v), nil
}

func (s *streamSource) window(n int64) ([]byte, error) {
	if n > s.size-s.off {
		return nil, badIndex("window of %d bytes at byte %d, past the end", n, s.off)
	}
	if int64(cap(s.buf)) < n {
		s.buf = make([]byte, n)
	}
	w := s.buf[:n]
	if _, err := io.ReadFull(s.r, w); err != nil {
		s.err = err
		return nil, err
	}
	s.crc = crc32.Update(s.crc, castagnoli, w)
	s.refs = append(s.refs, windowRef{off: s.off, n: n, crc: crc32.Checksum(w, castagnoli)})
	s.off += n
	return nil, nil
}

func (s *streamSource) left() int64 { return s.size - s.off }
