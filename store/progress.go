package store

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/term"
)

// progress shows a pull's layers. On a terminal it redraws one line per
// layer and a total line every redrawInterval; otherwise it prints one
// line per finished layer. A nil *progress shows nothing.
type progress struct {
	w   io.Writer
	tty bool

	mu     sync.Mutex
	layers []*layerProgress
	byHash map[v1.Hash]*layerProgress
	drawn  int // lines drawn last time (tty)
	stop   chan struct{}
	wg     sync.WaitGroup
}

type layerProgress struct {
	h      v1.Hash
	total  int64
	done   int64
	status string
	final  bool
}

const redrawInterval = 100 * time.Millisecond

// newProgress returns nil (no output) for a nil writer.
func newProgress(w io.Writer, ls []Layer) *progress {
	if w == nil {
		return nil
	}
	p := &progress{w: w, byHash: map[v1.Hash]*layerProgress{}}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty = true
	}
	for _, l := range ls {
		if _, dup := p.byHash[l.Digest]; dup {
			continue
		}
		lp := &layerProgress{h: l.Digest, total: l.Size, status: "queued"}
		p.layers = append(p.layers, lp)
		p.byHash[l.Digest] = lp
	}
	if p.tty {
		p.stop = make(chan struct{})
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			t := time.NewTicker(redrawInterval)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					p.mu.Lock()
					p.draw()
					p.mu.Unlock()
				case <-p.stop:
					return
				}
			}
		}()
	}
	return p
}

func (p *progress) printf(format string, args ...any) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		p.clear()
	}
	fmt.Fprintf(p.w, format, args...)
}

func (p *progress) status(h v1.Hash, s string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if lp := p.byHash[h]; lp != nil {
		lp.status = s
	}
}

func (p *progress) add(h v1.Hash, n int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if lp := p.byHash[h]; lp != nil {
		lp.done += n
	}
}

// reset forgets the bytes counted for h (its download starts over).
func (p *progress) reset(h v1.Hash) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if lp := p.byHash[h]; lp != nil {
		lp.done = 0
	}
}

// done marks h finished with status s; n >= 0 sets its byte count.
func (p *progress) done(h v1.Hash, n int64, s string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	lp := p.byHash[h]
	if lp == nil || lp.final {
		return
	}
	lp.status, lp.final = s, true
	if n >= 0 {
		lp.done = n
	}
	if !p.tty {
		fmt.Fprintf(p.w, "%s %s %s\n", shortDigest(h), HumanSize(lp.total), s)
	}
}

// close stops the redraws, leaving the final state on a terminal.
func (p *progress) close() {
	if p == nil || !p.tty {
		return
	}
	close(p.stop)
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.draw()
	p.drawn = 0
}

// clear erases the lines drawn last (tty).
func (p *progress) clear() {
	if p.drawn > 0 {
		fmt.Fprintf(p.w, "\x1b[%dA\x1b[J", p.drawn)
		p.drawn = 0
	}
}

func (p *progress) draw() {
	var b strings.Builder
	if p.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", p.drawn)
	}
	var done, total int64
	for _, lp := range p.layers {
		done += lp.done
		total += lp.total
		fmt.Fprintf(&b, "\x1b[2K%s %s %-16s %s\n", shortDigest(lp.h), bar(lp.done, lp.total, 20),
			lp.status, HumanSize(lp.done)+" / "+HumanSize(lp.total))
	}
	fmt.Fprintf(&b, "\x1b[2Ktotal %s %s / %s\n", bar(done, total, 20), HumanSize(done), HumanSize(total))
	p.drawn = len(p.layers) + 1
	io.WriteString(p.w, b.String())
}

func bar(done, total int64, width int) string {
	n := width
	if total > 0 && done < total {
		n = int(done * int64(width) / total)
	}
	return "[" + strings.Repeat("=", n) + strings.Repeat(" ", width-n) + "]"
}

// HumanSize formats a byte count with decimal units and three significant
// digits, as podman does ("7.65 MB").
func HumanSize(n int64) string {
	units := []string{"B", "kB", "MB", "GB", "TB", "PB"}
	f := float64(n)
	i := 0
	for f >= 999.5 && i < len(units)-1 {
		f /= 1000
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.3g %s", f, units[i])
}
