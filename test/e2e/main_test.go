package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	yaml "go.yaml.in/yaml/v3"

	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/client"
	"github.com/ultracloud/ultracloud/test/e2e/nodeproc"
)

// binary is the ultracloud executable built once by TestMain for every test
// in the package. It is set before any test runs and never changed.
var binary *nodeproc.Binary

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b, err := nodeproc.Build(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building the binary:", err)
		return 1
	}
	defer func() {
		if err := b.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
		}
	}()
	binary = b
	return m.Run()
}

// cliTimeout bounds every one-shot CLI command.
const cliTimeout = 30 * time.Second

// harness is one test's isolated world: a Home (HOME, XDG dirs, client
// config) and a data directory, with at most one node running at a time.
type harness struct {
	t       *testing.T
	home    nodeproc.Home
	dataDir string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	home, err := nodeproc.NewHome(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, home: home, dataDir: filepath.Join(home.Root, "node-data")}
}

// start runs `ultracloud up` on h's data directory and registers a cleanup
// that kills it if the test has not stopped it. The cleanup also fails the
// test if the admin token ever reached the node's output.
func (h *harness) start(o nodeproc.NodeOptions) *nodeproc.Node {
	h.t.Helper()
	o.Home, o.DataDir = h.home, h.dataDir
	n, err := binary.StartNode(h.t.Context(), o)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() {
		if err := n.Kill(); err != nil {
			h.t.Error(err)
		}
		checkNoToken(h.t, n)
	})
	return n
}

// checkNoToken fails t if the node's admin token appears in what it
// printed, or its first admin password in its logs (stdout shows that
// password once, by design).
func checkNoToken(t *testing.T, n *nodeproc.Node) {
	t.Helper()
	for name, out := range map[string]string{"stderr": n.Stderr().String(), "stdout": n.Stdout().String()} {
		if strings.Contains(out, n.Token) {
			t.Errorf("the admin token appears in the node's %s", name)
		}
	}
	if n.AdminPassword != "" && strings.Contains(n.Stderr().String(), n.AdminPassword) {
		t.Error("the first admin password appears in the node's logs")
	}
}

// clientConfig is the CLI's client config file as tests read it.
type clientConfig struct {
	Endpoint    string `yaml:"endpoint"`
	Token       string `yaml:"token"`
	Project     string `yaml:"project"`
	Credentials struct {
		Principal             string    `yaml:"principal"`
		AccessToken           string    `yaml:"accessToken"`
		AccessTokenExpiresAt  time.Time `yaml:"accessTokenExpiresAt"`
		RefreshToken          string    `yaml:"refreshToken"`
		RefreshTokenExpiresAt time.Time `yaml:"refreshTokenExpiresAt"`
	} `yaml:"credentials"`
}

// readClientConfig reads home's client config.
func readClientConfig(t *testing.T, home nodeproc.Home) clientConfig {
	t.Helper()
	b, err := os.ReadFile(home.ClientConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	var cfg clientConfig
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("client config: %v", err)
	}
	return cfg
}

// cli runs one CLI command in h's environment and returns its result
// whatever the exit code.
func (h *harness) cli(stdin []byte, args ...string) nodeproc.Result {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.t.Context(), cliTimeout)
	defer cancel()
	res, err := binary.Run(ctx, h.home, stdin, args...)
	if err != nil {
		h.t.Fatal(err)
	}
	return res
}

// ok runs one CLI command that must succeed and returns its stdout.
func (h *harness) ok(args ...string) string {
	h.t.Helper()
	res := h.cli(nil, args...)
	if res.ExitCode != 0 {
		h.t.Fatalf("expected success:\n%s", res)
	}
	return res.Stdout
}

// fails runs one CLI command that must exit non-zero and returns its result.
func (h *harness) fails(args ...string) nodeproc.Result {
	h.t.Helper()
	res := h.cli(nil, args...)
	if res.ExitCode == 0 {
		h.t.Fatalf("expected a non-zero exit:\n%s", res)
	}
	return res
}

// writeFile writes a file under h's root and returns its path.
func (h *harness) writeFile(name, content string) string {
	h.t.Helper()
	p := filepath.Join(h.home.Root, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		h.t.Fatal(err)
	}
	return p
}

// sdk returns a Go SDK client for n.
func sdk(t *testing.T, n *nodeproc.Node) *client.Client {
	t.Helper()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	t.Cleanup(tr.CloseIdleConnections)
	c, err := client.New(client.Config{Endpoint: n.URL, Token: n.Token, HTTPClient: &http.Client{Transport: tr, Timeout: 30 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// isActive reports whether the iam project controller has marked o Active.
func isActive(o *api.Object) bool {
	var st struct {
		Phase string `json:"phase"`
	}
	return len(o.Status) > 0 && json.Unmarshal(o.Status, &st) == nil && st.Phase == "Active"
}

// activeTimeout bounds how long the project controller may take to mark
// projects Active.
const activeTimeout = 30 * time.Second

// waitActive waits until the project controller has marked every named
// project Active, so that no background write races the test's own.
func waitActive(t *testing.T, c *client.Client, names ...string) {
	t.Helper()
	projects := c.Resources("projects", "")
	for _, name := range names {
		err := nodeproc.WaitFor(t.Context(), activeTimeout, "project "+name+" to become Active", func() (bool, error) {
			o, err := projects.Get(t.Context(), name)
			if err != nil {
				return false, err
			}
			return isActive(o), nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// waitAllActive waits until every project is Active and returns how many
// there are.
func waitAllActive(t *testing.T, c *client.Client) int {
	t.Helper()
	var total, inactive int
	err := nodeproc.WaitEvery(t.Context(), 250*time.Millisecond, activeTimeout, "every project to become Active", func() (bool, error) {
		items, _, err := c.Resources("projects", "").ListAll(t.Context(), client.ListOptions{Limit: 5000})
		if err != nil {
			return false, err
		}
		total, inactive = len(items), 0
		for i := range items {
			if !isActive(&items[i]) {
				inactive++
			}
		}
		return inactive == 0, nil
	})
	if err != nil {
		t.Fatalf("%v (%d of %d projects still not Active)", err, inactive, total)
	}
	return total
}
