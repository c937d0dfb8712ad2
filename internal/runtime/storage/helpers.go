package storage

import (
	"context"
	"fmt"
)

// Put writes value under key unconditionally and returns the stored KV with
// its new revisions.
func Put(ctx context.Context, s Store, key, value []byte) (KV, error) {
	res, err := s.Txn(ctx, Txn{Then: []Op{{Type: OpPut, Key: key, Value: value}}})
	if err != nil {
		return KV{}, err
	}
	if len(res.Results) != 1 {
		return KV{}, fmt.Errorf("storage: put: got %d results, want 1", len(res.Results))
	}
	return res.Results[0].KV, nil
}

// Delete removes key. It returns the value that was deleted and whether there
// was one; deleting a missing key is not an error.
func Delete(ctx context.Context, s Store, key []byte) (prev KV, found bool, err error) {
	res, err := s.Txn(ctx, Txn{Then: []Op{{Type: OpDelete, Key: key}}})
	if err != nil {
		return KV{}, false, err
	}
	if len(res.Results) != 1 {
		return KV{}, false, fmt.Errorf("storage: delete: got %d results, want 1", len(res.Results))
	}
	return res.Results[0].KV, res.Results[0].Found, nil
}

// CreateIfAbsent writes value under key only if key does not exist. It returns
// created=true and the new KV when it wrote, or created=false and the existing
// KV when the key was already there.
func CreateIfAbsent(ctx context.Context, s Store, key, value []byte) (kv KV, created bool, err error) {
	res, err := s.Txn(ctx, Txn{
		If:   []Compare{{Key: key, Target: CompareMissing}},
		Then: []Op{{Type: OpPut, Key: key, Value: value}},
		Else: []Op{{Type: OpGet, Key: key}},
	})
	if err != nil {
		return KV{}, false, err
	}
	if len(res.Results) != 1 {
		return KV{}, false, fmt.Errorf("storage: create if absent: got %d results, want 1", len(res.Results))
	}
	return res.Results[0].KV, res.Succeeded, nil
}
