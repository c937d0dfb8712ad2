package raftnet

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/pki"
	"github.com/ultracloud/ultracloud/internal/testkit"
)

// tlsPair issues a member certificate from the CA and returns the layer's
// server and client configurations.
func tlsPair(t *testing.T, caCert, caKey, name string) (server, client *tls.Config) {
	t.Helper()
	dir := t.TempDir()
	cert, key, err := pki.IssueCert(caCert, caKey, dir, name, nil)
	if err != nil {
		t.Fatal(err)
	}
	if server, err = pki.ServerConfig(caCert, cert, key); err != nil {
		t.Fatal(err)
	}
	if client, err = pki.ClientConfig(caCert, cert, key); err != nil {
		t.Fatal(err)
	}
	return server, client
}

func listenTLS(t *testing.T, cluster, id string, server, client *tls.Config) *Layer {
	t.Helper()
	l, err := New(testkit.Listen(t), nil, cluster, id, nil, TLS(server, client))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestTLSHandshake(t *testing.T) {
	caCert, caKey, err := pki.GenerateCA(t.TempDir(), "ca")
	if err != nil {
		t.Fatal(err)
	}
	otherCert, otherKey, err := pki.GenerateCA(t.TempDir(), "other")
	if err != nil {
		t.Fatal(err)
	}
	ss, sc := tlsPair(t, caCert, caKey, "a")
	server := listenTLS(t, "c1", "a", ss, sc)
	fs, fc := tlsPair(t, caCert, caKey, "b")
	friend := listenTLS(t, "c1", "b", fs, fc)

	// Same CA and cluster: bytes flow both ways over TLS.
	done := make(chan error, 1)
	go func() {
		c, err := server.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		if _, ok := c.(*tls.Conn); !ok {
			done <- errors.New("accepted connection is not TLS")
			return
		}
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err != nil {
			done <- err
			return
		}
		_, err = c.Write(buf)
		done <- err
	}()
	c, err := friend.Dial(raftAddr(server), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("echo = %q %v", buf, err)
	}
	c.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Same CA, other cluster: TLS passes, the cluster handshake refuses.
	xs, xc := tlsPair(t, caCert, caKey, "x")
	stranger := listenTLS(t, "c2", "x", xs, xc)
	if _, err := stranger.Dial(raftAddr(server), 2*time.Second); !errors.Is(err, ErrWrongCluster) {
		t.Fatalf("dial from another cluster: %v", err)
	}
	waitRefused(t, server, 1)

	// Each of these is refused by the server's TLS handshake (counted in
	// Refused). The dialler's error is the TLS alert, or a broken pipe
	// when the server's close wins the race; either way it fails.
	refused := uint64(1)
	refuse := func(what string, l *Layer) {
		t.Helper()
		_, err := l.Dial(raftAddr(server), 2*time.Second)
		if err == nil {
			t.Fatalf("%s: dial succeeded", what)
		}
		t.Logf("%s: %v", what, err)
		refused++
		waitRefused(t, server, refused)
	}
	// A member with a certificate from another CA (it refuses our server
	// certificate, and we would refuse its).
	ocs, oc := tlsPair(t, otherCert, otherKey, "o")
	refuse("member of another CA", listenTLS(t, "c1", "o", ocs, oc))
	// A member trusting our CA but presenting another CA's certificate.
	forced := oc.Clone()
	forced.RootCAs = sc.RootCAs
	refuse("certificate from another CA", listenTLS(t, "c1", "o2", ocs, forced))
	// No certificate at all.
	nc := sc.Clone()
	nc.GetClientCertificate = nil
	refuse("no certificate", listenTLS(t, "c1", "n", ss, nc))
	// A plaintext member speaking the cluster handshake.
	plain := listen(t, "c1", "p")
	refuse("plaintext member", plain)
	// And our member refuses a plaintext server.
	if _, err := friend.Dial(raftAddr(plain), 2*time.Second); err == nil {
		t.Fatal("TLS member talked to a plaintext server")
	}
	if server.Refused() != refused {
		t.Fatalf("refused = %d, want %d", server.Refused(), refused)
	}
	if _, err := New(nil, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, "c", "a", nil, TLS(ss, nil)); err == nil {
		t.Fatal("TLS with a server configuration only accepted")
	}
}

// waitRefused waits until the server-side refusals are counted (they are
// counted by the accepting goroutine, after the dialler saw its error).
func waitRefused(t *testing.T, l *Layer, n uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for l.Refused() < n {
		if time.Now().After(deadline) {
			t.Fatalf("refused = %d, want %d", l.Refused(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
