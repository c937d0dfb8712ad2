package iam

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
)

// Store prefix of refresh tokens: the key is the SHA-256 of the token, so
// the store never holds a usable token.
const refreshPrefix = "/iam/refresh/"

// refreshTokenPrefix starts every refresh token, so one is recognisable
// (e.g. by secret scanners).
const refreshTokenPrefix = "ucr_"

// Errors of refresh tokens.
var (
	ErrRefreshInvalid = errors.New("iam: refresh token invalid, expired or already used")
)

// refreshRecord is a refresh token as stored.
type refreshRecord struct {
	Principal string    `json:"principal"`
	UID       string    `json:"uid"`
	CreatedAt time.Time `json:"createdAt"`
	ExpiresAt time.Time `json:"expiresAt"`
	// PasswordID identifies the user's password when the login that
	// started this chain of refresh tokens happened; a password change
	// (a new ID) ends the chain.
	PasswordID string     `json:"passwordId,omitempty"`
	RotatedAt  *time.Time `json:"rotatedAt,omitempty"`
}

// tokenService issues access tokens (JWTs signed by the KeyManager) and
// refresh tokens (opaque, stored hashed). Refresh tokens rotate: redeeming
// one issues a new one, and the old one keeps working only for a short
// grace period (so two clients sharing a credentials file can both refresh)
// before it stops.
type tokenService struct {
	keys       *KeyManager
	store      storage.Store
	issuer     func() string
	audience   string
	accessTTL  time.Duration
	refreshTTL time.Duration
	grace      time.Duration
	now        func() time.Time
}

func (s *tokenService) issueAccess(principal, uid, akid string) (string, time.Time, error) {
	now := s.now().Truncate(time.Second)
	exp := now.Add(s.accessTTL)
	var jti [12]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", time.Time{}, fmt.Errorf("iam: token id: %w", err)
	}
	claims := apiserver.AccessClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: s.issuer(), Subject: principal, Audience: jwt.ClaimStrings{s.audience},
			ExpiresAt: jwt.NewNumericDate(exp), NotBefore: jwt.NewNumericDate(now), IssuedAt: jwt.NewNumericDate(now),
			ID: base64.RawURLEncoding.EncodeToString(jti[:]),
		},
		UID: uid, AccessKeyID: akid,
	}
	tok, err := s.keys.Sign(claims)
	return tok, exp, err
}

func refreshKey(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return []byte(refreshPrefix + hex.EncodeToString(sum[:]))
}

// newRefresh returns a new refresh token and the op that stores it.
func (s *tokenService) newRefresh(principal, uid, passwordID string) (string, time.Time, storage.Op, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", time.Time{}, storage.Op{}, fmt.Errorf("iam: refresh token: %w", err)
	}
	tok := refreshTokenPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
	now := s.now().UTC()
	exp := now.Add(s.refreshTTL)
	val, err := json.Marshal(refreshRecord{Principal: principal, UID: uid, CreatedAt: now, ExpiresAt: exp, PasswordID: passwordID})
	if err != nil {
		return "", time.Time{}, storage.Op{}, fmt.Errorf("iam: encoding refresh token: %w", err)
	}
	return tok, exp, storage.Op{Type: storage.OpPut, Key: refreshKey(tok), Value: val}, nil
}

// issue returns an access token and, if withRefresh, a stored refresh token
// tied to the user's current password (passwordID).
func (s *tokenService) issue(ctx context.Context, principal, uid, akid, passwordID string, withRefresh bool) (*iamv1.TokenResponse, error) {
	access, exp, err := s.issueAccess(principal, uid, akid)
	if err != nil {
		return nil, err
	}
	out := &iamv1.TokenResponse{AccessToken: access, TokenType: iamv1.TokenTypeBearer, ExpiresAt: exp,
		ExpiresIn: int64(exp.Sub(s.now()).Round(time.Second) / time.Second), Principal: principal}
	if withRefresh {
		tok, rexp, op, err := s.newRefresh(principal, uid, passwordID)
		if err != nil {
			return nil, err
		}
		if _, err := s.store.Txn(ctx, storage.Txn{Then: []storage.Op{op}}); err != nil {
			return nil, fmt.Errorf("iam: storing refresh token: %w", err)
		}
		out.RefreshToken, out.RefreshExpiresAt = tok, &rexp
	}
	return out, nil
}

// redeem checks a refresh token, rotates it and returns the new one with
// the principal it belongs to. The caller must still check the principal.
func (s *tokenService) redeem(ctx context.Context, token string) (refreshRecord, string, time.Time, error) {
	if !strings.HasPrefix(token, refreshTokenPrefix) || len(token) > 128 {
		return refreshRecord{}, "", time.Time{}, ErrRefreshInvalid
	}
	key := refreshKey(token)
	for attempt := 0; ; attempt++ {
		kv, err := s.store.Get(ctx, key)
		if errors.Is(err, storage.ErrNotFound) {
			return refreshRecord{}, "", time.Time{}, ErrRefreshInvalid
		}
		if err != nil {
			return refreshRecord{}, "", time.Time{}, err
		}
		var rec refreshRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			return refreshRecord{}, "", time.Time{}, fmt.Errorf("iam: decoding refresh token record: %w", err)
		}
		now := s.now().UTC()
		if !now.Before(rec.ExpiresAt) || (rec.RotatedAt != nil && now.After(rec.RotatedAt.Add(s.grace))) {
			return refreshRecord{}, "", time.Time{}, ErrRefreshInvalid
		}
		tok, exp, op, err := s.newRefresh(rec.Principal, rec.UID, rec.PasswordID)
		if err != nil {
			return refreshRecord{}, "", time.Time{}, err
		}
		ops := []storage.Op{op}
		if rec.RotatedAt == nil {
			old := rec
			old.RotatedAt = &now
			b, err := json.Marshal(old)
			if err != nil {
				return refreshRecord{}, "", time.Time{}, fmt.Errorf("iam: encoding refresh token record: %w", err)
			}
			ops = append(ops, storage.Op{Type: storage.OpPut, Key: key, Value: b})
		}
		res, err := s.store.Txn(ctx, storage.Txn{
			If:   []storage.Compare{{Key: key, Target: storage.CompareModRevision, Revision: kv.ModRevision}},
			Then: ops,
		})
		if err != nil {
			return refreshRecord{}, "", time.Time{}, fmt.Errorf("iam: rotating refresh token: %w", err)
		}
		if res.Succeeded {
			return rec, tok, exp, nil
		}
		// Redeemed concurrently: the next read sees that rotation.
		if attempt >= 5 {
			return refreshRecord{}, "", time.Time{}, fmt.Errorf("iam: refresh token is being redeemed concurrently; retry")
		}
	}
}

// revoke deletes a refresh token (logout). Unknown tokens are ignored.
func (s *tokenService) revoke(ctx context.Context, token string) error {
	if !strings.HasPrefix(token, refreshTokenPrefix) || len(token) > 128 {
		return nil
	}
	if _, _, err := storage.Delete(ctx, s.store, refreshKey(token)); err != nil {
		return fmt.Errorf("iam: revoking refresh token: %w", err)
	}
	return nil
}

// sweep deletes expired and used-up refresh tokens, a batch at a time.
func (s *tokenService) sweep(ctx context.Context) (int, error) {
	now := s.now()
	deleted := 0
	start := []byte(refreshPrefix)
	end := prefixEnd(refreshPrefix)
	for {
		kvs, _, err := s.store.Range(ctx, start, end, 512)
		if err != nil {
			return deleted, err
		}
		var ops []storage.Op
		for _, kv := range kvs {
			var rec refreshRecord
			if json.Unmarshal(kv.Value, &rec) != nil || !now.Before(rec.ExpiresAt) ||
				(rec.RotatedAt != nil && now.After(rec.RotatedAt.Add(s.grace))) {
				ops = append(ops, storage.Op{Type: storage.OpDelete, Key: kv.Key})
			}
		}
		for len(ops) > 0 {
			n := min(len(ops), storage.MaxTxnOps)
			if _, err := s.store.Txn(ctx, storage.Txn{Then: ops[:n]}); err != nil {
				return deleted, err
			}
			deleted += n
			ops = ops[n:]
		}
		if len(kvs) < 512 {
			return deleted, nil
		}
		start = append(append([]byte(nil), kvs[len(kvs)-1].Key...), 0)
	}
}
