package client

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/pki"
)

// New refuses TLS files that do not load, naming the file, before it dials
// anything; with the cluster CA it builds a TLS 1.3 client.
func TestNewChecksTLSFiles(t *testing.T) {
	dir := t.TempDir()
	caCert, caKey, err := pki.GenerateCA(dir, "test CA")
	if err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.crt")
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"missing CA", Config{CAFile: missing}, missing},
		{"CA not PEM", Config{CAFile: notPEM}, notPEM},
		{"cert without key", Config{CAFile: caCert, CertFile: caCert}, "reading"},
		{"cert without CA, bad key", Config{CertFile: caCert, KeyFile: notPEM}, notPEM},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Endpoints, tc.cfg.DialTimeout = []string{"https://127.0.0.1:1"}, time.Second
			c, err := New(tc.cfg)
			if err == nil {
				c.Close()
				t.Fatalf("New(%+v) succeeded", tc.cfg)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
	tc, err := tlsConfig(Config{CAFile: caCert, CertFile: caCert, KeyFile: caKey})
	if err != nil {
		t.Fatal(err)
	}
	if tc.MinVersion != tls.VersionTLS13 || tc.RootCAs == nil || tc.GetClientCertificate == nil {
		t.Fatalf("TLS config: min version %x, roots %v, client cert %v", tc.MinVersion, tc.RootCAs != nil, tc.GetClientCertificate != nil)
	}
}
