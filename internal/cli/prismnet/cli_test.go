package prismnet_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/cli"
	"github.com/ultracloud/ultracloud/internal/cli/clikit/clitest"
	"github.com/ultracloud/ultracloud/internal/node/nodetest"
	"github.com/ultracloud/ultracloud/internal/testkit"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/prismnetv1"
)

var _ = testkit.RegisterUpdateFlag()

// env runs the whole CLI in-process against a node built by the real
// wiring, as a shell with ULTRACLOUD_ENDPOINT, _TOKEN and _PROJECT set.
type env struct {
	*clitest.Shell
	n *nodetest.Node
}

func newEnv(t *testing.T) *env {
	t.Helper()
	n := nodetest.Start(t, nodetest.Options{})
	return &env{Shell: clitest.NewInProject(t, 2*time.Minute, cli.Main, n.Admin, n.APIURL(), n.Token(), "demo"), n: n}
}

func (e *env) object(coll, name string) *api.Object {
	e.T.Helper()
	o, err := e.n.Admin.Resources(coll, "demo").Get(e.Ctx, name)
	if err != nil {
		e.T.Fatal(err)
	}
	return o
}

// TestTenantNetworkByCLI builds a network through the verbs an operator
// types: subnets with flags of every kind, a security group with rules,
// ports; lists them as tables and JSON, describes them (a port with the
// state its agent reported), changes rules and bindings, and is refused a
// delete of what is still in use with the server's 409 in_use.
func TestTenantNetworkByCLI(t *testing.T) {
	e := newEnv(t)

	if out := e.OK("network", "create", "web", "--cidr", "10.0.0.0/16", "--ipv6", "fd00:1::/64", "--description", "the web tier"); out != "network/web in project demo created\n" {
		t.Fatalf("network create: %q", out)
	}
	e.OK("net", "create", "db", "--cidr", "10.1.0.0/16", "--mtu", "1400")
	e.OK("subnet", "create", "web-a", "--network", "web", "--cidr", "10.0.1.0/24", "--dns", "10.0.0.53", "--dns", "10.0.0.54",
		"--pool", "10.0.1.10-10.0.1.20", "--route", "10.9.0.0/16=10.0.1.1")
	e.OK("subnet", "create", "web-v6", "--network", "web", "--cidr", "fd00:1::/64")
	e.OK("subnet", "create", "db-a", "--network", "db", "--cidr", "10.1.1.0/24", "--gateway", "none")

	e.OK("secgroup", "create", "web", "--description", "web servers")
	e.OK("sg", "create", "ssh")
	if out := e.OK("secgroup", "rule", "add", "web", "--direction", "ingress", "--protocol", "tcp", "--port", "443"); out != "securitygroup/web rule 0 added\n" {
		t.Fatalf("rule add: %q", out)
	}
	e.OK("secgroup", "rule", "add", "web", "--direction", "ingress", "--protocol", "TCP", "--port", "8000-8080", "--remote-cidr", "10.0.0.0/16")
	e.OK("secgroup", "rule", "add", "web", "--direction", "ingress", "--protocol", "icmpv6") // IPv6 by the protocol
	e.OK("secgroup", "rule", "add", "web", "--direction", "egress", "--remote-group", "ssh")
	if out := e.OK("secgroup", "rule", "add", "web", "--direction", "ingress", "--protocol", "tcp", "--port", "443"); !strings.Contains(out, "already has this rule (index 0)") {
		t.Fatalf("adding a rule twice: %q", out)
	}
	g := clitest.DecodeInto[prismnetv1.SecurityGroupSpec](t, e.object("securitygroups", "web").Spec)
	if len(g.Rules) != 4 || g.Rules[1].Protocol != "tcp" || g.Rules[1].PortMax != 8080 || g.Rules[2].Ethertype != "IPv6" || g.Rules[3].RemoteGroup != "ssh" {
		t.Fatalf("rules %+v", g.Rules)
	}

	e.OK("port", "create", "web-1", "--network", "web", "--ip", "web-a=10.0.1.100", "--ip", "web-v6", "--sg", "web", "--sg", "ssh", "--mac", "fa:16:3e:00:00:01", "--owner", "VM/web-1")
	e.OK("port", "create", "probe", "--network", "web", "--ip", "web-a=10.0.1.200", "--mac", "FA-16-3E-00-00-02",
		"--host", "worker1", "--namespace", "probe", "--no-port-security")
	e.OK("port", "create", "db-1", "--network", "db", "--host", "worker2")
	probe := clitest.DecodeInto[prismnetv1.PortSpec](t, e.object("ports", "probe").Spec)
	if probe.Binding != (prismnetv1.PortBinding{Host: "worker1", Device: "veth", Namespace: "probe", Interface: "eth0"}) || *probe.PortSecurity {
		t.Fatalf("probe spec %+v", probe)
	}

	// The agent on worker1 reports the probe plugged in.
	po := e.object("ports", "probe")
	st := clitest.DecodeInto[prismnetv1.PortStatus](t, po.Status)
	now := time.Now()
	st.Phase, st.Host, st.Device, st.ObservedAt = prismnetv1.PortReady, "worker1", "pv0a1b2c", &now
	po.Status, _ = json.Marshal(st)
	if _, err := e.n.Admin.Resources("ports", "demo").UpdateStatus(e.Ctx, po); err != nil {
		t.Fatal(err)
	}

	var mask []string
	for _, n := range []string{"web", "db"} {
		ns := clitest.DecodeInto[prismnetv1.NetworkStatus](t, e.object("networks", n).Status)
		mask = append(mask, ns.ID, "<id-"+n+">", fmt.Sprint(ns.VNI), "<vni-"+n+">")
	}
	db1 := clitest.DecodeInto[prismnetv1.PortStatus](t, e.object("ports", "db-1").Status)
	if !regexp.MustCompile(`^([0-9a-f]{2}:){5}[0-9a-f]{2}$`).MatchString(db1.MAC) || len(db1.FixedIPs) != 1 {
		t.Fatalf("db-1 status %+v", db1)
	}
	mask = append(mask, db1.MAC, "<mac-db-1>", db1.FixedIPs[0].IP, "<ip-db-1>")
	// IPAM picks a random free address; the IPv6 one is the MAC's EUI-64.
	for _, f := range clitest.DecodeInto[prismnetv1.PortStatus](t, e.object("ports", "web-1").Status).FixedIPs {
		if f.Subnet == "web-a" {
			mask = append(mask, f.IP+",", "<ip-web-1>,", f.IP+" ", "<ip-web-1> ")
		}
	}

	t.Run("tables", func(t *testing.T) {
		var all bytes.Buffer
		for _, args := range [][]string{
			{"network", "list"}, {"subnet", "list"}, {"subnet", "list", "--network", "web"}, {"port", "list"},
			{"port", "list", "--host", "worker1"}, {"port", "ls", "--network", "db", "-o", "table"}, {"secgroup", "list"},
			{"network", "get", "db"}, {"port", "list", "-A"},
		} {
			fmt.Fprintf(&all, "$ ultracloud %s\n%s\n", strings.Join(args, " "), e.OK(args...))
		}
		testkit.Golden(t, "tables", clitest.Stable(all.String(), mask...))
	})

	t.Run("json and yaml", func(t *testing.T) {
		l := clitest.DecodeInto[api.List](t, json.RawMessage(e.OK("port", "list", "--network", "web", "-o", "json")))
		if l.Kind != "PortList" || len(l.Items) != 2 || l.Metadata.Revision == 0 {
			t.Fatalf("port list -o json: %+v", l)
		}
		for _, o := range l.Items {
			if o.Kind != prismnetv1.PortKind || o.Metadata.Project != "demo" || len(o.Status) == 0 {
				t.Fatalf("item %+v", o)
			}
		}
		o := clitest.DecodeInto[api.Object](t, json.RawMessage(e.OK("port", "describe", "probe", "-o", "json")))
		if o.Metadata.Name != "probe" || clitest.DecodeInto[prismnetv1.PortStatus](t, o.Status).Phase != prismnetv1.PortReady {
			t.Fatalf("port describe -o json: %+v", o)
		}
		if out := e.OK("network", "get", "web", "-o", "yaml"); !strings.Contains(out, "kind: Network") || !strings.Contains(out, "cidr: 10.0.0.0/16") {
			t.Fatalf("network get -o yaml:\n%s", out)
		}
		if out := e.OK("subnet", "list", "-o", "yaml"); !strings.Contains(out, "kind: SubnetList") || !strings.Contains(out, "dnsServers:") {
			t.Fatalf("subnet list -o yaml:\n%s", out)
		}
	})

	t.Run("describe", func(t *testing.T) {
		var all bytes.Buffer
		for _, args := range [][]string{
			{"network", "describe", "web"}, {"network", "describe", "db"}, {"subnet", "describe", "web-a"}, {"subnet", "describe", "db-a"},
			{"port", "describe", "web-1"}, {"port", "describe", "probe"}, {"port", "describe", "db-1"}, {"secgroup", "describe", "web"},
			{"secgroup", "describe", "ssh"},
		} {
			fmt.Fprintf(&all, "$ ultracloud %s\n%s\n", strings.Join(args, " "), e.OK(args...))
		}
		testkit.Golden(t, "describe", clitest.Stable(all.String(), mask...))
	})

	t.Run("rule delete", func(t *testing.T) {
		out := e.OK("secgroup", "rule", "delete", "web", "1")
		if out != "securitygroup/web rule 1 deleted (ingress IPv4 tcp port 8000-8080, remote 10.0.0.0/16)\n" {
			t.Fatalf("rule delete: %q", out)
		}
		g := clitest.DecodeInto[prismnetv1.SecurityGroupSpec](t, e.object("securitygroups", "web").Spec)
		if len(g.Rules) != 3 || g.Rules[1].Protocol != "icmpv6" {
			t.Fatalf("rules after deleting 1: %+v", g.Rules)
		}
		e.Fails([]string{"secgroup", "rule", "delete", "web", "7"}, "securitygroup/web: has 3 rules; there is no rule 7")
		e.Fails([]string{"secgroup", "rule", "delete", "web", "first"}, `INDEX "first"`)
		// A revision from an earlier look that is no longer current.
		rev := e.object("securitygroups", "web").Metadata.Revision
		e.OK("secgroup", "rule", "add", "web", "--direction", "ingress", "--protocol", "udp", "--port", "53")
		e.Fails([]string{"secgroup", "rule", "delete", "web", "0", "--revision", fmt.Sprint(rev)}, "changed since you looked", "nothing was deleted")
		if g := clitest.DecodeInto[prismnetv1.SecurityGroupSpec](t, e.object("securitygroups", "web").Spec); len(g.Rules) != 4 {
			t.Fatalf("a refused delete changed the rules: %+v", g.Rules)
		}
		rev = e.object("securitygroups", "web").Metadata.Revision
		e.OK("secgroup", "rule", "delete", "web", "3", "--revision", fmt.Sprint(rev))
	})

	t.Run("set", func(t *testing.T) {
		if out := e.OK("port", "set", "probe", "--host", "worker2"); out != "port/probe updated\n" {
			t.Fatalf("port set: %q", out)
		}
		o := e.object("ports", "probe")
		s, st := clitest.DecodeInto[prismnetv1.PortSpec](t, o.Spec), clitest.DecodeInto[prismnetv1.PortStatus](t, o.Status)
		if s.Binding.Host != "worker2" || s.Binding.Namespace != "probe" || s.MAC != "fa:16:3e:00:00:02" || st.MAC != s.MAC {
			t.Fatalf("after set --host: %+v %+v", s, st)
		}
		// The status the old host reported is shown as such.
		if out := e.OK("port", "describe", "probe"); !strings.Contains(out, "Reported by:") || !strings.Contains(out, "worker1 (not the binding host") {
			t.Fatalf("describe after a new binding:\n%s", out)
		}
		e.OK("port", "set", "probe", "--device", "tap", "--port-security=true", "--sg", "web")
		s = clitest.DecodeInto[prismnetv1.PortSpec](t, e.object("ports", "probe").Spec)
		if s.Binding != (prismnetv1.PortBinding{Host: "worker2", Device: "tap"}) || !*s.PortSecurity || len(s.SecurityGroups) != 1 {
			t.Fatalf("after set --device tap: %+v", s)
		}
		e.OK("port", "set", "web-1", "--no-sg", "--no-owner")
		s = clitest.DecodeInto[prismnetv1.PortSpec](t, e.object("ports", "web-1").Spec)
		if len(s.SecurityGroups) != 0 || s.Owner != nil {
			t.Fatalf("after --no-sg --no-owner: %+v", s)
		}
		e.OK("port", "set", "probe", "--unbind")
		if s := clitest.DecodeInto[prismnetv1.PortSpec](t, e.object("ports", "probe").Spec); s.Binding.Host != "" {
			t.Fatalf("after --unbind: %+v", s.Binding)
		}
		e.Fails([]string{"port", "set", "probe"}, "nothing to change")
		e.Fails([]string{"port", "set", "probe", "--unbind", "--host", "x"}, "--unbind clears the binding")
		e.Fails([]string{"port", "set", "probe", "--device", "tap", "--namespace", "x"}, "--namespace and --interface are for veth ports")
		// The server's word on what is immutable or wrong passes through.
		e.Fails([]string{"port", "set", "probe", "--sg", "nosuch"}, "nosuch", "HTTP 4")
		e.Fails([]string{"port", "set", "nosuch", "--host", "w"}, "port/nosuch:", "not_found", "HTTP 404")
	})

	t.Run("delete in use", func(t *testing.T) {
		errs := e.Fails([]string{"network", "delete", "web"}, "network/web:", "still has ports", "ultracloud port list --network web", "[in_use, HTTP 409]")
		if strings.Count(errs, "\n") != 1 {
			t.Fatalf("want one line, got %q", errs)
		}
		e.Fails([]string{"secgroup", "delete", "web"}, "securitygroup/web:", "used by ports", "[in_use, HTTP 409]")
		e.Fails([]string{"subnet", "delete", "db-a"}, "subnet/db-a:", "[in_use, HTTP 409]")
		if out := e.OK("port", "delete", "web-1", "probe"); out != "port/web-1 deleted\nport/probe deleted\n" {
			t.Fatalf("port delete: %q", out)
		}
		e.OK("subnet", "delete", "web-a", "web-v6")
		e.OK("secgroup", "delete", "web", "ssh")
		e.OK("network", "delete", "web")
		if out := e.OK("secgroup", "list"); out != "No securitygroups found.\n" {
			t.Fatalf("secgroup list: %q", out)
		}
		e.Fails([]string{"network", "describe", "web"}, "network/web:", "not_found")
	})
}

// TestFlagErrors: a malformed flag is named with what it wants and an
// example, before anything is sent.
func TestFlagErrors(t *testing.T) {
	// Nothing listens here: a flag error must come before any dial.
	e := clitest.New(t, context.Background(), cli.Main, "http://127.0.0.1:1", "t", "demo")
	sub := []string{"subnet", "create", "s", "--network", "n", "--cidr", "10.0.0.0/24"}
	portCreate := []string{"port", "create", "p", "--network", "n"}
	rule := []string{"secgroup", "rule", "add", "g", "--direction", "ingress"}
	for _, c := range []struct {
		args []string
		want string
	}{
		{append(sub, "--pool", "10.0.0.5"), `--pool: want START-END, e.g. 10.0.0.10-10.0.0.99 (got "10.0.0.5")`},
		{append(sub, "--pool", "10.0.0.5-x"), `--pool: want START-END of two IP addresses`},
		{append(sub, "--pool", "10.0.0.9-10.0.0.5"), `starts after it ends`},
		{append(sub, "--pool", "10.0.0.9-fd00::1"), `mixes IPv4 and IPv6`},
		{append(sub, "--route", "10.9.0.0/16"), `--route: want DEST=NEXTHOP, e.g. 10.1.0.0/16=10.0.0.1`},
		{append(sub, "--route", "10.9.0.0=10.0.0.1"), `the destination "10.9.0.0" is not a CIDR prefix`},
		{append(sub, "--dns", "dns.example"), `--dns: "dns.example" is not an IP address`},
		{append(sub, "--gateway", "first"), `--gateway: "first" is neither an IP address`},
		{[]string{"subnet", "create", "s", "--network", "n", "--cidr", "10.0.0.0"}, `--cidr: "10.0.0.0" is not a CIDR prefix`},
		{[]string{"subnet", "create", "s", "--cidr", "10.0.0.0/24"}, `--network and --cidr are required`},
		{[]string{"network", "create", "n"}, `--cidr is required`},
		{[]string{"network", "create", "n", "--cidr", "10.0.0.0/16", "--mtu", "100"}, `--mtu: 100 is outside 576 to 9000`},
		{[]string{"network", "create", "n", "--cidr", "10.0.0.0/16", "--mtu", "big"}, `invalid argument "big" for "--mtu"`},
		{[]string{"network", "create", "n", "--cidr", "10.0.0.0/16", "-o", "xml"}, `-o "xml" is not supported`},
		{[]string{"network", "list", "-o", "xml"}, `-o "xml" is not supported`},
		{[]string{"network", "create"}, `accepts 1 arg(s), received 0`},
		{append(portCreate, "--ip", "=10.0.0.1"), `--ip: want SUBNET or SUBNET=ADDRESS`},
		{append(portCreate, "--ip", "s=10.0.0"), `--ip: "s=10.0.0": "10.0.0" is not an IP address`},
		{append(portCreate, "--mac", "fa:16:3e"), `--mac: "fa:16:3e" is not a MAC address`},
		{append(portCreate, "--owner", "web-1"), `--owner: want KIND/NAME, e.g. VM/web-1`},
		{append(portCreate, "--device", "nic"), `--device: "nic": use tap`},
		{append(portCreate, "--device", "tap", "--interface", "eth1"), `--namespace and --interface are for veth ports`},
		{[]string{"port", "create", "p"}, `--network is required`},
		{rule[:4], `--direction is required: ingress or egress`},
		{[]string{"secgroup", "rule", "add", "g", "--direction", "in"}, `--direction: "in": use ingress or egress`},
		{append(rule, "--protocol", "sctp-ish"), `--protocol: "sctp-ish": use tcp, udp, icmp, icmpv6`},
		{append(rule, "--protocol", "tcp", "--port", "0"), `--port: want PORT or MIN-MAX within 1-65535, e.g. 22 or 8000-8080 (got "0")`},
		{append(rule, "--protocol", "tcp", "--port", "90-80"), `(got "90-80")`},
		{append(rule, "--protocol", "tcp", "--port", "70000"), `(got "70000")`},
		{append(rule, "--port", "22"), `--port needs --protocol tcp or udp`},
		{append(rule, "--ethertype", "ipx"), `--ethertype: "ipx": use IPv4 or IPv6`},
		{append(rule, "--remote-cidr", "10.0.0.0/8", "--remote-group", "g"), `give --remote-cidr or --remote-group, not both`},
		{append(rule, "--remote-cidr", "everyone"), `--remote-cidr: "everyone" is not a CIDR prefix`},
		{[]string{"router", "create", "r", "--no-snat"}, `--no-snat needs --external-network`},
		{[]string{"fip", "create", "f"}, `--external-network is required`},
		{[]string{"fip", "create", "f", "--external-network", "x", "--fixed-ip", "10.0.0.1"}, `--fixed-ip picks an address of --port`},
		{[]string{"fip", "associate", "f", "p", "--fixed-ip", "ten"}, `--fixed-ip: "ten" is not an IP address`},
		{[]string{"extnet", "create", "x", "--cidr", "192.0.2.0/24"}, `--cidr, --interface and at least one --host are required`},
		{[]string{"extnet", "create", "x", "--cidr", "192.0.2.0/24", "--interface", "eth1", "--host", "w1", "--pool", "192.0.2.9"}, `--pool: want START-END`},
		{[]string{"port", "set", "p", "--sg", "a", "--no-sg"}, `give --sg or --no-sg, not both`},
	} {
		errs := e.Fails(c.args, c.want)
		if strings.Contains(errs, "connection refused") {
			t.Errorf("ultracloud %s dialled before checking its flags: %s", strings.Join(c.args, " "), errs)
		}
	}
}

// TestRoutersFloatingIPsExternalNetworks: the router, floating IP and
// external network verbs against the served kinds: a router with a
// gateway gets an external address and a host, a floating IP is allocated
// and associated and disassociated, and deletes in use are refused.
func TestRoutersFloatingIPsExternalNetworks(t *testing.T) {
	e := newEnv(t)
	e.OK("extnet", "create", "public", "--cidr", "192.0.2.0/24", "--gateway", "192.0.2.1", "--pool", "192.0.2.100-192.0.2.150",
		"--interface", "eth1", "--host", "w1")
	e.OK("network", "create", "n", "--cidr", "10.0.0.0/16")
	e.OK("subnet", "create", "s", "--network", "n", "--cidr", "10.0.1.0/24")
	e.OK("router", "create", "r", "--external-network", "public", "--subnet", "s")
	r := clitest.DecodeInto[prismnetv1.RouterStatus](t, e.object("routers", "r").Status)
	if r.Host != "w1" || !strings.HasPrefix(r.ExternalIP, "192.0.2.1") {
		t.Fatalf("router status %+v", r)
	}
	if out := e.OK("router", "describe", "r"); !strings.Contains(out, "w1") || !strings.Contains(out, "s") {
		t.Fatalf("router describe:\n%s", out)
	}
	e.OK("port", "create", "p", "--network", "n", "--host", "w2")
	e.OK("fip", "create", "f", "--external-network", "public")
	e.OK("fip", "associate", "f", "p")
	f := clitest.DecodeInto[prismnetv1.FloatingIPSpec](t, e.object("floatingips", "f").Spec)
	if f.Port != "p" {
		t.Fatalf("fip spec after associate: %+v", f)
	}
	if out := e.OK("fip", "list"); !strings.Contains(out, "192.0.2.1") {
		t.Fatalf("fip list:\n%s", out)
	}
	e.OK("fip", "disassociate", "f")
	e.Fails([]string{"extnet", "delete", "public"}, "in_use")
	e.Fails([]string{"subnet", "delete", "s"}, "in_use")
	e.OK("router", "remove-interface", "r", "s")
	e.OK("fip", "delete", "f")
	e.OK("router", "delete", "r")
	e.OK("extnet", "delete", "public")
	// A port's describe says when the binding host's agent never
	// reported.
	if out := e.OK("port", "describe", "p"); !strings.Contains(out, "Host w2:") ||
		!strings.Contains(out, "never reported") && !strings.Contains(out, "no network state yet") {
		t.Fatalf("port describe of a host whose agent never reported:\n%s", out)
	}
}

// TestRuleDeleteConflict: when the group changes between the read and the
// write of `secgroup rule delete`, the write is refused and says so, and
// neither change is lost.
func TestRuleDeleteConflict(t *testing.T) {
	e := newEnv(t)
	e.OK("secgroup", "create", "web")
	e.OK("secgroup", "rule", "add", "web", "--direction", "ingress", "--protocol", "tcp", "--port", "22")
	e.OK("secgroup", "rule", "add", "web", "--direction", "ingress", "--protocol", "tcp", "--port", "80")

	// A proxy that lets someone else add a rule just before the CLI's
	// write arrives.
	target, err := url.Parse(e.n.APIURL())
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	var raced atomic.Bool
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/securitygroups/web") && !raced.Swap(true) {
			rs := e.n.Admin.Resources("securitygroups", "demo")
			o, err := rs.Get(r.Context(), "web")
			if err == nil {
				g := clitest.DecodeInto[prismnetv1.SecurityGroupSpec](t, o.Spec)
				g.Rules = append(g.Rules, prismnetv1.SecurityGroupRule{Direction: "ingress", Protocol: "udp", PortMin: 53})
				o.Spec, _ = json.Marshal(g)
				_, err = rs.Update(r.Context(), o)
			}
			if err != nil {
				t.Errorf("the concurrent change failed: %v", err)
			}
		}
		rp.ServeHTTP(w, r)
	}))
	defer proxy.Close()
	e.Vars["ULTRACLOUD_ENDPOINT"] = proxy.URL

	e.Fails([]string{"secgroup", "rule", "delete", "web", "0"}, "securitygroup/web changed while this command ran", "nothing was changed", "HTTP 409")
	g := clitest.DecodeInto[prismnetv1.SecurityGroupSpec](t, e.object("securitygroups", "web").Spec)
	if len(g.Rules) != 3 || g.Rules[0].PortMin != 22 || g.Rules[2].Protocol != "udp" {
		t.Fatalf("rules after the refused delete: %+v", g.Rules)
	}
	// Adding is retried instead: it does not depend on what was read.
	raced.Store(false)
	e.OK("secgroup", "rule", "add", "web", "--direction", "egress", "--protocol", "tcp", "--port", "443")
	g = clitest.DecodeInto[prismnetv1.SecurityGroupSpec](t, e.object("securitygroups", "web").Spec)
	if len(g.Rules) != 5 || g.Rules[4].Direction != "egress" {
		t.Fatalf("rules after an add that met a conflict: %+v", g.Rules)
	}
}

// TestPortDescribeShowsHostState: when the binding host's NetworkHost can
// be read, a port's describe adds the host's underlay address, readiness
// and last error.
func TestPortDescribeShowsHostState(t *testing.T) {
	e := newEnv(t)
	e.OK("network", "create", "n", "--cidr", "10.0.0.0/24")
	e.OK("port", "create", "p", "--network", "n", "--host", "w1")
	e.OK("port", "create", "q", "--network", "n", "--host", "w2")

	// NetworkHosts are not served yet: a proxy answers for two hosts as
	// the control plane will.
	observed := time.Now().Add(-3 * time.Second)
	hostsByName := map[string]prismnetv1.NetworkHostStatus{
		"w1": {Underlay: "192.0.2.11", Ready: true, Ports: 3, ObservedAt: &observed},
		"w2": {Underlay: "192.0.2.12", LastError: "creating vxlan device: operation not permitted", ObservedAt: &observed},
	}
	target, err := url.Parse(e.n.APIURL())
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, ok := strings.CutPrefix(r.URL.Path, "/v1/networkhosts/")
		if st, known := hostsByName[name]; ok && known {
			raw, _ := json.Marshal(st)
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(api.Object{Kind: prismnetv1.HostKind, Metadata: api.ObjectMeta{Name: name}, Status: raw})
			return
		}
		rp.ServeHTTP(w, r)
	}))
	defer proxy.Close()
	e.Vars["ULTRACLOUD_ENDPOINT"] = proxy.URL

	out := e.OK("port", "describe", "p")
	for _, want := range []string{"Host w1:", "underlay 192.0.2.11, ready, 3 ports plugged in", "Host observed at:", " ago)"} {
		if !strings.Contains(out, want) {
			t.Fatalf("port describe p does not show %q:\n%s", want, out)
		}
	}
	out = e.OK("port", "describe", "q")
	for _, want := range []string{"underlay 192.0.2.12, not ready, 0 ports plugged in", "Host last error:", "operation not permitted"} {
		if !strings.Contains(out, want) {
			t.Fatalf("port describe q does not show %q:\n%s", want, out)
		}
	}
}
