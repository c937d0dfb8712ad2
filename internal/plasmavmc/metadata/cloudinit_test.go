package metadata

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/testkit"
)

var _ = testkit.RegisterUpdateFlag()

// cloudInitPython is Debian's interpreter, where the cloud-init package
// puts its modules (a python3 earlier on PATH may not see them).
const cloudInitPython = "/usr/bin/python3"

// requireCloudInit finds Debian's cloud-init modules (testkit: skipped
// outside the test command, which unpacks them; failed within it) and
// returns the environment that imports them.
func requireCloudInit(t *testing.T) []string {
	t.Helper()
	env := os.Environ()
	if pp := testkit.CloudInitPythonPath(t); pp != "" {
		env = append(env, "PYTHONPATH="+pp)
	}
	cmd := exec.Command(cloudInitPython, "-c", "import cloudinit.version as v; print(v.version_string())")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cloud-init: %v %s", err, out)
	}
	t.Logf("cloud-init %s", bytes.TrimSpace(out))
	return env
}

// ciDatasource is what the checker reports for one datasource.
type ciDatasource struct {
	Error            string   `json:"error"`
	DSName           string   `json:"dsname"`
	InstanceID       string   `json:"instance_id"`
	Hostname         string   `json:"hostname"`
	PublicKeys       []string `json:"public_keys"`
	UserData         *string  `json:"userdata"`
	VendorData       *string  `json:"vendordata"`
	AvailabilityZone string   `json:"availability_zone"`
	Network          *struct {
		Interfaces []struct {
			Name    string           `json:"name"`
			MAC     string           `json:"mac"`
			MTU     any              `json:"mtu"`
			Subnets []map[string]any `json:"subnets"`
		} `json:"interfaces"`
		DNS      []string          `json:"dns"`
		Networkd map[string]string `json:"networkd"`
	} `json:"network"`
}

func writeTree(t *testing.T, root string, files map[string][]byte) {
	t.Helper()
	for name, data := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// runCloudInit serves inst with Handler, writes its NoCloud seed and config
// drive to directories, and has cloud-init's NoCloud, ConfigDrive,
// OpenStack and Ec2 datasources read them.
func runCloudInit(t *testing.T, inst *Instance, macs map[string]string) map[string]ciDatasource {
	t.Helper()
	ciEnv := requireCloudInit(t)
	dir := t.TempDir()
	nc, err := RenderNoCloud(inst)
	if err != nil {
		t.Fatal(err)
	}
	seed := map[string][]byte{"meta-data": nc.MetaData, "user-data": nc.UserData}
	if nc.NetworkConfig != nil {
		seed["network-config"] = nc.NetworkConfig
	}
	if nc.VendorData != nil {
		seed["vendor-data"] = nc.VendorData
	}
	writeTree(t, filepath.Join(dir, "nocloud"), seed)
	osd, err := RenderOpenStack(inst)
	if err != nil {
		t.Fatal(err)
	}
	drive := map[string][]byte{
		"openstack/latest/meta_data.json":    osd.MetaData,
		"openstack/latest/network_data.json": osd.NetworkData,
		"openstack/latest/vendor_data.json":  osd.VendorData,
		"openstack/latest/vendor_data2.json": osd.VendorData2,
	}
	if osd.UserData != nil {
		drive["openstack/latest/user_data"] = osd.UserData
	}
	writeTree(t, filepath.Join(dir, "configdrive"), drive)

	h := Handler(func(*http.Request) (*Instance, error) { return inst, nil })
	var mu sync.Mutex
	var requests []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		mu.Lock()
		requests = append(requests, fmt.Sprintf("%d %s %s", rec.Code, r.Method, r.URL.Path))
		mu.Unlock()
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}))
	t.Cleanup(srv.Close)

	macJSON, _ := json.Marshal(macs)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cloudInitPython, "testdata/cloudinit_check.py",
		filepath.Join(dir, "work"), filepath.Join(dir, "nocloud"), filepath.Join(dir, "configdrive"), srv.URL, string(macJSON))
	cmd.Env = ciEnv
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("cloudinit_check.py: %v\nstderr (tail):\n%s", err, tail(stderr.String(), 60))
	}
	var res map[string]ciDatasource
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("checker output: %v\n%s", err, stdout.String())
	}
	if testing.Verbose() {
		t.Logf("cloud-init's view:\n%s", stdout.String())
	}
	srv.Close()
	mu.Lock()
	defer mu.Unlock()
	// Every request cloud-init made was a GET that found its answer, but
	// for the newer EC2 API versions it probes first and takes a 404 for.
	probes := map[string]bool{
		"/2021-03-23/meta-data/instance-id": true,
		"/2018-09-24/meta-data/instance-id": true,
		"/2016-09-02/meta-data/instance-id": true,
	}
	if inst.UserData == nil {
		probes["/2009-04-04/user-data"] = true
		probes["/openstack/2018-08-27/user_data"] = true
	}
	for _, r := range requests {
		f := strings.Fields(r)
		if f[1] != http.MethodGet || (f[0] != "200" && !(f[0] == "404" && probes[f[2]])) {
			t.Errorf("cloud-init's request %s was not answered as it expects", r)
		}
	}
	if testing.Verbose() {
		t.Logf("cloud-init's requests:\n%s", strings.Join(requests, "\n"))
	}
	if len(requests) < 20 {
		t.Errorf("only %d requests reached the metadata service: %q", len(requests), requests)
	}
	for name, ds := range res {
		if ds.Error != "" {
			t.Fatalf("%s: %s\nstderr (tail):\n%s", name, ds.Error, tail(stderr.String(), 60))
		}
	}
	return res
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func TestCloudInitTakesHostnameKeysUserDataAndNetworkFromEverySource(t *testing.T) {
	inst := testInstance()
	macs := map[string]string{"52:54:00:12:34:56": "ens3", "52:54:00:ab:cd:ef": "ens4"}
	res := runCloudInit(t, inst, macs)

	wantKeys := []string{inst.SSHKeys[0].Key, inst.SSHKeys[1].Key}
	for _, name := range []string{"nocloud", "configdrive", "openstack", "ec2"} {
		ds, ok := res[name]
		if !ok {
			t.Fatalf("%s: no result", name)
		}
		wantID := inst.ID
		if name == "configdrive" || name == "openstack" {
			wantID = inst.UUID
		}
		if ds.InstanceID != wantID {
			t.Errorf("%s: instance id %q, want %q", name, ds.InstanceID, wantID)
		}
		if ds.Hostname != inst.Hostname {
			t.Errorf("%s: hostname %q, want %q", name, ds.Hostname, inst.Hostname)
		}
		got := slices.Clone(ds.PublicKeys)
		slices.Sort(got)
		want := slices.Clone(wantKeys)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s: public keys %q, want %q", name, got, want)
		}
		if ds.UserData == nil || *ds.UserData != string(inst.UserData) {
			t.Errorf("%s: user-data %v, want %q", name, ds.UserData, inst.UserData)
		}
		if ds.AvailabilityZone != "ultracloud" {
			t.Errorf("%s: availability zone %q", name, ds.AvailabilityZone)
		}
		if ds.Network == nil {
			t.Errorf("%s: no network config", name)
			continue
		}
		names := map[string]string{}
		for _, i := range ds.Network.Interfaces {
			names[i.MAC] = i.Name
		}
		for mac, ifname := range macs {
			if names[mac] != ifname {
				t.Errorf("%s: interface for %s is %q, want the guest's own %q (all: %v)", name, mac, names[mac], ifname, names)
			}
		}
	}
	// Vendor data: NoCloud gives it raw, the OpenStack ones from
	// vendor_data.json's "cloud-init" key; EC2 has none.
	for _, name := range []string{"nocloud", "configdrive", "openstack"} {
		if vd := res[name].VendorData; vd == nil || *vd != string(inst.VendorData) {
			t.Errorf("%s: vendor-data %v, want %q", name, vd, inst.VendorData)
		}
	}
}

// TestCloudInitRendersOurNetworkConfig checks the systemd-networkd files
// cloud-init writes from each source (networkd is the renderer of a minimal
// bookworm image: no ifupdown, no netplan) and keeps them as golden files.
func TestCloudInitRendersOurNetworkConfig(t *testing.T) {
	inst := testInstance()
	macs := map[string]string{"52:54:00:12:34:56": "ens3", "52:54:00:ab:cd:ef": "ens4"}
	res := runCloudInit(t, inst, macs)

	static := []string{
		"MACAddress=52:54:00:12:34:56", "Name=ens3",
		"Address=10.20.0.5/24", "Address=10.20.0.6/24", "Address=fd00:20::5/64",
		"MTUBytes=1450", "DHCP=no",
		"Gateway=10.20.0.1", "Gateway=fe80::1",
		"Destination=192.168.0.0/16", "Gateway=10.20.0.254",
		"DNS=10.20.0.2 fd00:20::2", "Domains=acme.internal",
	}
	for _, name := range []string{"nocloud", "configdrive", "openstack", "ec2"} {
		ds := res[name]
		if ds.Network == nil {
			t.Fatalf("%s: no network config", name)
		}
		ens3 := ds.Network.Networkd["10-cloud-init-ens3.network"]
		ens4 := ds.Network.Networkd["10-cloud-init-ens4.network"]
		want3 := static
		if name == "ec2" {
			// EC2-style: the primary address comes by DHCP (dhcp6 too,
			// since ipv6s is set); later addresses are added statically.
			want3 = []string{"MACAddress=52:54:00:12:34:56", "DHCP=yes", "Address=10.20.0.6/24", "RouteMetric=100"}
		}
		for _, w := range want3 {
			if !strings.Contains(ens3, w) {
				t.Errorf("%s: ens3's networkd file lacks %q:\n%s", name, w, ens3)
			}
		}
		if strings.Contains(ens3, "::/64") {
			t.Errorf("%s: ens3 has a route to ::/64 (a default route that lost its prefix):\n%s", name, ens3)
		}
		if !strings.Contains(ens4, "MACAddress=52:54:00:ab:cd:ef") || !strings.Contains(ens4, "DHCP=ipv4") {
			t.Errorf("%s: ens4 is not a DHCPv4 interface matched by MAC:\n%s", name, ens4)
		}
		var all strings.Builder
		for _, f := range slices.Sorted(maps.Keys(ds.Network.Networkd)) {
			fmt.Fprintf(&all, "# %s\n%s", f, ds.Network.Networkd[f])
		}
		testkit.Golden(t, "cloudinit-networkd-"+name, []byte(all.String()))
	}
}

// TestCloudInitAcceptsAnInstanceWithNothingOptional: no NICs, keys,
// user-data or vendor-data; every datasource still claims the instance
// and takes its id and hostname (EC2's 404 for user-data means none).
func TestCloudInitAcceptsAnInstanceWithNothingOptional(t *testing.T) {
	inst := minimalInstance()
	res := runCloudInit(t, inst, map[string]string{"52:54:00:00:00:01": "ens3"})
	for _, name := range []string{"nocloud", "configdrive", "openstack", "ec2"} {
		ds := res[name]
		if ds.Hostname != inst.Hostname || len(ds.PublicKeys) != 0 {
			t.Errorf("%s: hostname %q keys %q", name, ds.Hostname, ds.PublicKeys)
		}
		if ds.UserData != nil && *ds.UserData != "" {
			t.Errorf("%s: user-data %q, want none", name, *ds.UserData)
		}
	}
}
