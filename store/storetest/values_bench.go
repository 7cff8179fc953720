package storetest

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/store"
)

// BenchValues runs the value store benchmarks against the stores returned by
// open, which must return a fresh, empty store on every call:
//
//   - PutParallel: the first write of a new key per operation, from
//     GOMAXPROCS goroutines (many value entities each persisting their state).
//   - PutSeq: successive versions of one key from one goroutine.
//   - Get: reading one key.
func BenchValues(b *testing.B, open func(tb testing.TB) store.ValueStore) {
	b.Run("PutParallel", func(b *testing.B) {
		s := open(b)
		ctx := context.Background()
		value := make([]byte, benchPayload)
		var goroutines atomic.Int64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			prefix := "bench|" + strconv.FormatInt(goroutines.Add(1), 10) + "|"
			for n := 0; pb.Next(); n++ {
				p := &anypb.Any{TypeUrl: typeURL, Value: value}
				if _, err := s.PutValue(ctx, prefix+strconv.Itoa(n), 0, p); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})

	b.Run("PutSeq", func(b *testing.B) {
		s := open(b)
		ctx := context.Background()
		value := make([]byte, benchPayload)
		version := int64(0)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			var err error
			version, err = s.PutValue(ctx, "bench|seq", version, &anypb.Any{TypeUrl: typeURL, Value: value})
			if err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("Get", func(b *testing.B) {
		s := open(b)
		ctx := context.Background()
		const key = "bench|get"
		if _, err := s.PutValue(ctx, key, 0, &anypb.Any{TypeUrl: typeURL, Value: make([]byte, benchPayload)}); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if v, err := s.GetValue(ctx, key); err != nil || v.Payload == nil {
				b.Fatalf("GetValue: %v, %v", v, err)
			}
		}
	})
}
