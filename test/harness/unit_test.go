//go:build linux

package harness

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/testkit"
)

// These tests need neither root nor namespaces.

var _ = testkit.RegisterUpdateFlag() // for the golden files in testdata/

func TestPlanAddresses(t *testing.T) {
	p, err := makePlan(Spec{
		Name: "demo",
		HostList: []HostSpec{
			{Name: "cp1", Roles: []string{"iam"}},
			{Name: "cp2", Address: "10.99.0.200"},
			{Name: "edge"},
		},
		Networks: []NetworkSpec{{Name: "external", Subnet: "10.98.0.0/24", Hosts: []string{"edge"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"cp1":  {"10.99.0.11", ""},
		"cp2":  {"10.99.0.200", ""},
		"edge": {"10.99.0.13", "10.98.0.13"},
	}
	for _, h := range p.hosts {
		for j, w := range want[h.name] {
			got := ""
			if h.addrs[j].IsValid() {
				got = h.addrs[j].String()
			}
			if got != w {
				t.Errorf("%s on %s: got %q, want %q", h.name, p.networks[j].name, got, w)
			}
		}
	}
	if g := p.networks[1].gateway.String(); g != "10.98.0.1" {
		t.Errorf("external gateway %s, want 10.98.0.1", g)
	}
}

func TestPlanRejects(t *testing.T) {
	for _, tc := range []struct {
		spec Spec
		want string
	}{
		{Spec{}, "Hosts 0"},
		{Spec{Hosts: 2, Name: "Bad_Name"}, `Name "Bad_Name"`},
		{Spec{HostList: []HostSpec{{Name: "a"}, {Name: "a"}}}, "used twice"},
		{Spec{Hosts: 1, Subnet: "10.99.0.0/30"}, "at most /28"},
		{Spec{Hosts: 1, Subnet: "fd00::/64"}, "IPv4 CIDR"},
		{Spec{Hosts: 10, Subnet: "10.99.0.0/28"}, "no room for host"},
		{Spec{Hosts: 1, Networks: []NetworkSpec{{Name: "ext", Subnet: "10.99.0.0/25"}}}, "overlaps"},
		{Spec{Hosts: 1, Networks: []NetworkSpec{{Name: "ext", Subnet: "10.98.0.0/24", Hosts: []string{"nope"}}}}, `no host named "nope"`},
		{Spec{HostList: []HostSpec{{Name: "a", Address: "10.99.0.1"}}}, "reserved"},
		{Spec{HostList: []HostSpec{{Name: "a", Address: "10.1.0.5"}}}, "inside 10.99.0.0/24"},
		{Spec{Hosts: 1, LogLevel: "loud"}, "LogLevel"},
	} {
		_, err := makePlan(tc.spec)
		if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("makePlan(%+v) = %v, want an ErrInvalidSpec mentioning %q", tc.spec, err, tc.want)
		}
	}
}

func TestNodeConfigGolden(t *testing.T) {
	p, err := makePlan(Spec{Name: "demo", HostList: []HostSpec{{Name: "cp1", Roles: []string{"iam"}}, {Name: "worker"}}})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for _, h := range p.hosts {
		b, err := p.renderNodeConfig(h, "/work/"+h.name+"/data")
		if err != nil {
			t.Fatal(err)
		}
		out.WriteString("### " + h.name + "\n")
		out.Write(b)
	}
	testkit.Golden(t, "node-config", []byte(out.String()))
}

func TestRulesetGolden(t *testing.T) {
	f := newFaults()
	addrs := map[string][]netip.Addr{
		"host1": {netip.MustParseAddr("10.99.0.11"), netip.MustParseAddr("10.98.0.11")},
		"host2": {netip.MustParseAddr("10.99.0.12")},
		"host3": {netip.MustParseAddr("10.99.0.13")},
	}
	// host1 | host2 symmetric, host1 -/-> host3 one way, 30% loss on host1,
	// host3 cut off by 100% loss.
	f.drops[[2]string{"host1", "host2"}] = dropAll
	f.drops[[2]string{"host2", "host1"}] = dropAll
	f.drops[[2]string{"host1", "host3"}] = dropInitiated
	f.loss["host1"] = 30
	f.loss["host3"] = 100 // numgen cannot express 100%: a plain drop
	var out strings.Builder
	for _, h := range []string{"host1", "host2", "host3"} {
		out.WriteString("### " + h + "\n")
		out.WriteString(f.renderRuleset(h, addrs))
	}
	testkit.Golden(t, "ruleset", []byte(out.String()))
	if got, want := f.describe(), "drop host1->host2, one-way host1->host3, drop host2->host1, loss host1 30%, loss host3 100%"; got != want {
		t.Errorf("describe() = %q, want %q", got, want)
	}
}

func TestWaitForReportsLastState(t *testing.T) {
	n := 0
	err := WaitFor(context.Background(), 150*time.Millisecond, "the answer", func(context.Context) (bool, string) {
		n++
		return false, "still 41"
	})
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "waiting for the answer: last: still 41") {
		t.Fatalf("err = %v", err)
	}
	if n < 2 {
		t.Errorf("polled %d times, want several", n)
	}
	if err := WaitFor(context.Background(), time.Second, "x", func(context.Context) (bool, string) { return true, "" }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := WaitFor(ctx, time.Second, "y", func(context.Context) (bool, string) { return false, "no" }); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled wait: %v", err)
	}
}

func TestNames(t *testing.T) {
	for name, want := range map[string]string{
		"uch-1a2b3c4d-host1": "1a2b3c4d",
		"uch-1a2b3c4d--net":  "1a2b3c4d",
		"uch-1a2b3c4-host1":  "",
		"uch-1A2B3C4D-host1": "",
		"other":              "",
	} {
		id, ok := isHarnessNamespace(name)
		if ok != (want != "") || id != want {
			t.Errorf("isHarnessNamespace(%q) = %q, %v; want %q", name, id, ok, want)
		}
	}
	pid, start, ok := parseBinDir("uch-bin-123-456")
	if !ok || pid != 123 || start != 456 {
		t.Errorf("parseBinDir = %d, %d, %v", pid, start, ok)
	}
	if _, _, ok := parseBinDir("uch-bin-x-1"); ok {
		t.Error("parseBinDir accepted a bad name")
	}
	if got := serverEnv([]string{"PATH=/bin", "ULTRACLOUD_API_LISTEN=1.2.3.4:1", "HOME=/root"}); strings.Join(got, " ") != "PATH=/bin HOME=/root" {
		t.Errorf("serverEnv = %v", got)
	}
}

func TestProcStatSelf(t *testing.T) {
	st, start, err := procStat(os.Getpid())
	if err != nil || st != 'R' && st != 'S' || start == 0 {
		t.Fatalf("procStat(self) = %c, %d, %v", st, start, err)
	}
	if !pidAlive(os.Getpid(), start) || pidAlive(os.Getpid(), start+1) {
		t.Error("pidAlive does not tell start times apart")
	}
}

func TestNodeConfigChainfireGolden(t *testing.T) {
	p, err := makePlan(Spec{
		Name:      "demo",
		Hosts:     4,
		Chainfire: &ChainfireSpec{Members: []string{"host1", "host2", "host3"}, ElectionTimeout: 2 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	p.chainfire.caFile, p.chainfire.caKeyFile = "/work/chainfire-ca/ca.crt", "/work/chainfire-ca/ca.key"
	var out strings.Builder
	for _, h := range p.hosts {
		b, err := p.renderNodeConfig(h, "/work/"+h.name+"/data")
		if err != nil {
			t.Fatal(err)
		}
		out.WriteString("### " + h.name + "\n")
		out.Write(b)
	}
	testkit.Golden(t, "node-config-chainfire", []byte(out.String()))
}

func TestChainfireSpecErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec Spec
		want string
	}{
		{"no members", Spec{Hosts: 3, Chainfire: &ChainfireSpec{}}, "Chainfire.Members: list"},
		{"unknown host", Spec{Hosts: 3, Chainfire: &ChainfireSpec{Members: []string{"host1", "host9"}}}, `no host named "host9"`},
		{"twice", Spec{Hosts: 3, Chainfire: &ChainfireSpec{Members: []string{"host1", "host1"}}}, "listed twice"},
		{"role", Spec{HostList: []HostSpec{{Name: "a", Roles: []string{"iam"}}}, Chainfire: &ChainfireSpec{Members: []string{"a"}}}, "does not run the chainfire role"},
		{"ports", Spec{Hosts: 1, Chainfire: &ChainfireSpec{Members: []string{"host1"}, ClientPort: 7700}}, "distinct"},
	} {
		_, err := makePlan(tc.spec)
		if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: makePlan = %v, want ErrInvalidSpec containing %q", tc.name, err, tc.want)
		}
	}
}
