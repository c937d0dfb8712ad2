// Package client is what a client of a chainfire cluster needs beyond the
// etcd v3 client (clientv3), which it speaks: a connection with the
// cluster's mutual TLS (from internal/runtime/pki), the member operations
// of `ultracloud chainfire member` (checked input, names resolved, etcd's
// errors turned into ones that say what to do), saving a snapshot, and the
// shapes of member names and URLs that the member's config validation
// shares.
//
// It must not import the member (internal/chainfire): the CLI uses it, and
// the member uses it for what they share.
package client

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ultracloud/ultracloud/internal/runtime/pki"
)

// Sentinel errors. Callers match them with errors.Is; the messages wrapping
// them carry the details.
var (
	// ErrMemberNotFound: no member has the given name or ID.
	ErrMemberNotFound = errors.New("chainfire: member not found")
	// ErrMemberExists: a member with that name or peer URL already exists.
	ErrMemberExists = errors.New("chainfire: member already exists")
	// ErrSnapshot: a snapshot could not be saved or restored.
	ErrSnapshot = errors.New("chainfire: snapshot failed")
)

// DefaultClusterToken is the cluster token when none is configured.
const DefaultClusterToken = "ultracloud-chainfire"

// Config says how to reach a cluster.
type Config struct {
	// Endpoints are client URLs of members (http:// on loopback, else
	// https://).
	Endpoints []string
	// DialTimeout bounds connecting.
	DialTimeout time.Duration
	// CAFile verifies the members' certificates (the cluster CA); empty
	// trusts the system roots.
	CAFile string
	// CertFile and KeyFile are the client certificate to present, for a
	// cluster with clientCertAuth.
	CertFile, KeyFile string
}

// New connects to the cluster. With any TLS file set it speaks TLS 1.3 with
// the certificate and key reloaded when their files change (pki); an
// https endpoint without them uses the etcd client's defaults.
func New(cfg Config) (*clientv3.Client, error) {
	// The etcd client logs JSON through zap; callers report errors themselves.
	ec := clientv3.Config{Endpoints: cfg.Endpoints, DialTimeout: cfg.DialTimeout, Logger: zap.NewNop()}
	if cfg.CAFile != "" || cfg.CertFile != "" || cfg.KeyFile != "" {
		tc, err := tlsConfig(cfg)
		if err != nil {
			return nil, err
		}
		ec.TLS = tc
	}
	c, err := clientv3.New(ec)
	if err != nil {
		return nil, fmt.Errorf("connecting to chainfire at %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	return c, nil
}

// tlsConfig is pki's mutual-TLS client configuration; without a CA file
// the system roots verify the members.
func tlsConfig(cfg Config) (*tls.Config, error) {
	if cfg.CAFile != "" {
		tc, err := pki.ClientConfig(cfg.CAFile, cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("chainfire: client TLS: %w", err)
		}
		return tc, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS13}
	pair, err := pki.LoadKeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("chainfire: client TLS: %w", err)
	}
	tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return pair.Certificate(), nil
	}
	return tc, nil
}
