package memory_test

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/store"
	"github.com/cloudstate-go/cloudstate/store/memory"
	"github.com/cloudstate-go/cloudstate/store/storetest"
)

func openValues(testing.TB) store.ValueStore { return memory.New() }

func TestValues(t *testing.T)      { storetest.RunValues(t, openValues) }
func BenchmarkValues(b *testing.B) { storetest.BenchValues(b, openValues) }

// TestValueCopiesPayloads checks that neither the payload passed to PutValue
// nor the one returned by GetValue aliases stored data.
func TestValueCopiesPayloads(t *testing.T) {
	ctx := context.Background()
	s := memory.New()
	in := &anypb.Any{TypeUrl: "type.googleapis.com/t.V", Value: []byte("state")}
	v, err := s.PutValue(ctx, "v|1", 0, in)
	if err != nil {
		t.Fatal(err)
	}
	in.Value[0] = 'X'
	in.TypeUrl = "changed"
	for range 2 {
		got, err := s.GetValue(ctx, "v|1")
		if err != nil {
			t.Fatal(err)
		}
		if got.Version != v || got.Payload.TypeUrl != "type.googleapis.com/t.V" || string(got.Payload.Value) != "state" {
			t.Fatalf("GetValue = %v at version %d, want %q at version %d", got.Payload, got.Version, "state", v)
		}
		// Scribble on what we were given, including past its length.
		got.Payload.Value[0] = 'Y'
		_ = append(got.Payload.Value[:1], 'Z', 'Z')
	}
}

// TestPutValueMissingPayload checks that a nil payload is refused without
// writing and is not mistaken for a conflict: deleting is DeleteValue's job.
func TestPutValueMissingPayload(t *testing.T) {
	ctx := context.Background()
	s := memory.New()
	_, err := s.PutValue(ctx, "v|1", 0, nil)
	if err == nil || errors.Is(err, store.ErrConflict) {
		t.Fatalf("PutValue(nil) = %v, want an error that is not a conflict", err)
	}
	if got, _ := s.GetValue(ctx, "v|1"); got.Version != 0 || got.Payload != nil {
		t.Fatalf("PutValue(nil) stored %v at version %d", got.Payload, got.Version)
	}
}
