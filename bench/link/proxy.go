package link

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// chunkSize is the proxy's read size: a little over the amount a 100 Mbit/s
// link carries in 2 ms, so holding chunks adds no visible granularity.
const chunkSize = 32 << 10

// queueChunks bounds the chunks held in flight per direction: 1024 × 32 KiB
// = 32 MiB, more than any emulated link holds (rate × one-way delay), so the
// bound only matters as back-pressure when a reader stops reading.
const queueChunks = 1024

// Proxy is a TCP proxy that adds a round-trip time and counts bytes.
type Proxy struct {
	ln       net.Listener
	upstream string
	oneWay   time.Duration
	dial     func(network, addr string) (net.Conn, error)

	down, up atomic.Int64 // bytes delivered to clients, and to the upstream
	conns    atomic.Int64 // connections accepted

	mu     sync.Mutex
	open   map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// StartProxy listens on listen (e.g. "127.0.0.1:0") and forwards every
// connection to upstream, delaying each direction by rtt/2 (rtt 0: no delay).
func StartProxy(listen, upstream string, rtt time.Duration) (*Proxy, error) {
	if rtt < 0 {
		return nil, fmt.Errorf("proxy to %s: negative round-trip time %v", upstream, rtt)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("proxy to %s: listen on %s: %w", upstream, listen, err)
	}
	d := &net.Dialer{Timeout: 10 * time.Second}
	p := &Proxy{ln: ln, upstream: upstream, oneWay: rtt / 2, dial: d.Dial, open: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Bytes returns the bytes delivered to clients (down) and to the upstream
// (up) since the start or the last Reset.
func (p *Proxy) Bytes() (down, up int64) { return p.down.Load(), p.up.Load() }

// Conns returns the connections accepted since the start or the last Reset.
func (p *Proxy) Conns() int64 { return p.conns.Load() }

// Reset sets the counters to zero.
func (p *Proxy) Reset() {
	p.down.Store(0)
	p.up.Store(0)
	p.conns.Store(0)
}

// Close stops accepting, closes every open connection and waits for the
// proxy's goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.open {
		c.Close()
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.open[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.open, c)
	p.mu.Unlock()
	c.Close()
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if !p.track(c) {
			continue
		}
		p.conns.Add(1)
		p.wg.Add(1)
		go p.handle(c)
	}
}

func (p *Proxy) handle(client net.Conn) {
	defer p.wg.Done()
	defer p.untrack(client)
	accepted := time.Now()
	server, err := p.dial("tcp", p.upstream)
	if err != nil {
		return
	}
	if !p.track(server) {
		return
	}
	defer p.untrack(server)
	var wg sync.WaitGroup
	wg.Add(2)
	// The client's first bytes wait one extra round trip: the SYN/SYN-ACK
	// the emulated link would have cost before the client could send. They
	// reach the server no sooner than that round trip plus the one-way delay.
	go func() {
		defer wg.Done()
		p.pipe(server, client, &p.up, accepted.Add(3*p.oneWay))
	}()
	go func() {
		defer wg.Done()
		p.pipe(client, server, &p.down, time.Time{})
	}()
	wg.Wait()
}

type chunk struct {
	b   []byte
	due time.Time
}

var chunkPool = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

// pipe copies src to dst, each chunk delivered oneWay after it was read (and
// not before notBefore), counting delivered bytes in n. It half-closes dst
// at EOF and closes both on error.
func (p *Proxy) pipe(dst, src net.Conn, n *atomic.Int64, notBefore time.Time) {
	if p.oneWay == 0 && notBefore.IsZero() {
		_, err := io.Copy(&countingWriter{w: dst, n: n}, src)
		finish(dst, src, err)
		return
	}
	q := make(chan chunk, queueChunks)
	go func() {
		defer close(q)
		for {
			bp := chunkPool.Get().(*[]byte)
			k, err := src.Read(*bp)
			if k > 0 {
				due := time.Now().Add(p.oneWay)
				if due.Before(notBefore) {
					due = notBefore
				}
				q <- chunk{b: (*bp)[:k], due: due}
			} else {
				chunkPool.Put(bp)
			}
			if err != nil {
				if !errors.Is(err, io.EOF) {
					q <- chunk{due: time.Now()} // nil b: an error, close both
				}
				return
			}
		}
	}()
	for c := range q {
		if c.b == nil {
			finish(dst, src, errors.New("read error"))
			drain(q)
			return
		}
		if d := time.Until(c.due); d > 0 {
			time.Sleep(d)
		}
		// Counted before the write, so a client that has its bytes never
		// reads a count without them; corrected if the write falls short.
		n.Add(int64(len(c.b)))
		k, err := dst.Write(c.b)
		n.Add(int64(k - len(c.b)))
		b := c.b[:cap(c.b)]
		chunkPool.Put(&b)
		if err != nil {
			finish(dst, src, err)
			drain(q)
			return
		}
	}
	finish(dst, src, nil)
}

func drain(q chan chunk) {
	for range q {
	}
}

// finish half-closes dst after a clean EOF, so a client that waits for the
// server's close sees it; after an error both ends are closed.
func finish(dst, src net.Conn, err error) {
	if err == nil {
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
			return
		}
	}
	dst.Close()
	src.Close()
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	c.n.Add(int64(len(b))) // before, as in pipe
	k, err := c.w.Write(b)
	c.n.Add(int64(k - len(b)))
	return k, err
}
