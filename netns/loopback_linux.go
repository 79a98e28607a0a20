package netns

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// SetupLoopback brings up lo in the calling thread's network namespace
// through rtnetlink (no ip binary needed). The sandbox child calls it in
// every network mode; it is harmless when lo is already up.
func SetupLoopback() error {
	if err := setLinkUp("lo"); err != nil {
		return fmt.Errorf("bringing up lo: %w", err)
	}
	return nil
}

// setLinkUp sends RTM_NEWLINK for the link called name (IFLA_IFNAME; the
// kernel looks it up when ifi_index is 0) with IFF_UP set, and waits for
// the kernel's acknowledgement.
func setLinkUp(name string) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink bind: %w", err)
	}

	// struct nlmsghdr, struct ifinfomsg, then one rtattr holding the
	// NUL-terminated name, padded to 4 bytes.
	attrLen := unix.SizeofRtAttr + len(name) + 1
	msgLen := unix.SizeofNlMsghdr + unix.SizeofIfInfomsg + rtaAlign(attrLen)
	b := make([]byte, msgLen)
	ne := binary.NativeEndian
	const seq = 1
	ne.PutUint32(b[0:], uint32(msgLen))
	ne.PutUint16(b[4:], unix.RTM_NEWLINK)
	ne.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	ne.PutUint32(b[8:], seq)
	ifi := b[unix.SizeofNlMsghdr:]
	ifi[0] = unix.AF_UNSPEC
	// ifi_type [2:4] and ifi_index [4:8] stay 0.
	ne.PutUint32(ifi[8:], unix.IFF_UP)  // ifi_flags
	ne.PutUint32(ifi[12:], unix.IFF_UP) // ifi_change
	rta := ifi[unix.SizeofIfInfomsg:]
	ne.PutUint16(rta[0:], uint16(attrLen))
	ne.PutUint16(rta[2:], unix.IFLA_IFNAME)
	copy(rta[unix.SizeofRtAttr:], name)

	if err := unix.Sendto(fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink send RTM_NEWLINK: %w", err)
	}
	buf := make([]byte, 8192)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("netlink receive: %w", err)
		}
		for m := buf[:n]; len(m) >= unix.SizeofNlMsghdr; {
			l := int(ne.Uint32(m[0:]))
			typ := ne.Uint16(m[4:])
			if l < unix.SizeofNlMsghdr || l > len(m) {
				return fmt.Errorf("netlink: malformed answer")
			}
			if ne.Uint32(m[8:]) == seq && typ == unix.NLMSG_ERROR {
				if l < unix.SizeofNlMsghdr+4 {
					return fmt.Errorf("netlink: short error answer")
				}
				if errno := -int32(ne.Uint32(m[unix.SizeofNlMsghdr:])); errno != 0 {
					return fmt.Errorf("RTM_NEWLINK %s: %w", name, unix.Errno(errno))
				}
				return nil
			}
			if nlmAlign(l) >= len(m) {
				break
			}
			m = m[nlmAlign(l):]
		}
	}
}

func rtaAlign(n int) int { return (n + unix.RTA_ALIGNTO - 1) &^ (unix.RTA_ALIGNTO - 1) }
func nlmAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }
