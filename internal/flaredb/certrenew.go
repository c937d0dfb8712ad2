package flaredb

import (
	"context"
	"log/slog"
	"path/filepath"

	"github.com/ultracloud/ultracloud/internal/runtime/pki"
)

// memberCertRenewal is what keeps the member's certificate fresh
// (pki.KeepRenewed): a re-issue with tls.auto, nil (a warning) with the
// operator's files.
func memberCertRenewal(cfg Config) func() error {
	if !cfg.TLS.Auto {
		return nil
	}
	return func() error {
		_, err := memberTLSFiles(cfg)
		return err
	}
}

// KeepClientCertFresh runs pki.KeepRenewed for a node without the flaredb
// role: it re-issues the client certificate ClientTLSFiles issued into dir
// (tls.auto), or warns before the supplied one expires. It returns when
// ctx ends; without TLS it returns at once.
func KeepClientCertFresh(ctx context.Context, log *slog.Logger, cfg Config, dir, name string) {
	t := cfg.TLS
	if !t.Enabled() {
		return
	}
	certFile := t.CertFile
	var renew func() error
	if t.Auto {
		certFile = filepath.Join(dir, pki.MemberCertName)
		renew = func() error {
			_, err := ClientTLSFiles(cfg, dir, name)
			return err
		}
	}
	pki.KeepRenewed(ctx, log.With("component", "flaredb"), certFile, renew, pki.RenewalCheckInterval)
}
