package pki

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// reloadCheckInterval bounds how often a KeyPair looks at its files: at
// most one pair of stat calls per second, however many handshakes.
const reloadCheckInterval = time.Second

// KeyPair serves a certificate and key from two files and reloads them
// when either file changes, so a renewed or replaced certificate is
// presented on new connections without a restart. A pair that fails to
// load (a half-written replacement, a key that does not match) leaves the
// previous one in use; ReloadErr says why.
type KeyPair struct {
	certFile, keyFile string

	mu        sync.Mutex
	cert      *tls.Certificate
	stamps    [2]fileStamp
	checked   time.Time
	reloadErr error
}

// fileStamp is what tells a changed file: size and modification time.
type fileStamp struct {
	size int64
	mod  time.Time
}

// LoadKeyPair loads certFile and keyFile, failing if they do not load.
func LoadKeyPair(certFile, keyFile string) (*KeyPair, error) {
	k := &KeyPair{certFile: certFile, keyFile: keyFile}
	stamps, err := k.stat()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading certificate %s and key %s: %w", certFile, keyFile, err)
	}
	k.cert, k.stamps, k.checked = &cert, stamps, time.Now()
	return k, nil
}

func (k *KeyPair) stat() ([2]fileStamp, error) {
	var s [2]fileStamp
	for i, f := range []string{k.certFile, k.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return s, fmt.Errorf("reading %s: %w", f, err)
		}
		s[i] = fileStamp{size: fi.Size(), mod: fi.ModTime()}
	}
	return s, nil
}

// Certificate returns the current pair, reloading it first if a file
// changed since the last look (at most once per reloadCheckInterval).
func (k *KeyPair) Certificate() *tls.Certificate {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := time.Now()
	if now.Sub(k.checked) < reloadCheckInterval {
		return k.cert
	}
	k.checked = now
	stamps, err := k.stat()
	if err != nil {
		k.reloadErr = err
		return k.cert
	}
	if stamps == k.stamps {
		return k.cert
	}
	cert, err := tls.LoadX509KeyPair(k.certFile, k.keyFile)
	if err != nil {
		// Keep the stamps stale so the next look tries again: the other
		// file of a replacement may not be written yet.
		k.reloadErr = fmt.Errorf("reloading certificate %s and key %s (still serving the previous pair): %w", k.certFile, k.keyFile, err)
		return k.cert
	}
	k.cert, k.stamps, k.reloadErr = &cert, stamps, nil
	return k.cert
}

// ReloadErr is why the last reload failed, nil if it did not.
func (k *KeyPair) ReloadErr() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.reloadErr
}
