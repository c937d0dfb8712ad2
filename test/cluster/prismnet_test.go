//go:build linux

package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/nodeid"
	"github.com/ultracloud/ultracloud/internal/testkit"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/prismnetv1"
	"github.com/ultracloud/ultracloud/pkg/client"
	"github.com/ultracloud/ultracloud/test/e2e/nodeproc"
	"github.com/ultracloud/ultracloud/test/harness"
)

// netEnv is a control-plane host (chainfire, flaredb, iam, prismnet) and
// workers that run only the prismnet agent, enrolled as node:NAME.
type netEnv struct {
	t       *testing.T
	c       *harness.Cluster
	cp      *harness.Host
	admin   *client.Client
	nettool string
	ctx     context.Context
}

func startNetEnv(t *testing.T, workers ...string) *netEnv {
	t.Helper()
	return startNetEnvWith(t, nil, workers...)
}

// startNetEnvWith is startNetEnv with extra harness networks (an
// "external" network on some workers).
func startNetEnvWith(t *testing.T, networks []harness.NetworkSpec, workers ...string) *netEnv {
	t.Helper()
	requireTools(t, "busybox")
	hosts := []harness.HostSpec{{Name: "cp", Roles: []string{"chainfire", "flaredb", "iam", "prismnet"}}}
	for _, w := range workers {
		hosts = append(hosts, harness.HostSpec{Name: w, Roles: []string{"prismnet-agent"}, ControlPlane: []string{"cp"}})
	}
	c := harness.Start(t, harness.Spec{HostList: hosts, LogLevel: "info", Networks: networks})
	e := &netEnv{t: t, c: c, cp: c.Host("cp"), ctx: t.Context()}
	var err error
	if e.admin, err = e.cp.Client(); err != nil {
		t.Fatal(err)
	}
	e.nettool = filepath.Join(t.TempDir(), "nettool")
	if out, err := exec.Command("go", "build", "-o", e.nettool, "./nettool").CombinedOutput(); err != nil {
		t.Fatalf("building nettool: %v\n%s", err, out)
	}
	// Enroll every worker with a join token made by the operator's CLI.
	for _, w := range workers {
		var cred struct {
			Status struct{ JoinToken string } `json:"status"`
		}
		out := cli(t, e.cp, "iam", "node-credential", "create", w, "-o", "json")
		if err := json.Unmarshal(out, &cred); err != nil || cred.Status.JoinToken == "" {
			t.Fatalf("node-credential create %s: %v\n%s", w, err, out)
		}
		h := c.Host(w)
		if err := os.WriteFile(h.JoinTokenPath(), []byte(cred.Status.JoinToken+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := h.Start(e.ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range workers {
		if err := c.Host(w).WaitReady(e.ctx, 60*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"alpha", "bravo"} {
		e.create("projects", "", p, struct{}{})
	}
	return e
}

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: the test command installs it (apt-get install -y busybox-static iputils-ping iproute2)", tool)
		}
	}
}

func (e *netEnv) create(coll, project, name string, spec any) *api.Object {
	e.t.Helper()
	raw, err := json.Marshal(spec)
	if err != nil {
		e.t.Fatal(err)
	}
	o, err := e.admin.Resources(coll, project).Create(e.ctx, &api.Object{Metadata: api.ObjectMeta{Name: name}, Spec: raw})
	if err != nil {
		e.t.Fatalf("creating %s %s/%s: %v", coll, project, name, err)
	}
	return o
}

// workload is a network namespace attached to a tenant network through a
// veth port bound to a worker.
type workload struct {
	e      *netEnv
	ns     string
	port   string
	proj   string
	host   string
	ip, v6 string
}

// attach creates the workload's namespace and its port, waits for the
// port to be Ready, and configures the workload by DHCP (IPv4) and SLAAC
// (IPv6) as a guest would.
func (e *netEnv) attach(project, name, network, host string, groups ...string) *workload {
	e.t.Helper()
	w := &workload{e: e, ns: e.c.Prefix() + "wl-" + name, port: name, proj: project, host: host}
	if out, err := exec.Command("ip", "netns", "add", w.ns).CombinedOutput(); err != nil {
		e.t.Fatalf("ip netns add %s: %v %s", w.ns, err, out)
	}
	e.t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", w.ns).Run() })
	w.sh("ip link set lo up")
	e.create("ports", project, name, prismnetv1.PortSpec{Network: network, SecurityGroups: groups,
		Binding: prismnetv1.PortBinding{Host: host, Device: prismnetv1.DeviceVeth, Namespace: w.ns}})
	testkit.EventuallyErr(e.t, 30*time.Second, "port "+name+" ready", func() error {
		st := e.portStatus(project, name)
		if st.Phase != prismnetv1.PortReady {
			return fmt.Errorf("phase %s: %s", st.Phase, st.LastError)
		}
		return nil
	})
	// DHCP with busybox's client, applying what it got as a guest's
	// script would.
	script := filepath.Join(e.t.TempDir(), "udhcpc.sh")
	os.WriteFile(script, []byte(`#!/bin/sh
case "$1" in
bound|renew)
  ip addr flush dev "$interface" scope global
  ip addr add "$ip/$mask" dev "$interface"
  [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
  for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
  set -- $staticroutes
  while [ $# -ge 2 ]; do ip route replace "$1" via "$2" dev "$interface"; shift 2; done
  ;;
esac
`), 0o755)
	w.sh("busybox udhcpc -i eth0 -n -q -t 5 -T 1 -s " + script)
	st := e.portStatus(project, name)
	for _, f := range st.FixedIPs {
		if strings.Contains(f.IP, ":") {
			w.v6 = f.IP
		} else {
			w.ip = f.IP
		}
	}
	if got := w.sh("ip -4 -o addr show dev eth0"); !strings.Contains(got, w.ip+"/") {
		e.t.Fatalf("workload %s has %q after DHCP, want %s", name, got, w.ip)
	}
	return w
}

func (e *netEnv) portStatus(project, name string) prismnetv1.PortStatus {
	e.t.Helper()
	o, err := e.admin.Resources("ports", project).Get(e.ctx, name)
	if err != nil {
		e.t.Fatal(err)
	}
	var st prismnetv1.PortStatus
	_ = json.Unmarshal(o.Status, &st)
	return st
}

// sh runs a shell command in the workload's namespace and fails the test
// if it fails.
func (w *workload) sh(cmd string) string {
	w.e.t.Helper()
	out, err := w.try(cmd)
	if err != nil {
		w.e.t.Fatalf("in %s: %s: %v\n%s", w.port, cmd, err, out)
	}
	return out
}

func (w *workload) try(cmd string) (string, error) {
	out, err := exec.Command("ip", "netns", "exec", w.ns, "sh", "-c", cmd).CombinedOutput()
	return string(out), err
}

// pings reports whether w reaches addr by ping (three tries, 1s each).
func (w *workload) pings(addr string) bool {
	_, err := w.try("ping -c 1 -W 1 " + addr + " || ping -c 1 -W 1 " + addr + " || ping -c 1 -W 1 " + addr)
	return err == nil
}

// TestTenantNetworkAcrossHosts: workloads on different workers get their
// addresses by DHCP and SLAAC from their host's agent and reach each
// other over VXLAN; another project's network (same addresses) does not
// reach them; default ingress deny, a security group rule opening one TCP
// port (and closing it again, existing connections too), same-group
// traffic, anti-spoofing; a deleted port leaves nothing behind on any
// host.
func TestTenantNetworkAcrossHosts(t *testing.T) {
	e := startNetEnv(t, "w1", "w2", "w3")
	e.create("networks", "alpha", "net1", prismnetv1.NetworkSpec{CIDR: "10.77.0.0/16", IPv6Prefixes: []string{"fd00:77::/64"}})
	e.create("subnets", "alpha", "sub4", prismnetv1.SubnetSpec{Network: "net1", CIDR: "10.77.1.0/24"})
	e.create("subnets", "alpha", "sub6", prismnetv1.SubnetSpec{Network: "net1", CIDR: "fd00:77::/64"})
	e.create("securitygroups", "alpha", "app", prismnetv1.SecurityGroupSpec{})
	e.create("securitygroups", "alpha", "svc", prismnetv1.SecurityGroupSpec{Rules: []prismnetv1.SecurityGroupRule{
		{Direction: "ingress", Protocol: "tcp", PortMin: 8080}}})
	// The same addresses in another project.
	e.create("networks", "bravo", "net1", prismnetv1.NetworkSpec{CIDR: "10.77.0.0/16"})
	e.create("subnets", "bravo", "sub4", prismnetv1.SubnetSpec{Network: "net1", CIDR: "10.77.1.0/24"})
	e.create("securitygroups", "bravo", "open", prismnetv1.SecurityGroupSpec{Rules: []prismnetv1.SecurityGroupRule{
		{Direction: "ingress"}, {Direction: "ingress", Ethertype: "IPv6"}}})

	a := e.attach("alpha", "a", "net1", "w1", "app")
	b := e.attach("alpha", "b", "net1", "w2", "app")
	c := e.attach("alpha", "c", "net1", "w3", "svc")
	x := e.attach("bravo", "x", "net1", "w2", "open")
	t.Logf("a %s %s on w1, b %s %s on w2, c %s on w3, x %s (bravo) on w2", a.ip, a.v6, b.ip, b.v6, c.ip, x.ip)

	// The agent's metrics say what it programmed.
	testkit.EventuallyErr(t, 10*time.Second, "w1's agent metrics", func() error {
		resp, err := e.c.Host("w1").HTTPClient().Get(e.c.Host("w1").URL() + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(body), "ultracloud_prismnet_agent_ports_ready 1\n") ||
			!strings.Contains(string(body), "ultracloud_prismnet_agent_apply_seconds_count") {
			return fmt.Errorf("no ports_ready 1 in w1's metrics")
		}
		return nil
	})

	// The worker's own identity (node:w1, what its agent uses) sees only
	// what is bound to w1: its port and its NetworkHost.
	id, err := nodeid.New(nodeid.Config{Node: "w1", DataDir: e.c.Host("w1").DataDir(), Endpoints: []string{e.cp.URL()},
		HTTPClient: e.cp.HTTPClient()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := id.Obtain(e.ctx); err != nil {
		t.Fatal(err)
	}
	asW1, err := client.New(client.Config{Endpoint: e.cp.URL(), TokenSource: id, HTTPClient: e.cp.HTTPClient()})
	if err != nil {
		t.Fatal(err)
	}
	for coll, want := range map[string]string{"ports": "alpha/a", "networkhosts": "/w1"} {
		items, _, err := asW1.Resources(coll, "").ListAll(e.ctx, client.ListOptions{})
		if err != nil || len(items) != 1 || items[0].Metadata.Project+"/"+items[0].Metadata.Name != want {
			t.Fatalf("node:w1 lists %s: %v %v, want only %s", coll, len(items), err, want)
		}
	}
	if _, err := asW1.Resources("ports", "alpha").Get(e.ctx, "b"); !client.IsNotFound(err) {
		t.Fatalf("node:w1 gets w2's port: %v, want 404", err)
	}
	if nets, _, err := asW1.Resources("networks", "").ListAll(e.ctx, client.ListOptions{}); err != nil || len(nets) != 2 {
		t.Fatalf("node:w1 lists the shared networks: %d %v, want both", len(nets), err)
	}

	if !a.pings(b.ip) || !b.pings(a.ip) {
		t.Fatal("a and b (same network, same group, w1 and w2) do not reach each other over VXLAN")
	}
	for _, w := range []*workload{a, b} {
		testkit.EventuallyErr(t, 30*time.Second, "SLAAC address of "+w.port, func() error {
			got := w.sh("ip -6 -o addr show dev eth0 scope global")
			if !strings.Contains(got, w.v6+"/64") || strings.Contains(got, "tentative") {
				return fmt.Errorf("%s has %q, want %s (not tentative)", w.port, got, w.v6)
			}
			return nil
		})
	}
	testkit.Eventually(t, 15*time.Second, "a reaches b over IPv6", func() bool { return a.pings(b.v6) })
	if a.pings(c.ip) {
		t.Fatal("a reaches c, whose groups admit no ICMP from it (default ingress deny)")
	}
	// 169.254.169.254 reaches the API's metadata service through the
	// network's proxy on a's host (the route came by DHCP).
	if out := a.sh("ip route show 169.254.169.254"); !strings.Contains(out, "via 10.77.1.254") {
		t.Fatalf("a's metadata route: %q", out)
	}
	// (No metadata service answers yet, plasmavmc's will: the API
	// listener's own 404 for the forwarded path, not the proxy's, proves
	// the request got there.)
	testkit.EventuallyErr(t, 15*time.Second, "a's metadata request reaches the API", func() error {
		out, _ := a.try(e.nettool + " get -to http://169.254.169.254/latest/meta-data/instance-id")
		if !strings.Contains(out, "404 page not found") || strings.Contains(out, "metadata:") {
			return fmt.Errorf("%q", out)
		}
		return nil
	})
	if x.pings(a.ip) || a.pings(x.ip) {
		t.Fatal("bravo's workload and alpha's reach each other")
	}

	// One TCP port opened by c's group.
	serve := exec.Command("ip", "netns", "exec", c.ns, e.nettool, "serve", "-listen", ":8080")
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = serve.Process.Kill(); _ = serve.Wait() })
	serve81 := exec.Command("ip", "netns", "exec", c.ns, e.nettool, "serve", "-listen", ":8081")
	if err := serve81.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = serve81.Process.Kill(); _ = serve81.Wait() })
	testkit.EventuallyErr(t, 10*time.Second, "a reaches c:8080", func() error {
		out, err := a.try(e.nettool + " probe -to " + c.ip + ":8080")
		if err != nil {
			return fmt.Errorf("%v %s", err, out)
		}
		return nil
	})
	if out, err := a.try(e.nettool + " probe -timeout 1s -to " + c.ip + ":8081"); err == nil {
		t.Fatalf("a reaches c:8081, which no rule opens: %s", out)
	}
	// Spoofing: a second address on a's interface is not a's.
	a.sh("ip addr add 10.77.1.250/24 dev eth0")
	if _, err := a.try("ping -c 2 -W 1 -I 10.77.1.250 " + b.ip); err == nil {
		t.Fatal("a ping from a spoofed source address got through")
	}
	a.sh("ip addr del 10.77.1.250/24 dev eth0")

	// Removing the rule closes new and existing connections.
	stream := exec.Command("ip", "netns", "exec", a.ns, e.nettool, "stream", "-to", c.ip+":8080", "-duration", "60s", "-timeout", "3s")
	var streamOut nodeproc.SyncBuffer
	stream.Stdout, stream.Stderr = &streamOut, &streamOut
	if err := stream.Start(); err != nil {
		t.Fatal(err)
	}
	streamDone := make(chan error, 1)
	go func() { streamDone <- stream.Wait() }()
	testkit.Eventually(t, 10*time.Second, "the stream through the rule runs", func() bool {
		return strings.Contains(streamOut.String(), "ok ")
	})
	sg, err := e.admin.Resources("securitygroups", "alpha").Get(e.ctx, "svc")
	if err != nil {
		t.Fatal(err)
	}
	sg.Spec = json.RawMessage(`{"rules":[]}`)
	if _, err := e.admin.Resources("securitygroups", "alpha").Update(e.ctx, sg); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-streamDone:
		if err == nil {
			t.Fatalf("the stream through the removed rule ran to its end: %s", streamOut.String())
		}
		t.Logf("the stream through the removed rule stopped: %s", strings.TrimSpace(streamOut.String()))
	case <-time.After(20 * time.Second):
		_ = stream.Process.Kill()
		t.Fatalf("the stream through the removed rule still runs 20s later: %s", streamOut.String())
	}
	if out, err := a.try(e.nettool + " probe -timeout 1s -to " + c.ip + ":8080"); err == nil {
		t.Fatalf("a still reaches c:8080 after the rule was removed: %s", out)
	}

	// Deleting b removes it from w1's view: no VXLAN FDB entry (MAC ->
	// remote endpoint) for its MAC. (The bridge's own learned entries
	// age out by themselves.)
	bmac := e.portStatus("alpha", "b").MAC
	w1 := e.c.Host("w1")
	fdb := func() string {
		out, _ := w1.Exec(e.ctx, "bridge", "fdb", "show")
		var vxlan []string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, " dst ") {
				vxlan = append(vxlan, l)
			}
		}
		return strings.Join(vxlan, "\n")
	}
	if !strings.Contains(fdb(), bmac+" dev ucx-") || !strings.Contains(fdb(), "dst "+e.c.Host("w2").Addr().String()) {
		t.Fatalf("w1 has no VXLAN FDB entry for b (%s) towards w2:\n%s", bmac, fdb())
	}
	if _, err := e.admin.Resources("ports", "alpha").Delete(e.ctx, "b", 0); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyErr(t, 20*time.Second, "b's FDB entry gone from w1", func() error {
		if out := fdb(); strings.Contains(out, bmac) {
			return fmt.Errorf("still there:\n%s", out)
		}
		return nil
	})
	w2 := e.c.Host("w2")
	testkit.EventuallyErr(t, 20*time.Second, "b's device gone from w2", func() error {
		out, _ := w2.Exec(e.ctx, "ip", "-o", "link", "show")
		if strings.Count(string(out), "ucv-") != 1 { // only x's
			return fmt.Errorf("w2 links:\n%s", out)
		}
		return nil
	})
}

// TestRouterSNATAndFloatingIP: a router whose gateway runs on w1 (the
// only worker on the external network) lets a workload on w2 reach the
// external network by SNAT, and a floating IP makes that workload
// reachable from the external network; removing the association closes
// that path.
func TestRouterSNATAndFloatingIP(t *testing.T) {
	e := startNetEnvWith(t, []harness.NetworkSpec{{Name: "external", Subnet: "10.98.0.0/24", Hosts: []string{"w1"}}}, "w1", "w2")
	ext := "10.98.0.1" // the switch namespace: the "outside world" of this test
	e.create("externalnetworks", "", "public", prismnetv1.ExternalNetworkSpec{CIDR: "10.98.0.0/24", Gateway: ext,
		AllocationPools: []prismnetv1.AllocationPool{{Start: "10.98.0.100", End: "10.98.0.150"}}, Interface: "eth1", Hosts: []string{"w1"}})
	e.create("networks", "alpha", "net1", prismnetv1.NetworkSpec{CIDR: "10.77.0.0/16"})
	e.create("subnets", "alpha", "sub4", prismnetv1.SubnetSpec{Network: "net1", CIDR: "10.77.1.0/24"})
	e.create("securitygroups", "alpha", "ping", prismnetv1.SecurityGroupSpec{Rules: []prismnetv1.SecurityGroupRule{
		{Direction: "ingress", Protocol: "icmp"}, {Direction: "ingress", Protocol: "tcp", PortMin: 8080}}})
	r := e.create("routers", "alpha", "r1", prismnetv1.RouterSpec{Interfaces: []prismnetv1.RouterInterface{{Subnet: "sub4"}},
		ExternalGateway: &prismnetv1.RouterGateway{ExternalNetwork: "public"}})
	var rs prismnetv1.RouterStatus
	_ = json.Unmarshal(r.Status, &rs)
	if rs.Host != "w1" || !strings.HasPrefix(rs.ExternalIP, "10.98.0.") {
		t.Fatalf("router status %+v, want host w1 and an external address", rs)
	}
	a := e.attach("alpha", "a", "net1", "w2", "ping")
	sw := func(cmd string) (string, error) {
		out, err := exec.Command("ip", "netns", "exec", e.c.SwitchNamespace(), "sh", "-c", cmd).CombinedOutput()
		return string(out), err
	}
	testkit.Eventually(t, 30*time.Second, "a reaches the external network through the router (SNAT)", func() bool { return a.pings(ext) })

	fip := e.create("floatingips", "alpha", "f1", prismnetv1.FloatingIPSpec{ExternalNetwork: "public", Port: "a"})
	var fs prismnetv1.FloatingIPStatus
	_ = json.Unmarshal(fip.Status, &fs)
	testkit.EventuallyErr(t, 30*time.Second, "the floating IP "+fs.Address+" answers from outside", func() error {
		out, err := sw("ping -c 1 -W 1 " + fs.Address)
		if err != nil {
			return fmt.Errorf("%v %s", err, out)
		}
		return nil
	})
	// A TCP echo served by a answers through the floating IP: it is a
	// that answers, not the router.
	serve := exec.Command("ip", "netns", "exec", a.ns, e.nettool, "serve", "-listen", ":8080")
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = serve.Process.Kill(); _ = serve.Wait() })
	testkit.EventuallyErr(t, 10*time.Second, "a's echo through the floating IP", func() error {
		out, err := sw(e.nettool + " probe -to " + fs.Address + ":8080")
		if err != nil {
			return fmt.Errorf("%v %s", err, out)
		}
		return nil
	})
	testkit.EventuallyErr(t, 10*time.Second, "the floating IP's status names its router", func() error {
		o, err := e.admin.Resources("floatingips", "alpha").Get(e.ctx, "f1")
		if err != nil {
			return err
		}
		var st prismnetv1.FloatingIPStatus
		_ = json.Unmarshal(o.Status, &st)
		if st.Router != "r1" || st.InternalIP != a.ip {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	// Disassociated, the address no longer reaches a.
	o, err := e.admin.Resources("floatingips", "alpha").Get(e.ctx, "f1")
	if err != nil {
		t.Fatal(err)
	}
	o.Spec = json.RawMessage(`{"externalNetwork":"public"}`)
	if _, err := e.admin.Resources("floatingips", "alpha").Update(e.ctx, o); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, "the disassociated floating IP stops answering", func() bool {
		_, err := sw("ping -c 1 -W 1 " + fs.Address)
		return err != nil
	})
}

// TestAgentRestartKeepsTrafficAndCleansUp: restarting a worker's agent
// while a TCP stream runs through its port does not break the stream; a
// worker killed with SIGKILL whose port is deleted meanwhile removes the
// port's leftovers (device, filter chains) when it comes back.
func TestAgentRestartKeepsTrafficAndCleansUp(t *testing.T) {
	e := startNetEnv(t, "w1", "w2")
	e.create("networks", "alpha", "net1", prismnetv1.NetworkSpec{CIDR: "10.77.0.0/16"})
	e.create("subnets", "alpha", "sub4", prismnetv1.SubnetSpec{Network: "net1", CIDR: "10.77.1.0/24"})
	e.create("securitygroups", "alpha", "app", prismnetv1.SecurityGroupSpec{})
	a := e.attach("alpha", "a", "net1", "w1", "app")
	b := e.attach("alpha", "b", "net1", "w2", "app")
	serve := exec.Command("ip", "netns", "exec", b.ns, e.nettool, "serve", "-listen", ":8080")
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = serve.Process.Kill(); _ = serve.Wait() })
	testkit.EventuallyErr(t, 10*time.Second, "a reaches b:8080", func() error {
		out, err := a.try(e.nettool + " probe -to " + b.ip + ":8080")
		if err != nil {
			return fmt.Errorf("%v %s", err, out)
		}
		return nil
	})

	// A stream from a to b; w1's node (and with it the agent) restarts
	// twice while it runs; every echo must come back within 2s.
	stream := exec.Command("ip", "netns", "exec", a.ns, e.nettool, "stream", "-to", b.ip+":8080", "-duration", "15s", "-timeout", "2s")
	var out nodeproc.SyncBuffer
	stream.Stdout, stream.Stderr = &out, &out
	if err := stream.Start(); err != nil {
		t.Fatal(err)
	}
	w1 := e.c.Host("w1")
	for range 2 {
		if err := w1.Restart(e.ctx); err != nil {
			t.Fatal(err)
		}
		if err := w1.WaitReady(e.ctx, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.Wait(); err != nil {
		t.Fatalf("the stream broke while w1's agent restarted: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "done") {
		t.Fatalf("stream output: %s", out.String())
	}
	t.Logf("stream across two restarts of w1: %s", strings.Fields(out.String())[len(strings.Fields(out.String()))-1])

	// SIGKILL w2, delete b meanwhile, start w2 again: b's device and
	// chains go.
	w2 := e.c.Host("w2")
	links := func() string {
		out, _ := w2.Exec(e.ctx, "ip", "-o", "link", "show")
		return string(out)
	}
	chains := func() string {
		out, _ := w2.Exec(e.ctx, "nft", "list", "table", "inet", "ultracloud")
		return string(out)
	}
	dev := e.portStatus("alpha", "b").Device
	if !strings.Contains(links(), dev) || !strings.Contains(chains(), "chain ") {
		t.Fatalf("w2 has no device %s or no chains before the kill", dev)
	}
	before := strings.Count(chains(), "chain ")
	if err := w2.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.Resources("ports", "alpha").Delete(e.ctx, "b", 0); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(links(), dev) {
		t.Fatal("b's device vanished while w2 was down: nothing else should remove it")
	}
	if err := w2.Start(e.ctx); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyErr(t, 30*time.Second, "b's leftovers removed on w2", func() error {
		if strings.Contains(links(), dev) {
			return fmt.Errorf("device %s still there", dev)
		}
		if n := strings.Count(chains(), "chain "); n >= before {
			return fmt.Errorf("%d chains, had %d with b", n, before)
		}
		return nil
	})
}
