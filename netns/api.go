package netns

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"syscall"
	"time"
)

// apiTimeout bounds one API exchange when the context has no deadline.
const apiTimeout = 10 * time.Second

// AddPortForward publishes pf through slirp4netns's API socket
// (add_hostfwd), to GuestIP. A host port that is taken fails with an error
// wrapping ErrPortInUse that names it.
func (s *Slirp) AddPortForward(ctx context.Context, pf PortForward) error {
	o := Options{AllowHostLoopback: s.allowHostLoopback, PortForwards: []PortForward{pf}}
	if err := o.validate(); err != nil {
		return err
	}
	if err := CheckPortForwards(o.PortForwards); err != nil {
		return err
	}
	return s.addHostFwd(ctx, pf)
}

// addHostFwd asks slirp4netns to listen; it is AddPortForward without the
// pre-check, so tests can see slirp4netns's own refusal.
func (s *Slirp) addHostFwd(ctx context.Context, pf PortForward) error {
	req := map[string]any{
		"execute": "add_hostfwd",
		"arguments": map[string]any{
			"proto":      pf.Proto,
			"host_addr":  pf.hostAddr(),
			"host_port":  pf.HostPort,
			"guest_addr": GuestIP,
			"guest_port": pf.ContainerPort,
		},
	}
	var ret struct {
		ID int `json:"id"`
	}
	if err := s.api(ctx, req, &ret); err != nil {
		var ae *apiError
		if errors.As(err, &ae) {
			return fmt.Errorf("publishing %s: slirp4netns could not listen on host %s:%d/%s (%s): %w: the port is taken or not allowed; choose another host port",
				pf, pf.hostAddr(), pf.HostPort, pf.Proto, ae.Desc, ErrPortInUse)
		}
		return fmt.Errorf("publishing %s: %w", pf, err)
	}
	return nil
}

// apiError is an {"error":{"desc":...}} answer.
type apiError struct {
	Desc string `json:"desc"`
}

func (e *apiError) Error() string { return "slirp4netns API: " + e.Desc }

// api sends one request to the API socket and decodes the "return" member
// of the answer into ret.
func (s *Slirp) api(ctx context.Context, req any, ret any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", s.sock)
	if err != nil {
		return fmt.Errorf("connecting to slirp4netns API socket %s: %w", s.sock, err)
	}
	defer c.Close()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(apiTimeout)
	}
	c.SetDeadline(deadline)
	// slirp4netns reads the request with one read(2), answers, and shuts
	// the connection down.
	if _, err := c.Write(body); err != nil {
		return fmt.Errorf("writing to slirp4netns API socket %s: %w", s.sock, err)
	}
	answer, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("reading from slirp4netns API socket %s: %w", s.sock, err)
	}
	var resp struct {
		Return json.RawMessage `json:"return"`
		Error  *apiError       `json:"error"`
	}
	if err := json.Unmarshal(answer, &resp); err != nil {
		return fmt.Errorf("slirp4netns API answer %q: %w", answer, err)
	}
	if resp.Error != nil {
		return resp.Error
	}
	if ret != nil && len(resp.Return) > 0 {
		return json.Unmarshal(resp.Return, ret)
	}
	return nil
}

func checkPortForward(pf PortForward) error {
	if pf.Proto != "tcp" && pf.Proto != "udp" {
		return fmt.Errorf("port forward %s: protocol %q is not supported: use tcp or udp", pf, pf.Proto)
	}
	if pf.HostPort == 0 || pf.ContainerPort == 0 {
		return fmt.Errorf("port forward %s: ports must be 1 to 65535", pf)
	}
	return nil
}

// CheckPortForwards checks that each host port can be bound now, by binding
// and releasing it, and that the list does not publish one port twice. It
// cannot rule out a race with another program binding the port next.
func CheckPortForwards(pfs []PortForward) error {
	for i, pf := range pfs {
		if err := checkPortForward(pf); err != nil {
			return err
		}
		for _, q := range pfs[:i] {
			if q.Proto == pf.Proto && q.HostPort == pf.HostPort &&
				(q.HostIP == pf.HostIP || q.HostIP == "" || pf.HostIP == "") {
				return fmt.Errorf("port forwards %s and %s: %w: host port %d/%s is published twice", q, pf, ErrPortInUse, pf.HostPort, pf.Proto)
			}
		}
		addr := net.JoinHostPort(pf.hostAddr(), strconv.Itoa(int(pf.HostPort)))
		var c io.Closer
		var err error
		if pf.Proto == "udp" {
			c, err = net.ListenPacket("udp4", addr)
		} else {
			c, err = net.Listen("tcp4", addr)
		}
		if err == nil {
			c.Close()
			continue
		}
		switch {
		case errors.Is(err, syscall.EADDRINUSE):
			return fmt.Errorf("publishing %s: %w: %s/%s is already taken: choose another host port", pf, ErrPortInUse, addr, pf.Proto)
		case errors.Is(err, syscall.EACCES):
			return fmt.Errorf("publishing %s: host port %d is privileged (%v): use a port at or above net.ipv4.ip_unprivileged_port_start", pf, pf.HostPort, err)
		case errors.Is(err, syscall.EADDRNOTAVAIL):
			return fmt.Errorf("publishing %s: %s is not an address of this host: use one of its addresses, or omit it", pf, pf.HostIP)
		default:
			return fmt.Errorf("publishing %s: binding host %s/%s: %w", pf, addr, pf.Proto, err)
		}
	}
	return nil
}
