package sdk

import (
	"bytes"
	"strings"
	"testing"

	"github.com/cloudstate-go/cloudstate/protocol"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// handler runs fn as a handler on h and returns its delta and failure.
func handler(h *crdtHost, writable bool, fn func(a crdtAccess)) (*protocol.CrdtDelta, error) {
	var fx effects
	h.begin(&fx, writable)
	fn(crdtAccess{h})
	d := h.end(fx.err == nil)
	return d, fx.err
}

func mustDelta(t *testing.T, got, want *protocol.CrdtDelta) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Fatalf("delta %s\nwant  %s", prototext.Format(got), prototext.Format(want))
	}
}

func mustFail(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want %q", err, want)
	}
}

func TestPrimitiveEncoding(t *testing.T) {
	cases := []struct {
		a    *anypb.Any
		url  string
		want []byte
	}{
		{String(""), "p.cloudstate.io/string", nil},
		{String("ab"), "p.cloudstate.io/string", []byte{0x0a, 2, 'a', 'b'}},
		{Bytes(nil), "p.cloudstate.io/bytes", nil},
		{Int64(0), "p.cloudstate.io/int64", nil},
		{Int64(300), "p.cloudstate.io/int64", []byte{0x08, 0xac, 0x02}},
		{Int32(-1), "p.cloudstate.io/int32", []byte{0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
		{Bool(false), "p.cloudstate.io/bool", nil},
		{Bool(true), "p.cloudstate.io/bool", []byte{0x08, 1}},
		{Float(1), "p.cloudstate.io/float", []byte{0x0d, 0, 0, 0x80, 0x3f}},
		{Double(0), "p.cloudstate.io/double", nil},
	}
	for _, c := range cases {
		if c.a.GetTypeUrl() != c.url || !bytes.Equal(c.a.GetValue(), c.want) {
			t.Errorf("%s: got %s %x, want %x", c.url, c.a.GetTypeUrl(), c.a.GetValue(), c.want)
		}
	}
	// The encoding is the one of the wrapper types (field 1).
	if b, _ := proto.Marshal(wrapperspb.String("ab")); !bytes.Equal(b, String("ab").GetValue()) {
		t.Errorf("string encoding differs from StringValue's: %x", b)
	}
	if s, err := StringValue(String("héllo")); err != nil || s != "héllo" {
		t.Errorf("StringValue = %q, %v", s, err)
	}
	if v, err := Int32Value(Int32(-5)); err != nil || v != -5 {
		t.Errorf("Int32Value = %d, %v", v, err)
	}
	if v, err := Int64Value(Int64(-1 << 40)); err != nil || v != -1<<40 {
		t.Errorf("Int64Value = %d, %v", v, err)
	}
	if v, err := BoolValue(Bool(true)); err != nil || !v {
		t.Errorf("BoolValue = %v, %v", v, err)
	}
	if v, err := DoubleValue(Double(2.5)); err != nil || v != 2.5 {
		t.Errorf("DoubleValue = %v, %v", v, err)
	}
	if v, err := FloatValue(Float(-0.5)); err != nil || v != -0.5 {
		t.Errorf("FloatValue = %v, %v", v, err)
	}
	if v, err := BytesValue(Bytes([]byte{1, 2})); err != nil || !bytes.Equal(v, []byte{1, 2}) {
		t.Errorf("BytesValue = %x, %v", v, err)
	}
	if _, err := StringValue(Int64(1)); err == nil {
		t.Error("StringValue accepted an int64")
	}
	if _, err := StringValue(&anypb.Any{TypeUrl: "p.cloudstate.io/string", Value: []byte{0x0a, 5}}); err == nil {
		t.Error("StringValue accepted a truncated value")
	}

	// Messages are encoded with their type URL; an Any is kept as it is.
	a, err := encodeValue(wrapperspb.Int32(7))
	if err != nil || a.GetTypeUrl() != "type.googleapis.com/google.protobuf.Int32Value" {
		t.Fatalf("encodeValue = %v, %v", a, err)
	}
	if b, _ := encodeValue(String("x")); !proto.Equal(b, String("x")) {
		t.Fatalf("encodeValue(Any) = %v", b)
	}
}

func TestCRDTStaleObjects(t *testing.T) {
	h := newCRDTHost()
	var kept *ORSet
	d, err := handler(h, true, func(a crdtAccess) {
		kept = a.ORSet()
		kept.Add(String("a"))
	})
	if err != nil {
		t.Fatal(err)
	}
	mustDelta(t, d, orsetDelta(&protocol.ORSetDelta{Added: []*anypb.Any{String("a")}}))

	// An object kept from an earlier handler still works while current.
	d, err = handler(h, true, func(crdtAccess) { kept.Add(String("b")) })
	if err != nil {
		t.Fatal(err)
	}
	mustDelta(t, d, orsetDelta(&protocol.ORSetDelta{Added: []*anypb.Any{String("b")}}))

	// A failed handler is rolled back; its objects go stale.
	var failed *ORSet
	var fx effects
	h.begin(&fx, true)
	failed = crdtAccess{h}.ORSet()
	failed.Add(String("c"))
	h.end(false)
	if got := h.root.(*ORSet).Len(); got != 2 {
		t.Fatalf("after rollback %d elements, want 2", got)
	}
	_, err = handler(h, true, func(crdtAccess) { failed.Add(String("d")) })
	mustFail(t, err, "out of date")
	_, err = handler(h, true, func(crdtAccess) { kept.Add(String("d")) })
	mustFail(t, err, "out of date")

	// Changes outside a writable handler fail it.
	_, err = handler(h, false, func(a crdtAccess) { a.ORSet().Remove(String("a")) })
	mustFail(t, err, "only be changed by command and stream-cancel handlers")
	if got := h.root.(*ORSet).Len(); got != 2 {
		t.Fatalf("read-only handler changed the set: %d elements", got)
	}
}

func TestCRDTTypeMismatch(t *testing.T) {
	h := newCRDTHost()
	if _, err := handler(h, true, func(a crdtAccess) { a.GCounter().Increment(1) }); err != nil {
		t.Fatal(err)
	}
	d, err := handler(h, true, func(a crdtAccess) {
		a.GCounter().Increment(1)
		a.PNCounter().Increment(5) // a placeholder: ignored
	})
	mustFail(t, err, "the entity's CRDT is a GCounter, not a PNCounter")
	if d != nil || h.root.(*GCounter).Value() != 1 {
		t.Fatalf("delta %v, value %d", d, h.root.(*GCounter).Value())
	}

	h = newCRDTHost()
	_, err = handler(h, true, func(a crdtAccess) {
		m := a.ORMap()
		m.Flag(String("k")).Enable()
		m.GSet(String("k")).Add(String("x"))
	})
	mustFail(t, err, `ormap key "k" holds a Flag, not a GSet`)
	if h.root != nil {
		t.Fatalf("a failed first change left %v", h.root)
	}
}

func TestCRDTUnchangedNewCRDTIsForgotten(t *testing.T) {
	h := newCRDTHost()
	d, err := handler(h, true, func(a crdtAccess) {
		if v := a.Vote(); v.TotalVoters() != 1 || v.VotesFor() != 0 || v.SelfVote() {
			t.Errorf("new vote %d/%d %v", v.VotesFor(), v.TotalVoters(), v.SelfVote())
		}
	})
	if err != nil || d != nil || h.root != nil {
		t.Fatalf("delta %v, err %v, root %v", d, err, h.root)
	}
	// So a later delta of another type from the proxy does not clash.
	if err := h.applyDelta(gcounterDelta(2)); err != nil {
		t.Fatal(err)
	}
	// A register is created by its first Set.
	h = newCRDTHost()
	d, _ = handler(h, true, func(a crdtAccess) { a.LWWRegister() })
	if d != nil || h.root != nil {
		t.Fatalf("an unset register was kept: %v", d)
	}
}

func TestCRDTMapRegisterJoinsOnSet(t *testing.T) {
	h := newCRDTHost()
	d, err := handler(h, true, func(a crdtAccess) {
		m := a.ORMap()
		r := m.LWWRegister(String("r"))
		if m.LWWRegister(String("r")) != r {
			t.Error("a second call gave another register")
		}
		if m.Has(String("r")) || m.Len() != 0 || r.Value() != nil {
			t.Error("an unset register is in the map")
		}
		m.LWWRegister(String("unset"))
		m.ORMap(String("inner")).LWWRegister(String("deep")).SetWithClock(Int64(1), ClockReverse, 0)
		r.Set(String("v"))
		if !m.Has(String("r")) || m.Len() != 2 {
			t.Errorf("keys %v after Set", m.Keys())
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	mustDelta(t, d, ormapDelta(&protocol.ORMapDelta{Added: []*protocol.ORMapEntryDelta{
		{Key: String("r"), Delta: &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Lwwregister{Lwwregister: &protocol.LWWRegisterDelta{Value: String("v")}}}},
		{Key: String("inner"), Delta: ormapDelta(&protocol.ORMapDelta{Added: []*protocol.ORMapEntryDelta{
			{Key: String("deep"), Delta: &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Lwwregister{Lwwregister: &protocol.LWWRegisterDelta{
				Value: Int64(1), Clock: protocol.CrdtClock_REVERSE,
			}}}},
		}})},
	}}))
	// After the commit, the init value carries no clock.
	mustDelta(t, h.fullDelta(), ormapDelta(&protocol.ORMapDelta{Added: []*protocol.ORMapEntryDelta{
		{Key: String("r"), Delta: &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Lwwregister{Lwwregister: &protocol.LWWRegisterDelta{Value: String("v")}}}},
		{Key: String("inner"), Delta: ormapDelta(&protocol.ORMapDelta{Added: []*protocol.ORMapEntryDelta{
			{Key: String("deep"), Delta: &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Lwwregister{Lwwregister: &protocol.LWWRegisterDelta{Value: Int64(1)}}}},
		}})},
	}}))
}

func TestCRDTMapReadOnlyAccess(t *testing.T) {
	h := newCRDTHost()
	if err := h.applyDelta(ormapDelta(&protocol.ORMapDelta{Added: []*protocol.ORMapEntryDelta{
		{Key: String("a"), Delta: pncounterDelta(3)},
	}})); err != nil {
		t.Fatal(err)
	}
	d, err := handler(h, false, func(a crdtAccess) {
		m := a.ORMap()
		if v := m.PNCounter(String("missing")).Value(); v != 0 {
			t.Errorf("missing counter %d", v)
		}
		if m.Len() != 1 || m.Get(String("missing")) != nil {
			t.Errorf("reading created a key: %v", m.Keys())
		}
		if v := m.PNCounter(String("a")).Value(); v != 3 {
			t.Errorf("counter a = %d", v)
		}
	})
	if err != nil || d != nil {
		t.Fatalf("delta %v, err %v", d, err)
	}

	// A value whose key was deleted is stale.
	_, err = handler(h, true, func(a crdtAccess) {
		m := a.ORMap()
		c := m.PNCounter(String("a"))
		m.Delete(String("a"))
		c.Increment(1)
	})
	mustFail(t, err, "out of date")
	if got := h.root.(*ORMap).PNCounter(String("a")).Value(); got != 3 {
		t.Fatalf("rollback lost counter a: %d", got)
	}
}

func TestCRDTVoteHelpers(t *testing.T) {
	h := newCRDTHost()
	if err := h.applyDelta(&protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{Vote: &protocol.VoteDelta{SelfVote: false, VotesFor: 2, TotalVoters: 3}}}); err != nil {
		t.Fatal(err)
	}
	v := h.root.(*Vote)
	if !v.AtLeastOne() || !v.Majority() || v.All() {
		t.Fatalf("vote %d/%d: at least one %v, majority %v, all %v", v.VotesFor(), v.TotalVoters(), v.AtLeastOne(), v.Majority(), v.All())
	}
	d, err := handler(h, true, func(a crdtAccess) { a.Vote().Vote(true) })
	if err != nil {
		t.Fatal(err)
	}
	mustDelta(t, d, &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{Vote: &protocol.VoteDelta{SelfVote: true}}})
	if !v.All() {
		t.Fatalf("vote %d/%d after voting yes", v.VotesFor(), v.TotalVoters())
	}
}

func TestCRDTInvalidDeltas(t *testing.T) {
	for _, d := range []*protocol.CrdtDelta{
		{},
		{Delta: &protocol.CrdtDelta_Lwwregister{Lwwregister: &protocol.LWWRegisterDelta{}}},
		ormapDelta(&protocol.ORMapDelta{Updated: []*protocol.ORMapEntryDelta{{Key: String("x"), Delta: gcounterDelta(1)}}}),
		ormapDelta(&protocol.ORMapDelta{Added: []*protocol.ORMapEntryDelta{{Key: String("x"), Delta: &protocol.CrdtDelta{}}}}),
		ormapDelta(&protocol.ORMapDelta{Added: []*protocol.ORMapEntryDelta{{Delta: gcounterDelta(1)}}}),
	} {
		if err := newCRDTHost().applyDelta(d); err == nil {
			t.Errorf("delta %v accepted", d)
		}
	}
	h := newCRDTHost()
	if err := h.applyDelta(ormapDelta(&protocol.ORMapDelta{Added: []*protocol.ORMapEntryDelta{{Key: String("x"), Delta: gcounterDelta(1)}}})); err != nil {
		t.Fatal(err)
	}
	if err := h.applyDelta(ormapDelta(&protocol.ORMapDelta{Updated: []*protocol.ORMapEntryDelta{{Key: String("x"), Delta: flagDelta()}}})); err == nil {
		t.Error("an update of the wrong type was accepted")
	}
}

func flagDelta() *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Flag{Flag: &protocol.FlagDelta{Value: true}}}
}
