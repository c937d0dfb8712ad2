package iam

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/internal/testkit"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
	"github.com/ultracloud/ultracloud/pkg/client"
	"github.com/ultracloud/ultracloud/pkg/client/iamclient"
)

// nodeCredential creates a NodeCredential as the break-glass admin and
// returns the object and the join token its create response carries.
func (e *testEnv) nodeCredential(name, ttl string) (*api.Object, string) {
	e.t.Helper()
	o := e.create(iamv1.NodeCredentialCollection, "", name, iamv1.NodeCredentialSpec{JoinTokenTTL: ttl})
	var st iamv1.NodeCredentialStatus
	if err := json.Unmarshal(o.Status, &st); err != nil {
		e.t.Fatal(err)
	}
	return o, st.JoinToken
}

func enrollBody(node, token string) string {
	return fmt.Sprintf(`{"node":%q,"joinToken":%q}`, node, token)
}

func nodeKeyBody(node, key string) string {
	return fmt.Sprintf(`{"grantType":"node_key","node":%q,"nodeKey":%q}`, node, key)
}

// enroll enrolls node and returns its key, failing the test otherwise.
func (e *testEnv) enroll(node, token string) string {
	e.t.Helper()
	r := e.do("POST", iamv1.NodeEnrollPath, "", enrollBody(node, token))
	if r.code != http.StatusOK {
		e.t.Fatalf("enroll %s: %d %s", node, r.code, r.body)
	}
	var resp iamv1.NodeEnrollResponse
	if err := json.Unmarshal([]byte(r.body), &resp); err != nil {
		e.t.Fatal(err)
	}
	if !strings.HasPrefix(resp.NodeKey, iamv1.NodeKeyPrefix) || resp.Principal != "node:"+node {
		e.t.Fatalf("enroll %s answered %+v", node, resp)
	}
	return resp.NodeKey
}

// nodeToken exchanges a node key for an access token.
func (e *testEnv) nodeToken(node, key string) iamv1.TokenResponse {
	e.t.Helper()
	r := e.do("POST", iamv1.TokenPath, "", nodeKeyBody(node, key))
	if r.code != http.StatusOK {
		e.t.Fatalf("node key exchange for %s: %d %s", node, r.code, r.body)
	}
	var tr iamv1.TokenResponse
	if err := json.Unmarshal([]byte(r.body), &tr); err != nil {
		e.t.Fatal(err)
	}
	return tr
}

func (e *testEnv) credentialStatus(name string) iamv1.NodeCredentialStatus {
	e.t.Helper()
	o, err := e.admin.Resources(iamv1.NodeCredentialCollection, "").Get(e.ctx(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	var st iamv1.NodeCredentialStatus
	if err := json.Unmarshal(o.Status, &st); err != nil {
		e.t.Fatal(err)
	}
	return st
}

// TestJoinTokenShownOnlyAtCreate: the create response carries the join
// token; get, list and watch never do, and the spec is validated.
func TestJoinTokenShownOnlyAtCreate(t *testing.T) {
	e := newTestEnv(t)
	o, tok := e.nodeCredential("worker1", "")
	if !strings.HasPrefix(tok, iamv1.JoinTokenPrefix) || len(tok) != 4+43 {
		t.Fatalf("join token %q: want ucj_ and 256 bits", tok)
	}
	var st iamv1.NodeCredentialStatus
	_ = json.Unmarshal(o.Status, &st)
	if st.Phase != iamv1.NodeCredentialPending || st.JoinTokenExpiresAt == nil ||
		!st.JoinTokenExpiresAt.Equal(e.clock.Now().Add(time.Hour).Truncate(time.Second)) {
		t.Fatalf("create response status %+v, want Pending expiring in 1h", st)
	}
	var spec iamv1.NodeCredentialSpec
	_ = json.Unmarshal(o.Spec, &spec)
	if spec.JoinTokenTTL != "1h0m0s" {
		t.Errorf("default joinTokenTTL %q", spec.JoinTokenTTL)
	}
	for _, path := range []string{"/v1/nodecredentials/worker1", "/v1/nodecredentials"} {
		r := e.do("GET", path, bootstrapToken, "")
		if r.code != 200 || strings.Contains(r.body, tok) || strings.Contains(r.body, "joinToken\"") {
			t.Errorf("GET %s: %d, holds the join token: %s", path, r.code, r.body)
		}
	}
	w, err := e.admin.Resources(iamv1.NodeCredentialCollection, "").Watch(e.ctx(), client.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ev := <-w.Events()
	w.Stop()
	if ev.Object == nil || strings.Contains(string(ev.Object.Status), tok) {
		t.Errorf("watch event %+v holds the join token or no object", ev)
	}
	// Validation and server-owned status.
	for _, c := range []struct{ ttl, want string }{{"30s", "between"}, {"25h", "between"}, {"soon", "not a duration"}} {
		r := e.do("POST", "/v1/nodecredentials", bootstrapToken, `{"metadata":{"name":"bad"},"spec":{"joinTokenTTL":"`+c.ttl+`"}}`)
		if p := r.problem(); r.code != 400 || p.Field != "spec.joinTokenTTL" || !strings.Contains(p.Detail, c.want) {
			t.Errorf("joinTokenTTL %q: %d %s", c.ttl, r.code, r.body)
		}
	}
	if r := e.do("PUT", "/v1/nodecredentials/worker1/status", bootstrapToken, `{"metadata":{"name":"worker1"},"status":{"phase":"Enrolled"}}`); r.code != 400 {
		t.Errorf("status write: %d %s", r.code, r.body)
	}
	if r := e.do("PUT", "/v1/nodecredentials/worker1", bootstrapToken, `{"metadata":{"name":"worker1"},"spec":{"joinTokenTTL":"2h"}}`); r.code != 400 {
		t.Errorf("changing joinTokenTTL: %d %s", r.code, r.body)
	}
}

// TestEnrollOnce: a join token enrolls its node once; the credential then
// says Enrolled; a second use, a wrong token, another node's name, an
// unknown node and a malformed token all get the same 401, and every
// attempt is audited.
func TestEnrollOnce(t *testing.T) {
	e := newTestEnv(t)
	start := e.clock.Now()
	_, tok := e.nodeCredential("worker1", "")
	_, tok2 := e.nodeCredential("worker2", "")
	wrong := e.do("POST", iamv1.NodeEnrollPath, "", enrollBody("worker1", tok2))
	key := e.enroll("worker1", tok)
	st := e.credentialStatus("worker1")
	if st.Phase != iamv1.NodeCredentialEnrolled || st.EnrolledAt == nil || st.JoinTokenExpiresAt != nil || st.JoinToken != "" {
		t.Fatalf("status after enrollment %+v", st)
	}
	refusals := map[string]response{
		"wrong token":  wrong,
		"second use":   e.do("POST", iamv1.NodeEnrollPath, "", enrollBody("worker1", tok)),
		"unknown node": e.do("POST", iamv1.NodeEnrollPath, "", enrollBody("worker9", tok2)),
		"malformed":    e.do("POST", iamv1.NodeEnrollPath, "", enrollBody("worker2", "x"+tok2)),
		"bad name":     e.do("POST", iamv1.NodeEnrollPath, "", enrollBody("Worker_2", tok2)),
		"node key":     e.do("POST", iamv1.NodeEnrollPath, "", enrollBody("worker1", key)),
	}
	detail := refusals["second use"].problem().Detail
	for what, r := range refusals {
		if r.code != 401 || r.problem().Code != api.CodeUnauthenticated || r.problem().Detail != detail {
			t.Errorf("%s: %d %s (want the one 401 %q)", what, r.code, r.body, detail)
		}
	}
	// worker2's token still works after the failed attempts.
	e.enroll("worker2", tok2)
	if tr := e.nodeToken("worker1", key); tr.Principal != "node:worker1" || tr.RefreshToken != "" {
		t.Fatalf("node token %+v", tr)
	}
	var recs []iamv1.AuditRecord
	testkit.Eventually(t, 5*time.Second, "the enroll attempts in the audit log", func() bool {
		l, err := iamclient.New(e.admin).Audit(e.ctx(), iamclient.AuditOptions{Since: start, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		recs = recs[:0]
		for _, r := range l.Items {
			if r.Verb == iamv1.AuditVerbEnroll {
				recs = append(recs, r)
			}
		}
		return len(recs) == 8
	})
	ok, failed := 0, 0
	for _, r := range recs {
		switch {
		case r.Code == 200 && strings.HasPrefix(r.Principal, "node:") && r.Collection == iamv1.NodeCredentialCollection:
			ok++
		case r.Code == 401 && r.Principal == "":
			failed++
		default:
			t.Errorf("audit record %+v", r)
		}
	}
	if ok != 2 || failed != 6 {
		t.Errorf("audited %d successful and %d failed enrollments, want 2 and 6", ok, failed)
	}
}

// TestExpiredJoinTokenRefused: a join token past its TTL is the same 401.
func TestExpiredJoinTokenRefused(t *testing.T) {
	e := newTestEnv(t)
	_, tok := e.nodeCredential("worker1", "1m")
	e.clock.Advance(61 * time.Second)
	if r := e.do("POST", iamv1.NodeEnrollPath, "", enrollBody("worker1", tok)); r.code != 401 {
		t.Fatalf("expired token: %d %s", r.code, r.body)
	}
	if st := e.credentialStatus("worker1"); st.Phase != iamv1.NodeCredentialPending {
		t.Fatalf("status after the refused enrollment %+v", st)
	}
}

// TestConcurrentEnrollOnlyOneWins: many enrollments with the same token at
// once, in several rounds: each time exactly one gets a node key, and it
// is the key that works.
func TestConcurrentEnrollOnlyOneWins(t *testing.T) {
	e := newTestEnv(t, func(_ *Config, o *Options) {
		o.LoginPerIP = RateLimit{Burst: 1000, Per: time.Millisecond}
		o.LoginPerUser = RateLimit{Burst: 1000, Per: time.Millisecond}
	})
	const rounds, n = 5, 16
	for round := range rounds {
		name := fmt.Sprintf("worker%d", round)
		_, tok := e.nodeCredential(name, "")
		var wg sync.WaitGroup
		results := make([]response, n)
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				results[i] = e.do("POST", iamv1.NodeEnrollPath, "", enrollBody(name, tok))
			})
		}
		close(start)
		wg.Wait()
		var keys []string
		for _, r := range results {
			switch r.code {
			case 200:
				var resp iamv1.NodeEnrollResponse
				_ = json.Unmarshal([]byte(r.body), &resp)
				keys = append(keys, resp.NodeKey)
			case 401:
			default:
				t.Errorf("enroll answered %d %s", r.code, r.body)
			}
		}
		if len(keys) != 1 {
			t.Fatalf("round %d: %d of %d concurrent enrollments succeeded, want exactly 1", round, len(keys), n)
		}
		e.nodeToken(name, keys[0])
	}
}

// TestNodeRole: a node's token acts as node:NAME with the built-in node
// role: it reads and writes the status of other components' resources and
// reads node status, and is refused everything else, iam above all.
func TestNodeRole(t *testing.T) {
	e := newTestEnv(t)
	e.create(iamv1.ProjectCollection, "", "alpha", iamv1.ProjectSpec{})
	e.create("widgets", "alpha", "w1", widgetSpec{Size: 1})
	e.create(iamv1.ServiceAccountCollection, "alpha", "ci", iamv1.ServiceAccountSpec{})
	e.create(iamv1.AccessKeyCollection, "alpha", "ci-key", iamv1.AccessKeySpec{ServiceAccount: "ci"})
	_, tok := e.nodeCredential("worker1", "")
	tr := e.nodeToken("worker1", e.enroll("worker1", tok))
	node := tr.AccessToken

	me, err := iamclient.New(e.clientWith(node)).WhoAmI(e.ctx())
	if err != nil || me.Principal != "node:worker1" || me.Superuser {
		t.Fatalf("whoami: %+v %v", me, err)
	}
	allowed := []struct{ method, path, body string }{
		{"GET", "/v1/projects/alpha/widgets/w1", ""},
		{"GET", "/v1/projects/alpha/widgets", ""},
		{"GET", "/v1/widgets", ""},
		{"PUT", "/v1/projects/alpha/widgets/w1/status", `{"metadata":{"name":"w1"},"status":{"ready":true}}`},
	}
	for _, c := range allowed {
		if r := e.do(c.method, c.path, node, c.body); r.code != 200 {
			t.Errorf("node %s %s: %d %s, want 200", c.method, c.path, r.code, r.body)
		}
	}
	// On a node-bound kind it reaches only what is bound to worker1.
	e.create("slots", "alpha", "mine", slotSpec{Host: "worker1"})
	e.create("slots", "alpha", "theirs", slotSpec{Host: "worker2"})
	if r := e.do("GET", "/v1/slots", node, ""); r.code != 200 || !strings.Contains(r.body, `"mine"`) || strings.Contains(r.body, `"theirs"`) {
		t.Errorf("node lists slots: %d %s, want only mine", r.code, r.body)
	}
	for path, want := range map[string]int{"/v1/projects/alpha/slots/mine": 200, "/v1/projects/alpha/slots/theirs": 404} {
		if r := e.do("GET", path, node, ""); r.code != want {
			t.Errorf("node GET %s: %d %s, want %d", path, r.code, r.body, want)
		}
	}
	if r := e.do("PUT", "/v1/projects/alpha/slots/theirs/status", node, `{"status":{"ready":true}}`); r.code != 404 {
		t.Errorf("node writes the status of another node's slot: %d %s, want 404", r.code, r.body)
	}
	refused := []struct{ method, path, body string }{
		{"POST", "/v1/projects/alpha/widgets", `{"metadata":{"name":"w2"},"spec":{}}`},
		{"PUT", "/v1/projects/alpha/widgets/w1", `{"metadata":{"name":"w1"},"spec":{"size":2}}`},
		{"DELETE", "/v1/projects/alpha/widgets/w1", ""},
		{"GET", "/v1/users", ""},
		{"GET", "/v1/users/admin", ""},
		{"POST", "/v1/projects", `{"metadata":{"name":"mine"},"spec":{}}`},
		{"GET", "/v1/projects/alpha", ""},
		{"GET", "/v1/projects/alpha/accesskeys", ""},
		{"GET", "/v1/projects/alpha/serviceaccounts/ci", ""},
		{"GET", "/v1/roles", ""},
		{"GET", "/v1/clusterrolebindings", ""},
		{"POST", "/v1/clusterrolebindings", `{"metadata":{"name":"x"},"spec":{"role":"admin","principal":"user:admin"}}`},
		{"PUT", "/v1/projects/alpha/status", `{"metadata":{"name":"alpha"},"status":{"phase":"Terminating"}}`},
		{"POST", iamv1.RotateSigningKeyPath, "{}"},
		{"GET", iamv1.AuditPath, ""},
		{"GET", "/v1/nodecredentials", ""},
		{"GET", "/v1/nodecredentials/worker1", ""},
		{"POST", "/v1/nodecredentials", `{"metadata":{"name":"worker2"},"spec":{}}`},
		{"DELETE", "/v1/nodecredentials/worker1", ""},
	}
	for _, c := range refused {
		if r := e.do(c.method, c.path, node, c.body); r.code != 403 && r.code != 404 {
			t.Errorf("node %s %s: %d %s, want 403 or 404", c.method, c.path, r.code, r.body)
		}
	}
	// Lists across projects show only what it may list: no projects, no
	// access keys (an empty list, as for anyone without the permission).
	for _, path := range []string{"/v1/projects", "/v1/accesskeys", "/v1/serviceaccounts"} {
		if r := e.do("GET", path, node, ""); r.code != 200 || strings.Contains(r.body, `"name"`) {
			t.Errorf("node lists %s: %d %s, want an empty list", path, r.code, r.body)
		}
	}
	// Decisions the HTTP routes above do not reach (node status lives on
	// the node, not in iam's test API).
	pol := e.iam.Policy()
	pr := apiserver.Principal{Name: "node:worker1"}
	for perm, want := range map[string]bool{
		iamv1.PermissionNodeStatus: true, "test.widgets.watch": true, "prismnet.ports.updatestatus": true,
		"iam.users.list": false, "iam.projects.create": false, "iam.accesskeys.get": false, iamv1.PermissionRotateSigningKey: false,
		"iam.nodecredentials.create": false, iamv1.PermissionAuditList: false, "test.widgets.create": false,
		"test.widgets.update": false, "test.widgets.delete": false,
	} {
		p, _ := ParsePermission(perm)
		if got := pol.Allowed(context.Background(), pr, p, "alpha"); got != want {
			t.Errorf("node %s in alpha: %v, want %v", perm, got, want)
		}
	}
	// Node principals cannot be bound (the role is fixed in code).
	if r := e.do("POST", "/v1/clusterrolebindings", bootstrapToken, `{"metadata":{"name":"n"},"spec":{"role":"admin","principal":"node:worker1"}}`); r.code != 400 {
		t.Errorf("binding a node principal: %d %s", r.code, r.body)
	}
	// Only admins manage node credentials: a member may not.
	e.user("alice", "alice-password-1")
	e.bind("alice", "member", "user:alice", "")
	_, at := e.login("alice", "alice-password-1")
	if r := e.do("POST", "/v1/nodecredentials", at.AccessToken, `{"metadata":{"name":"worker3"},"spec":{}}`); r.code != 403 {
		t.Errorf("member creating a node credential: %d %s", r.code, r.body)
	}
}

// TestDeletingNodeCredentialRevokesTheNode: once the credential is
// deleted, the node's current token is refused at once, its key no longer
// exchanges, and its secret records are gone; a credential recreated under
// the same name does not revive the old key.
func TestDeletingNodeCredentialRevokesTheNode(t *testing.T) {
	e := newTestEnv(t)
	_, tok := e.nodeCredential("worker1", "")
	key := e.enroll("worker1", tok)
	node := e.nodeToken("worker1", key).AccessToken
	if r := e.do("GET", iamv1.WhoAmIPath, node, ""); r.code != 200 {
		t.Fatalf("whoami before the delete: %d %s", r.code, r.body)
	}
	if _, err := e.admin.Resources(iamv1.NodeCredentialCollection, "").Delete(e.ctx(), "worker1", 0); err != nil {
		t.Fatal(err)
	}
	if r := e.do("GET", iamv1.WhoAmIPath, node, ""); r.code != 401 {
		t.Fatalf("the deleted node's token: %d %s, want 401", r.code, r.body)
	}
	if r := e.do("POST", iamv1.TokenPath, "", nodeKeyBody("worker1", key)); r.code != 401 {
		t.Fatalf("the deleted node's key: %d %s, want 401", r.code, r.body)
	}
	for _, k := range []string{nodeJoinPrefix, nodeKeyPrefix} {
		kvs, _, err := e.store.Range(e.ctx(), []byte(k), prefixEnd(k), 0)
		if err != nil || len(kvs) != 0 {
			t.Errorf("%s holds %d records after the delete (%v)", k, len(kvs), err)
		}
	}
	_, tok2 := e.nodeCredential("worker1", "")
	if r := e.do("POST", iamv1.TokenPath, "", nodeKeyBody("worker1", key)); r.code != 401 {
		t.Fatalf("the old key after recreating: %d %s", r.code, r.body)
	}
	if r := e.do("GET", iamv1.WhoAmIPath, node, ""); r.code != 401 {
		t.Fatalf("the old token after recreating (pending): %d %s", r.code, r.body)
	}
	e.nodeToken("worker1", e.enroll("worker1", tok2))
	if r := e.do("GET", iamv1.WhoAmIPath, node, ""); r.code != 401 {
		t.Fatalf("the old token after re-enrolling (another UID): %d %s", r.code, r.body)
	}
}

// TestComponentSystemGrants: a component's declared system principal gets
// tokens and exactly its permissions; malformed declarations and attempts
// to redefine iam's own principals are refused.
func TestComponentSystemGrants(t *testing.T) {
	e := newTestEnv(t)
	pol := e.iam.Policy()
	if _, err := e.iam.SystemTokenSource("test-hosts")(e.ctx()); err == nil {
		t.Fatal("an undeclared system principal got a token")
	}
	for _, bad := range []map[string][]string{
		{"hosts": {"test.widgets.get"}},
		{"system:Bad_Name": {"test.widgets.get"}},
		{"system:test-hosts": {"not a pattern"}},
		{"system:iam-projects": {"*.*.*"}},
	} {
		if err := pol.SetSystemGrants(bad); err == nil {
			t.Errorf("SetSystemGrants(%v) was accepted", bad)
		}
	}
	if err := pol.SetSystemGrants(map[string][]string{"system:test-hosts": {"test.widgets.get", "test.widgets.list"}}); err != nil {
		t.Fatal(err)
	}
	tok, err := e.iam.SystemTokenSource("test-hosts")(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	e.create(iamv1.ProjectCollection, "", "alpha", iamv1.ProjectSpec{})
	e.create("widgets", "alpha", "w1", widgetSpec{Size: 1})
	if r := e.do("GET", "/v1/widgets", tok, ""); r.code != 200 || !strings.Contains(r.body, `"w1"`) {
		t.Errorf("system:test-hosts lists widgets: %d %s", r.code, r.body)
	}
	if r := e.do("DELETE", "/v1/projects/alpha/widgets/w1", tok, ""); r.code != 403 && r.code != 404 {
		t.Errorf("system:test-hosts deletes a widget: %d %s", r.code, r.body)
	}
	// iam's own principal keeps working.
	if _, err := e.iam.SystemTokenSource("iam-projects")(e.ctx()); err != nil {
		t.Fatal(err)
	}
}
