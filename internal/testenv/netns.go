package testenv

// Network helpers (owner: netns helper): a network namespace joined to the
// host by a veth pair, to stand for "another host" on the outside; servers
// inside it (HTTP, a tiny DNS responder); and starting a command in a private
// mount namespace with files bind-mounted over host paths (to give
// slirp4netns its own /etc/resolv.conf). Everything here needs root and
// iproute2, and is removed when the test ends.

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Netns is a network namespace a test made with `ip netns add`, joined to
// the host's namespace by a veth pair on a /30 of TEST-NET-1 (192.0.2.0/24,
// RFC 5737): HostIP on the host's side, PeerIP inside. The host routes to
// PeerIP, so a connection slirp4netns opens on the host reaches it.
type Netns struct {
	Name     string
	HostIP   netip.Addr
	PeerIP   netip.Addr
	hostVeth string
}

// NewNetns creates the namespace and veth pair, and deletes both when the
// test ends.
func NewNetns(t testing.TB) *Netns {
	t.Helper()
	RequireRoot(t)
	RequireCommand(t, "ip", "iproute2")
	var r [3]byte
	rand.Read(r[:])
	id := hex.EncodeToString(r[:])
	n := &Netns{Name: "dabba-test-" + id, hostVeth: "dbh" + id}
	peerVeth := "dbp" + id
	base, err := freeTestNet()
	if err != nil {
		t.Fatal(err)
	}
	n.HostIP, n.PeerIP = base.Next(), base.Next().Next()

	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", n.Name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", n.Name).Run() })
	ip("link", "add", n.hostVeth, "type", "veth", "peer", "name", peerVeth, "netns", n.Name)
	t.Cleanup(func() { exec.Command("ip", "link", "del", n.hostVeth).Run() })
	ip("addr", "add", n.HostIP.String()+"/30", "dev", n.hostVeth)
	ip("link", "set", n.hostVeth, "up")
	ip("-n", n.Name, "addr", "add", n.PeerIP.String()+"/30", "dev", peerVeth)
	ip("-n", n.Name, "link", "set", peerVeth, "up")
	ip("-n", n.Name, "link", "set", "lo", "up")
	return n
}

// freeTestNet picks a random /30 of 192.0.2.0/24 that no address of the
// host is in (other tests may hold some).
func freeTestNet() (netip.Addr, error) {
	addrs, _ := net.InterfaceAddrs()
	var r [1]byte
	for range 64 {
		rand.Read(r[:])
		base := netip.AddrFrom4([4]byte{192, 0, 2, r[0] &^ 3})
		pfx := netip.PrefixFrom(base, 30)
		used := false
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP.To4()); ok && pfx.Contains(ip) {
					used = true
				}
			}
		}
		if !used {
			return base, nil
		}
	}
	return netip.Addr{}, errors.New("no free /30 in 192.0.2.0/24 for a test netns")
}

// Do runs fn on an OS thread that joined the namespace; sockets fn opens
// stay in the namespace. The thread is thrown away afterwards.
func (n *Netns) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// No UnlockOSThread: the runtime ends a thread whose goroutine
		// exits locked, so no other goroutine ever runs in the namespace.
		runtime.LockOSThread()
		f, err := os.Open(filepath.Join("/run/netns", n.Name))
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("joining netns %s: %w", n.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// ServeHTTP serves h on PeerIP:port inside the namespace until the test
// ends and returns the server's URL.
func (n *Netns) ServeHTTP(t testing.TB, port int, h http.Handler) string {
	t.Helper()
	var ln net.Listener
	err := n.Do(func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(n.PeerIP, uint16(port)).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// ServeDNS answers DNS queries over UDP on PeerIP:53 inside the namespace
// until the test ends: A queries for the names in records (lower case,
// without the final dot) get the address, other types of a known name get
// an empty answer, unknown names NXDOMAIN.
func (n *Netns) ServeDNS(t testing.TB, records map[string]netip.Addr) {
	t.Helper()
	var pc net.PacketConn
	err := n.Do(func() (err error) {
		pc, err = net.ListenPacket("udp4", netip.AddrPortFrom(n.PeerIP, 53).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp := dnsAnswer(buf[:k], records); resp != nil {
				pc.WriteTo(resp, from)
			}
		}
	}()
}

// dnsAnswer builds the response to one query (RFC 1035 section 4.1), or
// nil for something that is not a one-question query.
func dnsAnswer(q []byte, records map[string]netip.Addr) []byte {
	const headerLen = 12
	be := binary.BigEndian
	if len(q) < headerLen || q[2]&0x80 != 0 || be.Uint16(q[4:]) != 1 {
		return nil
	}
	// The question: labels, then QTYPE and QCLASS.
	var labels []string
	i := headerLen
	for {
		if i >= len(q) {
			return nil
		}
		l := int(q[i])
		i++
		if l == 0 {
			break
		}
		if l&0xc0 != 0 || i+l > len(q) {
			return nil
		}
		labels = append(labels, strings.ToLower(string(q[i:i+l])))
		i += l
	}
	if i+4 > len(q) {
		return nil
	}
	qtype := be.Uint16(q[i:])
	question := q[headerLen : i+4]
	addr, known := records[strings.Join(labels, ".")]

	resp := make([]byte, headerLen, headerLen+len(question)+16)
	copy(resp, q[:2])                  // ID
	flags := uint16(0x8000 | 0x0080)   // QR, RA
	flags |= be.Uint16(q[2:]) & 0x0100 // RD as asked
	if !known {
		flags |= 3 // NXDOMAIN
	}
	be.PutUint16(resp[2:], flags)
	be.PutUint16(resp[4:], 1) // QDCOUNT
	resp = append(resp, question...)
	if known && qtype == 1 && addr.Is4() {
		be.PutUint16(resp[6:], 1) // ANCOUNT
		a := addr.As4()
		resp = append(resp,
			0xc0, headerLen, // name: pointer to the question's
			0, 1, 0, 1, // TYPE A, CLASS IN
			0, 0, 0, 60, // TTL
			0, 4, a[0], a[1], a[2], a[3])
	}
	return resp
}

// StartInMountNS starts cmd in a new private mount namespace (owned by the
// initial user namespace) in which each binds[src] is bind-mounted over the
// host path dst, e.g. a resolv.conf over /etc/resolv.conf. Needs root;
// cmd may still drop to the test user through its Credential. It must not
// set Pdeathsig: the thread that starts it ends right away.
func StartInMountNS(cmd *exec.Cmd, binds map[string]string) error {
	if cmd.SysProcAttr != nil && cmd.SysProcAttr.Pdeathsig != 0 {
		return errors.New("StartInMountNS: cmd must not set Pdeathsig")
	}
	errc := make(chan error, 1)
	go func() {
		// The thread keeps the new mount namespace; it ends with this
		// goroutine (no UnlockOSThread), and cmd forks from it.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			errc <- fmt.Errorf("unshare mount namespace: %w", err)
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			errc <- fmt.Errorf("making / private: %w", err)
			return
		}
		for src, dst := range binds {
			if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
				errc <- fmt.Errorf("bind-mounting %s over %s: %w", src, dst, err)
				return
			}
		}
		errc <- cmd.Start()
	}()
	return <-errc
}
