package pebble

import (
	"bytes"
	"math"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

var sampleAnys = []*anypb.Any{
	{},
	{TypeUrl: "type.googleapis.com/shop.Cart"},
	{Value: []byte{0}},
	{TypeUrl: "type.googleapis.com/shop.Cart", Value: []byte("cart")},
	{TypeUrl: string(bytes.Repeat([]byte("u"), 300)), Value: bytes.Repeat([]byte{0xff}, 70000)},
}

// TestAnyEncodingIsProtobuf checks that a stored payload is the protobuf
// encoding of the Any, in both directions, as doc.go promises.
func TestAnyEncodingIsProtobuf(t *testing.T) {
	for _, p := range sampleAnys {
		enc := appendAny(nil, p)
		if len(enc) != anySize(p) {
			t.Fatalf("anySize = %d, encoding has %d bytes", anySize(p), len(enc))
		}
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(enc, want) {
			t.Fatalf("appendAny(%v) = %x, proto.Marshal = %x", p, enc, want)
		}
		got, err := decodeAny(want)
		if err != nil || !proto.Equal(got, p) {
			t.Fatalf("decodeAny(proto.Marshal(%v)) = %v, %v", p, got, err)
		}
		if len(got.Value) > 0 && len(enc) > 0 {
			// The decoded value must not share memory with the record,
			// which Pebble reuses.
			enc[len(enc)-1]++
			if !proto.Equal(got, p) {
				t.Fatal("decoded payload aliases the record")
			}
		}
	}
}

func TestValueAndSnapshotRecords(t *testing.T) {
	for _, p := range sampleAnys {
		version, got, err := decodeValue(encodeValue(42, p))
		if err != nil || version != 42 || got == nil || !proto.Equal(got, p) {
			t.Fatalf("value record of %v decodes to %v at %d, %v", p, got, version, err)
		}
		seq, got, err := decodeSnapshot(encodeVersioned(7, nil, p))
		if err != nil || seq != 7 || !proto.Equal(got, p) {
			t.Fatalf("snapshot record of %v decodes to %v at %d, %v", p, got, seq, err)
		}
	}
	version, got, err := decodeValue(encodeValue(math.MaxInt64, nil))
	if err != nil || version != math.MaxInt64 || got != nil {
		t.Fatalf("tombstone decodes to %v at %d, %v", got, version, err)
	}
	for _, rec := range [][]byte{nil, {1, 2, 3}, {0, 0, 0, 0, 0, 0, 0, 1, 9}} {
		if _, _, err := decodeValue(rec); err == nil {
			t.Fatalf("decodeValue(%x) succeeded", rec)
		}
	}
}

// TestEventKeysStayInTheirRange checks the layout's two promises: one
// entity's events sort by seq, and no entity's event falls inside another
// entity's range, even when one id is a prefix of the other.
func TestEventKeysStayInTheirRange(t *testing.T) {
	ids := []string{"", "a", "a|", "a|1", "a|10", "a|1|0", "a|1\x00", "a|1\xff", string(bytes.Repeat([]byte("x"), 200))}
	seqs := []int64{1, 2, 255, 256, 1 << 32, math.MaxInt64}
	for _, id := range ids {
		prefix := idKey(spaceEvent, id, 8)
		for i := 1; i < len(seqs); i++ {
			if bytes.Compare(eventKey(prefix, seqs[i-1]), eventKey(prefix, seqs[i])) >= 0 {
				t.Fatalf("id %q: key of seq %d does not sort before seq %d", id, seqs[i-1], seqs[i])
			}
		}
		lower, upper := eventBounds(prefix, 0)
		for _, other := range ids {
			for _, seq := range seqs {
				k := eventKey(idKey(spaceEvent, other, 8), seq)
				inside := bytes.Compare(k, lower) >= 0 && bytes.Compare(k, upper) < 0
				if inside != (other == id) {
					t.Fatalf("event %d of %q inside the range of %q: %v", seq, other, id, inside)
				}
				if got, err := seqOfEventKey(k); err != nil || got != seq {
					t.Fatalf("seqOfEventKey = %d, %v; want %d", got, err, seq)
				}
			}
		}
	}
}

// FuzzDecodeAny feeds decodeAny arbitrary records: it must not panic, and
// whatever it accepts must survive a round trip.
func FuzzDecodeAny(f *testing.F) {
	for _, p := range sampleAnys[:4] {
		f.Add(appendAny(nil, p))
	}
	f.Add([]byte{0x0a, 0xff})
	f.Add([]byte{0x18, 0x01, 0x12, 0x00})
	f.Fuzz(func(t *testing.T, rec []byte) {
		p, err := decodeAny(rec)
		if err != nil {
			return
		}
		again, err := decodeAny(appendAny(nil, p))
		if err != nil || !proto.Equal(again, p) {
			t.Fatalf("round trip of %v: %v, %v", p, again, err)
		}
		_, _, _ = decodeValue(rec)
	})
}
