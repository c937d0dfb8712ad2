package iam

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Errors of secrets at rest.
var (
	ErrKeyFileMode = errors.New("iam: key file is readable by others")
	ErrSealed      = errors.New("iam: sealed secret cannot be opened")
)

// LoadOrCreateKeyFile reads the 32-byte at-rest encryption key (64 hex
// digits) at path, creating it with mode 0600 from the system's random
// source when it does not exist. A key file that group or others may read
// is refused.
func LoadOrCreateKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("iam: generating encryption key: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("iam: creating %s: %w", filepath.Dir(path), err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("iam: creating encryption key file: %w", err)
		}
		if _, err := f.WriteString(hex.EncodeToString(key) + "\n"); err != nil {
			f.Close()
			return nil, fmt.Errorf("iam: writing encryption key file: %w", err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, fmt.Errorf("iam: writing encryption key file: %w", err)
		}
		if err := f.Close(); err != nil {
			return nil, fmt.Errorf("iam: writing encryption key file: %w", err)
		}
		return key, nil
	}
	if err != nil {
		return nil, fmt.Errorf("iam: reading encryption key file: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("iam: encryption key file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %o (chmod 600 %s)", ErrKeyFileMode, path, fi.Mode().Perm(), path)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("iam: encryption key file %s must hold 64 hex digits (32 bytes)", path)
	}
	return key, nil
}

// Sealer encrypts secrets at rest with AES-256-GCM. Each sealed value is
// bound to a context string (the store key it lives under), so a sealed
// value copied to another key does not open.
type Sealer struct {
	aead  cipher.AEAD
	keyID byte // first byte of the key's SHA-256, to name a wrong key
}

// sealVersion is the first byte of every sealed value.
const sealVersion = 1

// NewSealer returns a sealer for a 32-byte key.
func NewSealer(key []byte) (*Sealer, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("iam: encryption key must be 32 bytes, got %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("iam: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("iam: %w", err)
	}
	sum := sha256.Sum256(key)
	return &Sealer{aead: aead, keyID: sum[0]}, nil
}

// Seal encrypts plain for context.
func (s *Sealer) Seal(context string, plain []byte) ([]byte, error) {
	out := make([]byte, 2+s.aead.NonceSize(), 2+s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	out[0], out[1] = sealVersion, s.keyID
	if _, err := rand.Read(out[2:]); err != nil {
		return nil, fmt.Errorf("iam: nonce: %w", err)
	}
	return s.aead.Seal(out, out[2:2+s.aead.NonceSize()], plain, []byte(context)), nil
}

// Open decrypts a value sealed for context.
func (s *Sealer) Open(context string, sealed []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < 2+n+s.aead.Overhead() || sealed[0] != sealVersion {
		return nil, fmt.Errorf("%w: malformed", ErrSealed)
	}
	if sealed[1] != s.keyID {
		return nil, fmt.Errorf("%w: sealed under a different encryption key (check iam.encryptionKeyFile)", ErrSealed)
	}
	plain, err := s.aead.Open(nil, sealed[2:2+n], sealed[2+n:], []byte(context))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSealed, err)
	}
	return plain, nil
}
