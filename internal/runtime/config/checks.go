package config

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/pki"
)

// The field checks every section shares. Each returns an error that reads
// as the problem of the field it is given for (Problems.AddErr adds the
// path), with an example of a good value.

// CheckListen checks a host:port to listen on: the host may be empty (every
// interface), an IP address or localhost; port 0 picks a free port.
func CheckListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port (e.g. 127.0.0.1:7700)", addr)
	}
	if err := checkPort(port, true); err != nil {
		return err
	}
	if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		return fmt.Errorf("host %q must be an IP address or localhost", host)
	}
	return nil
}

// CheckDialable checks a host:port others dial: a routable host (not
// empty, not the unspecified address) and a port from 1 to 65535.
func CheckDialable(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port (e.g. 10.0.0.1:7711)", addr)
	}
	if err := checkPort(port, false); err != nil {
		return err
	}
	if IsWildcard(addr) || host == "" {
		return fmt.Errorf("%q is not an address others can dial: give a routable host", addr)
	}
	return nil
}

func checkPort(port string, zeroOK bool) error {
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 || (!zeroOK && p == 0) {
		if zeroOK {
			return fmt.Errorf("port %q is not a number from 0 to 65535", port)
		}
		return fmt.Errorf("port %q must be a number from 1 to 65535", port)
	}
	return nil
}

// IsWildcard reports whether a host:port listens on every interface.
func IsWildcard(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && (host == "" || host == "0.0.0.0" || host == "::")
}

// CheckLoopback checks that a host:port is on loopback (127.0.0.0/8, ::1,
// localhost), where plaintext is allowed.
func CheckLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if !pki.IsLoopbackHost(host) {
		return fmt.Errorf("%q is not a loopback address (127.0.0.0/8, ::1, localhost)", addr)
	}
	return nil
}

// CheckDuration checks that d lies in [lo, hi]; hi 0 means no upper bound.
func CheckDuration(d, lo, hi time.Duration) error {
	switch {
	case d < lo && hi == 0:
		return fmt.Errorf("%s is too short (at least %s)", d, lo)
	case d < lo || (hi != 0 && d > hi):
		return fmt.Errorf("%s must be between %s and %s", d, lo, hi)
	}
	return nil
}

// CheckHTTPURL checks an API base URL: http or https, a host, no query
// or fragment.
func CheckHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q is not an http(s) API base URL (e.g. https://10.0.0.11:7700)", s)
	}
	return nil
}
