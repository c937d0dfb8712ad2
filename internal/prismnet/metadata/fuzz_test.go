package metadata

import (
	"net/url"
	"strings"
	"testing"
)

func TestUpstreamPathAcceptsWhatCloudInitAsksFor(t *testing.T) {
	for _, p := range []string{
		"/", "/latest", "/latest/", "/latest/meta-data/", "/latest/meta-data/instance-id",
		"/latest/meta-data/public-keys/0/openssh-key", "/latest/api/token", "/latest/user-data",
		"/openstack", "/openstack/latest/meta_data.json", "/openstack/latest/network_data.json",
		"/openstack/2018-08-27/vendor_data2.json", "/2009-04-04/meta-data/", "/.well-known/x", "/a..b/c.",
	} {
		got, ok := upstreamPath("/v1/metadata", p)
		if !ok || got != "/v1/metadata"+p {
			t.Errorf("upstreamPath(%q) = %q, %v; want it forwarded unchanged under the base", p, got, ok)
		}
	}
}

// FuzzUpstreamPath checks that whatever a workload puts in its request
// path, a forwarded path stays under the upstream's base, even after the
// upstream cleans it, and survives URL encoding unchanged.
func FuzzUpstreamPath(f *testing.F) {
	for _, s := range []string{"/", "/latest/meta-data/", "/..", "/a/../b", "//x", "/a/./b", "/a\\..", "/%2e%2e", "/a/.", "x", ""} {
		f.Add(s)
	}
	const base = "/v1/metadata"
	f.Fuzz(func(t *testing.T, p string) {
		got, ok := upstreamPath(base, p)
		if !ok {
			return
		}
		if !strings.HasPrefix(got, base+"/") {
			t.Fatalf("%q -> %q: not under %s/", p, got, base)
		}
		for _, seg := range strings.Split(got[1:], "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("%q -> %q: has a %q segment", p, got, seg)
			}
		}
		if strings.Contains(got[len(base):], "//") {
			t.Fatalf("%q -> %q: has an empty segment", p, got)
		}
		u := url.URL{Scheme: "http", Host: "up", Path: got}
		back, err := url.Parse(u.String())
		if err != nil || back.Path != got || back.RawQuery != "" || back.Fragment != "" {
			t.Fatalf("%q -> %q: encodes to %q which parses back as path %q query %q fragment %q (%v)",
				p, got, u.String(), back.Path, back.RawQuery, back.Fragment, err)
		}
	})
}
