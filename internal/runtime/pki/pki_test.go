package pki

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func mustCA(t *testing.T, name string) (dir, cert, key string) {
	t.Helper()
	dir = t.TempDir()
	cert, key, err := GenerateCA(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	return dir, cert, key
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	c, err := ReadCertFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func errContains(err error, s string) bool { return err != nil && strings.Contains(err.Error(), s) }

func TestGenerateCA(t *testing.T) {
	dir, cert, key := mustCA(t, "test CA")
	for _, p := range []string{cert, key} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", p, fi, err)
		}
	}
	c := readCert(t, cert)
	if !c.IsCA || c.Subject.CommonName != "test CA" || !c.MaxPathLenZero {
		t.Fatalf("CA certificate: %+v", c.Subject)
	}
	if _, _, err := LoadCA(cert, key); err != nil {
		t.Fatal(err)
	}
	// Idempotent while both files exist.
	before, _ := os.ReadFile(cert)
	if c2, k2, err := GenerateCA(dir, "again"); err != nil || c2 != cert || k2 != key {
		t.Fatalf("second GenerateCA: %v %v %v", c2, k2, err)
	}
	if after, _ := os.ReadFile(cert); string(after) != string(before) {
		t.Fatal("second GenerateCA replaced the CA")
	}
	// Half a CA is refused, not replaced.
	if err := os.Remove(key); err != nil {
		t.Fatal(err)
	}
	if _, _, err := GenerateCA(dir, "ca"); !errContains(err, "incomplete") {
		t.Fatalf("half a CA: %v", err)
	}
	// No temporary files are left behind.
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Fatalf("left over %s", e.Name())
		}
	}
}

func TestIssueCert(t *testing.T) {
	_, caCert, caKey := mustCA(t, "ca")
	out := filepath.Join(t.TempDir(), "sub", "tls")
	cert, key, err := IssueCert(caCert, caKey, out, "m1", []string{"10.0.0.1", "db.example", "", "0.0.0.0", "127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("dir: %v %v", fi, err)
	}
	for _, p := range []string{cert, key} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", p, fi, err)
		}
	}
	c := readCert(t, cert)
	if c.Subject.CommonName != "m1" || c.IsCA {
		t.Fatalf("subject %v, CA %v", c.Subject, c.IsCA)
	}
	if len(c.ExtKeyUsage) != 2 {
		t.Fatalf("ext key usage %v, want server and client", c.ExtKeyUsage)
	}
	wantIPs := []string{"127.0.0.1", "::1", "10.0.0.1"}
	if len(c.IPAddresses) != len(wantIPs) {
		t.Fatalf("IP SANs %v, want %v", c.IPAddresses, wantIPs)
	}
	for i, ip := range wantIPs {
		if !c.IPAddresses[i].Equal(net.ParseIP(ip)) {
			t.Fatalf("IP SANs %v, want %v", c.IPAddresses, wantIPs)
		}
	}
	if strings.Join(c.DNSNames, ",") != "localhost,db.example" {
		t.Fatalf("DNS SANs %v", c.DNSNames)
	}
	pool, err := LoadPool(caCert)
	if err != nil {
		t.Fatal(err)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, DNSName: "db.example", KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Fatalf("verify for %v: %v", usage, err)
		}
	}
	if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
		t.Fatal(err)
	}

	// A CA key that does not match the certificate is refused.
	_, _, otherKey := mustCA(t, "other")
	if _, _, err := IssueCert(caCert, otherKey, t.TempDir(), "m", nil); !errContains(err, "does not belong to certificate") {
		t.Fatalf("mismatched CA key: %v", err)
	}
	// A leaf is not a CA.
	if _, _, err := IssueCert(cert, key, t.TempDir(), "m", nil); !errContains(err, "not a CA") {
		t.Fatalf("leaf as CA: %v", err)
	}
	if _, _, err := LoadCA(filepath.Join(t.TempDir(), "missing"), caKey); err == nil {
		t.Fatal("missing CA file accepted")
	}
}

// TestIssueCertKeepsTheKey: issuing again (a renewal) replaces only the
// certificate, so a reader of both files never sees a pair that does not
// match; a missing or unusable key is replaced by a new one.
func TestIssueCertKeepsTheKey(t *testing.T) {
	_, caCert, caKey := mustCA(t, "ca")
	dir := t.TempDir()
	cert, key, err := IssueCert(caCert, caKey, dir, "m1", nil)
	if err != nil {
		t.Fatal(err)
	}
	key1, _ := os.ReadFile(key)
	serial1 := readCert(t, cert).SerialNumber

	// A reader loading the pair over and over during renewals.
	stop := make(chan struct{})
	mismatches := make(chan error, 1)
	var reading sync.WaitGroup
	reading.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
				select {
				case mismatches <- err:
				default:
				}
			}
		}
	})
	for range 20 {
		if _, _, err := IssueCert(caCert, caKey, dir, "m1", nil); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	reading.Wait()
	select {
	case err := <-mismatches:
		t.Fatalf("a reader found certificate and key not matching during renewal: %v", err)
	default:
	}
	if key2, _ := os.ReadFile(key); !bytes.Equal(key1, key2) {
		t.Fatal("renewal replaced the key")
	}
	if readCert(t, cert).SerialNumber.Cmp(serial1) == 0 {
		t.Fatal("renewal kept the old certificate")
	}

	for name, content := range map[string][]byte{
		"garbage": []byte("not a key"),
		"rsa":     rsaKeyPEM(t),
	} {
		if err := os.WriteFile(key, content, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := IssueCert(caCert, caKey, dir, "m1", nil); err != nil {
			t.Fatalf("%s key: %v", name, err)
		}
		if got, _ := os.ReadFile(key); bytes.Equal(got, content) || bytes.Equal(got, key1) {
			t.Fatalf("%s key: not replaced by a new one", name)
		}
		if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
			t.Fatalf("%s key: new pair does not load: %v", name, err)
		}
	}
	if err := os.Remove(key); err != nil {
		t.Fatal(err)
	}
	if _, _, err := IssueCert(caCert, caKey, dir, "m1", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
		t.Fatalf("after removing the key: %v", err)
	}
}

func rsaKeyPEM(t *testing.T) []byte {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
}

func TestLoadPoolErrors(t *testing.T) {
	if _, err := LoadPool(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Fatal("missing file accepted")
	}
	p := filepath.Join(t.TempDir(), "x.pem")
	if err := os.WriteFile(p, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPool(p); !errContains(err, "no PEM certificate") {
		t.Fatalf("garbage bundle: %v", err)
	}
	if _, err := ServerConfig(p, p, p); err == nil {
		t.Fatal("ServerConfig with garbage accepted")
	}
}

// handshake runs one TLS connection between the configs over a pipe and
// returns the server's and the client's error (the client's after it tried
// to read, since in TLS 1.3 the server judges the client certificate after
// the client finished its handshake).
func handshake(t *testing.T, srv, cli *tls.Config, serverName string) (serr, cerr error) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	_ = a.SetDeadline(time.Now().Add(5 * time.Second))
	_ = b.SetDeadline(time.Now().Add(5 * time.Second))
	done := make(chan error, 1)
	go func() {
		s := tls.Server(a, srv)
		err := s.Handshake()
		if err == nil {
			_, err = s.Write([]byte("x"))
		}
		if err != nil {
			a.Close()
		}
		done <- err
	}()
	cc := cli.Clone()
	cc.ServerName = serverName
	c := tls.Client(b, cc)
	cerr = c.Handshake()
	if cerr == nil {
		_, cerr = io.ReadFull(c, make([]byte, 1))
	}
	b.Close()
	return <-done, cerr
}

func TestMutualTLSConfigs(t *testing.T) {
	_, caCert, caKey := mustCA(t, "ca")
	sdir, cdir := t.TempDir(), t.TempDir()
	scert, skey, err := IssueCert(caCert, caKey, sdir, "server", []string{"10.1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	ccert, ckey, err := IssueCert(caCert, caKey, cdir, "client", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, otherCA, otherKey := mustCA(t, "other")
	odir := t.TempDir()
	ocert, okey, err := IssueCert(otherCA, otherKey, odir, "intruder", []string{"10.1.2.3"})
	if err != nil {
		t.Fatal(err)
	}

	srv, err := ServerConfig(caCert, scert, skey)
	if err != nil {
		t.Fatal(err)
	}
	if srv.MinVersion != tls.VersionTLS13 || srv.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Fatalf("server config: min %x auth %v", srv.MinVersion, srv.ClientAuth)
	}
	good, err := ClientConfig(caCert, ccert, ckey)
	if err != nil {
		t.Fatal(err)
	}
	if serr, cerr := handshake(t, srv, good, "10.1.2.3"); serr != nil || cerr != nil {
		t.Fatalf("good client: server %v, client %v", serr, cerr)
	}
	// The server's certificate must name the host dialled.
	if _, cerr := handshake(t, srv, good, "10.9.9.9"); cerr == nil {
		t.Fatal("client accepted a server certificate for another host")
	}

	noCert, err := ClientConfig(caCert, "", "")
	if err != nil {
		t.Fatal(err)
	}
	serr, cerr := handshake(t, srv, noCert, "10.1.2.3")
	if serr == nil || cerr == nil {
		t.Fatalf("client without certificate: server %v, client %v", serr, cerr)
	}
	if !errContains(cerr, "certificate required") {
		t.Fatalf("client without certificate: %v", cerr)
	}

	wrongCA, err := ClientConfig(caCert, ocert, okey)
	if err != nil {
		t.Fatal(err)
	}
	if serr, cerr := handshake(t, srv, wrongCA, "10.1.2.3"); serr == nil || cerr == nil {
		t.Fatalf("client with another CA's certificate: server %v, client %v", serr, cerr)
	}
	// The client presents its certificate even though the server's CA
	// list does not cover it (GetClientCertificate), so the server's
	// verification is what refuses.
	serr, cerr = handshake(t, srv, wrongCA, "10.1.2.3")
	if !errContains(serr, "certificate signed by unknown authority") || cerr == nil {
		t.Fatalf("client presenting another CA's certificate: server %v, client %v", serr, cerr)
	}

	// A server with another CA's certificate is refused by the client.
	impostor, err := ServerConfig(caCert, ocert, okey)
	if err != nil {
		t.Fatal(err)
	}
	if _, cerr := handshake(t, impostor, good, "10.1.2.3"); cerr == nil {
		t.Fatal("client accepted a server certificate from another CA")
	}

	// TLS 1.2 is refused.
	old := good.Clone()
	old.MinVersion, old.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	if _, cerr := handshake(t, srv, old, "10.1.2.3"); cerr == nil {
		t.Fatal("TLS 1.2 accepted")
	}
	if _, err := ClientConfig(caCert, ccert, ""); err == nil {
		t.Fatal("certificate without key accepted")
	}
}

func TestWriteFileAtomic(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := WriteFileAtomic(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(p, []byte("two"), 0o640); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	fi, _ := os.Stat(p)
	if err != nil || string(b) != "two" || fi.Mode().Perm() != 0o640 {
		t.Fatalf("%q %v %v", b, fi.Mode(), err)
	}
	if err := WriteFileAtomic(filepath.Join(t.TempDir(), "no", "dir"), nil, 0o600); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing directory: %v", err)
	}
}
