package fs

import (
	"sync"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/dabba/dabba/layers"
)

// Push-ahead: on a fresh mount every file costs the reader a FUSE round
// trip (a READ) even with every cache of the kernel kept, and on this
// project's machines a round trip between two CPUs costs 60-140 µs. A
// reader that walks the tree in order (tar, cp -a, a checksum of every
// file, a package manager's verify) reads the files in inode order,
// because inode numbers are given in the tree's walk order (depth first,
// entries sorted by name: the order of a directory listing). When reads
// follow that order, the server writes the contents of the next files
// into the kernel's page cache itself (FUSE notify store), and the reader
// finds them cached instead of waiting for a round trip.
//
// The server never sees a read the cache answers, so it learns where a
// walking reader is from two things: a READ that misses (the reader ran
// past what was pushed: the next window is pushed, twice as large when
// the miss is exactly where the last push stopped), and the end of a
// directory listing (a walker lists a directory before it reads its
// files; the files are pushed as the last, empty, READDIRPLUS of the
// listing is answered). Listings alone do not prove a reader reads what
// it lists (find lists everything and reads nothing), so only a reader
// that read files in order recently earns pushes on listings: each
// in-order miss grants pushCredit listings, each listing push spends one.
//
// The kernel accepts a push only for inodes it knows (listed or looked
// up): a push stops at the first inode it does not know, which in walk
// order is the first entry of a directory not listed yet. It accepts only
// regular files: symlink targets still cost a READLINK each. Pushed pages
// are charged to the memory cgroup of the server, not of the reader.
// Bytes are pushed only after the LayerReader vouched for them, as for a
// READ; a push that fails just stops (the reader's READ reports the
// error).
//
// Pushes run in goroutines of their own, never in a request handler: a
// notify store waits for the lock of every page it fills, and the kernel
// holds pages locked for READs it has queued but not sent yet (beyond
// max_background), which it sends only as earlier requests are answered.
// A handler blocked in a push could wait for a READ that waits for it.
// (Two test processes of a first version, which pushed inside handlers,
// were found hung for good: a thread waiting for a page lock inside a
// notify store, their mounts left behind.)

const (
	// pushGap is how far (in inode numbers) an event may land after the
	// previous one and still count as following the walk: a walk skips
	// the directories, symlinks, devices and empty files in between.
	pushGap = 64
	// pushFirst and pushMax bound the window of bytes pushed ahead.
	pushFirst = 256 << 10
	pushMax   = 8 << 20
	// pushInline is what the request that starts a window waits for
	// (pushWait at most) before it is answered: the reader asks for the
	// next file at once.
	pushInline = 64 << 10
	pushWait   = 2 * time.Millisecond
	// pushFile is the most a walk pushes of one file; a file read on
	// past it is pushed in windows that double up to pushFileMax.
	pushFile    = 1 << 20
	pushFileMax = 32 << 20
	// pushSlack is how close to the end of the last READ of a file the
	// next must start to count as reading on.
	pushSlack = 512 << 10
	// pushCredit is how many directory listings an in-order read pays
	// for.
	pushCredit = 8
	// pushAsync bounds the window pushes running at once.
	pushAsync = 2
)

// notifier is what push needs of the FUSE server: go-fuse's *fuse.Server.
type notifier interface {
	InodeNotifyStoreCache(node uint64, offset int64, data []byte) fuse.Status
}

// pusher pushes the contents of the files after the ones being read, in
// inode order, into the kernel's page cache.
type pusher struct {
	f   *FS
	srv notifier

	mu     sync.Mutex
	pos    uint64 // where the walking reader was last seen
	next   uint64 // first inode not pushed by the last push to end
	win    int64  // size of the last window
	credit int    // listings that may still push
	async  int    // pushes running in the background
	pushed int64  // bytes pushed, for Stats

	// A file read sequentially past what a walk pushed of it (READs
	// at offsets that follow each other) gets its next bytes pushed in
	// windows that double up to pushFileMax, where the kernel's
	// readahead asks for 128 KiB at a time.
	file     uint64 // the file of the last READ past offset 0
	fileEnd  int64  // where that READ ended
	fileTo   int64  // how far the file is pushed
	fileWin  int64  // the next window
	fileBusy bool   // a push of the file runs
	fileGen  int    // counts the files read on

	bufs sync.Pool // of *[]byte, pushFile long
}

// read tells the pusher that a READ at offset 0 of file ino reached the
// server: the page cache did not have it.
func (p *pusher) read(ino uint64) {
	p.mu.Lock()
	pos := p.pos
	p.pos = ino
	if ino != p.next && (pos == 0 || ino <= pos || ino-pos > pushGap) {
		p.mu.Unlock()
		return // out of order
	}
	p.credit = pushCredit
	if ino == p.next {
		p.win = min(2*p.win, pushMax) // it read all of the last window
	} else {
		p.win = pushFirst
	}
	p.start(ino + 1)
}

// listed tells the pusher that the listing of directory dir was read to
// its end.
func (p *pusher) listed(dir uint64) {
	p.mu.Lock()
	inOrder := dir+1 == p.next || (p.pos != 0 && dir > p.pos && dir-p.pos <= pushGap)
	if !inOrder || p.credit == 0 {
		p.mu.Unlock()
		return
	}
	p.credit--
	p.pos = dir
	p.win = max(p.win, pushFirst)
	p.start(dir + 1)
}

// readOn tells the pusher that a READ of size bytes at offset off of file
// n reached the server.
func (p *pusher) readOn(n *layers.Node, off, size int64) {
	p.mu.Lock()
	// The kernel sends a file's readahead requests a few at a time, and
	// they may be served in any order: close to the last one counts.
	near := n.Ino == p.file && off+size > p.fileEnd-pushSlack && off < p.fileEnd+pushSlack
	seq := off > 0 && (off == pushFile || near)
	if n.Ino != p.file {
		// Another file: a push of the last one stops.
		p.file, p.fileEnd, p.fileTo, p.fileWin = n.Ino, 0, 0, pushFile
		p.fileBusy = false
		p.fileGen++
	}
	p.fileEnd = max(p.fileEnd, off+size)
	if !seq || p.fileBusy || p.fileEnd >= n.Size {
		p.mu.Unlock()
		return
	}
	p.fileBusy = true
	from, gen := max(p.fileEnd, p.fileTo), p.fileGen
	p.mu.Unlock()
	go p.pushFile(n, from, gen)
}

// pushFile pushes file n from offset from on, a window at a time, for as
// long as the reader's READs (fileEnd) come within a window of what is
// pushed, and the reader reads no other file (gen).
func (p *pusher) pushFile(n *layers.Node, from int64, gen int) {
	buf := p.buf()
	defer p.bufs.Put(buf)
	o := from
	to := o
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.fileGen == gen {
		// The reader's own READs have the bytes up to fileEnd.
		o = max(o, p.fileEnd)
		p.fileTo = o
		if o >= to {
			if o >= n.Size || p.fileEnd < o-p.fileWin {
				break // the end, or far enough ahead of the reader
			}
			to = min(n.Size, o+p.fileWin)
			p.fileWin = min(2*p.fileWin, pushFileMax)
		}
		p.mu.Unlock()
		data := (*buf)[:min(pushFile, to-o)]
		ok := p.f.readContent(n, data, o) == nil && p.srv.InodeNotifyStoreCache(n.Ino, o, data) == fuse.OK
		p.mu.Lock()
		if !ok {
			break
		}
		o += int64(len(data))
		p.pushed += int64(len(data))
	}
	if p.fileGen == gen {
		p.fileBusy = false
	}
}

// buf returns a buffer of pushFile bytes.
func (p *pusher) buf() *[]byte {
	if b, ok := p.bufs.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, pushFile)
	return &b
}

// start pushes a window from inode from in the background and waits, at
// most pushWait, for its first pushInline bytes: the reader asks for the
// next file as soon as the request that started the window is answered,
// and the push should be there first. It never waits for longer: a push
// can block on a page the kernel has locked for a READ still queued
// behind this very request (the kernel holds back READs beyond
// max_background), and a request handler blocked on it would never let
// that READ through. It is called with p.mu held and releases it.
func (p *pusher) start(from uint64) {
	budget := p.win
	if p.async >= pushAsync {
		p.mu.Unlock()
		return // enough pushes run; the reader's next miss starts another
	}
	p.async++
	p.mu.Unlock()
	first := make(chan struct{})
	go func() {
		buf := p.buf()
		defer p.bufs.Put(buf)
		next, pushed, ok := p.push(*buf, from, min(budget, pushInline))
		close(first)
		if ok && pushed < budget {
			var more int64
			next, more, _ = p.push(*buf, next, budget-pushed)
			pushed += more
		}
		p.done(next, pushed)
	}()
	t := time.NewTimer(pushWait)
	select {
	case <-first:
	case <-t.C:
	}
	t.Stop()
}

// done records where a push stopped.
func (p *pusher) done(next uint64, pushed int64) {
	p.mu.Lock()
	p.next = next
	p.pushed += pushed
	p.async--
	p.mu.Unlock()
}

// push pushes files from inode start on, up to about budget bytes, reading
// them into buf. It returns the first inode not pushed, the bytes pushed,
// and false if it stopped early: at an inode the kernel does not know, or
// at a read that failed.
func (p *pusher) push(buf []byte, start uint64, budget int64) (next uint64, pushed int64, ok bool) {
	n := uint64(p.f.tree.NumInodes())
	ino := start
	for ; ino <= n && pushed < budget; ino++ {
		node := p.f.tree.Inode(ino)
		if node == nil || node.Type != layers.TypeReg || node.Size == 0 {
			continue
		}
		data := buf[:min(node.Size, pushFile)]
		if err := p.f.readContent(node, data, 0); err != nil {
			// A damaged layer, or one closed as the container ended:
			// the reader's own READ reports the first.
			return ino, pushed, false
		}
		if st := p.srv.InodeNotifyStoreCache(ino, 0, data); st != fuse.OK {
			return ino, pushed, false // unknown to the kernel (ENOENT), or unmounted
		}
		pushed += int64(len(data))
	}
	return ino, pushed, true
}
