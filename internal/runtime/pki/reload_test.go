package pki

import (
	"crypto/tls"
	"math/big"
	"net"
	"os"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/testkit"
)

// peerSerials runs a handshake and returns the serial of the certificate
// each side saw from the other.
func peerSerials(t *testing.T, srv, cli *tls.Config) (fromClient, fromServer *big.Int) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	got := make(chan *big.Int, 1)
	go func() {
		s := tls.Server(a, srv)
		if err := s.Handshake(); err != nil {
			got <- nil
			return
		}
		got <- s.ConnectionState().PeerCertificates[0].SerialNumber
		_, _ = s.Write([]byte("x"))
	}()
	cc := cli.Clone()
	cc.ServerName = "localhost"
	c := tls.Client(b, cc)
	if err := c.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatalf("read: %v", err)
	}
	fromClient = <-got
	if fromClient == nil {
		t.Fatal("server handshake failed")
	}
	return fromClient, c.ConnectionState().PeerCertificates[0].SerialNumber
}

// TestConfigsReloadRenewedCertificates replaces the server's and the
// client's certificate files (as a renewal does) under running configs:
// the next handshakes present the new certificates. A broken replacement
// leaves the previous pair in use and says why.
func TestConfigsReloadRenewedCertificates(t *testing.T) {
	_, caCert, caKey := mustCA(t, "ca")
	sdir, cdir := t.TempDir(), t.TempDir()
	scert, skey, err := IssueCert(caCert, caKey, sdir, "server", nil)
	if err != nil {
		t.Fatal(err)
	}
	ccert, ckey, err := IssueCert(caCert, caKey, cdir, "client", nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ServerConfig(caCert, scert, skey)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ClientConfig(caCert, ccert, ckey)
	if err != nil {
		t.Fatal(err)
	}
	c1, s1 := peerSerials(t, srv, cli)
	if c1.Cmp(readCert(t, ccert).SerialNumber) != 0 || s1.Cmp(readCert(t, scert).SerialNumber) != 0 {
		t.Fatal("the first handshake did not present the issued certificates")
	}

	if _, _, err := IssueCert(caCert, caKey, sdir, "server", nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := IssueCert(caCert, caKey, cdir, "client", nil); err != nil {
		t.Fatal(err)
	}
	// The configs look at the files at most once per reloadCheckInterval,
	// on a handshake: handshake until both present new certificates.
	var c2, s2 *big.Int
	testkit.Eventually(t, 10*reloadCheckInterval, "handshakes presenting the renewed certificates", func() bool {
		c2, s2 = peerSerials(t, srv, cli)
		return c2.Cmp(c1) != 0 && s2.Cmp(s1) != 0
	})
	if c2.Cmp(readCert(t, ccert).SerialNumber) != 0 || s2.Cmp(readCert(t, scert).SerialNumber) != 0 {
		t.Fatal("after renewal the handshake presented certificates that are not the files'")
	}

	// A certificate file that does not parse: the previous pair stays.
	pair, err := LoadKeyPair(scert, skey)
	if err != nil {
		t.Fatal(err)
	}
	before := pair.Certificate()
	if err := os.WriteFile(scert, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Certificate looks at the files at most once per reloadCheckInterval:
	// ask until it has looked and refused the broken file.
	testkit.Eventually(t, 10*reloadCheckInterval, "the pair to notice the broken certificate file", func() bool {
		if got := pair.Certificate(); got != before {
			t.Fatal("a broken certificate file replaced the working pair")
		}
		return pair.ReloadErr() != nil
	})
	if err := pair.ReloadErr(); !errContains(err, "still serving the previous pair") {
		t.Fatalf("ReloadErr = %v, want the reason and that the previous pair is in use", err)
	}
	if _, s3 := peerSerials(t, srv, cli); s3.Cmp(s2) != 0 {
		t.Fatal("the server stopped presenting its last good certificate")
	}
	if _, err := LoadKeyPair(scert, skey); err == nil {
		t.Fatal("LoadKeyPair accepted a broken certificate file")
	}
}

func TestRenewalDue(t *testing.T) {
	_, caCert, caKey := mustCA(t, "ca")
	cert, _, err := IssueCert(caCert, caKey, t.TempDir(), "m", nil)
	if err != nil {
		t.Fatal(err)
	}
	c := readCert(t, cert)
	at := c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) / 3 * 2)
	for _, tc := range []struct {
		now  time.Time
		want bool
	}{
		{time.Now(), false},
		{at.Add(-time.Minute), false},
		{at, true},
		{c.NotAfter.Add(time.Hour), true},
	} {
		due, notAfter, err := RenewalDue(cert, tc.now)
		if err != nil || due != tc.want || !notAfter.Equal(c.NotAfter) {
			t.Errorf("RenewalDue at %s = %v, %s, %v; want %v, %s", tc.now, due, notAfter, err, tc.want, c.NotAfter)
		}
	}
	bad := t.TempDir() + "/bad.crt"
	if err := os.WriteFile(bad, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := RenewalDue(bad, time.Now()); !errContains(err, "no PEM certificate") {
		t.Errorf("RenewalDue of a junk file: %v", err)
	}
}
