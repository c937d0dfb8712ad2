package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testSection stands for a component's section.
type testSection struct {
	// Name is named after the node unless set.
	Name string `yaml:"name"`
	// Listen is a host:port.
	Listen string `yaml:"listen"`
	// Wait is a duration.
	Wait time.Duration `yaml:"wait"`
	// Nested holds more.
	Nested struct {
		// Flag is a bool.
		Flag bool `yaml:"flag"`
	} `yaml:"nested"`
}

func (s *testSection) Derive(core *Core) {
	if s.Name == "" {
		s.Name = core.Node
	}
}

func (s *testSection) Validate() error {
	p := &Problems{}
	p.AddErr("listen", CheckListen(s.Listen))
	if s.Name == "bad" {
		p.Add("name", "%q is bad", s.Name)
	}
	return p.Err()
}

type testConfig struct {
	Core    `yaml:",inline"`
	Section testSection `yaml:"section"`
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "node.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPrecedence: defaults < file < env < flags, through an inline core
// and a nested section.
func TestPrecedence(t *testing.T) {
	c := testConfig{Core: DefaultCore()}
	c.Section.Listen = "127.0.0.1:1"
	p := writeFile(t, "node: n1\ndataDir: /tmp/x\napi:\n  listen: 127.0.0.1:8000\nlog:\n  level: debug\nsection:\n  wait: 2s\n  listen: 127.0.0.1:2\n")
	if err := LoadFile(&c, p); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"ULTRACLOUD_API_LISTEN": "127.0.0.1:9000", "ULTRACLOUD_ROLES": "a,b", "ULTRACLOUD_SECTION_NESTED_FLAG": "true",
		"ULTRACLOUD_SECTION_WAIT": "3s"}
	if err := LoadEnv(&c, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if err := Set(&c, "log.level", "warn"); err != nil {
		t.Fatal(err)
	}
	if err := Set(&c, "section.listen", "127.0.0.1:3"); err != nil {
		t.Fatal(err)
	}
	c.Section.Derive(&c.Core)
	if err := errors.Join(c.Core.Validate([]string{"a", "b"}), Within("section", c.Section.Validate())); err != nil {
		t.Fatal(err)
	}
	if c.Node != "n1" || c.API.Listen != "127.0.0.1:9000" || c.Log.Level != "warn" || len(c.Roles) != 2 ||
		c.API.TokenFile != "/tmp/x/admin-token" || c.Section.Wait != 3*time.Second || !c.Section.Nested.Flag ||
		c.Section.Listen != "127.0.0.1:3" || c.Section.Name != "n1" {
		t.Fatalf("merged config wrong: %+v", c)
	}
}

func TestUnknownKeyNamed(t *testing.T) {
	c := testConfig{Core: DefaultCore()}
	err := LoadFile(&c, writeFile(t, "node: n1\nsection:\n  lisen: 1.2.3.4:5\n"))
	if err == nil || !strings.Contains(err.Error(), "lisen") {
		t.Fatalf("err = %v, want it to name the unknown key", err)
	}
}

// TestOneErrorForm: core, section and environment problems all read
// "config: <full path>: <problem>".
func TestOneErrorForm(t *testing.T) {
	c := testConfig{Core: DefaultCore()}
	c.Roles, c.Log.Format, c.Section.Name, c.Section.Listen = []string{"x"}, "xml", "bad", "nope"
	err := errors.Join(c.Core.Validate([]string{"a"}), Within("section", c.Section.Validate()))
	for _, want := range []string{"config: dataDir: must not be empty", "config: roles[0]: unknown role \"x\" (known roles: a)",
		"config: log.format: ", "config: section.name: \"bad\" is bad", "config: section.listen: \"nope\" is not host:port"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want %q", err, want)
		}
	}
	err = LoadEnv(&c, func(k string) (string, bool) { return "soon", k == "ULTRACLOUD_SECTION_WAIT" })
	if err == nil || err.Error() != `config: section.wait: environment ULTRACLOUD_SECTION_WAIT: "soon" is not a duration (e.g. 30s, 5m)` {
		t.Fatalf("err = %v", err)
	}
	if err := Set(&c, "section.nope", "1"); err == nil || !strings.Contains(err.Error(), `no field "section.nope"`) {
		t.Fatalf("err = %v", err)
	}
}

// TestWithin: relative paths get the section's prefix (also for indexes),
// sentinels survive, absolute paths and plain errors are kept readable.
func TestWithin(t *testing.T) {
	sentinel := errors.New("sentinel")
	p := &Problems{Sentinel: sentinel}
	p.Add("a.b", "x")
	p.Add("[0]", "y")
	p.AddAbsolute("storage.endpoints[1]", "z")
	err := Within("sec", errors.Join(p.Err(), errors.New("plain")))
	for _, want := range []string{"config: sec.a.b: x", "config: sec[0]: y", "config: storage.endpoints[1]: z", "config: sec: plain"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want %q", err, want)
		}
	}
	if !errors.Is(err, sentinel) {
		t.Error("sentinel lost")
	}
	if Within("sec", nil) != nil {
		t.Error("Within(nil) is not nil")
	}
}

func TestEnvNames(t *testing.T) {
	for path, want := range map[string]string{"dataDir": "ULTRACLOUD_DATA_DIR", "api.listen": "ULTRACLOUD_API_LISTEN", "api.tokenFile": "ULTRACLOUD_API_TOKEN_FILE",
		"flaredb.clusterID": "ULTRACLOUD_FLAREDB_CLUSTER_ID", "chainfire.clientURL": "ULTRACLOUD_CHAINFIRE_CLIENT_URL",
		"flaredb.apiAddress": "ULTRACLOUD_FLAREDB_API_ADDRESS", "chainfire.tls.autoCAFile": "ULTRACLOUD_CHAINFIRE_TLS_AUTO_CA_FILE"} {
		if got := EnvName(path); got != want {
			t.Errorf("EnvName(%s) = %s, want %s", path, got, want)
		}
	}
	var paths []string
	for _, f := range Fields(&testConfig{}) {
		paths = append(paths, f.Path)
	}
	if got := strings.Join(paths, " "); got != "node dataDir roles api.listen api.tokenFile log.level log.format storage.backend "+
		"storage.endpoints storage.retainRevisions storage.compactInterval shutdownGrace controlPlane.endpoints controlPlane.joinTokenFile "+
		"section.name section.listen section.wait section.nested.flag" {
		t.Fatalf("Fields = %s", got)
	}
}

func TestChecks(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{CheckListen("127.0.0.1:0"), ""},
		{CheckListen(":7700"), ""},
		{CheckListen("example.com:1"), "must be an IP address or localhost"},
		{CheckListen("1.2.3.4:99999"), "not a number from 0 to 65535"},
		{CheckDialable("10.0.0.1:7711"), ""},
		{CheckDialable("0.0.0.0:7711"), "not an address others can dial"},
		{CheckDialable("10.0.0.1:0"), "from 1 to 65535"},
		{CheckLoopback("[::1]:1"), ""},
		{CheckLoopback("10.0.0.1:1"), "not a loopback address"},
		{CheckDuration(time.Second, time.Second, time.Minute), ""},
		{CheckDuration(0, time.Second, 0), "too short (at least 1s)"},
		{CheckDuration(time.Hour, time.Second, time.Minute), "between 1s and 1m0s"},
		{CheckHTTPURL("https://10.0.0.1:7700"), ""},
		{CheckHTTPURL("10.0.0.1:7700"), "not an http(s) API base URL"},
		{CheckHTTPURL("http://h:1/?q=1"), "not an http(s) API base URL"},
	} {
		if (tc.err == nil) != (tc.want == "") || (tc.err != nil && !strings.Contains(tc.err.Error(), tc.want)) {
			t.Errorf("got %v, want %q", tc.err, tc.want)
		}
	}
}
