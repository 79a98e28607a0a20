package store

import (
	"cmp"
	"context"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
)

// cpuGate shares the CPUs among the stages of a pull's layer passes, by
// priority. A pull of several layers on a machine with few cores lasts at
// least as long as inflating its largest layer, which cannot be split;
// left to the Go scheduler, which shares the CPUs fairly among the dozen
// goroutines of four layer passes, that inflater gets a fraction of a core
// until the smaller layers are done and then runs alone on one core while
// the others idle. With the gate, each stage takes a token for every unit
// of work (a buffer), and waiting stages get the freed tokens in order of
// the compressed bytes their layer has left to inflate, most first (the
// "longest remaining work first" rule): the largest layer's pass runs at
// full speed, the smaller ones fill the remaining CPU, and as the large
// one shrinks they share alike, so the layers end together instead of the
// last small one running alone on one core.
//
// There are GOMAXPROCS tokens. A stage never holds one while it waits for
// another goroutine (network, a buffer, the partial file), so the gate
// cannot deadlock.
type cpuGate struct {
	mu      sync.Mutex
	free    int
	seq     uint64
	waiters []*gateWaiter // by work left (most first), then arrival
}

type gateWaiter struct {
	left int64
	seq  uint64
	ch   chan struct{}
}

func newCPUGate() *cpuGate { return &cpuGate{free: max(runtime.GOMAXPROCS(0), 1)} }

// acquire takes a token for a stage of a layer with left bytes left.
func (g *cpuGate) acquire(left int64) {
	g.mu.Lock()
	if g.free > 0 {
		g.free--
		g.mu.Unlock()
		return
	}
	g.seq++
	w := &gateWaiter{left: left, seq: g.seq, ch: make(chan struct{})}
	i, _ := slices.BinarySearchFunc(g.waiters, w, func(a, b *gateWaiter) int {
		if a.left != b.left {
			return cmp.Compare(b.left, a.left)
		}
		return cmp.Compare(a.seq, b.seq)
	})
	g.waiters = slices.Insert(g.waiters, i, w)
	g.mu.Unlock()
	<-w.ch // the releaser handed its token over
}

func (g *cpuGate) release() {
	g.mu.Lock()
	if len(g.waiters) > 0 {
		w := g.waiters[0]
		g.waiters = g.waiters[1:]
		g.mu.Unlock()
		close(w.ch)
		return
	}
	g.free++
	g.mu.Unlock()
}

// gateSlot is one goroutine's use of a gate for a layer. A nil *gateSlot
// (no gate) does nothing.
type gateSlot struct {
	g    *cpuGate
	left *atomic.Int64 // the layer's compressed bytes not yet inflated
	held bool
}

func (s *gateSlot) acquire() {
	if s == nil || s.held {
		return
	}
	s.g.acquire(s.left.Load())
	s.held = true
}

func (s *gateSlot) release() {
	if s == nil || !s.held {
		return
	}
	s.held = false
	s.g.release()
}

// gateKey carries a pull's gate and a layer's work left in a context.
type gateKey struct{}

type gateLayer struct {
	g    *cpuGate
	left *atomic.Int64
}

// withGate makes the passes run with ctx use g for a layer of size
// compressed bytes.
func withGate(ctx context.Context, g *cpuGate, size int64) context.Context {
	left := new(atomic.Int64)
	left.Store(size)
	return context.WithValue(ctx, gateKey{}, gateLayer{g, left})
}

// newGateSlot returns a slot of the gate in ctx, or nil if there is none.
func newGateSlot(ctx context.Context) *gateSlot {
	gl, ok := ctx.Value(gateKey{}).(gateLayer)
	if !ok || gl.g == nil {
		return nil
	}
	return &gateSlot{g: gl.g, left: gl.left}
}
