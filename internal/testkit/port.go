package testkit

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// Ports for servers under test. A port picked by listening on :0 and
// closing comes from the kernel's ephemeral range, the range it also uses
// for the source ports of outgoing connections: a server restarted on "its"
// port can then find it taken by some client's connection. So FreePort
// hands out ports from just below the ephemeral range (Linux: 32768-60999,
// so 20768-32767), which the kernel never picks on its own, and:
//
//   - within one process, a counter walks the range, so no port is handed
//     out twice until the range wraps (12000 ports), even if the first
//     taker has not bound it yet;
//   - against other processes (parallel test binaries), the walk starts at
//     a random point per process, and each port is bound once before it is
//     handed out, so ports in use at that moment are skipped.
//
// What remains is another process binding the port between the check and
// the server's own bind; Listen avoids even that for code that accepts a
// net.Listener, by handing over the bound socket itself.
//
// The counter is process-wide state on purpose: ports are a process-wide
// (indeed machine-wide) resource, and tests of one binary share them.

const portSpan = 12000

var ports struct {
	once      sync.Once
	low, high int // [low, high) is the range walked; high == 0: ask the kernel
	next      atomic.Int64
}

// portRange returns the range below the kernel's ephemeral ports, or
// high == 0 if there is no room below them.
func portRange() (low, high int) {
	ports.once.Do(func() {
		ephemeralLow := 32768
		if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
			if f := strings.Fields(string(b)); len(f) == 2 {
				if v, err := strconv.Atoi(f[0]); err == nil {
					ephemeralLow = v
				}
			}
		}
		ports.high = ephemeralLow
		ports.low = max(ephemeralLow-portSpan, 1024)
		if ports.high-ports.low < 1000 {
			ports.low, ports.high = 0, 0
		}
		ports.next.Store(rand.Int64N(portSpan))
	})
	return ports.low, ports.high
}

// listenFree listens on a free loopback port (see the comment above).
func listenFree() (net.Listener, error) {
	low, high := portRange()
	if high == 0 {
		return net.Listen("tcp", "127.0.0.1:0")
	}
	span := int64(high - low)
	var lastErr error
	for range 1000 {
		port := low + int(ports.next.Add(1)%span)
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			return ln, nil
		}
		lastErr = err
	}
	return nil, fmt.Errorf("testkit: no free loopback port in %d-%d: %w", low, high-1, lastErr)
}

// Listen returns a listener on a free 127.0.0.1 port, closed at the end of
// the test if the code under test has not closed it. Prefer it to FreePort
// wherever the code takes a net.Listener: nothing can take the port between
// picking and binding.
func Listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := listenFree()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// FreePort returns a 127.0.0.1 TCP port that was free a moment ago and is
// handed out to no other caller in this process, for code that must be
// given an address rather than a listener.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := FreePortErr()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// FreePorts returns n distinct ports as FreePort does.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	out := make([]int, n)
	for i := range out {
		out[i] = FreePort(t)
	}
	return out
}

// FreePortErr is FreePort for code without a testing.TB (a helper process,
// a package shared by tests and tools).
func FreePortErr() (int, error) {
	ln, err := listenFree()
	if err != nil {
		return 0, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		return 0, fmt.Errorf("testkit: closing the probe of port %d: %w", port, err)
	}
	return port, nil
}
