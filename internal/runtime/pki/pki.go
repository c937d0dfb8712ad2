// Package pki creates and loads the certificates of UltraCloud's internal
// mutual TLS: a cluster CA (ECDSA P-256), member certificates issued from it
// that serve as both server and client certificate, and the *tls.Config of
// a server that requires client certificates from the CA and of a client
// that verifies the server against the CA and presents its own certificate.
//
// It owns key generation, certificate templates, PEM encoding and atomic,
// owner-only (0600) file writes. It must not know any component: chainfire
// and flaredb decide where the files live and when they are issued.
// Errors carry no component prefix; callers add theirs.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
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

// File names GenerateCA and IssueCert use inside their directory.
const (
	CACertName     = "ca.crt"
	CAKeyName      = "ca.key"
	MemberCertName = "member.crt"
	MemberKeyName  = "member.key"
)

const (
	caValidity = 10 * 365 * 24 * time.Hour
	// MemberValidity is how long an issued certificate is valid (capped by
	// the CA's own expiry). Components re-issue at every start and when
	// RenewalDue says so.
	MemberValidity = 365 * 24 * time.Hour
	clockSkew      = time.Hour
	organization   = "UltraCloud"
)

// GenerateCA creates a cluster CA (ECDSA P-256, valid ten years) as ca.crt
// and ca.key in dir, both mode 0600, unless both already exist (then it
// returns them unchanged). Half a CA (one file missing) is an error rather
// than silently replaced, since replacing it would orphan every certificate
// issued from it. It returns the two paths.
func GenerateCA(dir, commonName string) (certFile, keyFile string, err error) {
	certFile, keyFile = filepath.Join(dir, CACertName), filepath.Join(dir, CAKeyName)
	_, certErr := os.Stat(certFile)
	_, keyErr := os.Stat(keyFile)
	switch {
	case certErr == nil && keyErr == nil:
		return certFile, keyFile, nil
	case certErr == nil || keyErr == nil:
		return "", "", fmt.Errorf("CA in %s is incomplete (one of %s, %s is missing); restore the missing file or remove both to create a new CA", dir, CACertName, CAKeyName)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("creating CA directory: %w", err)
	}
	key, err := newKey("CA")
	if err != nil {
		return "", "", err
	}
	tmpl, err := newTemplate(commonName, time.Now(), caValidity)
	if err != nil {
		return "", "", err
	}
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	tmpl.BasicConstraintsValid = true
	tmpl.IsCA = true
	tmpl.MaxPathLenZero = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", fmt.Errorf("creating CA certificate: %w", err)
	}
	if err := writePair(certFile, keyFile, der, key, "CA"); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// newKey generates a P-256 key; what names the certificate in errors.
func newKey(what string) (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating %s key: %w", what, err)
	}
	return key, nil
}

// newTemplate is the common part of a certificate template: a random
// serial, the subject, and validity from now (less the allowed clock skew)
// for validity.
func newTemplate(commonName string, now time.Time, validity time.Duration) (*x509.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: commonName, Organization: []string{organization}},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     now.Add(validity),
	}, nil
}

// existingMemberKey returns the P-256 key in keyFile, or nil if there is
// none that can be used (missing, unreadable, another kind of key).
func existingMemberKey(keyFile string) *ecdsa.PrivateKey {
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return nil
	}
	signer, err := parsePrivateKey(b)
	if err != nil {
		return nil
	}
	key, ok := signer.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil
	}
	return key
}

// writePair writes key and the DER certificate as PEM files, mode 0600.
func writePair(certFile, keyFile string, der []byte, key *ecdsa.PrivateKey, what string) error {
	if err := WriteKey(keyFile, key); err != nil {
		return err
	}
	return writeCert(certFile, der, what)
}

// writeCert writes the DER certificate as a PEM file, mode 0600.
func writeCert(certFile string, der []byte, what string) error {
	if err := WriteFileAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("writing %s certificate: %w", what, err)
	}
	return nil
}

// IssueCert writes a fresh certificate as member.crt in dir, for the key
// in member.key there (mode 0600, dir created 0700), signed by the CA in
// caCertFile/caKeyFile. The certificate names commonName, is valid for
// hosts (IP addresses become IP SANs, anything else a DNS SAN; empty
// entries and unspecified addresses are skipped) plus localhost, 127.0.0.1
// and ::1, and may be used as server and as client certificate.
//
// An existing P-256 member.key is kept, and only the certificate file is
// replaced (atomically): a server that reads both files at every handshake
// (etcd does) never finds a certificate and key that do not match, as it
// could between two file writes. Without a usable key a new one is written
// first. Remove member.key to rotate the key at the next issue.
func IssueCert(caCertFile, caKeyFile, dir, commonName string, hosts []string) (certFile, keyFile string, err error) {
	caCert, caKey, err := LoadCA(caCertFile, caKeyFile)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, MemberCertName), filepath.Join(dir, MemberKeyName)
	now := time.Now()
	key := existingMemberKey(keyFile)
	freshKey := key == nil
	if freshKey {
		if key, err = newKey("member"); err != nil {
			return "", "", err
		}
	}
	tmpl, err := newTemplate(commonName, now, MemberValidity)
	if err != nil {
		return "", "", err
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	tmpl.DNSNames = []string{"localhost"}
	tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			if !ip.IsUnspecified() && !containsIP(tmpl.IPAddresses, ip) {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
		} else if h != "" && !containsString(tmpl.DNSNames, h) {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if caCert.NotAfter.Before(tmpl.NotAfter) {
		tmpl.NotAfter = caCert.NotAfter
	}
	if !now.Before(tmpl.NotAfter) {
		return "", "", fmt.Errorf("CA %s expired on %s; create a new cluster CA", caCertFile, caCert.NotAfter.Format(time.DateOnly))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return "", "", fmt.Errorf("issuing member certificate: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("creating %s: %w", dir, err)
	}
	if freshKey {
		err = writePair(certFile, keyFile, der, key, "member")
	} else {
		err = writeCert(certFile, der, "member")
	}
	if err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// LoadCA reads a CA certificate and its private key (PKCS#8, SEC 1 or
// PKCS#1 PEM) and checks that the certificate is a CA and the key is its.
func LoadCA(certFile, keyFile string) (*x509.Certificate, crypto.Signer, error) {
	cert, err := ReadCertFile(certFile)
	if err != nil {
		return nil, nil, fmt.Errorf("CA certificate: %w", err)
	}
	if !cert.IsCA {
		return nil, nil, fmt.Errorf("%s is not a CA certificate", certFile)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("reading CA key: %w", err)
	}
	signer, err := parsePrivateKey(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("CA key %s: %w", keyFile, err)
	}
	if pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(signer.Public()) {
		return nil, nil, fmt.Errorf("CA key %s does not belong to certificate %s", keyFile, certFile)
	}
	return cert, signer, nil
}

// parsePrivateKey parses a PEM private key (PKCS#8, SEC 1 or PKCS#1) that
// can sign.
func parsePrivateKey(keyPEM []byte) (crypto.Signer, error) {
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, errors.New("holds no PEM key")
	}
	var key any
	var err error
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
		return nil, fmt.Errorf("parsing: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, errors.New("cannot sign")
	}
	return signer, nil
}

// LoadPool reads a PEM bundle of CA certificates.
func LoadPool(caFile string) (*x509.CertPool, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("reading CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	return pool, nil
}

// ServerConfig is the TLS configuration of a mutual-TLS server: TLS 1.3
// only, serving certFile/keyFile (reloaded when they change, see KeyPair),
// and requiring every client to present a certificate that chains to a CA
// in caFile (read once).
func ServerConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	pool, err := LoadPool(caFile)
	if err != nil {
		return nil, err
	}
	pair, err := LoadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return pair.Certificate(), nil
		},
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  pool,
	}, nil
}

// ClientConfig is the TLS configuration of a mutual-TLS client: TLS 1.3
// only, verifying the server (its certificate must chain to a CA in caFile
// and name the host dialled) and presenting certFile/keyFile (reloaded
// when they change, see KeyPair). Without certFile and keyFile the client
// presents nothing (a server from ServerConfig refuses it).
func ClientConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	pool, err := LoadPool(caFile)
	if err != nil {
		return nil, err
	}
	c := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool}
	if certFile != "" || keyFile != "" {
		pair, err := LoadKeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return pair.Certificate(), nil
		}
	}
	return c, nil
}

// WriteKey writes key as a PKCS#8 PEM file with mode 0600, atomically.
func WriteKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encoding key: %w", err)
	}
	if err := WriteFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("writing key: %w", err)
	}
	return nil
}

// WriteFileAtomic writes data to path through a synced temporary file in
// the same directory (created with perm before any byte is written) and a
// rename, then syncs the directory, so path holds either the old or the
// new content after a crash.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
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
	return SyncDir(dir)
}

// SyncDir fsyncs a directory, making renames and creations in it durable.
func SyncDir(dir string) error {
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

func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certificate serial: %w", err)
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

func containsString(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// IsLoopbackHost reports whether host (an IP address or name, no port) is
// loopback: localhost, 127.0.0.0/8 or ::1. Components allow plaintext only
// to such hosts.
func IsLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
