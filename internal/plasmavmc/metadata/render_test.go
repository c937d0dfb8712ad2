package metadata

import (
	"bytes"
	"encoding/json"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/ultracloud/ultracloud/internal/testkit"
)

func TestNoCloudDocumentsMatchGoldenFiles(t *testing.T) {
	for name, inst := range map[string]*Instance{"full": testInstance(), "minimal": minimalInstance()} {
		t.Run(name, func(t *testing.T) {
			nc, err := RenderNoCloud(inst)
			if err != nil {
				t.Fatal(err)
			}
			testkit.Golden(t, "nocloud-"+name+"-meta-data", nc.MetaData)
			if len(inst.NICs) == 0 {
				if nc.NetworkConfig != nil {
					t.Errorf("network-config for an instance without NICs: %s", nc.NetworkConfig)
				}
			} else {
				testkit.Golden(t, "nocloud-"+name+"-network-config", nc.NetworkConfig)
			}
			if !bytes.Equal(nc.UserData, inst.UserData) || !bytes.Equal(nc.VendorData, inst.VendorData) {
				t.Errorf("user-data/vendor-data changed on the way: %q %q", nc.UserData, nc.VendorData)
			}
		})
	}
}

func TestOpenStackDocumentsMatchGoldenFiles(t *testing.T) {
	for name, inst := range map[string]*Instance{"full": testInstance(), "minimal": minimalInstance()} {
		t.Run(name, func(t *testing.T) {
			d, err := RenderOpenStack(inst)
			if err != nil {
				t.Fatal(err)
			}
			testkit.Golden(t, "openstack-"+name+"-meta_data.json", d.MetaData)
			testkit.Golden(t, "openstack-"+name+"-network_data.json", d.NetworkData)
			testkit.Golden(t, "openstack-"+name+"-vendor_data.json", d.VendorData)
			for _, doc := range [][]byte{d.MetaData, d.NetworkData, d.VendorData, d.VendorData2} {
				if !json.Valid(doc) {
					t.Errorf("not JSON: %s", doc)
				}
			}
		})
	}
}

// TestYAMLQuotesEveryString proves the property the node builder exists
// for: a YAML 1.1 reader (PyYAML) would take the unquoted all-digit MAC
// 52:54:00:12:34:56 for a base-60 integer, so it must come out quoted.
func TestYAMLQuotesEveryString(t *testing.T) {
	inst := minimalInstance()
	inst.ID = "12345"
	inst.Hostname = "no"
	inst.NICs = []NIC{{MAC: "52:54:00:12:34:56"}}
	nc, err := RenderNoCloud(inst)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`macaddress: "52:54:00:12:34:56"`} {
		if !bytes.Contains(nc.NetworkConfig, []byte(want)) {
			t.Errorf("network-config lacks %s:\n%s", want, nc.NetworkConfig)
		}
	}
	for _, want := range []string{`instance-id: "12345"`, `local-hostname: "no"`} {
		if !bytes.Contains(nc.MetaData, []byte(want)) {
			t.Errorf("meta-data lacks %s:\n%s", want, nc.MetaData)
		}
	}
	var md map[string]any
	if err := yaml.Unmarshal(nc.MetaData, &md); err != nil {
		t.Fatal(err)
	}
	if md["instance-id"] != "12345" || md["local-hostname"] != "no" {
		t.Errorf("meta-data reads back as %v", md)
	}
}

func TestRenderersDoNotChangeTheInstance(t *testing.T) {
	inst := testInstance()
	before := *inst
	keys := append([]SSHKey(nil), inst.SSHKeys...)
	if _, err := RenderNoCloud(inst); err != nil {
		t.Fatal(err)
	}
	if _, err := RenderOpenStack(inst); err != nil {
		t.Fatal(err)
	}
	if inst.AvailabilityZone != before.AvailabilityZone || inst.SSHKeys[1].Name != keys[1].Name || inst.NICs[1].MAC != "52:54:00:AB:CD:EF" {
		t.Errorf("instance changed: %+v", inst)
	}
}
