package client

import (
	"crypto/tls"
	"fmt"

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
