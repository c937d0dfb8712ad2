package pebblestore

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"testing"

	"github.com/ultracloud/ultracloud/internal/runtime/storage"
)

func TestValueRoundTrip(t *testing.T) {
	for _, v := range []storedValue{
		{value: []byte{}, create: 1, mod: 1},
		{value: []byte("hello"), create: 3, mod: 7},
		{value: bytes.Repeat([]byte{0xff}, 1000), create: math.MaxInt64, mod: math.MaxInt64},
	} {
		got, err := decodeValue(appendValue(nil, v))
		if err != nil {
			t.Fatalf("decode %+v: %v", v, err)
		}
		if !reflect.DeepEqual(got, v) {
			t.Fatalf("round trip: got %+v, want %+v", got, v)
		}
	}
}

func TestLogEntryRoundTrip(t *testing.T) {
	e := logEntry{rev: 42, events: []logEvent{
		{typ: storage.EventPut, key: []byte("a"), value: []byte("1"), create: 42},
		{typ: storage.EventDelete, key: []byte("b"), value: []byte{}, create: 5},
		{typ: storage.EventPut, key: []byte("c"), value: bytes.Repeat([]byte("x"), 300), create: 7},
	}}
	got, err := decodeLogEntry(appendLogEntry(nil, e))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, e) {
		t.Fatalf("round trip: got %+v, want %+v", got, e)
	}
}

func TestDecodeRejectsCorrupt(t *testing.T) {
	good := appendLogEntry(nil, logEntry{rev: 9, events: []logEvent{{typ: storage.EventPut, key: []byte("k"), value: []byte("v"), create: 9}}})
	for name, b := range map[string][]byte{
		"empty":        nil,
		"format":       append([]byte{2}, good[1:]...),
		"truncated":    good[:len(good)-1],
		"trailing":     append(append([]byte{}, good...), 0),
		"zero events":  {formatV1, 9, 0},
		"huge count":   {formatV1, 9, 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 1, 'k', 0, 1},
		"bad type":     {formatV1, 9, 1, 7, 1, 'k', 0, 1},
		"empty key":    {formatV1, 9, 1, 0, 0, 0, 1},
		"create>rev":   {formatV1, 9, 1, 0, 1, 'k', 0, 10},
		"key overflow": {formatV1, 9, 1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 'k'},
	} {
		if _, err := decodeLogEntry(b); !errors.Is(err, errCorrupt) {
			t.Errorf("log %s: err = %v, want errCorrupt", name, err)
		}
	}
	for name, b := range map[string][]byte{
		"empty":      nil,
		"format":     {0, 1, 1},
		"no mod":     {formatV1, 1},
		"mod<create": {formatV1, 5, 4},
		"zero":       {formatV1, 0, 0},
		"overflow":   {formatV1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1},
	} {
		if _, err := decodeValue(b); !errors.Is(err, errCorrupt) {
			t.Errorf("value %s: err = %v, want errCorrupt", name, err)
		}
	}
	if _, err := decodeMeta([]byte{formatV1, 1, 2}); !errors.Is(err, errCorrupt) {
		t.Errorf("meta trailing: err = %v", err)
	}
}

func FuzzDecodeValue(f *testing.F) {
	f.Add(appendValue(nil, storedValue{value: []byte("v"), create: 1, mod: 2}))
	f.Add(appendValue(nil, storedValue{value: []byte{}, create: 1, mod: 1}))
	f.Add(appendValue(nil, storedValue{value: []byte("big"), create: math.MaxInt64, mod: math.MaxInt64}))
	f.Add([]byte{})
	f.Add([]byte{formatV1})
	f.Add([]byte{formatV1, 0x80})
	f.Add([]byte{2, 1, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := decodeValue(b)
		if err != nil {
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("error does not wrap errCorrupt: %v", err)
			}
			return
		}
		again, err := decodeValue(appendValue(nil, v))
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if !bytes.Equal(again.value, v.value) || again.create != v.create || again.mod != v.mod {
			t.Fatalf("round trip changed %+v to %+v", v, again)
		}
	})
}

func FuzzDecodeLogEntry(f *testing.F) {
	f.Add(appendLogEntry(nil, logEntry{rev: 1, events: []logEvent{{typ: storage.EventPut, key: []byte("a"), value: []byte("1"), create: 1}}}))
	f.Add(appendLogEntry(nil, logEntry{rev: 300, events: []logEvent{
		{typ: storage.EventDelete, key: []byte("a"), value: []byte("old"), create: 2},
		{typ: storage.EventPut, key: []byte("b"), value: []byte{}, create: 300},
	}}))
	f.Add([]byte{})
	f.Add([]byte{formatV1, 1, 0})
	f.Add([]byte{formatV1, 1, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{formatV1, 1, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f, 'k'})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeLogEntry(b)
		if err != nil {
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("error does not wrap errCorrupt: %v", err)
			}
			return
		}
		again, err := decodeLogEntry(appendLogEntry(nil, e))
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if again.rev != e.rev || len(again.events) != len(e.events) {
			t.Fatalf("round trip changed %+v to %+v", e, again)
		}
		for i := range e.events {
			a, b := e.events[i], again.events[i]
			if a.typ != b.typ || a.create != b.create || !bytes.Equal(a.key, b.key) || !bytes.Equal(a.value, b.value) {
				t.Fatalf("event %d: round trip changed %+v to %+v", i, a, b)
			}
		}
	})
}
