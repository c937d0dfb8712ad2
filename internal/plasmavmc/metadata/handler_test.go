package metadata

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/testkit"
)

func serve(t *testing.T, s http.Handler, method, path string, hdr map[string]string) *http.Response {
	t.Helper()
	r := httptest.NewRequest(method, "http://169.254.169.254"+path, nil)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	return w.Result()
}

func body(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func fixed(inst *Instance) LookupFunc {
	return func(*http.Request) (*Instance, error) { return inst, nil }
}

// TestHandlerAnswersEveryPathCloudInitProbes walks the paths cloud-init
// 22.4's Ec2 and OpenStack datasources request (and the ones it must not
// find), with the exact bodies it parses.
func TestHandlerAnswersEveryPathCloudInitProbes(t *testing.T) {
	inst := testInstance()
	h := Handler(fixed(inst))
	const md = "/latest/meta-data/"
	const mac0 = md + "network/interfaces/macs/52:54:00:12:34:56/"
	tests := []struct {
		path   string
		status int
		body   string // exact; "*" = any
	}{
		{"/", 200, "2009-04-04\nlatest"},
		// Ec2: API version probe, newest first; only 2009-04-04 answers.
		{"/2021-03-23/meta-data/instance-id", 404, "*"},
		{"/2018-09-24/meta-data/instance-id", 404, "*"},
		{"/2016-09-02/meta-data/instance-id", 404, "*"},
		{"/2009-04-04/meta-data/instance-id", 200, "vm-0f3a9c"},
		{"/latest", 200, "meta-data\nuser-data"},
		{"/latest/", 200, "meta-data\nuser-data"},
		{"/2009-04-04/user-data", 200, string(inst.UserData)},
		{"/latest/user-data", 200, string(inst.UserData)},
		{"/2009-04-04/meta-data/", 200, "ami-launch-index\nhostname\ninstance-id\ninstance-type\nlocal-hostname\nlocal-ipv4\nmac\nnetwork/\nplacement/\npublic-keys/"},
		{"/2009-04-04/meta-data", 200, "ami-launch-index\nhostname\ninstance-id\ninstance-type\nlocal-hostname\nlocal-ipv4\nmac\nnetwork/\nplacement/\npublic-keys/"},
		{md + "ami-launch-index", 200, "0"},
		{md + "hostname", 200, "web-1"},
		{md + "local-hostname", 200, "web-1"},
		{md + "instance-type", 200, "2c-4g"},
		{md + "local-ipv4", 200, "10.20.0.5"},
		{md + "mac", 200, "52:54:00:12:34:56"},
		{md + "placement/", 200, "availability-zone"},
		{md + "placement/availability-zone", 200, "ultracloud"},
		{md + "public-keys/", 200, "0=alice\n1=key-1"},
		{md + "public-keys/0/", 200, "openssh-key"},
		{md + "public-keys/0/openssh-key", 200, inst.SSHKeys[0].Key},
		{md + "public-keys/1/openssh-key", 200, inst.SSHKeys[1].Key},
		{md + "public-keys/2/openssh-key", 404, "*"},
		{md + "network/", 200, "interfaces/"},
		{md + "network/interfaces/", 200, "macs/"},
		{md + "network/interfaces/macs/", 200, "52:54:00:12:34:56/\n52:54:00:ab:cd:ef/"},
		{mac0, 200, "device-number\ninterface-id\nipv6s\nlocal-ipv4s\nmac\nsubnet-ipv4-cidr-block\nsubnet-ipv6-cidr-block\nsubnet-ipv6-cidr-blocks\nvpc-id"},
		{mac0 + "device-number", 200, "0"},
		{mac0 + "local-ipv4s", 200, "10.20.0.5\n10.20.0.6"},
		{mac0 + "ipv6s", 200, "fd00:20::5"},
		{mac0 + "subnet-ipv4-cidr-block", 200, "10.20.0.0/24"},
		{mac0 + "subnet-ipv6-cidr-block", 200, "fd00:20::/64"},
		{mac0 + "vpc-id", 200, "net-blue"},
		{mac0 + "interface-id", 200, "port-a1"},
		{md + "network/interfaces/macs/52:54:00:ab:cd:ef/", 200, "device-number\ninterface-id\nmac\nvpc-id"},
		{md + "network/interfaces/macs/52:54:00:ab:cd:ef/device-number", 200, "1"},
		// Leaves do not take a trailing slash; odd paths name nothing.
		{md + "instance-id/", 404, "*"},
		{"/latest//meta-data/", 404, "*"},
		{"/latest/./meta-data/", 404, "*"},
		{"/latest/../latest/meta-data/", 404, "*"},
		{md + "instance-id/x", 404, "*"},
		{md + "security-credentials", 404, "*"},
		{"/latest/dynamic/instance-identity/document", 404, "*"},
		{"/nocloud/meta-data", 404, "*"},
		// OpenStack: wait_for_url on /openstack, the version list, then
		// every file under the newest known version.
		{"/openstack", 200, strings.Join(openstackVersions, "\n")},
		{"/openstack/", 200, strings.Join(openstackVersions, "\n")},
		{"/openstack/2018-08-27", 200, "meta_data.json\nnetwork_data.json\nuser_data\nvendor_data.json\nvendor_data2.json"},
		{"/openstack/latest/", 200, "meta_data.json\nnetwork_data.json\nuser_data\nvendor_data.json\nvendor_data2.json"},
		{"/openstack/2018-08-27/meta_data.json", 200, "*"},
		{"/openstack/2018-08-27/network_data.json", 200, "*"},
		{"/openstack/2018-08-27/vendor_data.json", 200, "{\n  \"cloud-init\": \"#cloud-config\\nmanage_etc_hosts: localhost\\n\"\n}\n"},
		{"/openstack/2018-08-27/vendor_data2.json", 200, "{}\n"},
		{"/openstack/2018-08-27/user_data", 200, string(inst.UserData)},
		{"/openstack/2012-08-10/meta_data.json", 200, "*"},
		{"/openstack/2099-01-01/meta_data.json", 404, "*"},
		{"/openstack/latest/password", 404, "*"},
	}
	for _, tc := range tests {
		resp := serve(t, h, http.MethodGet, tc.path, nil)
		got := body(t, resp)
		if resp.StatusCode != tc.status {
			t.Errorf("GET %s: status %d, want %d (body %q)", tc.path, resp.StatusCode, tc.status, got)
			continue
		}
		if tc.body != "*" && got != tc.body {
			t.Errorf("GET %s: body %q, want %q", tc.path, got, tc.body)
		}
		if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("GET %s: Cache-Control %q, want no-store", tc.path, cc)
		}
	}
}

func TestHandlerJSONDocumentsAreServedAsRendered(t *testing.T) {
	inst := testInstance()
	d, err := RenderOpenStack(inst)
	if err != nil {
		t.Fatal(err)
	}
	h := Handler(fixed(inst))
	for path, want := range map[string][]byte{
		"/openstack/latest/meta_data.json":    d.MetaData,
		"/openstack/latest/network_data.json": d.NetworkData,
	} {
		resp := serve(t, h, http.MethodGet, path, nil)
		if got := body(t, resp); got != string(want) {
			t.Errorf("%s: %q, want %q", path, got, want)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s: Content-Type %q", path, ct)
		}
	}
}

func TestHandlerOmitsWhatTheInstanceDoesNotHave(t *testing.T) {
	h := Handler(fixed(minimalInstance()))
	for _, tc := range []struct {
		path   string
		status int
		body   string
	}{
		{"/latest/user-data", 404, "*"}, // cloud-init takes 404 as "no user-data"
		{"/openstack/latest/user_data", 404, "*"},
		{"/latest/meta-data/public-keys/", 404, "*"},
		{"/latest/meta-data/mac", 404, "*"},
		{"/latest/meta-data/network/", 404, "*"},
		{"/latest", 200, "meta-data"},
		{"/latest/meta-data/", 200, "ami-launch-index\nhostname\ninstance-id\nlocal-hostname\nplacement/"},
		{"/openstack/latest/", 200, "meta_data.json\nnetwork_data.json\nvendor_data.json\nvendor_data2.json"},
		{"/openstack/latest/vendor_data.json", 200, "{}\n"},
	} {
		resp := serve(t, h, http.MethodGet, tc.path, nil)
		got := body(t, resp)
		if resp.StatusCode != tc.status || (tc.body != "*" && got != tc.body) {
			t.Errorf("GET %s: %d %q, want %d %q", tc.path, resp.StatusCode, got, tc.status, tc.body)
		}
	}
}

func TestHandlerAllowsGetAndHeadOnlyAndPutOnlyForTheToken(t *testing.T) {
	h := Handler(fixed(testInstance()))
	for _, tc := range []struct {
		method, path string
		status       int
		allow        string
	}{
		{http.MethodPost, "/latest/meta-data/", 405, "GET, HEAD"},
		{http.MethodPut, "/latest/meta-data/instance-id", 405, "GET, HEAD"},
		{http.MethodDelete, "/openstack/latest/meta_data.json", 405, "GET, HEAD"},
		{http.MethodGet, "/latest/api/token", 405, "PUT"},
		{http.MethodHead, "/latest/api/token", 405, "PUT"},
		{http.MethodPut, "/2009-04-04/api/token", 404, ""},
		{http.MethodPost, "/no/such/path", 404, ""},
	} {
		resp := serve(t, h, tc.method, tc.path, map[string]string{HeaderTokenTTL: "60"})
		if resp.StatusCode != tc.status || resp.Header.Get("Allow") != tc.allow {
			t.Errorf("%s %s: %d Allow %q, want %d Allow %q", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Allow"), tc.status, tc.allow)
		}
	}
	resp := serve(t, h, http.MethodHead, "/latest/meta-data/instance-id", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Length") != "9" || body(t, resp) != "" {
		t.Errorf("HEAD: %d Content-Length %q body %q, want 200, 9 and no body", resp.StatusCode, resp.Header.Get("Content-Length"), body(t, resp))
	}
}

func TestIMDSv2TokenIsIssuedCheckedAndBoundToItsInstance(t *testing.T) {
	clock := testkit.NewClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	a, b := testInstance(), minimalInstance()
	current := a
	s, err := New(Config{Lookup: func(*http.Request) (*Instance, error) { return current, nil }, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	for _, ttl := range []string{"", "0", "21601", "-1", "1e3", " 60", "abc"} {
		if resp := serve(t, s, http.MethodPut, tokenPath, map[string]string{HeaderTokenTTL: ttl}); resp.StatusCode != 400 {
			t.Errorf("PUT with TTL %q: %d, want 400", ttl, resp.StatusCode)
		}
	}
	resp := serve(t, s, http.MethodPut, tokenPath, map[string]string{HeaderTokenTTL: "21600"})
	tok := body(t, resp)
	if resp.StatusCode != 200 || tok == "" || resp.Header.Get(HeaderTokenTTL) != "21600" {
		t.Fatalf("PUT token: %d %q ttl %q", resp.StatusCode, tok, resp.Header.Get(HeaderTokenTTL))
	}
	get := func(token string) int {
		return serve(t, s, http.MethodGet, "/latest/meta-data/instance-id", map[string]string{HeaderToken: token}).StatusCode
	}
	if st := get(tok); st != 200 {
		t.Errorf("GET with the token: %d, want 200", st)
	}
	if st := serve(t, s, http.MethodGet, "/latest/meta-data/instance-id", nil).StatusCode; st != 200 {
		t.Errorf("GET without a token (IMDSv1, what cloud-init does off AWS): %d, want 200", st)
	}
	for _, bad := range []string{"", "x", tok[:len(tok)-1], tok + "A", strings.ToUpper(tok[:10]) + tok[10:]} {
		if bad == tok {
			continue
		}
		if st := get(bad); st != 401 {
			t.Errorf("GET with token %q: %d, want 401", bad, st)
		}
	}
	current = b
	if st := get(tok); st != 401 {
		t.Errorf("another instance presenting the token: %d, want 401", st)
	}
	current = a
	clock.Advance(21600*time.Second - time.Second)
	if st := get(tok); st != 200 {
		t.Errorf("a second before expiry: %d, want 200", st)
	}
	clock.Advance(time.Second)
	if st := get(tok); st != 401 {
		t.Errorf("at expiry: %d, want 401", st)
	}
	// A token from another server (another key) is refused too.
	other, _ := New(Config{Lookup: fixed(a), Now: clock.Now})
	tok2 := body(t, serve(t, other, http.MethodPut, tokenPath, map[string]string{HeaderTokenTTL: "60"}))
	if st := get(tok2); st != 401 {
		t.Errorf("token of another server: %d, want 401", st)
	}
}

func TestHandlerMapsLookupFailures(t *testing.T) {
	none := Handler(func(*http.Request) (*Instance, error) {
		return nil, errors.Join(errors.New("no port has 10.0.0.9"), ErrNoInstance)
	})
	if st := serve(t, none, http.MethodGet, "/latest/meta-data/", nil).StatusCode; st != 404 {
		t.Errorf("no instance: %d, want 404", st)
	}
	broken := Handler(func(*http.Request) (*Instance, error) { return nil, errors.New("store unavailable") })
	if st := serve(t, broken, http.MethodGet, "/latest/meta-data/", nil).StatusCode; st != 500 {
		t.Errorf("lookup error: %d, want 500", st)
	}
	bad := testInstance()
	bad.Hostname = "not a hostname"
	if st := serve(t, Handler(fixed(bad)), http.MethodGet, "/latest/meta-data/", nil).StatusCode; st != 500 {
		t.Errorf("invalid instance: %d, want 500", st)
	}
	if _, err := New(Config{}); err == nil {
		t.Error("New without a lookup succeeded")
	}
}
