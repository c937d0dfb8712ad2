package flaredb

import (
	"fmt"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	raftwal "github.com/hashicorp/raft-wal"

	"github.com/ultracloud/ultracloud/internal/flaredb/raftlog"
)

// BenchmarkLogStoreAppend compares durable raft log stores the way the
// leader uses them: one StoreLogs call (one fsync) per batch of entries,
// sequentially: ours on Pebble (raftlog), raft-wal (which we left for a
// truncation bug, see package raftlog) and raft-boltdb.
func BenchmarkLogStoreAppend(b *testing.B) {
	stores := map[string]func(dir string) (raft.LogStore, func() error, error){
		"pebble": func(dir string) (raft.LogStore, func() error, error) {
			s, err := raftlog.Open(dir, nil)
			if err != nil {
				return nil, nil, err
			}
			return s, s.Close, nil
		},
		"wal": func(dir string) (raft.LogStore, func() error, error) {
			w, err := raftwal.Open(dir)
			if err != nil {
				return nil, nil, err
			}
			return w, w.Close, nil
		},
		"bolt": func(dir string) (raft.LogStore, func() error, error) {
			s, err := raftboltdb.New(raftboltdb.Options{Path: dir + "/raft.db"})
			if err != nil {
				return nil, nil, err
			}
			return s, s.Close, nil
		},
	}
	for _, name := range []string{"pebble", "wal", "bolt"} {
		for _, batch := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("store=%s/batch=%d", name, batch), func(b *testing.B) {
				s, closeFn, err := stores[name](b.TempDir())
				if err != nil {
					b.Fatal(err)
				}
				defer closeFn()
				data := make([]byte, 300)
				logs := make([]*raft.Log, batch)
				idx := uint64(1)
				b.ResetTimer()
				for range b.N {
					for i := range logs {
						logs[i] = &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: data}
						idx++
					}
					if err := s.StoreLogs(logs); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "entries/s")
			})
		}
	}
}
