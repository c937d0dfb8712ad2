package chainfire

import (
	"fmt"
	"os"

	"github.com/ultracloud/ultracloud/internal/runtime/pki"
)

// Files tls.auto keeps under DataDir/tls (created by package pki).
const (
	tlsDirName     = "tls"
	caCertName     = pki.CACertName
	caKeyName      = pki.CAKeyName
	memberCertName = pki.MemberCertName
	memberKeyName  = pki.MemberKeyName
)

// GenerateCA creates a cluster CA (ECDSA P-256, valid ten years) as ca.crt
// and ca.key in dir, both mode 0600, unless both already exist. It returns
// their paths. Give the pair to every member of a dev cluster as
// tls.autoCAFile and tls.autoCAKeyFile.
func GenerateCA(dir, commonName string) (certFile, keyFile string, err error) {
	certFile, keyFile, err = pki.GenerateCA(dir, commonName)
	if err != nil {
		return "", "", fmt.Errorf("chainfire: %w", err)
	}
	return certFile, keyFile, nil
}

// issueMemberCert writes a fresh certificate and key for member name, valid
// for hosts (IP addresses or DNS names) plus localhost, 127.0.0.1 and ::1,
// usable as server and client certificate, signed by the CA. Files are
// written to dir with mode 0600.
func issueMemberCert(caCertFile, caKeyFile, dir, name string, hosts []string) (certFile, keyFile string, err error) {
	certFile, keyFile, err = pki.IssueCert(caCertFile, caKeyFile, dir, name, hosts)
	if err != nil {
		return "", "", fmt.Errorf("chainfire: %w", err)
	}
	return certFile, keyFile, nil
}

// writeFileAtomic writes data to path through a synced temporary file in
// the same directory and a rename, then syncs the directory, so path holds
// either the old or the new content after a crash.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	return pki.WriteFileAtomic(path, data, perm)
}

func syncDir(dir string) error { return pki.SyncDir(dir) }
