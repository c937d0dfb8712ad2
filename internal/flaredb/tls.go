package flaredb

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/pki"
)

// tlsDirName is where tls.auto keeps the member's certificate (and, for a
// lone member without autoCAFile, its CA) inside DataDir.
const tlsDirName = "tls"

// memberTLS is a member's TLS material, loaded once per start.
type memberTLS struct {
	files  TLS         // CAFile, CertFile, KeyFile in use
	server *tls.Config // Raft listener and API: client certificates required
	client *tls.Config // Raft dials and calls to other members' APIs
}

// MemberTLS returns the certificate files this member uses (CAFile,
// CertFile and KeyFile set; Auto false), or a zero TLS when it runs
// without TLS. With tls.auto the first call issues the member certificate
// (creating the CA first for a lone member without autoCAFile); later
// calls, and Run, reuse it. A client in the same process (the node's store)
// presents the same certificate.
func (s *Server) MemberTLS() (TLS, error) {
	m, err := s.loadTLS()
	if err != nil || m == nil {
		return TLS{}, err
	}
	return m.files, nil
}

// loadTLS prepares the member's TLS material once per Server.
func (s *Server) loadTLS() (*memberTLS, error) {
	s.tlsMu.Lock()
	defer s.tlsMu.Unlock()
	if s.tls != nil || !s.cfg.TLS.Enabled() {
		return s.tls, nil
	}
	files, err := memberTLSFiles(s.cfg)
	if err != nil {
		return nil, err
	}
	server, err := pki.ServerConfig(files.CAFile, files.CertFile, files.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("flaredb: tls: %w", err)
	}
	client, err := pki.ClientConfig(files.CAFile, files.CertFile, files.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("flaredb: tls: %w", err)
	}
	s.tls = &memberTLS{files: files, server: server, client: client}
	return s.tls, nil
}

// memberTLSFiles returns the configured files, or with tls.auto issues the
// member's certificate into DataDir/tls for its ID and addresses.
func memberTLSFiles(cfg Config) (TLS, error) {
	t := cfg.TLS
	if !t.Auto {
		return TLS{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile}, nil
	}
	dir := filepath.Join(cfg.DataDir, tlsDirName)
	caCert, caKey := t.AutoCAFile, t.AutoCAKeyFile
	if caCert == "" {
		var err error
		if caCert, caKey, err = pki.GenerateCA(dir, "flaredb CA "+cfg.ClusterID); err != nil {
			return TLS{}, fmt.Errorf("flaredb: tls.auto: %w", err)
		}
	}
	var hosts []string
	for _, a := range []string{cfg.RaftAddress, cfg.RaftAdvertise, cfg.APIAddress, cfg.APIAdvertise} {
		if h, _, err := net.SplitHostPort(a); err == nil {
			hosts = append(hosts, h)
		}
	}
	cert, key, err := pki.IssueCert(caCert, caKey, dir, cfg.ID, hosts)
	if err != nil {
		return TLS{}, fmt.Errorf("flaredb: tls.auto: %w", err)
	}
	return TLS{CAFile: caCert, CertFile: cert, KeyFile: key}, nil
}

// ClientTLSFiles returns the files a node without the flaredb role uses to
// reach the cluster as a client (cfg validated by ValidateClient): the
// configured files, or with tls.auto a client certificate named name issued
// from the cluster CA into dir. It returns a zero TLS without TLS.
func ClientTLSFiles(cfg Config, dir, name string) (TLS, error) {
	t := cfg.TLS
	switch {
	case !t.Enabled():
		return TLS{}, nil
	case !t.Auto:
		return TLS{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile}, nil
	}
	cert, key, err := pki.IssueCert(t.AutoCAFile, t.AutoCAKeyFile, dir, name, nil)
	if err != nil {
		return TLS{}, fmt.Errorf("flaredb: tls.auto: %w", err)
	}
	return TLS{CAFile: t.AutoCAFile, CertFile: cert, KeyFile: key}, nil
}

// newTLSPeerClient is newPeerClient over TLS: HTTP/2 with ALPN, presenting
// the member certificate and verifying the other member against the CA and
// its address. Callers build https:// URLs (node.scheme).
func newTLSPeerClient(timeout time.Duration, cfg *tls.Config) *http.Client {
	var protocols http.Protocols
	protocols.SetHTTP2(true)
	return &http.Client{Transport: &http.Transport{
		Protocols:           &protocols,
		TLSClientConfig:     cfg.Clone(),
		DialContext:         (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: timeout,
		MaxIdleConnsPerHost: 4,
		HTTP2:               &http.HTTP2Config{MaxReadFrameSize: 1 << 20},
	}}
}

// serveTLS makes the API server speak HTTP/2 (and HTTP/1.1) over TLS only,
// requiring a client certificate from the cluster CA, instead of the h2c
// newHTTPServer sets up.
func serveTLS(srv *http.Server, m *memberTLS) {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	srv.Protocols = &p
	srv.TLSConfig = m.server.Clone()
}
