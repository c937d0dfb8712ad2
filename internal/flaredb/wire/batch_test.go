package wire

import (
	"bytes"
	"errors"
	"testing"
)

func TestBatchEnvelope(t *testing.T) {
	get := (&GetRequest{Key: []byte("k")}).Encode()
	txn := (&TxnRequest{Txn: Txn{Then: []Op{{Type: OpPut, Key: []byte("k"), Value: []byte("v")}}}}).Encode()
	b := EncodeBatch(TagBatchRequest, [][]byte{get, txn})
	items, err := DecodeBatch(TagBatchRequest, b)
	if err != nil || len(items) != 2 || !bytes.Equal(items[0], get) || !bytes.Equal(items[1], txn) {
		t.Fatalf("round trip: %q %v", items, err)
	}
	if _, err := DecodeBatch(TagBatchResponse, b); !errors.Is(err, ErrMalformed) {
		t.Fatalf("wrong tag: %v", err)
	}
	if _, err := DecodeBatch(TagBatchRequest, EncodeBatch(TagBatchRequest, nil)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("empty batch: %v", err)
	}
	many := make([][]byte, MaxBatchItems+1)
	for i := range many {
		many[i] = get
	}
	if _, err := DecodeBatch(TagBatchRequest, EncodeBatch(TagBatchRequest, many)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("%d items: %v", len(many), err)
	}
	if _, err := DecodeBatch(TagBatchRequest, append(b, 0)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("trailing byte: %v", err)
	}
	if _, err := DecodeBatch(TagBatchRequest, b[:len(b)-1]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("truncated: %v", err)
	}
}

func FuzzDecodeBatch(f *testing.F) {
	f.Add(EncodeBatch(TagBatchRequest, [][]byte{(&GetRequest{Key: []byte("k")}).Encode()}))
	f.Fuzz(func(t *testing.T, b []byte) {
		items, err := DecodeBatch(TagBatchRequest, b)
		if err != nil {
			return
		}
		again, err := DecodeBatch(TagBatchRequest, EncodeBatch(TagBatchRequest, items))
		if err != nil || len(again) != len(items) {
			t.Fatalf("re-encoded batch: %d items, %v; want %d", len(again), err, len(items))
		}
		for i := range items {
			if !bytes.Equal(again[i], items[i]) {
				t.Fatalf("item %d: %x, want %x", i, again[i], items[i])
			}
		}
	})
}
