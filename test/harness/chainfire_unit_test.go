package harness

import (
	"errors"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestChainfireSparesSpecErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec ChainfireSpec
		want string
	}{
		{"spare is member", ChainfireSpec{Members: []string{"host1"}, Spares: []string{"host1"}}, "also listed in Chainfire.Members"},
		{"spare twice", ChainfireSpec{Members: []string{"host1"}, Spares: []string{"host2", "host2"}}, "listed twice"},
		{"unknown spare", ChainfireSpec{Members: []string{"host1"}, Spares: []string{"host7"}}, `no host named "host7"`},
	} {
		s := tc.spec
		_, err := makePlan(Spec{Hosts: 3, Chainfire: &s})
		if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: makePlan = %v, want ErrInvalidSpec containing %q", tc.name, err, tc.want)
		}
	}
}

func TestChainfireJoinConfig(t *testing.T) {
	p, err := makePlan(Spec{Name: "demo", Hosts: 4, Chainfire: &ChainfireSpec{Members: []string{"host1", "host2", "host3"}, Spares: []string{"host4"}}})
	if err != nil {
		t.Fatal(err)
	}
	p.chainfire.caFile, p.chainfire.caKeyFile = "/ca.crt", "/ca.key"
	h4 := p.hosts[3]
	// Before joining, a spare keeps its loopback one-member chainfire but
	// already has its cluster URLs.
	if sec := p.chainfireSection(h4); !sec.AllowPlaintext || sec.ClientURL != "" {
		t.Fatalf("spare's initial section = %+v, want the loopback default", sec)
	}
	if got := p.chainfireURL("host4", 2380); got != "https://10.99.0.14:2380" {
		t.Fatalf("spare peer URL = %q", got)
	}
	ic := []string{"host1=https://10.99.0.11:2380", "host2=https://10.99.0.12:2380", "host3=https://10.99.0.13:2380", "host4=https://10.99.0.14:2380"}
	b, err := p.renderJoinConfig(h4, "/work/host4/data", ic)
	if err != nil {
		t.Fatal(err)
	}
	var cfg nodeConfig
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	cf := cfg.Chainfire
	if cf.InitialState != "existing" || cf.ClusterToken != "harness-demo" || cf.ClientURL != "https://10.99.0.14:2379" ||
		cf.PeerURL != "https://10.99.0.14:2380" || len(cf.InitialCluster) != 4 || cf.TLS == nil || !cf.TLS.Auto || cf.TLS.AutoCAFile != "/ca.crt" {
		t.Fatalf("join section = %+v\n%s", cf, b)
	}
	if cfg.Node != "host4" || cfg.DataDir != "/work/host4/data" || cfg.API.Listen != "10.99.0.14:7700" {
		t.Fatalf("other sections changed: %+v", cfg)
	}
}
