package chainfire

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Files tls.auto keeps under DataDir/tls.
const (
	tlsDirName     = "tls"
	caCertName     = "ca.crt"
	caKeyName      = "ca.key"
	memberCertName = "member.crt"
	memberKeyName  = "member.key"
)

const (
	caValidity     = 10 * 365 * 24 * time.Hour
	memberValidity = 365 * 24 * time.Hour // re-issued at every start
	clockSkew      = time.Hour
)

// GenerateCA creates a cluster CA (ECDSA P-256, valid ten years) as ca.crt
// and ca.key in dir, both mode 0600, unless both already exist. It returns
// their paths. Give the pair to every member of a dev cluster as
// tls.autoCAFile and tls.autoCAKeyFile.
func GenerateCA(dir, commonName string) (certFile, keyFile string, err error) {
	certFile, keyFile = filepath.Join(dir, caCertName), filepath.Join(dir, caKeyName)
	_, certErr := os.Stat(certFile)
	_, keyErr := os.Stat(keyFile)
	switch {
	case certErr == nil && keyErr == nil:
		return certFile, keyFile, nil
	case certErr == nil || keyErr == nil:
		return "", "", fmt.Errorf("chainfire: CA in %s is incomplete (one of %s, %s is missing); restore the missing file or remove both to create a new CA", dir, caCertName, caKeyName)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("chainfire: creating CA directory: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("chainfire: generating CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"UltraCloud chainfire"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", fmt.Errorf("chainfire: creating CA certificate: %w", err)
	}
	if err := writePEMKey(keyFile, key); err != nil {
		return "", "", err
	}
	if err := writeFileAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return "", "", fmt.Errorf("chainfire: writing CA certificate: %w", err)
	}
	return certFile, keyFile, nil
}

// issueMemberCert writes a fresh certificate and key for member name, valid
// for hosts (IP addresses or DNS names) plus localhost, 127.0.0.1 and ::1,
// usable as server and client certificate, signed by the CA. Files are
// written to dir with mode 0600.
func issueMemberCert(caCertFile, caKeyFile, dir, name string, hosts []string) (certFile, keyFile string, err error) {
	caCert, caKey, err := loadCA(caCertFile, caKeyFile)
	if err != nil {
		return "", "", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("chainfire: generating member key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"UltraCloud chainfire"}},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     now.Add(memberValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			if !containsIP(tmpl.IPAddresses, ip) {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
		} else if h != "" && h != "localhost" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if caCert.NotAfter.Before(tmpl.NotAfter) {
		tmpl.NotAfter = caCert.NotAfter
	}
	if !now.Before(tmpl.NotAfter) {
		return "", "", fmt.Errorf("chainfire: CA %s expired on %s; create a new cluster CA", caCertFile, caCert.NotAfter.Format(time.DateOnly))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return "", "", fmt.Errorf("chainfire: issuing member certificate: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("chainfire: creating %s: %w", dir, err)
	}
	certFile, keyFile = filepath.Join(dir, memberCertName), filepath.Join(dir, memberKeyName)
	if err := writePEMKey(keyFile, key); err != nil {
		return "", "", err
	}
	if err := writeFileAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return "", "", fmt.Errorf("chainfire: writing member certificate: %w", err)
	}
	return certFile, keyFile, nil
}

func loadCA(certFile, keyFile string) (*x509.Certificate, crypto.Signer, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, fmt.Errorf("chainfire: reading CA certificate: %w", err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("chainfire: %s holds no PEM certificate", certFile)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("chainfire: parsing CA certificate %s: %w", certFile, err)
	}
	if !cert.IsCA {
		return nil, nil, fmt.Errorf("chainfire: %s is not a CA certificate", certFile)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("chainfire: reading CA key: %w", err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, nil, fmt.Errorf("chainfire: %s holds no PEM key", keyFile)
	}
	var key any
	switch kb.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(kb.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(kb.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(kb.Bytes)
	default:
		err = fmt.Errorf("unsupported PEM block %q", kb.Type)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("chainfire: parsing CA key %s: %w", keyFile, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("chainfire: CA key %s cannot sign", keyFile)
	}
	if pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(signer.Public()) {
		return nil, nil, fmt.Errorf("chainfire: CA key %s does not belong to certificate %s", keyFile, certFile)
	}
	return cert, signer, nil
}

func writePEMKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("chainfire: encoding key: %w", err)
	}
	if err := writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("chainfire: writing key: %w", err)
	}
	return nil
}

func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("chainfire: certificate serial: %w", err)
	}
	return n, nil
}

func containsIP(ips []net.IP, ip net.IP) bool {
	for _, x := range ips {
		if x.Equal(ip) {
			return true
		}
	}
	return false
}

// writeFileAtomic writes data to path through a synced temporary file in
// the same directory and a rename, then syncs the directory, so path holds
// either the old or the new content after a crash.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err = f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err = f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return errors.Join(fmt.Errorf("syncing directory %s", dir), err)
	}
	return nil
}
