// Package link emulates the network link between the benchmark's contenders
// and its registries, honestly enough to measure pulls over it.
//
// This kernel has no netem, so the two figures of a link are made by two
// instruments, each measured by the package's tests:
//
//   - the rate by a tbf qdisc on both ends of a veth pair into a network
//     namespace the harness creates (Netns, Shape); the registry listens
//     inside that namespace, so every byte it serves crosses the shaped link;
//   - the round-trip time by a TCP proxy on 127.0.0.1 (Proxy) that holds
//     each chunk for half the round trip in each direction, and holds a new
//     connection's first bytes one more round trip for the TCP handshake the
//     real link would cost. The proxy also counts the bytes it delivers, so
//     the benchmark can report what each contender fetched.
//
// Contenders talk to the proxy on 127.0.0.1 (so they all treat the registry
// as a plain-HTTP loopback registry); the proxy dials the registry through
// the shaped veth.
//
// What this does not reproduce: the proxy ends each TCP connection, so
// congestion control runs over loopback on one side and over the veth on the
// other, never over a path whose round trip is the emulated one. Requests,
// answers and connection set-up pay the round trip; TCP slow start does not
// (on a real 100 Mbit/s, 20 ms path it costs a few round trips per new
// connection). Every contender gets the same treatment.
package link
