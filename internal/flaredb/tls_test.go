package flaredb_test

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/flaredb"
	"github.com/ultracloud/ultracloud/internal/flaredb/client"
	"github.com/ultracloud/ultracloud/internal/flaredb/flaredbtest"
	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
	"github.com/ultracloud/ultracloud/internal/runtime/pki"
	"github.com/ultracloud/ultracloud/internal/testkit"
)

// tlsClient returns a client of the given members built from cfg's TLS
// settings (closed at cleanup).
func tlsClient(t *testing.T, c *flaredbtest.Cluster, cfg client.Config, idx ...int) *client.Client {
	t.Helper()
	for _, i := range idx {
		cfg.Endpoints = append(cfg.Endpoints, c.Members[i].APIAddr)
	}
	cfg.ClusterID = c.ID
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 20 * time.Second
	}
	cl, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// refusedWrite tries a write with a short deadline and returns its error.
func refusedWrite(t *testing.T, cl *client.Client, key string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := cl.Txn(ctx, "", wire.Txn{Then: []wire.Op{putOp(key, "intruder")}})
	return err
}

// TestTLSCluster: three members with tls.auto from one CA replicate, serve
// clients holding a certificate from that CA (a follower forwards to the
// leader over TLS), and refuse clients without a certificate, with one
// from another CA, or in plaintext; a member whose certificate comes from
// another CA gets no Raft traffic even after it was added as a voter.
func TestTLSCluster(t *testing.T) {
	caCert, caKey, err := pki.GenerateCA(t.TempDir(), "flaredb test CA")
	if err != nil {
		t.Fatal(err)
	}
	c := flaredbtest.New(t, 4, flaredbtest.Options{Tweak: func(cfg *flaredb.Config) {
		cfg.AllowPlaintext = false
		cfg.TLS = flaredb.TLS{Auto: true, AutoCAFile: caCert, AutoCAKeyFile: caKey}
	}})
	voters := c.Voters()[:3]
	for i := range 3 {
		c.StartWith(i, c.Config(i, voters, nil))
	}
	for i := range 3 {
		c.WaitReady(i)
	}
	leader := c.WaitLeader()
	f := c.Follower(leader)

	// The member's files: issued from the CA, private to the owner.
	files, err := c.Members[f].Server.MemberTLS()
	if err != nil {
		t.Fatal(err)
	}
	if files.CAFile != caCert || files.CertFile != filepath.Join(c.Members[f].Dir, "tls", pki.MemberCertName) {
		t.Fatalf("member TLS files %+v", files)
	}
	for _, p := range []string{files.CertFile, files.KeyFile} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", p, fi, err)
		}
	}

	// A client with the member's certificate, knowing only a follower:
	// the follower forwards the write to the leader over TLS.
	cl := tlsClient(t, c, client.Config{CAFile: files.CAFile, CertFile: files.CertFile, KeyFile: files.KeyFile}, f)
	res := mustWrite(t, cl, "tls", "ok")
	if got := c.Members[f].Server.Stats().Forwarded; got < 1 {
		t.Fatalf("follower forwarded %d requests", got)
	}
	// Linearizable and stale reads on every member (Raft replicated it).
	for i := range 3 {
		ccert, ckey, err := pki.IssueCert(caCert, caKey, t.TempDir(), "reader", nil)
		if err != nil {
			t.Fatal(err)
		}
		tc, err := pki.ClientConfig(caCert, ccert, ckey)
		if err != nil {
			t.Fatal(err)
		}
		rc := tlsClient(t, c, client.Config{TLS: tc}, i)
		kv, found, _, err := rc.Get(context.Background(), "", []byte("tls"), client.ReadOptions{})
		if err != nil || !found || string(kv.Value) != "ok" || kv.ModRevision != res.Revision {
			t.Fatalf("member %d: linearizable read %+v %v %v", i, kv, found, err)
		}
		testkit.Eventually(t, 10*time.Second, "the write on member "+c.Members[i].ID, func() bool {
			kv, found, _, err := rc.Get(context.Background(), "", []byte("tls"), client.ReadOptions{Stale: true})
			return err == nil && found && string(kv.Value) == "ok"
		})
	}

	// Refused clients: plaintext, TLS without a certificate, a certificate
	// from another CA.
	plain := tlsClient(t, c, client.Config{RequestTimeout: 2 * time.Second}, leader)
	if err := refusedWrite(t, plain, "plain"); err == nil {
		t.Fatal("a plaintext client could write")
	} else {
		t.Logf("plaintext client: %v", err)
	}
	noCert := tlsClient(t, c, client.Config{CAFile: caCert, RequestTimeout: 2 * time.Second}, leader)
	if err := refusedWrite(t, noCert, "nocert"); err == nil {
		t.Fatal("a client without a certificate could write")
	} else {
		t.Logf("client without certificate: %v", err)
	}
	otherCA, otherKey, err := pki.GenerateCA(t.TempDir(), "other CA")
	if err != nil {
		t.Fatal(err)
	}
	ocert, okey, err := pki.IssueCert(otherCA, otherKey, t.TempDir(), "intruder", nil)
	if err != nil {
		t.Fatal(err)
	}
	// It trusts our CA, so it gets as far as presenting its certificate
	// (pki.ClientConfig presents it whatever CAs the server names). The
	// alert races with the server closing the connection, so the client
	// sees "unknown certificate authority" or a broken pipe; the pki tests
	// check the server's reason.
	wrongCA := tlsClient(t, c, client.Config{CAFile: caCert, CertFile: ocert, KeyFile: okey, RequestTimeout: 2 * time.Second}, leader)
	if err := refusedWrite(t, wrongCA, "wrongca"); err == nil {
		t.Fatal("a client with another CA's certificate could write")
	} else {
		t.Logf("client with another CA's certificate: %v", err)
	}
	// The refusal is TLS's: the API requires a certificate.
	pool, err := pki.LoadPool(caCert)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", c.Members[leader].APIAddr, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}})
	if err == nil {
		_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Fatalf("raw TLS without a certificate: %v, want certificate required", err)
	}

	// A member with a certificate from another CA: even once added to the
	// configuration (by an operator's mistake), it gets no Raft traffic
	// and cannot join through the API.
	ic := c.Config(3, nil, []string{c.Members[leader].APIAddr})
	ic.TLS = flaredb.TLS{Auto: true, AutoCAFile: otherCA, AutoCAKeyFile: otherKey}
	m3 := c.Members[3]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Members[leader].Server.AddMember(ctx, flaredb.Member{ID: m3.ID, RaftAddress: m3.RaftAddr, APIAddress: m3.APIAddr, Voter: true}); err != nil {
		t.Fatalf("add member: %v", err)
	}
	c.StartWith(3, ic)
	// The leader keeps dialling it; the intruder's layer refuses each
	// connection at the TLS handshake.
	testkit.Eventually(t, 15*time.Second, "refused Raft connections on the intruder", func() bool {
		return m3.Server.Stats().RefusedPeers > 0
	})
	select {
	case <-m3.Server.Ready():
		t.Fatal("member with another CA's certificate became ready")
	case <-time.After(2 * time.Second):
	}
	st, err := m3.Server.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.AppliedIndex != 0 || st.Leader.ID != "" || st.Revision != 0 {
		t.Fatalf("intruder got Raft state: %+v", st)
	}
	// Three of four voters still make a quorum.
	mustWrite(t, cl, "after-intruder", "ok")
	if err := c.Members[leader].Server.RemoveMember(ctx, m3.ID); err != nil {
		t.Fatalf("remove intruder: %v", err)
	}
	c.Stop(3)

	// Nothing the refused clients sent was written.
	for _, k := range []string{"plain", "nocert", "wrongca"} {
		_, found, _, err := cl.Get(context.Background(), "", []byte(k), client.ReadOptions{})
		if err != nil || found {
			t.Fatalf("%s: found %v, err %v", k, found, err)
		}
	}
}

// TestTLSLoneMemberCreatesCA: a lone member with tls.auto and no CA makes
// its own in dataDir/tls and serves only TLS clients.
func TestTLSLoneMemberCreatesCA(t *testing.T) {
	c := flaredbtest.StartCluster(t, 1, flaredbtest.Options{Tweak: func(cfg *flaredb.Config) {
		cfg.AllowPlaintext = false
		cfg.TLS.Auto = true
	}})
	for _, name := range []string{pki.CACertName, pki.CAKeyName, pki.MemberCertName, pki.MemberKeyName} {
		if fi, err := os.Stat(filepath.Join(c.Members[0].Dir, "tls", name)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", name, fi, err)
		}
	}
	files, err := c.Members[0].Server.MemberTLS()
	if err != nil {
		t.Fatal(err)
	}
	cl := tlsClient(t, c, client.Config{CAFile: files.CAFile, CertFile: files.CertFile, KeyFile: files.KeyFile}, 0)
	mustWrite(t, cl, "x", "y")
	// Watches (long-lived streams) work over TLS too.
	w, err := cl.Watch(context.Background(), "", []byte("w"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	mustWrite(t, cl, "w1", "v")
	select {
	case ev, ok := <-w.Events():
		if !ok || string(ev.KV.Key) != "w1" {
			t.Fatalf("watch event %+v %v (%v)", ev, ok, w.Err())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no watch event over TLS")
	}
	plain := tlsClient(t, c, client.Config{RequestTimeout: 2 * time.Second}, 0)
	if err := refusedWrite(t, plain, "plain"); err == nil {
		t.Fatal("plaintext client could write")
	}
}

func TestClientTLSConfigErrors(t *testing.T) {
	if _, err := client.New(client.Config{Endpoints: []string{"127.0.0.1:1"}, ClusterID: "c", CertFile: "x", KeyFile: "y"}); err == nil {
		t.Fatal("client certificate without CAFile accepted")
	}
	if _, err := client.New(client.Config{Endpoints: []string{"127.0.0.1:1"}, ClusterID: "c", CAFile: filepath.Join(t.TempDir(), "none")}); err == nil {
		t.Fatal("missing CAFile accepted")
	}
	if _, err := (flaredb.ServerWithConfig(flaredb.Config{TLS: flaredb.TLS{CAFile: "/nonexistent/ca", CertFile: "/nonexistent/c", KeyFile: "/nonexistent/k"}})).MemberTLS(); err == nil ||
		errors.Is(err, flaredb.ErrNotRunning) {
		t.Fatalf("member TLS with missing files: %v", err)
	}
}

// TestTLSAutoRenewal: a running tls.auto member re-issues its certificate
// once two thirds of its validity have passed, and new connections get the
// new one without a restart; with operator files it only warns.
func TestTLSAutoRenewal(t *testing.T) {
	c := flaredbtest.StartCluster(t, 1, flaredbtest.Options{Tweak: func(cfg *flaredb.Config) {
		cfg.AllowPlaintext = false
		cfg.TLS.Auto = true
	}})
	srv := c.Members[0].Server
	files, err := srv.MemberTLS()
	if err != nil {
		t.Fatal(err)
	}
	served := func() *big.Int {
		t.Helper()
		cfg, err := pki.ClientConfig(files.CAFile, files.CertFile, files.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg.NextProtos = []string{"h2"}
		conn, err := tls.Dial("tcp", c.Members[0].APIAddr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber
	}
	inFile := func() *big.Int {
		t.Helper()
		cert, err := pki.ReadCertFile(files.CertFile)
		if err != nil {
			t.Fatal(err)
		}
		return cert.SerialNumber
	}
	first := inFile()
	if served().Cmp(first) != 0 {
		t.Fatal("the member does not serve its certificate file")
	}
	cl := tlsClient(t, c, client.Config{CAFile: files.CAFile, CertFile: files.CertFile, KeyFile: files.KeyFile}, 0)
	mustWrite(t, cl, "before", "v")

	log := slog.New(slog.DiscardHandler)
	renew := flaredb.MemberCertRenewal(srv.Config())
	if pki.CheckRenewal(log, files.CertFile, renew, time.Now()) || inFile().Cmp(first) != 0 {
		t.Fatal("a fresh certificate was renewed")
	}
	later := time.Now().Add(pki.MemberValidity * 3 / 4)
	if pki.CheckRenewal(log, files.CertFile, nil, later) || inFile().Cmp(first) != 0 {
		t.Fatal("operator files (no renewal) were replaced")
	}
	if !pki.CheckRenewal(log, files.CertFile, renew, later) {
		t.Fatal("a certificate past two thirds of its validity was not renewed")
	}
	renewed := inFile()
	if renewed.Cmp(first) == 0 {
		t.Fatal("renewal left the same certificate")
	}
	testkit.Eventually(t, 5*time.Second, "new connections to get the renewed certificate", func() bool { return served().Cmp(renewed) == 0 })
	mustWrite(t, cl, "after", "v")
}
