package pki

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// RenewalCheckInterval is how often KeepRenewed looks at a certificate.
// Certificates live a year (MemberValidity) and are renewed after two
// thirds of it, so an hour is plenty.
const RenewalCheckInterval = time.Hour

// ReadCertFile reads the first certificate of a PEM file.
func ReadCertFile(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading certificate: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	return cert, nil
}

// RenewalDue reads the certificate in certFile and reports whether two
// thirds of its validity have passed at now, the point at which an issuer
// should replace it, and when it expires.
func RenewalDue(certFile string, now time.Time) (due bool, notAfter time.Time, err error) {
	cert, err := ReadCertFile(certFile)
	if err != nil {
		return false, time.Time{}, err
	}
	life := cert.NotAfter.Sub(cert.NotBefore)
	return !now.Before(cert.NotBefore.Add(life / 3 * 2)), cert.NotAfter, nil
}

// KeepRenewed runs CheckRenewal on certFile every interval until ctx ends.
// The configurations of ServerConfig and ClientConfig reload the files on
// their own (KeyPair), so a renewed certificate is used by new connections
// without a restart.
func KeepRenewed(ctx context.Context, log *slog.Logger, certFile string, renew func() error, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			CheckRenewal(log, certFile, renew, now)
		}
	}
}

// CheckRenewal renews certFile with renew once RenewalDue says so (a
// certificate the component issues itself). With renew nil the files are
// the operator's: it logs a warning instead, naming the file and its
// expiry. It reports whether it renewed.
func CheckRenewal(log *slog.Logger, certFile string, renew func() error, now time.Time) bool {
	due, notAfter, err := RenewalDue(certFile, now)
	if err != nil {
		log.Warn("cannot check the TLS certificate's expiry", "file", certFile, "err", err)
		return false
	}
	if !due {
		return false
	}
	if renew == nil {
		log.Warn("TLS certificate expires soon; replace the certificate and key files (they are reloaded without a restart)",
			"file", certFile, "expires", notAfter.Format(time.RFC3339))
		return false
	}
	if err := renew(); err != nil {
		log.Error("renewing the TLS certificate failed; it is tried again at the next check", "file", certFile, "expires", notAfter.Format(time.RFC3339), "err", err)
		return false
	}
	log.Info("renewed the TLS certificate", "file", certFile, "old_expiry", notAfter.Format(time.RFC3339))
	return true
}
