//go:build linux

package harness

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/node"
	"github.com/ultracloud/ultracloud/internal/runtime/config"
	"github.com/ultracloud/ultracloud/internal/runtime/pki"
	"github.com/ultracloud/ultracloud/internal/testkit"
)

// flaredbSpec is a 3-member flaredb cluster plus a fourth host that only
// runs iam and stores its resources in the cluster.
func flaredbSpec() Spec {
	return Spec{
		Name: "demo",
		HostList: []HostSpec{
			{Name: "host1"}, {Name: "host2"}, {Name: "host3", Roles: []string{"flaredb", "iam"}},
			{Name: "client", Roles: []string{"iam"}},
		},
		FlareDB: &FlareDBSpec{
			Members:            []string{"host1", "host2", "host3"},
			HeartbeatTimeout:   500 * time.Millisecond,
			ElectionTimeout:    500 * time.Millisecond,
			LeaderLeaseTimeout: 250 * time.Millisecond,
		},
	}
}

func TestNodeConfigFlareDBGolden(t *testing.T) {
	p, err := makePlan(flaredbSpec())
	if err != nil {
		t.Fatal(err)
	}
	p.flaredb.caFile, p.flaredb.caKeyFile = "/work/flaredb-ca/ca.crt", "/work/flaredb-ca/ca.key"
	p.flaredb.iamKeyFile = "/work/iam-encryption-key"
	var out strings.Builder
	for _, h := range p.hosts {
		b, err := p.renderNodeConfig(h, "/work/"+h.name+"/data")
		if err != nil {
			t.Fatal(err)
		}
		out.WriteString("### " + h.name + "\n")
		out.Write(b)
	}
	testkit.Golden(t, "node-config-flaredb", []byte(out.String()))
	if got, want := p.flaredbEndpoints(), []string{"10.99.0.11:7711", "10.99.0.12:7711", "10.99.0.13:7711"}; !slices.Equal(got, want) {
		t.Errorf("endpoints = %v, want %v", got, want)
	}
}

// TestNodeConfigFlareDBLoads feeds every rendered node.yaml to the server's
// own config loader and validation: the server must accept them and see
// the cluster the spec describes.
func TestNodeConfigFlareDBLoads(t *testing.T) {
	p, err := makePlan(flaredbSpec())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p.flaredb.caFile, p.flaredb.caKeyFile, err = pki.GenerateCA(filepath.Join(dir, FlareDBCADir), "test CA")
	if err != nil {
		t.Fatal(err)
	}
	p.flaredb.iamKeyFile = filepath.Join(dir, IAMKeyFile)
	for _, h := range p.hosts {
		b, err := p.renderNodeConfig(h, filepath.Join(dir, h.name, "data"))
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, h.name+".yaml")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		cfg := node.Default()
		if err := config.LoadFile(&cfg, path); err != nil {
			t.Fatalf("%s: %v\n%s", h.name, err, b)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("%s: %v\n%s", h.name, err, b)
		}
		if cfg.Storage.Backend != config.BackendFlareDB || cfg.FlareDB.ClusterID != "harness-demo" {
			t.Errorf("%s: backend %q cluster %q", h.name, cfg.Storage.Backend, cfg.FlareDB.ClusterID)
		}
		if !cfg.FlareDB.TLS.Auto || cfg.FlareDB.TLS.AutoCAFile != p.flaredb.caFile {
			t.Errorf("%s: flaredb.tls = %+v", h.name, cfg.FlareDB.TLS)
		}
		if cfg.IAM.EncryptionKeyFile != p.flaredb.iamKeyFile {
			t.Errorf("%s: iam.encryptionKeyFile = %q", h.name, cfg.IAM.EncryptionKeyFile)
		}
		if h.name == "client" {
			if len(cfg.Storage.Endpoints) != 3 {
				t.Errorf("client: storage.endpoints = %v", cfg.Storage.Endpoints)
			}
			continue
		}
		f := cfg.FlareDB
		if f.ID != h.name || f.APIAdvertise != h.addrs[0].String()+":7711" || f.RaftAdvertise != h.addrs[0].String()+":7710" ||
			len(f.InitialVoters) != 3 || f.ElectionTimeout != 500*time.Millisecond || f.LeaderLeaseTimeout != 250*time.Millisecond {
			t.Errorf("%s: flaredb config %+v", h.name, f)
		}
	}
}

func TestFlareDBSpecErrors(t *testing.T) {
	members := []string{"host1", "host2", "host3"}
	for _, tc := range []struct {
		name string
		spec Spec
		want string
	}{
		{"no members", Spec{Hosts: 3, FlareDB: &FlareDBSpec{}}, "FlareDB.Members: list"},
		{"two members", Spec{Hosts: 2, FlareDB: &FlareDBSpec{Members: []string{"host1", "host2"}}}, "1, 3 or 5 voters"},
		{"unknown host", Spec{Hosts: 3, FlareDB: &FlareDBSpec{Members: []string{"host1", "host2", "host9"}}}, `no host named "host9"`},
		{"twice", Spec{Hosts: 3, FlareDB: &FlareDBSpec{Members: []string{"host1", "host1", "host2"}}}, "listed twice"},
		{"member role", Spec{HostList: []HostSpec{{Name: "a", Roles: []string{"iam"}}}, FlareDB: &FlareDBSpec{Members: []string{"a"}}}, "does not run the flaredb role"},
		{"non-member with role", Spec{Hosts: 4, FlareDB: &FlareDBSpec{Members: members}}, `host "host4" runs the flaredb role but is not in FlareDB.Members`},
		{"api port", Spec{Hosts: 3, FlareDB: &FlareDBSpec{Members: members, APIPort: 7700}}, "FlareDB.APIPort 7700 is already APIPort"},
		{"same ports", Spec{Hosts: 3, FlareDB: &FlareDBSpec{Members: members, RaftPort: 9000, APIPort: 9000}}, "FlareDB.APIPort 9000 is already FlareDB.RaftPort"},
		{"chainfire port", Spec{Hosts: 3, Chainfire: &ChainfireSpec{Members: members}, FlareDB: &FlareDBSpec{Members: members, RaftPort: 2380}}, "already Chainfire.PeerPort"},
		{"port range", Spec{Hosts: 3, FlareDB: &FlareDBSpec{Members: members, RaftPort: 70000}}, "want 1-65535"},
		{"timings", Spec{Hosts: 3, FlareDB: &FlareDBSpec{Members: members, ElectionTimeout: -time.Second}}, "must not be negative"},
	} {
		_, err := makePlan(tc.spec)
		if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: makePlan = %v, want ErrInvalidSpec containing %q", tc.name, err, tc.want)
		}
	}
	// Without Spec.FlareDB each host keeps a one-member flaredb group on its
	// loopback: only allowPlaintext, no storage or iam section.
	p, err := makePlan(Spec{Hosts: 1})
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.renderNodeConfig(p.hosts[0], "/d")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "flaredb:\n  allowPlaintext: true\n") || strings.Contains(string(b), "storage") || strings.Contains(string(b), "iam") {
		t.Errorf("node.yaml without Spec.FlareDB: want only flaredb.allowPlaintext, no storage or iam:\n%s", b)
	}
}
