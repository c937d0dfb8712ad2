package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	yaml "go.yaml.in/yaml/v3"

	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/client"
	"github.com/ultracloud/ultracloud/test/e2e/nodeproc"
)

// on returns a copy of h that reports to t (for subtests).
func (h *harness) on(t *testing.T) *harness {
	c := *h
	c.t = t
	return &c
}

const projectsYAML = `# three projects, the last one written as JSON
kind: Project
metadata:
  name: alpha
  labels:
    team: web
spec:
  displayName: Alpha
---
kind: Project
metadata:
  name: beta
  labels: {team: db}
spec:
  displayName: Beta
  description: the database team
---
{"kind": "Project", "metadata": {"name": "gamma", "labels": {"team": "web", "tier": "edge"}}, "spec": {"displayName": "Gamma"}}
`

// TestCLI drives a node the way a user does, with every client verb, and
// checks the files `up` writes and what it logs. The node logs at debug
// level so that the token check covers the most log output.
func TestCLI(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	n := h.start(nodeproc.NodeOptions{LogLevel: "debug"})
	c := sdk(t, n)

	t.Run("files are private", func(t *testing.T) {
		for _, p := range []string{h.home.ClientConfigPath(), n.TokenPath(), n.KeyPath()} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s has mode %o, want 600", p, fi.Mode().Perm())
			}
		}
		// `up` writes credentials of the admin user, not the break-glass
		// token.
		cfg := readClientConfig(t, h.home)
		if cfg.Endpoint != n.URL || cfg.Token != "" || cfg.Credentials.Principal != "user:admin" ||
			cfg.Credentials.AccessToken == "" || cfg.Credentials.RefreshToken == "" {
			t.Errorf("client config: endpoint %q (want %q), static token set: %v, credentials of %q",
				cfg.Endpoint, n.URL, cfg.Token != "", cfg.Credentials.Principal)
		}
	})

	t.Run("status", func(t *testing.T) {
		h := h.on(t)
		out := h.ok("status")
		if !strings.Contains(out, "): ready") || !strings.Contains(out, "COMPONENT") {
			t.Errorf("status table lacks the ready line or the header:\n%s", out)
		}
		// The replicated stores report who leads: up runs one-member groups.
		if !strings.Contains(out, "flaredb: ") || !strings.Contains(out, "state=Leader") || !strings.Contains(out, "members=1") ||
			!strings.Contains(out, "chainfire: ") {
			t.Errorf("status lacks the flaredb/chainfire detail lines:\n%s", out)
		}
		for _, comp := range []string{"flaredb", "store", "iam", "http"} {
			if !slices.ContainsFunc(strings.Split(out, "\n"), func(l string) bool {
				f := strings.Fields(l)
				return len(f) >= 2 && f[0] == comp && f[1] == "ready"
			}) {
				t.Errorf("status table has no ready row for %s:\n%s", comp, out)
			}
		}
		var st api.NodeStatus
		if err := json.Unmarshal([]byte(h.ok("status", "-o", "json")), &st); err != nil {
			t.Fatalf("status -o json: %v", err)
		}
		if !st.Ready || st.Version != api.Version || st.Node == "" {
			t.Errorf("status -o json = %+v, want ready, API version %d and a node name", st, api.Version)
		}
		var names []string
		for _, cs := range st.Components {
			names = append(names, cs.Name)
			if cs.State != "ready" {
				t.Errorf("component %s is %s", cs.Name, cs.State)
			}
			if cs.Name == "http" && cs.Endpoints["api"] != n.URL {
				t.Errorf("http endpoints = %v, want api=%s", cs.Endpoints, n.URL)
			}
		}
		for _, want := range []string{"flaredb", "store", "iam", "http"} {
			if !slices.Contains(names, want) {
				t.Errorf("status -o json lists components %v, missing %s", names, want)
			}
		}
	})

	t.Run("connection from flags and environment", func(t *testing.T) {
		other, err := nodeproc.NewHome(t.TempDir()) // no client config here
		if err != nil {
			t.Fatal(err)
		}
		o := &harness{t: t, home: other}
		if res := o.fails("status"); !strings.Contains(res.Stderr, "endpoint") {
			t.Errorf("status without any endpoint should say how to give one:\n%s", res)
		}
		o.ok("status", "--endpoint", n.URL, "--token", n.Token)
		if res := o.fails("get", "projects", "--endpoint", n.URL, "--token", "not-the-token"); !strings.Contains(res.Stderr, "unauthenticated") {
			t.Errorf("a wrong token should fail as unauthenticated:\n%s", res)
		}
		o.home.Extra = []string{"ULTRACLOUD_ENDPOINT=" + n.URL, "ULTRACLOUD_TOKEN=" + n.Token}
		o.ok("get", "projects")
	})

	t.Run("apply twice", func(t *testing.T) {
		h := h.on(t)
		file := h.writeFile("projects.yaml", projectsYAML)
		want := []string{"project/alpha created (1 of 3)", "project/beta created (2 of 3)", "project/gamma created (3 of 3)"}
		if got := lines(h.ok("apply", "-f", file)); !slices.Equal(got, want) {
			t.Errorf("first apply printed %q, want %q", got, want)
		}
		want = []string{"project/alpha unchanged (1 of 3)", "project/beta unchanged (2 of 3)", "project/gamma unchanged (3 of 3)"}
		if got := lines(h.ok("apply", "-f", file)); !slices.Equal(got, want) {
			t.Errorf("second apply printed %q, want %q", got, want)
		}
		before, err := c.Resources("projects", "").Get(t.Context(), "beta")
		if err != nil {
			t.Fatal(err)
		}
		// Changing one document updates exactly that resource.
		changed := h.writeFile("projects2.yaml", strings.Replace(projectsYAML, "displayName: Beta", "displayName: Beta Two", 1))
		want = []string{"project/alpha unchanged (1 of 3)", "project/beta updated (2 of 3)", "project/gamma unchanged (3 of 3)"}
		if got := lines(h.ok("apply", "-f", changed)); !slices.Equal(got, want) {
			t.Errorf("apply of a changed file printed %q, want %q", got, want)
		}
		after, err := c.Resources("projects", "").Get(t.Context(), "beta")
		if err != nil {
			t.Fatal(err)
		}
		if after.Metadata.Revision <= before.Metadata.Revision || after.Metadata.UID != before.Metadata.UID ||
			!after.Metadata.CreatedAt.Equal(*before.Metadata.CreatedAt) {
			t.Errorf("update changed identity or kept the revision: before %+v, after %+v", before.Metadata, after.Metadata)
		}
		// Reading from stdin works too.
		res := h.cli([]byte(projectsYAML), "apply", "-f", "-")
		if res.ExitCode != 0 || !strings.Contains(res.Stdout, "project/beta updated (2 of 3)") {
			t.Errorf("apply -f - (restoring beta):\n%s", res)
		}
	})

	t.Run("get", func(t *testing.T) {
		h := h.on(t)
		table := lines(h.ok("get", "projects"))
		if len(table) != 4 || !strings.HasPrefix(table[0], "NAME") || !strings.Contains(table[0], "DISPLAY NAME") {
			t.Fatalf("get projects table:\n%s", strings.Join(table, "\n"))
		}
		for i, name := range []string{"alpha", "beta", "gamma"} {
			if f := strings.Fields(table[i+1]); f[0] != name {
				t.Errorf("row %d = %q, want %s first", i+1, table[i+1], name)
			}
		}

		var list api.List
		if err := json.Unmarshal([]byte(h.ok("get", "projects", "-o", "json")), &list); err != nil {
			t.Fatalf("get projects -o json: %v", err)
		}
		if list.Kind != "ProjectList" || !slices.Equal(objectNames(list.Items), []string{"alpha", "beta", "gamma"}) {
			t.Errorf("get projects -o json = kind %q items %v", list.Kind, objectNames(list.Items))
		}

		var ylist struct {
			Kind  string `yaml:"kind"`
			Items []struct {
				Metadata struct {
					Name   string            `yaml:"name"`
					Labels map[string]string `yaml:"labels"`
				} `yaml:"metadata"`
				Spec map[string]string `yaml:"spec"`
			} `yaml:"items"`
		}
		if err := yaml.Unmarshal([]byte(h.ok("get", "projects", "-o", "yaml")), &ylist); err != nil {
			t.Fatalf("get projects -o yaml: %v", err)
		}
		if ylist.Kind != "ProjectList" || len(ylist.Items) != 3 || ylist.Items[2].Metadata.Labels["tier"] != "edge" ||
			ylist.Items[1].Spec["description"] != "the database team" {
			t.Errorf("get projects -o yaml = %+v", ylist)
		}

		sdkObj, err := c.Resources("projects", "").Get(t.Context(), "alpha")
		if err != nil {
			t.Fatal(err)
		}
		var one api.Object
		if err := json.Unmarshal([]byte(h.ok("get", "project", "alpha", "-o", "json")), &one); err != nil {
			t.Fatal(err)
		}
		if one.Metadata.UID != sdkObj.Metadata.UID || one.Metadata.Revision != sdkObj.Metadata.Revision {
			t.Errorf("get project alpha -o json = %+v, SDK says %+v", one.Metadata, sdkObj.Metadata)
		}
		var yone struct {
			Kind     string `yaml:"kind"`
			Metadata struct {
				Name     string            `yaml:"name"`
				UID      string            `yaml:"uid"`
				Revision int64             `yaml:"revision"`
				Labels   map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				DisplayName string `yaml:"displayName"`
			} `yaml:"spec"`
		}
		if err := yaml.Unmarshal([]byte(h.ok("get", "proj", "alpha", "-o", "yaml")), &yone); err != nil {
			t.Fatal(err)
		}
		if yone.Kind != "Project" || yone.Metadata.Name != "alpha" || yone.Metadata.UID != sdkObj.Metadata.UID ||
			yone.Metadata.Labels["team"] != "web" || yone.Spec.DisplayName != "Alpha" {
			t.Errorf("get proj alpha -o yaml = %+v", yone)
		}
	})

	t.Run("describe", func(t *testing.T) {
		waitActive(t, c, "beta")
		out := h.on(t).ok("describe", "project", "beta")
		for _, want := range []string{"Kind:       Project", "Name:       beta", "Revision:", "UID:", "team: db",
			"displayName: Beta", "description: the database team", "Status:\n  phase: Active"} {
			if !strings.Contains(out, want) {
				t.Errorf("describe lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("label selectors", func(t *testing.T) {
		h := h.on(t)
		for sel, want := range map[string][]string{
			"team=web":          {"alpha", "gamma"},
			"team!=web":         {"beta"},
			"tier":              {"gamma"},
			"team in (db,none)": {"beta"},
			"team=nobody":       {},
		} {
			var list api.List
			if err := json.Unmarshal([]byte(h.ok("get", "projects", "-l", sel, "-o", "json")), &list); err != nil {
				t.Fatalf("-l %q: %v", sel, err)
			}
			if got := objectNames(list.Items); !slices.Equal(got, want) {
				t.Errorf("get projects -l %q = %v, want %v", sel, got, want)
			}
		}
		table := h.ok("get", "projects", "-l", "team=web")
		if !strings.Contains(table, "alpha") || !strings.Contains(table, "gamma") || strings.Contains(table, "beta") {
			t.Errorf("get projects -l team=web table:\n%s", table)
		}
		if out := h.ok("get", "projects", "-l", "team=nobody"); !strings.Contains(out, "No projects found") {
			t.Errorf("an empty selection should say so, got:\n%s", out)
		}
		if res := h.fails("get", "projects", "-l", "team==="); !strings.Contains(res.Stderr, "invalid_selector") {
			t.Errorf("a malformed selector should fail with invalid_selector:\n%s", res)
		}
	})

	t.Run("watch", func(t *testing.T) {
		h := h.on(t)
		l, err := c.Resources("projects", "").List(t.Context(), client.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		since := l.Metadata.Revision

		w, err := binary.Start(h.home, "watch", "projects")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = w.Kill() })
		// The initial snapshot shows the watch is established.
		for _, name := range []string{"alpha", "beta", "gamma"} {
			if err := w.WaitForLine(t.Context(), 10*time.Second, "project/"+name+" "); err != nil {
				t.Fatal(err)
			}
		}
		h.cli([]byte("kind: Project\nmetadata: {name: delta}\nspec: {displayName: D}\n"), "apply", "-f", "-")
		h.cli([]byte("kind: Project\nmetadata: {name: delta}\nspec: {displayName: D2}\n"), "apply", "-f", "-")
		h.ok("delete", "project", "delta")

		// The project controller's status write adds a MODIFIED of its own
		// somewhere between ADDED and DELETED.
		var got []string
		err = nodeproc.WaitFor(t.Context(), 10*time.Second, "watch to print DELETED for delta", func() (bool, error) {
			got = got[:0]
			for _, line := range w.Stdout().Lines() {
				f := strings.Fields(line)
				if len(f) != 3 || !strings.HasPrefix(f[2], "revision=") {
					return false, fmt.Errorf("malformed watch line %q", line)
				}
				if f[1] == "project/delta" {
					got = append(got, f[0])
				}
			}
			return slices.Contains(got, "DELETED"), nil
		})
		if err != nil {
			t.Fatalf("%v; stdout so far:\n%s", err, w.Stdout().String())
		}
		if !addedModifiedDeleted(got) {
			t.Errorf("watch printed %v for delta, want ADDED, one or more MODIFIED, DELETED:\n%s", got, w.Stdout().String())
		}
		if err := w.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		if code, err := w.Wait(10 * time.Second); err != nil || code != 0 {
			t.Errorf("watch after SIGINT: exit %d, %v; stderr:\n%s", code, err, w.Stderr().String())
		}

		// A watch started later from the earlier revision replays the same
		// history, as JSON lines with increasing revisions.
		jw, err := binary.Start(h.home, "watch", "projects", "--since", strconv.FormatInt(since, 10), "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = jw.Kill() })
		var events []api.Event
		err = nodeproc.WaitFor(t.Context(), 10*time.Second, "watch --since to replay delta's history up to DELETED", func() (bool, error) {
			events = events[:0]
			for _, line := range jw.Stdout().Lines() {
				var ev api.Event
				if err := json.Unmarshal([]byte(line), &ev); err != nil {
					return false, fmt.Errorf("watch -o json line %q: %w", line, err)
				}
				if ev.Object == nil {
					return false, fmt.Errorf("watch -o json line %q has no object", line)
				}
				if ev.Object.Metadata.Name == "delta" {
					events = append(events, ev)
				}
			}
			return slices.ContainsFunc(events, func(ev api.Event) bool { return ev.Type == api.EventDeleted }), nil
		})
		if err != nil {
			t.Fatalf("%v; stdout so far:\n%s", err, jw.Stdout().String())
		}
		var types []string
		sawD2 := false
		for i, ev := range events {
			types = append(types, string(ev.Type))
			if ev.Revision <= since || (i > 0 && ev.Revision <= events[i-1].Revision) {
				t.Errorf("replayed event %d of delta has revision %d; want increasing revisions after %d", i, ev.Revision, since)
			}
			sawD2 = sawD2 || (ev.Type == api.EventModified && strings.Contains(string(ev.Object.Spec), `"D2"`))
		}
		if !addedModifiedDeleted(types) || !sawD2 {
			t.Errorf("watch --since replayed %v for delta (saw the D2 update: %v), want ADDED, MODIFIED..., DELETED", types, sawD2)
		}
		if code, err := jw.Stop(10 * time.Second); err != nil || code != 0 {
			t.Errorf("watch after SIGTERM: exit %d, %v; stderr:\n%s", code, err, jw.Stderr().String())
		}
	})

	t.Run("delete", func(t *testing.T) {
		h := h.on(t)
		if out := h.ok("delete", "project", "beta"); strings.TrimSpace(out) != "project/beta deleted" {
			t.Errorf("delete printed %q", out)
		}
		if res := h.fails("get", "project", "beta"); !strings.Contains(res.Stderr, "not found") {
			t.Errorf("get of a deleted project:\n%s", res)
		}
		if res := h.fails("delete", "project", "beta"); !strings.Contains(res.Stderr, "not_found") {
			t.Errorf("second delete:\n%s", res)
		}
		h.ok("delete", "project", "beta", "--ignore-not-found")
		var list api.List
		if err := json.Unmarshal([]byte(h.ok("get", "projects", "-o", "json")), &list); err != nil {
			t.Fatal(err)
		}
		if got := objectNames(list.Items); !slices.Equal(got, []string{"alpha", "gamma"}) {
			t.Errorf("after delete, projects = %v", got)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		h := h.on(t)
		specTypo := h.writeFile("spec-typo.yaml", "kind: Project\nmetadata:\n  name: epsilon\nspec:\n  displayName: E\n  colour: red\n")
		if res := h.fails("apply", "-f", specTypo); !strings.Contains(res.Stderr, "colour") {
			t.Errorf("apply with an unknown spec field should name it:\n%s", res)
		}
		metaTypo := h.writeFile("meta-typo.yaml", "kind: Project\nmetadata:\n  name: epsilon\n  lables: {a: b}\n")
		if res := h.fails("apply", "-f", metaTypo); !strings.Contains(res.Stderr, "lables") {
			t.Errorf("apply with an unknown metadata field should name it:\n%s", res)
		}
		topTypo := h.writeFile("top-typo.yaml", "kind: Project\nmetadata: {name: epsilon}\nspecs: {displayName: E}\n")
		if res := h.fails("apply", "-f", topTypo); !strings.Contains(res.Stderr, "specs") {
			t.Errorf("apply with an unknown top-level field should name it:\n%s", res)
		}
		badName := h.writeFile("bad-name.yaml", "kind: Project\nmetadata: {name: Not_A_DNS_Label}\n")
		if res := h.fails("apply", "-f", badName); !strings.Contains(res.Stderr, "invalid_name") || !strings.Contains(res.Stderr, "Not_A_DNS_Label") {
			t.Errorf("apply with an invalid name should fail with invalid_name and quote it:\n%s", res)
		}
		// None of the rejected files changed anything.
		if res := h.fails("get", "project", "epsilon"); !strings.Contains(res.Stderr, "not found") {
			t.Errorf("a rejected apply created epsilon:\n%s", res)
		}
		if res := h.fails("get", "project", "no-such-project"); !strings.Contains(res.Stderr, "not found") {
			t.Errorf("get of a missing project:\n%s", res)
		}
		if res := h.fails("describe", "project", "no-such-project"); !strings.Contains(res.Stderr, "not found") {
			t.Errorf("describe of a missing project:\n%s", res)
		}
		if res := h.fails("get", "widgets"); !strings.Contains(res.Stderr, "not a resource type") {
			t.Errorf("get of an unknown type:\n%s", res)
		}
		if res := h.fails("apply", "-f", h.writeFile("missing-kind.yaml", "metadata: {name: x}\n")); !strings.Contains(res.Stderr, "kind") {
			t.Errorf("apply without kind:\n%s", res)
		}
		if res := h.fails("apply", "-f", "/does/not/exist.yaml"); !strings.Contains(res.Stderr, "/does/not/exist.yaml") {
			t.Errorf("apply of a missing file should name it:\n%s", res)
		}
	})

	t.Run("clean stop", func(t *testing.T) {
		code, err := n.Stop(10 * time.Second)
		if err != nil || code != 0 {
			t.Fatalf("SIGTERM: exit %d, %v; stderr:\n%s", code, err, n.Stderr().String())
		}
		checkNoToken(t, n)
	})
}

// addedModifiedDeleted reports whether types is ADDED, then one or more
// MODIFIED, then DELETED.
func addedModifiedDeleted(types []string) bool {
	n := len(types)
	if n < 3 || types[0] != "ADDED" || types[n-1] != "DELETED" {
		return false
	}
	for _, t := range types[1 : n-1] {
		if t != "MODIFIED" {
			return false
		}
	}
	return true
}

// lines splits output into its non-empty lines.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

// objectNames returns the names of objs in order (never nil).
func objectNames(objs []api.Object) []string {
	out := []string{}
	for _, o := range objs {
		out = append(out, o.Metadata.Name)
	}
	return out
}
