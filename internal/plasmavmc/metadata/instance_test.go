package metadata

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestValidateNamesTheBadField(t *testing.T) {
	pfx := netip.MustParsePrefix
	addr := netip.MustParseAddr
	tests := []struct {
		name   string
		change func(*Instance)
		want   string
	}{
		{"no id", func(i *Instance) { i.ID = "" }, "id"},
		{"id with slash", func(i *Instance) { i.ID = "vm/1" }, `id "vm/1" has '/'`},
		{"uuid not canonical", func(i *Instance) { i.UUID = "{6c1f1a2e-3b4d-4e5f-8a9b-0c1d2e3f4a5b}" }, "uuid"},
		{"no name", func(i *Instance) { i.Name = "" }, "name"},
		{"hostname with space", func(i *Instance) { i.Hostname = "web 1" }, "hostname"},
		{"hostname label dash", func(i *Instance) { i.Hostname = "-web" }, "label"},
		{"hostname too long", func(i *Instance) { i.Hostname = strings.Repeat("a", 64) }, "label"},
		{"user-data too large", func(i *Instance) { i.UserData = make([]byte, MaxUserDataBytes+1) }, "user-data is 65537 bytes"},
		{"vendor-data too large", func(i *Instance) { i.VendorData = make([]byte, MaxUserDataBytes+1) }, "vendor-data"},
		{"key with newline", func(i *Instance) { i.SSHKeys[0].Key += "\nssh-rsa AAAA evil" }, "newline"},
		{"key not a key", func(i *Instance) { i.SSHKeys[0].Key = "hello" }, "TYPE BASE64"},
		{"key of unknown type", func(i *Instance) { i.SSHKeys[0].Key = "pgp AAAA" }, "key type"},
		{"duplicate key name", func(i *Instance) { i.SSHKeys[1].Name = "alice" }, "used twice"},
		{"key name with =", func(i *Instance) { i.SSHKeys[0].Name = "a=b" }, "ssh key 0 name"},
		{"bad mac", func(i *Instance) { i.NICs[0].MAC = "52:54:00:12:34" }, "mac"},
		{"multicast mac", func(i *Instance) { i.NICs[0].MAC = "01:00:5e:00:00:01" }, "multicast"},
		{"duplicate mac", func(i *Instance) { i.NICs[1].MAC = i.NICs[0].MAC }, "used by another NIC"},
		{"unspecified address", func(i *Instance) { i.NICs[0].Addresses[0] = pfx("0.0.0.0/24") }, "usable host address"},
		{"duplicate address", func(i *Instance) { i.NICs[0].Addresses[1] = pfx("10.20.0.5/24") }, "twice"},
		{"gateway off link", func(i *Instance) { i.NICs[0].Gateway4 = addr("10.99.0.1") }, "gateway4 10.99.0.1 is in none"},
		{"gateway4 is v6", func(i *Instance) { i.NICs[0].Gateway4 = addr("fe80::1") }, "gateway4"},
		{"gateway6 off link", func(i *Instance) { i.NICs[0].Gateway6 = addr("fd00:99::1") }, "gateway6"},
		{"gateway on a DHCP NIC", func(i *Instance) { i.NICs[1].Gateway4 = addr("10.0.0.1") }, "gateway4"},
		{"route not masked", func(i *Instance) { i.NICs[0].Routes[0].To = pfx("192.168.1.1/16") }, "host bits"},
		{"default route as route", func(i *Instance) { i.NICs[0].Routes[0].To = pfx("0.0.0.0/0") }, "gateway4/gateway6"},
		{"route via other family", func(i *Instance) { i.NICs[0].Routes[0].Via = addr("fd00:20::1") }, "same family"},
		{"route via off link", func(i *Instance) { i.NICs[0].Routes[0].Via = addr("10.30.0.1") }, "not on the NIC's link"},
		{"mtu too small for v6", func(i *Instance) { i.NICs[0].MTU = 1000 }, "1280"},
		{"mtu absurd", func(i *Instance) { i.NICs[1].MTU = 100 }, "mtu"},
		{"dns multicast", func(i *Instance) { i.NICs[0].DNS = []netip.Addr{addr("224.0.0.1")} }, "dns"},
		{"search domain", func(i *Instance) { i.NICs[0].SearchDomains = []string{"a..b"} }, "search domain"},
		{"too many NICs", func(i *Instance) { i.NICs = make([]NIC, MaxNICs+1) }, "NICs"},
		{"instance type", func(i *Instance) { i.InstanceType = "big one" }, "instance type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inst := testInstance()
			tc.change(inst)
			err := inst.Validate()
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate() = %v, want an ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %q, want it to mention %q", err, tc.want)
			}
			if _, err := RenderNoCloud(inst); !errors.Is(err, ErrInvalid) {
				t.Errorf("RenderNoCloud accepted it: %v", err)
			}
			if _, err := RenderOpenStack(inst); !errors.Is(err, ErrInvalid) {
				t.Errorf("RenderOpenStack accepted it: %v", err)
			}
		})
	}
}

func TestValidateAcceptsTheExamples(t *testing.T) {
	for _, inst := range []*Instance{testInstance(), minimalInstance()} {
		if err := inst.Validate(); err != nil {
			t.Errorf("%s: %v", inst.Name, err)
		}
	}
	var nilInst *Instance
	if err := nilInst.Validate(); !errors.Is(err, ErrInvalid) {
		t.Errorf("nil instance: %v", err)
	}
	// Upper-case MACs and UUIDs are accepted and written in lower case.
	inst := testInstance()
	inst.UUID = strings.ToUpper(inst.UUID)
	if err := inst.Validate(); err != nil {
		t.Errorf("upper-case UUID: %v", err)
	}
}
