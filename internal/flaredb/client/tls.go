package client

import (
	"crypto/tls"
	"fmt"
	"net/http"

	"github.com/ultracloud/ultracloud/internal/runtime/pki"
)

// clientTLS returns the TLS configuration of cfg (nil: h2c).
func clientTLS(cfg Config) (*tls.Config, error) {
	if cfg.TLS != nil {
		c := cfg.TLS.Clone()
		if c.MinVersion < tls.VersionTLS13 {
			c.MinVersion = tls.VersionTLS13
		}
		return c, nil
	}
	if cfg.CAFile == "" {
		if cfg.CertFile != "" || cfg.KeyFile != "" {
			return nil, fmt.Errorf("flaredb: client: CertFile and KeyFile need CAFile (the cluster CA that verifies the members)")
		}
		return nil, nil
	}
	c, err := pki.ClientConfig(cfg.CAFile, cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("flaredb: client: %w", err)
	}
	return c, nil
}

// transport wraps tr so that, with TLS, every request goes out as https:
// calls build http:// URLs whatever the transport, and nothing may leave
// in plaintext once TLS is configured.
func transport(tr *http.Transport) http.RoundTripper {
	if tr.TLSClientConfig == nil {
		return tr
	}
	return httpsOnly{tr}
}

type httpsOnly struct{ t *http.Transport }

func (h httpsOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" {
		r := *req
		u := *req.URL
		u.Scheme = "https"
		r.URL = &u
		req = &r
	}
	return h.t.RoundTrip(req)
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// transport.
func (h httpsOnly) CloseIdleConnections() { h.t.CloseIdleConnections() }
