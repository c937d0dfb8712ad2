package pebblestore

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/ultracloud/ultracloud/internal/runtime/storage"
)

// BenchmarkTxnPutParallel measures single-put transactions (256-byte values,
// distinct keys) from 1, 16 and 64 goroutines. RunParallel starts
// SetParallelism*GOMAXPROCS goroutines, so the goroutine counts are exact when
// they are multiples of GOMAXPROCS; 1 goroutine runs a plain loop.
func BenchmarkTxnPutParallel(b *testing.B) {
	for _, goroutines := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("goroutines=%d", goroutines), func(b *testing.B) {
			s := openStore(b, "", Options{})
			ctx := context.Background()
			value := make([]byte, 256)
			var seq atomic.Uint64
			txnPut := func() {
				key := fmt.Appendf(nil, "bench/%012d", seq.Add(1))
				if _, err := s.Txn(ctx, storage.Txn{Then: []storage.Op{{Type: storage.OpPut, Key: key, Value: value}}}); err != nil {
					b.Error(err)
				}
			}
			procs := runtime.GOMAXPROCS(0)
			b.ResetTimer()
			if goroutines < procs {
				for range b.N {
					txnPut()
				}
			} else {
				b.SetParallelism((goroutines + procs - 1) / procs)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						txnPut()
					}
				})
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "txns/s")
			if st := s.Metrics(); st.BatchesCommitted > 0 {
				b.ReportMetric(float64(st.TxnsCommitted)/float64(st.BatchesCommitted), "txns/batch")
			}
		})
	}
}

// BenchmarkGet reads random keys out of 10,000 with 256-byte values.
func BenchmarkGet(b *testing.B) {
	const keys = 10_000
	s := openStore(b, "", Options{})
	ctx := context.Background()
	value := make([]byte, 256)
	for i := 0; i < keys; i += 100 {
		ops := make([]storage.Op, 0, 100)
		for j := i; j < i+100; j++ {
			ops = append(ops, storage.Op{Type: storage.OpPut, Key: fmt.Appendf(nil, "bench/%06d", j), Value: value})
		}
		if _, err := s.Txn(ctx, storage.Txn{Then: ops}); err != nil {
			b.Fatal(err)
		}
	}
	key := make([]byte, 0, 16)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		key = fmt.Appendf(key[:0], "bench/%06d", (i*7919)%keys)
		if _, err := s.Get(ctx, key); err != nil {
			b.Fatal(err)
		}
	}
}
