package nodeid_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/node"
	"github.com/ultracloud/ultracloud/internal/node/nodetest"
	"github.com/ultracloud/ultracloud/internal/runtime/nodeid"
	"github.com/ultracloud/ultracloud/internal/testkit"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
	"github.com/ultracloud/ultracloud/pkg/client"
	"github.com/ultracloud/ultracloud/pkg/client/iamclient"
)

// controlPlane starts an in-process node running iam (the real wiring).
func controlPlane(t *testing.T) *nodetest.Node {
	t.Helper()
	return nodetest.Start(t, nodetest.Options{Tune: func(c *node.Config) {
		c.Roles = []string{"flaredb", "iam"}
	}})
}

// createCredential creates node name's credential and writes its join
// token to a file, returning the file's path.
func createCredential(t *testing.T, cp *nodetest.Node, name, dir string) string {
	t.Helper()
	o, err := cp.Admin.Resources(iamv1.NodeCredentialCollection, "").Create(t.Context(),
		&api.Object{Metadata: api.ObjectMeta{Name: name}, Spec: json.RawMessage(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	var st iamv1.NodeCredentialStatus
	if err := json.Unmarshal(o.Status, &st); err != nil || st.JoinToken == "" {
		t.Fatalf("no join token in the create response: %s %v", o.Status, err)
	}
	path := filepath.Join(dir, "join-token")
	if err := os.WriteFile(path, []byte(st.JoinToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func newIdentity(t *testing.T, name, dataDir, joinFile string, endpoints ...string) *nodeid.Identity {
	t.Helper()
	id, err := nodeid.New(nodeid.Config{Node: name, DataDir: dataDir, Endpoints: endpoints, JoinTokenFile: joinFile,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// asNode returns an SDK client of endpoint authenticated by id.
func asNode(t *testing.T, endpoint string, id *nodeid.Identity) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Endpoint: endpoint, TokenSource: id})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestEnrollThenRestartWithoutJoinToken: a node enrolls from its join
// token file (the first endpoint is down: it moves on to the next), saves
// its credential with mode 0600, and acts as node:NAME within the node
// role; a new identity on the same data directory (a restart) works with
// the join token file gone; a credential file others can read is refused.
func TestEnrollThenRestartWithoutJoinToken(t *testing.T) {
	cp := controlPlane(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	dataDir := t.TempDir()
	joinFile := createCredential(t, cp, "worker1", t.TempDir())
	down := fmt.Sprintf("http://127.0.0.1:%d", testkit.FreePort(t))

	id := newIdentity(t, "worker1", dataDir, joinFile, down, cp.APIURL())
	cred, err := id.Obtain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cred.Node != "worker1" || cred.Endpoint != cp.APIURL() || !strings.HasPrefix(cred.NodeKey, iamv1.NodeKeyPrefix) {
		t.Fatalf("credential %+v", cred)
	}
	fi, err := os.Stat(id.CredentialPath())
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credential file: %v %v, want mode 0600", fi.Mode().Perm(), err)
	}
	c := asNode(t, id.Endpoint(), id)
	me, err := iamclient.New(c).WhoAmI(ctx)
	if err != nil || me.Principal != "node:worker1" {
		t.Fatalf("whoami: %+v %v", me, err)
	}
	if id.TokenExpiry().Before(time.Now()) {
		t.Fatalf("token expiry %s is not in the future", id.TokenExpiry())
	}
	if _, err := c.Status(ctx); err != nil {
		t.Fatalf("node status: %v", err)
	}
	if _, err := c.Resources(iamv1.UserCollection, "").List(ctx, client.ListOptions{}); !client.HasCode(err, api.CodeForbidden) {
		t.Fatalf("listing users as the node: %v, want 403", err)
	}
	o, err := cp.Admin.Resources(iamv1.NodeCredentialCollection, "").Get(ctx, "worker1")
	if err != nil || !strings.Contains(string(o.Status), iamv1.NodeCredentialEnrolled) {
		t.Fatalf("credential object after enrollment: %+v %v", o, err)
	}

	// Restart: a new identity on the same data directory, no join token.
	if err := os.Remove(joinFile); err != nil {
		t.Fatal(err)
	}
	again := newIdentity(t, "worker1", dataDir, joinFile, cp.APIURL())
	if _, err := again.Obtain(ctx); err != nil {
		t.Fatalf("restart without the join token: %v", err)
	}
	me, err = iamclient.New(asNode(t, cp.APIURL(), again)).WhoAmI(ctx)
	if err != nil || me.Principal != "node:worker1" {
		t.Fatalf("whoami after the restart: %+v %v", me, err)
	}

	// Others may read the file: refused, saying how to fix it.
	if err := os.Chmod(id.CredentialPath(), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = newIdentity(t, "worker1", dataDir, joinFile, cp.APIURL()).Obtain(ctx)
	if !errors.Is(err, nodeid.ErrCredentialMode) || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("credential file with mode 0644: %v, want ErrCredentialMode", err)
	}
}

// TestRefusedJoinTokenIsPermanent: a wrong join token fails at once (no
// retrying) with what the operator must do; no join token at all says the
// same; an unreachable control plane is retried until the context ends.
func TestRefusedJoinTokenIsPermanent(t *testing.T) {
	cp := controlPlane(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	createCredential(t, cp, "worker2", t.TempDir())
	wrong := filepath.Join(dir, "wrong")
	if err := os.WriteFile(wrong, []byte(iamv1.JoinTokenPrefix+"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := newIdentity(t, "worker2", t.TempDir(), wrong, cp.APIURL()).Obtain(ctx)
	if !errors.Is(err, nodeid.ErrJoinRefused) || !strings.Contains(err.Error(), "ultracloud iam node-credential create worker2") {
		t.Fatalf("wrong join token: %v, want ErrJoinRefused naming the create command", err)
	}
	_, err = newIdentity(t, "worker2", t.TempDir(), filepath.Join(dir, "missing"), cp.APIURL()).Obtain(ctx)
	if !errors.Is(err, nodeid.ErrNoJoinToken) {
		t.Fatalf("no join token: %v, want ErrNoJoinToken", err)
	}
	short, stop := context.WithTimeout(ctx, time.Second)
	defer stop()
	joinFile := createCredential(t, cp, "worker3", t.TempDir())
	down := fmt.Sprintf("http://127.0.0.1:%d", testkit.FreePort(t))
	_, err = newIdentity(t, "worker3", t.TempDir(), joinFile, down).Obtain(short)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nodeid.ErrJoinRefused) {
		t.Fatalf("unreachable control plane: %v, want retries until the deadline", err)
	}
}

// TestTokensRenewAndRevocation: Invalidate makes the next request use a
// new token; after the credential is deleted the node's requests fail
// with ErrKeyRefused (the server refuses the token, the SDK renews once,
// the key is refused).
func TestTokensRenewAndRevocation(t *testing.T) {
	cp := controlPlane(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	id := newIdentity(t, "worker4", t.TempDir(), createCredential(t, cp, "worker4", t.TempDir()), cp.APIURL())
	if _, err := id.Obtain(ctx); err != nil {
		t.Fatal(err)
	}
	first, err := id.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := id.Token(ctx); again != first {
		t.Fatal("a fresh token was not reused")
	}
	id.Invalidate(first)
	second, err := id.Token(ctx)
	if err != nil || second == first {
		t.Fatalf("after Invalidate: same token %v, err %v", second == first, err)
	}
	c := asNode(t, cp.APIURL(), id)
	if _, err := cp.Admin.Resources(iamv1.NodeCredentialCollection, "").Delete(ctx, "worker4", 0); err != nil {
		t.Fatal(err)
	}
	_, err = iamclient.New(c).WhoAmI(ctx)
	if !errors.Is(err, nodeid.ErrKeyRefused) || id.KeyError() == nil {
		t.Fatalf("whoami after the credential was deleted: %v, want ErrKeyRefused", err)
	}
}
