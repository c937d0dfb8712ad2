package chainfire_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ultracloud/ultracloud/internal/chainfire"
	"github.com/ultracloud/ultracloud/internal/chainfire/chainfiretest"
	"github.com/ultracloud/ultracloud/internal/runtime/pki"
	"github.com/ultracloud/ultracloud/internal/testkit"
)

// TestAutoTLSClusterWithClientCertAuth: three members with TLS on client
// and peer URLs from one generated cluster CA and client certificate
// authentication; a client without a certificate is refused.
func TestAutoTLSClusterWithClientCertAuth(t *testing.T) {
	caDir := t.TempDir()
	caCert, caKey, err := chainfire.GenerateCA(caDir, "test CA")
	if err != nil {
		t.Fatal(err)
	}
	ms := chainfiretest.Specs(t, "https", "t1", "t2", "t3")
	ic := chainfiretest.InitialCluster(ms)
	var members []*chainfiretest.Member
	var dirs []string
	for _, s := range ms {
		dir := t.TempDir()
		dirs = append(dirs, dir)
		cfg := chainfiretest.Config(dir, s, ic)
		cfg.AllowPlaintext = false
		cfg.TLS = chainfire.TLS{Auto: true, AutoCAFile: caCert, AutoCAKeyFile: caKey, ClientCertAuth: true}
		members = append(members, chainfiretest.Start(t, cfg))
	}
	for _, m := range members {
		m.WaitReady(t)
	}

	// Keys and certificates are private to the owner.
	for _, p := range []string{caCert, caKey, filepath.Join(dirs[0], "tls", chainfire.MemberCertName), filepath.Join(dirs[0], "tls", chainfire.MemberKeyName)} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", p, fi.Mode().Perm())
		}
	}

	// The in-process client (member certificate) works.
	c, err := members[0].Server.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Put(ctxT(t, 10*time.Second), "/tls", "ok"); err != nil {
		t.Fatalf("put with member client: %v", err)
	}
	testkit.Eventually(t, 20*time.Second, "/tls on t3 through its client certificate", func() bool {
		c3, err := members[2].Server.Client()
		if err != nil {
			return false
		}
		defer c3.Close()
		r, err := c3.Get(ctxT(t, 2*time.Second), "/tls", clientv3.WithSerializable())
		return err == nil && len(r.Kvs) == 1 && string(r.Kvs[0].Value) == "ok"
	})

	// A client that trusts the CA but has no certificate is refused.
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(caCert)
	pool.AppendCertsFromPEM(pem)
	noCert := newClient(t, clientv3.Config{
		Endpoints:   []string{ms[0].ClientURL},
		TLS:         &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		DialTimeout: 2 * time.Second,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, err = noCert.Put(ctx, "/tls", "intruder")
	cancel()
	if err == nil {
		t.Fatal("a client without a certificate could write")
	}
	t.Logf("client without certificate: %v", err)
	// The refusal is the TLS handshake's: certificate required.
	conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ms[0].ClientPort), &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}})
	if err == nil {
		conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if !chainfire.ErrorContains(err, "certificate required") {
		t.Fatalf("raw TLS connection without a certificate: err = %v, want certificate required", err)
	}

	// A certificate from another CA is refused as well.
	otherDir := t.TempDir()
	otherCA, otherKey, err := chainfire.GenerateCA(otherDir, "other CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := chainfire.IssueMemberCert(otherCA, otherKey, otherDir, "intruder", nil)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := (transport.TLSInfo{CertFile: cert, KeyFile: key, TrustedCAFile: caCert}).ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	wrongCA := newClient(t, clientv3.Config{Endpoints: []string{ms[0].ClientURL}, TLS: tlsCfg, DialTimeout: 2 * time.Second})
	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
	_, err = wrongCA.Put(ctx, "/tls", "intruder")
	cancel()
	if err == nil {
		t.Fatal("a client with a certificate from another CA could write")
	}

	// Nothing was written by the refused clients.
	r, err := c.Get(ctxT(t, 5*time.Second), "/tls")
	if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "ok" {
		t.Fatalf("get /tls: %v %v", r, err)
	}
}

// TestAutoTLSCreatesCAInDataDir: a lone member with tls.auto and no CA
// given makes its own CA in dataDir/tls and serves https.
func TestAutoTLSCreatesCAInDataDir(t *testing.T) {
	dir := t.TempDir()
	ms := chainfiretest.Specs(t, "https", "lone")
	cfg := chainfiretest.Config(dir, ms[0], nil)
	cfg.AllowPlaintext = false
	cfg.TLS.Auto = true
	m := chainfiretest.StartReady(t, cfg)
	for _, name := range []string{chainfire.CACertName, chainfire.CAKeyName, chainfire.MemberCertName, chainfire.MemberKeyName} {
		if fi, err := os.Stat(filepath.Join(dir, "tls", name)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", name, fi, err)
		}
	}
	c, err := m.Server.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Put(ctxT(t, 5*time.Second), "/x", "y"); err != nil {
		t.Fatal(err)
	}

	// A renewed certificate (what keepCertsRenewed does once two thirds
	// of the validity have passed) is served from the next handshake on:
	// etcd reads the files at every handshake.
	certFile := filepath.Join(dir, "tls", chainfire.MemberCertName)
	served := func() string {
		t.Helper()
		pool, err := pki.LoadPool(filepath.Join(dir, "tls", chainfire.CACertName))
		if err != nil {
			t.Fatal(err)
		}
		u, err := url.Parse(cfg.ClientURL)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := tls.Dial("tcp", u.Host, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	inFile := func() string {
		t.Helper()
		cert, err := pki.ReadCertFile(certFile)
		if err != nil {
			t.Fatal(err)
		}
		return cert.SerialNumber.String()
	}
	first := inFile()
	if served() != first {
		t.Fatal("the member does not serve its certificate file")
	}
	if due, _, err := pki.RenewalDue(certFile, time.Now().Add(pki.MemberValidity*3/4)); err != nil || !due {
		t.Fatalf("renewal not due after three quarters of the validity: %v %v", due, err)
	}
	if _, _, _, err := chainfire.IssueAutoCert(m.Server); err != nil {
		t.Fatal(err)
	}
	if renewed := inFile(); renewed == first || served() != renewed {
		t.Fatalf("after renewal: file %s (was %s), served %s", renewed, first, served())
	}
	if _, err := c.Put(ctxT(t, 5*time.Second), "/x", "z"); err != nil {
		t.Fatal(err)
	}
}
