//go:build linux

package metadata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ultracloud/ultracloud/internal/prismnet/netns"
)

// requireRoot skips a test that needs network namespaces when not root,
// unless CI is set (CI runs as root, so there it fails instead).
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if v := strings.ToLower(os.Getenv("CI")); v != "" && v != "0" && v != "false" {
			t.Fatal("metadata: this test needs root (network namespaces), and CI is set, so it must not be skipped")
		}
		t.Skip("metadata: skipping: needs root for network namespaces (sudo -E go test ...); with CI set this is a failure")
	}
}

// tenantPair builds what the agent and the dataplane give a proxy on one
// host, reduced to one workload: a service namespace whose interface holds
// the service address 10.0.0.1/24 and 169.254.169.254/32, and a workload
// namespace joined to it by a veth, with 10.0.0.5/24 (the port's address),
// 10.0.0.6/24 (an address no port owns) and the route to 169.254.169.254
// via the service address that DHCP would announce.
func tenantPair(t *testing.T) (svc, wl string) {
	t.Helper()
	dir := t.TempDir()
	svc, wl = filepath.Join(dir, "svc"), filepath.Join(dir, "wl")
	for _, p := range []string{svc, wl} {
		if err := netns.Create(p); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := netns.Delete(p); err != nil {
				t.Errorf("delete namespace: %v", err)
			}
		})
	}
	handle := func(path string) *netlink.Handle {
		ns, err := netns.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer ns.Close()
		h, err := netlink.NewHandleAt(ns)
		if err != nil {
			t.Fatalf("netlink handle in %s: %v", path, err)
		}
		t.Cleanup(h.Close)
		return h
	}
	hs, hw := handle(svc), handle(wl)
	wlNS, err := netns.Open(wl)
	if err != nil {
		t.Fatal(err)
	}
	defer wlNS.Close()
	if err := hs.LinkAdd(&netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: "eth0", MTU: 1450},
		PeerName:      "wl0",
		PeerNamespace: netlink.NsFd(int(wlNS)),
	}); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	setup := func(h *netlink.Handle, ifname string, addrs ...string) netlink.Link {
		l, err := h.LinkByName(ifname)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range addrs {
			na, err := netlink.ParseAddr(a)
			if err != nil {
				t.Fatal(err)
			}
			if err := h.AddrAdd(l, na); err != nil {
				t.Fatalf("add %s to %s: %v", a, ifname, err)
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatalf("set %s up: %v", ifname, err)
		}
		lo, err := h.LinkByName("lo")
		if err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetUp(lo); err != nil {
			t.Fatal(err)
		}
		return l
	}
	setup(hs, "eth0", "10.0.0.1/24", "169.254.169.254/32")
	l := setup(hw, "wl0", "10.0.0.5/24", "10.0.0.6/24")
	if err := hw.RouteAdd(&netlink.Route{
		LinkIndex: l.Attrs().Index,
		Dst:       &net.IPNet{IP: net.IPv4(169, 254, 169, 254), Mask: net.CIDRMask(32, 32)},
		Gw:        net.IPv4(10, 0, 0, 1),
	}); err != nil {
		t.Fatalf("route to the metadata address: %v", err)
	}
	return svc, wl
}

// echo is what the test upstream answers: the path and identity headers it
// received.
type echo struct {
	Path, Project, Port, Owner, Network, Source, MAC, Auth string
}

// fetchGo fetches u with Go's HTTP client over a TCP connection opened
// inside namespace ns from local address src (the socket is created on a
// thread in ns, so the connection stays there).
func fetchGo(t *testing.T, ns string, src netip.Addr, u string, hdr map[string]string) (int, string) {
	t.Helper()
	var conn net.Conn
	err := netns.Do(ns, func() error {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
		var err error
		conn, err = d.Dial("tcp", "169.254.169.254:80")
		return err
	})
	if err != nil {
		t.Fatalf("dial the metadata address from %s: %v", src, err)
	}
	used := false
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(context.Context, string, string) (net.Conn, error) {
		if used {
			return nil, errors.New("one connection only")
		}
		used = true
		return conn, nil
	}}
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s from %s: %v", u, src, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// fetch fetches u from inside namespace ns with a real client from source
// address src: curl if installed, else busybox wget (which cannot choose
// its source address; the workload's primary address 10.0.0.5 is used),
// else Go's client. It returns the client used, the status and the body.
func fetch(t *testing.T, ns string, src netip.Addr, u string, hdr map[string]string) (string, int, string) {
	t.Helper()
	// The deadline is the context's: busybox 1.35's wget -T crashes.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var cmd *exec.Cmd
	var tool string
	if p, err := exec.LookPath("curl"); err == nil {
		tool = "curl"
		args := []string{"-sS", "--max-time", "10", "--interface", src.String(), "-w", "\n%{http_code}"}
		for k, v := range hdr {
			args = append(args, "-H", k+": "+v)
		}
		cmd = exec.CommandContext(ctx, p, append(args, u)...)
	} else if p, err := exec.LookPath("busybox"); err == nil && src == netip.MustParseAddr("10.0.0.5") {
		tool = "busybox wget"
		args := []string{"wget", "-q", "-O", "-"}
		for k, v := range hdr {
			args = append(args, "--header", k+": "+v)
		}
		cmd = exec.CommandContext(ctx, p, append(args, u)...)
	} else {
		code, body := fetchGo(t, ns, src, u, hdr)
		return "go", code, body
	}
	var out []byte
	err := netns.Do(ns, func() error {
		var err error
		out, err = cmd.Output() // the child starts on this thread, inside ns
		return err
	})
	if tool == "busybox wget" {
		if err != nil {
			t.Logf("busybox wget %s: %v", u, err)
			return tool, 0, string(out) // wget tells no status, only failure
		}
		return tool, http.StatusOK, string(out)
	}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("curl %s from %s: %v: %s", u, src, err, ee.Stderr)
		}
		t.Fatalf("curl %s from %s: %v", u, src, err)
	}
	i := strings.LastIndexByte(string(out), '\n') // -w put the status after the body
	if i < 0 {
		t.Fatalf("curl output %q: no status code", out)
	}
	body, code := string(out[:i]), string(out[i+1:])
	n, err := strconv.Atoi(code)
	if err != nil {
		t.Fatalf("curl output %q: no status code", out)
	}
	return tool, n, body
}

func TestWorkloadReachesMetadataThroughItsNetworkWithItsIdentity(t *testing.T) {
	requireRoot(t)
	svc, wl := tenantPair(t)

	// The upstream runs in the host's namespace: the proxy listens inside
	// the service namespace but dials from the host's, as in the agent.
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(echo{
			Path: r.URL.Path, Project: r.Header.Get(HeaderProject), Port: r.Header.Get(HeaderPort),
			Owner: r.Header.Get(HeaderOwner), Network: r.Header.Get(HeaderNetwork),
			Source: r.Header.Get(HeaderSourceIP), MAC: r.Header.Get(HeaderMAC), Auth: r.Header.Get("Authorization"),
		})
	})
	upURL, err := url.Parse(up.srv.URL + "/meta")
	if err != nil {
		t.Fatal(err)
	}
	port := netip.MustParseAddr("10.0.0.5")
	inst := Instance{Project: "acme", Port: "web-0", OwnerKind: "VirtualMachine", OwnerName: "web", MAC: "02:00:0a:00:00:05", Addr: port}
	var logs syncBuffer
	p, err := New(Options{
		Network: "net-a",
		Listen: func() (net.Listener, error) {
			var ln net.Listener
			err := netns.Do(svc, func() error {
				var err error
				ln, err = net.Listen("tcp", "169.254.169.254:80")
				return err
			})
			return ln, err
		},
		Lookup:   lookupOf(map[netip.Addr]Instance{port: inst}),
		Upstream: upURL,
		Logger:   slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	running(t, p)
	defer func() {
		if t.Failed() {
			t.Logf("proxy log:\n%s", logs.String())
		}
	}()
	if got := p.Addr().String(); got != "169.254.169.254:80" {
		t.Fatalf("proxy listens on %s, want 169.254.169.254:80", got)
	}

	for _, path := range []string{"/latest/meta-data/instance-id", "/openstack/latest/meta_data.json"} {
		tool, code, body := fetch(t, wl, port, "http://169.254.169.254"+path,
			map[string]string{"X-UltraCloud-Project": "victim", "Authorization": "Bearer stolen"})
		var e echo
		if code != http.StatusOK || json.Unmarshal([]byte(body), &e) != nil {
			t.Fatalf("%s %s from %s: %d %q, want 200 and the upstream's echo", tool, path, port, code, body)
		}
		want := echo{Path: "/meta" + path, Project: "acme", Port: "web-0", Owner: "VirtualMachine/web",
			Network: "net-a", Source: "10.0.0.5", MAC: "02:00:0a:00:00:05"}
		if e != want {
			t.Errorf("%s %s: upstream saw %+v, want %+v", tool, path, e, want)
		}
		t.Logf("%s %s: %d %s", tool, path, code, strings.TrimSpace(body))
	}

	// A source no port owns on this network gets 404 and never reaches the
	// upstream.
	before := len(up.requests())
	code, body := fetchGo(t, wl, netip.MustParseAddr("10.0.0.6"), "http://169.254.169.254/latest/meta-data/instance-id", nil)
	if code != http.StatusNotFound || !strings.Contains(body, "10.0.0.6") {
		t.Errorf("unknown source 10.0.0.6: %d %q, want 404 naming it", code, body)
	}
	if n := len(up.requests()); n != before {
		t.Errorf("upstream saw %d more requests after the unknown source, want none", n-before)
	}
	if !strings.Contains(logs.String(), fmt.Sprintf("source=%s", "10.0.0.6")) {
		t.Errorf("unknown source not logged:\n%s", logs.String())
	}
}
