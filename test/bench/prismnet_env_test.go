//go:build linux

package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/prismnetv1"
	"github.com/ultracloud/ultracloud/pkg/client"
	"github.com/ultracloud/ultracloud/test/harness"
)

// The environment of the prismnet benchmarks, built as
// test/cluster/prismnet_test.go builds its own (startNetEnv): a
// control-plane host cp (chainfire, flaredb, iam, prismnet) and workers that
// run only the prismnet agent, enrolled as node:NAME with join tokens from
// `ultracloud iam node-credential create`. Workloads are network
// namespaces attached through veth ports; unlike the cluster test they are
// configured statically with the port's allocated address (no DHCP round
// trip), which is what the propagation benchmark needs to time the
// dataplane rather than a DHCP client's retry timer.

// pnProject is the project every prismnet benchmark works in.
const pnProject = "bench"

// pnEnv is one benchmark's cluster and an API client on cp.
type pnEnv struct {
	b   *testing.B
	ctx context.Context
	c   *harness.Cluster
	cp  *harness.Host
	cl  *client.Client
}

// requirePrismnet skips without root (namespaces, nftables) and fails,
// naming the package to install, if a tool the benchmark runs is missing.
func requirePrismnet(b *testing.B, tools ...string) {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("prismnet benchmarks need root (network namespaces, nftables, VXLAN): run them as root, e.g. sudo ./scripts/bench-prismnet.sh")
	}
	pkgs := map[string]string{"iperf3": "iperf3", "ip": "iproute2", "nft": "nftables"}
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			b.Fatalf("%s is missing: apt-get install -y %s (scripts/bench-prismnet.sh installs it)", t, pkgs[t])
		}
	}
}

// startPrismnet starts cp and the named workers, enrolls the workers,
// creates the benchmark project and returns a client on cp's API with
// keep-alive connections opened from the harness's switch namespace.
// logLevel is the nodes' log.level ("info" unless the benchmark needs the
// agent's debug lines).
func startPrismnet(b *testing.B, logLevel string, workers ...string) *pnEnv {
	b.Helper()
	requirePrismnet(b, "ip", "nft")
	// The harness runs the binary TestMain built instead of building its own.
	b.Setenv(harness.BinaryEnv, binary.Path)
	hosts := []harness.HostSpec{{Name: "cp", Roles: []string{"chainfire", "flaredb", "iam", "prismnet"}}}
	for _, w := range workers {
		hosts = append(hosts, harness.HostSpec{Name: w, Roles: []string{"prismnet-agent"}, ControlPlane: []string{"cp"}})
	}
	c := harness.Start(b, harness.Spec{HostList: hosts, LogLevel: logLevel})
	e := &pnEnv{b: b, ctx: b.Context(), c: c, cp: c.Host("cp")}
	tok, err := e.cp.Token()
	if err != nil {
		b.Fatal(err)
	}
	tr := &http.Transport{
		DialContext:           c.Dial,
		MaxIdleConns:          128,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
	}
	b.Cleanup(tr.CloseIdleConnections)
	// No client timeout: it would cut the watch streams; every call has
	// the benchmark's context and the transport's header timeout.
	if e.cl, err = client.New(client.Config{Endpoint: e.cp.URL(), Token: tok, HTTPClient: &http.Client{Transport: tr}, UserAgent: "ultracloud-bench"}); err != nil {
		b.Fatal(err)
	}
	for _, w := range workers {
		var cred struct {
			Status struct{ JoinToken string } `json:"status"`
		}
		out := e.cli("iam", "node-credential", "create", w, "-o", "json")
		if err := json.Unmarshal(out, &cred); err != nil || cred.Status.JoinToken == "" {
			b.Fatalf("node-credential create %s: %v\n%s", w, err, out)
		}
		h := c.Host(w)
		if err := os.WriteFile(h.JoinTokenPath(), []byte(cred.Status.JoinToken+"\n"), 0o600); err != nil {
			b.Fatal(err)
		}
		if err := h.Start(e.ctx); err != nil {
			b.Fatal(err)
		}
	}
	for _, w := range workers {
		if err := c.Host(w).WaitReady(e.ctx, 60*time.Second); err != nil {
			b.Fatal(err)
		}
	}
	e.create("projects", "", pnProject, struct{}{})
	return e
}

// cli runs `ultracloud ARGS` in cp's namespace against cp's API with the
// break-glass token.
func (e *pnEnv) cli(args ...string) []byte {
	e.b.Helper()
	tok, err := e.cp.Token()
	if err != nil {
		e.b.Fatal(err)
	}
	cmd := e.cp.Command(e.ctx, binary.Path, append(args, "--endpoint", e.cp.URL(), "--token", tok)...)
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+e.b.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		e.b.Fatalf("ultracloud %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// create creates one object and fails the benchmark if that fails.
func (e *pnEnv) create(coll, project, name string, spec any) *api.Object {
	e.b.Helper()
	o, err := e.tryCreate(e.ctx, coll, project, name, spec)
	if err != nil {
		e.b.Fatal(err)
	}
	return o
}

func (e *pnEnv) tryCreate(ctx context.Context, coll, project, name string, spec any) (*api.Object, error) {
	raw, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	o, err := e.cl.Resources(coll, project).Create(ctx, &api.Object{Metadata: api.ObjectMeta{Name: name}, Spec: raw})
	if err != nil {
		return nil, fmt.Errorf("creating %s %s/%s: %w", coll, project, name, err)
	}
	return o, nil
}

// network creates network name (CIDR cidr) with one IPv4 subnet covering
// sub, and returns the network's MTU.
func (e *pnEnv) network(name, cidr, sub string) int {
	e.b.Helper()
	o := e.create(prismnetv1.NetworkCollection, pnProject, name, prismnetv1.NetworkSpec{CIDR: cidr})
	e.create(prismnetv1.SubnetCollection, pnProject, name+"-v4", prismnetv1.SubnetSpec{Network: name, CIDR: sub})
	var st prismnetv1.NetworkStatus
	if err := json.Unmarshal(o.Status, &st); err != nil || st.MTU == 0 {
		e.b.Fatalf("network %s: no MTU in its status (%v): %s", name, err, o.Status)
	}
	return st.MTU
}

// portIPv4 returns the first IPv4 address allocated to the port o.
func portIPv4(o *api.Object) (string, error) {
	var st prismnetv1.PortStatus
	if err := json.Unmarshal(o.Status, &st); err != nil {
		return "", fmt.Errorf("port %s: status: %w", o.Metadata.Name, err)
	}
	for _, f := range st.FixedIPs {
		if !strings.Contains(f.IP, ":") {
			return f.IP, nil
		}
	}
	return "", fmt.Errorf("port %s has no IPv4 address: %s", o.Metadata.Name, o.Status)
}

// addNetns creates a named network namespace with lo up and deletes it
// when the benchmark's cleanups run (before the harness's own, which
// checks that nothing with the run's prefix is left).
func (e *pnEnv) addNetns(name string) string {
	e.b.Helper()
	ns := e.c.Prefix() + name
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		e.b.Fatalf("ip netns add %s: %v %s", ns, err, out)
	}
	e.b.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	e.sh(ns, "ip link set lo up")
	return ns
}

// sh runs a shell command in namespace ns and fails the benchmark if it
// fails.
func (e *pnEnv) sh(ns, cmd string) string {
	e.b.Helper()
	out, err := exec.CommandContext(e.ctx, "ip", "netns", "exec", ns, "sh", "-c", cmd).CombinedOutput()
	if err != nil {
		e.b.Fatalf("in %s: %s: %v\n%s", ns, cmd, err, out)
	}
	return string(out)
}

// attachStatic creates a veth port for a new workload namespace on host,
// waits until it is Ready and gives the workload the port's address
// (prefix bits) as a DHCP client would have. It returns the namespace and
// the address.
func (e *pnEnv) attachStatic(name, network, host string, bits int, groups ...string) (ns, ip string) {
	e.b.Helper()
	ns = e.addNetns("wl-" + name)
	return ns, e.plug(name, network, host, ns, "eth0", bits, true, groups...)
}

// plug creates a veth port whose peer is interface iface of the existing
// namespace ns, waits until it is Ready, configures the port's address on
// iface and returns it. portSecurity false turns off the port's filters
// (security groups and anti-spoofing).
func (e *pnEnv) plug(name, network, host, ns, iface string, bits int, portSecurity bool, groups ...string) string {
	e.b.Helper()
	o := e.create(prismnetv1.PortCollection, pnProject, name, prismnetv1.PortSpec{Network: network, SecurityGroups: groups,
		PortSecurity: &portSecurity,
		Binding:      prismnetv1.PortBinding{Host: host, Device: prismnetv1.DeviceVeth, Namespace: ns, Interface: iface}})
	ip, err := portIPv4(o)
	if err != nil {
		e.b.Fatal(err)
	}
	if err := e.waitPortReady(name, 60*time.Second); err != nil {
		e.b.Fatal(err)
	}
	e.sh(ns, fmt.Sprintf("ip addr add %s/%d dev %s && ip link set %s up", ip, bits, iface, iface))
	return ip
}

// waitPortReady polls the port until its phase is Ready.
func (e *pnEnv) waitPortReady(name string, timeout time.Duration) error {
	return harness.WaitFor(e.ctx, timeout, "port "+name+" to be Ready", func(ctx context.Context) (bool, string) {
		o, err := e.cl.Resources(prismnetv1.PortCollection, pnProject).Get(ctx, name)
		if err != nil {
			return false, err.Error()
		}
		var st prismnetv1.PortStatus
		_ = json.Unmarshal(o.Status, &st)
		return st.Phase == prismnetv1.PortReady, "phase " + st.Phase + " " + st.LastError
	})
}

// inNetns runs fn on an OS thread switched into the named namespace, for
// the sockets and /proc/sys/net files fn opens: a socket belongs for good
// to the namespace of the thread that created it. The thread goes back to
// its own namespace afterwards; if that fails it stays locked and the
// runtime destroys it instead of reusing it in the wrong namespace.
func inNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	// The caller waits for this goroutine's one result below.
	go func() {
		runtime.LockOSThread()
		restored, err := runInNetns(ns, fn)
		if restored {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

func runInNetns(ns string, fn func() error) (restored bool, err error) {
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return true, fmt.Errorf("bench: own namespace: %w", err)
	}
	defer orig.Close()
	target, err := os.Open(filepath.Join("/run/netns", ns))
	if err != nil {
		return true, fmt.Errorf("bench: namespace %s: %w", ns, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return true, fmt.Errorf("bench: setns %s: %w", ns, err)
	}
	fnErr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		return false, errors.Join(fnErr, fmt.Errorf("bench: leaving namespace %s: %w", ns, err))
	}
	return true, fnErr
}

// listenUDPIn opens a UDP socket bound to addr inside namespace ns.
func listenUDPIn(ns, addr string) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := inNetns(ns, func() error {
		pc, err := net.ListenPacket("udp4", addr)
		if err != nil {
			return err
		}
		c = pc.(*net.UDPConn)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bench: udp socket %s in %s: %w", addr, ns, err)
	}
	return c, nil
}

// netlinkIn returns a netlink handle on namespace ns (and the namespace
// handle, for subscriptions); close both.
func netlinkIn(ns string) (*netlink.Handle, netns.NsHandle, error) {
	nsh, err := netns.GetFromName(ns)
	if err != nil {
		return nil, 0, fmt.Errorf("bench: namespace %s: %w", ns, err)
	}
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		nsh.Close()
		return nil, 0, fmt.Errorf("bench: netlink in %s: %w", ns, err)
	}
	return h, nsh, nil
}

// readyWatch follows the project's ports and records when the API first
// showed each one Ready (the time this process received the event).
type readyWatch struct {
	mu     sync.Mutex
	ready  map[string]time.Time
	notify chan struct{} // closed and replaced on every new Ready port
	err    error
}

func (e *pnEnv) watchReady() *readyWatch {
	e.b.Helper()
	w, err := e.cl.Resources(prismnetv1.PortCollection, pnProject).Watch(e.ctx, client.WatchOptions{})
	if err != nil {
		e.b.Fatal(err)
	}
	r := &readyWatch{ready: map[string]time.Time{}, notify: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Go(func() {
		for ev := range w.Events() {
			if ev.Object == nil || (ev.Type != api.EventAdded && ev.Type != api.EventModified) {
				continue
			}
			var st prismnetv1.PortStatus
			if json.Unmarshal(ev.Object.Status, &st) != nil || st.Phase != prismnetv1.PortReady {
				continue
			}
			now := time.Now()
			r.mu.Lock()
			if _, ok := r.ready[ev.Object.Metadata.Name]; !ok {
				r.ready[ev.Object.Metadata.Name] = now
				close(r.notify)
				r.notify = make(chan struct{})
			}
			r.mu.Unlock()
		}
		r.mu.Lock()
		r.err = w.Err()
		r.mu.Unlock()
	})
	e.b.Cleanup(func() { w.Stop(); wg.Wait() })
	return r
}

// wait waits until cond holds over the ready map.
func (r *readyWatch) wait(ctx context.Context, timeout time.Duration, what string, cond func(map[string]time.Time) bool) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ok, n, werr, ch := cond(r.ready), len(r.ready), r.err, r.notify
		r.mu.Unlock()
		if ok {
			return nil
		}
		if werr != nil {
			return fmt.Errorf("bench: waiting for %s: the watch ended: %w", what, werr)
		}
		select {
		case <-ch:
		case <-deadline.C:
			return fmt.Errorf("bench: waited %s for %s; %d ports Ready so far", timeout, what, n)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// at returns when port name was first seen Ready.
func (r *readyWatch) at(name string) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.ready[name]
	return t, ok
}

// linkWatch follows the links of a host's namespace and records when each
// was first seen administratively up. The agent brings a new port device
// up only once its filters are in place, so that is the moment the port
// is programmed in the kernel.
type linkWatch struct {
	mu       sync.Mutex
	up       map[string]time.Time
	notify   chan struct{}
	overflow int // subscription errors (a full socket buffer loses events)
}

func (e *pnEnv) watchLinks(h *harness.Host) *linkWatch {
	e.b.Helper()
	nsh, err := netns.GetFromName(h.Namespace())
	if err != nil {
		e.b.Fatal(err)
	}
	lw := &linkWatch{up: map[string]time.Time{}, notify: make(chan struct{})}
	ch := make(chan netlink.LinkUpdate, 4096)
	done := make(chan struct{})
	err = netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{
		Namespace: &nsh, ReceiveBufferSize: 8 << 20, ReceiveBufferForceSize: true,
		ErrorCallback: func(error) { lw.mu.Lock(); lw.overflow++; lw.mu.Unlock() },
	})
	nsh.Close()
	if err != nil {
		e.b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		// The subscription closes ch once done is closed.
		for u := range ch {
			if u.Attrs() == nil || u.Attrs().Flags&net.FlagUp == 0 {
				continue
			}
			now := time.Now()
			name := u.Attrs().Name
			lw.mu.Lock()
			if _, ok := lw.up[name]; !ok {
				lw.up[name] = now
				close(lw.notify)
				lw.notify = make(chan struct{})
			}
			lw.mu.Unlock()
		}
	})
	e.b.Cleanup(func() { close(done); wg.Wait() })
	return lw
}

// snapshot copies the map of up times.
func (lw *linkWatch) snapshot() (map[string]time.Time, int) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	m := make(map[string]time.Time, len(lw.up))
	for k, v := range lw.up {
		m[k] = v
	}
	return m, lw.overflow
}

// waitUp waits until link name has been seen up and returns when.
func (lw *linkWatch) waitUp(ctx context.Context, name string, timeout time.Duration) (time.Time, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		lw.mu.Lock()
		t, ok := lw.up[name]
		ch := lw.notify
		lw.mu.Unlock()
		if ok {
			return t, nil
		}
		select {
		case <-ch:
		case <-deadline.C:
			return time.Time{}, fmt.Errorf("bench: link %s not up after %s", name, timeout)
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}
