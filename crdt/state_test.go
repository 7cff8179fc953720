package crdt

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	pb "github.com/cloudstate-go/cloudstate/crdt/crdtpb"
	"github.com/cloudstate-go/cloudstate/protocol"
)

// UnmarshalState accepts only what MarshalState writes.
func TestUnmarshalStateRejects(t *testing.T) {
	nc := func(node string, c uint64) *pb.NodeCounter { return &pb.NodeCounter{Node: []byte(node), Counter: c} }
	p := func(s string) *pb.Payload { return &pb.Payload{TypeUrl: []byte("t"), Value: []byte(s)} }
	flag := &pb.State{State: &pb.State_Flag{Flag: &pb.Flag{Enabled: true}}}
	tests := []struct {
		name  string
		state *pb.State
	}{
		{"no state", &pb.State{}},
		{"counters out of order", &pb.State{State: &pb.State_Gcounter{Gcounter: &pb.GCounter{Counts: []*pb.NodeCounter{nc("b", 1), nc("a", 1)}}}}},
		{"duplicate counter", &pb.State{State: &pb.State_Vote{Vote: &pb.Vote{Votes: []*pb.NodeCounter{nc("a", 1), nc("a", 2)}}}}},
		{"zero counter", &pb.State{State: &pb.State_Pncounter{Pncounter: &pb.PNCounter{Decrements: &pb.GCounter{Counts: []*pb.NodeCounter{nc("a", 0)}}}}}},
		{"gset duplicate", &pb.State{State: &pb.State_Gset{Gset: &pb.GSet{Elements: []*pb.Payload{p("x"), p("x")}}}}},
		{"orset dot outside context", &pb.State{State: &pb.State_Orset{Orset: &pb.ORSet{
			Context: []*pb.NodeCounter{nc("a", 1)}, Elements: []*pb.ORSetElement{{Element: p("x"), Dots: []*pb.NodeCounter{nc("a", 2)}}}}}}},
		{"orset element without dots", &pb.State{State: &pb.State_Orset{Orset: &pb.ORSet{
			Context: []*pb.NodeCounter{nc("a", 1)}, Elements: []*pb.ORSetElement{{Element: p("x")}}}}}},
		{"orset element missing", &pb.State{State: &pb.State_Orset{Orset: &pb.ORSet{
			Context: []*pb.NodeCounter{nc("a", 1)}, Elements: []*pb.ORSetElement{{Dots: []*pb.NodeCounter{nc("a", 1)}}}}}}},
		{"orset dots out of order", &pb.State{State: &pb.State_Orset{Orset: &pb.ORSet{
			Context: []*pb.NodeCounter{nc("a", 2)}, Elements: []*pb.ORSetElement{{Element: p("x"), Dots: []*pb.NodeCounter{nc("a", 2), nc("a", 1)}}}}}}},
		{"lwwregister written without value", &pb.State{State: &pb.State_Lwwregister{Lwwregister: &pb.LWWRegister{Set: true}}}},
		{"lwwregister unwritten with timestamp", &pb.State{State: &pb.State_Lwwregister{Lwwregister: &pb.LWWRegister{Timestamp: 3}}}},
		{"ormap dot without value", &pb.State{State: &pb.State_Ormap{Ormap: &pb.ORMap{
			Context: []*pb.NodeCounter{nc("a", 1)}, Entries: []*pb.ORMapEntry{{Key: p("k"), Dots: []*pb.ValueDot{{Node: []byte("a"), Counter: 1}}}}}}}},
		{"ormap keys out of order", &pb.State{State: &pb.State_Ormap{Ormap: &pb.ORMap{
			Context: []*pb.NodeCounter{nc("a", 1)}, Entries: []*pb.ORMapEntry{
				{Key: p("k2"), Dots: []*pb.ValueDot{{Node: []byte("a"), Counter: 1, Value: flag}}},
				{Key: p("k1"), Dots: []*pb.ValueDot{{Node: []byte("a"), Counter: 1, Value: flag}}}}}}}},
		{"ormap nested corruption", &pb.State{State: &pb.State_Ormap{Ormap: &pb.ORMap{
			Context: []*pb.NodeCounter{nc("a", 1)}, Entries: []*pb.ORMapEntry{
				{Key: p("k"), Dots: []*pb.ValueDot{{Node: []byte("a"), Counter: 1, Value: &pb.State{}}}}}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := proto.Marshal(tt.state)
			must(t, err)
			if _, err := UnmarshalState(b); !errors.Is(err, ErrCorruptState) {
				t.Fatalf("UnmarshalState = %v, want ErrCorruptState", err)
			}
		})
	}
	if _, err := UnmarshalState([]byte{0xff, 0xff}); !errors.Is(err, ErrCorruptState) {
		t.Fatalf("garbage: %v", err)
	}
}

// Node ids and payloads need not be UTF-8: state is all bytes.
func TestStateBinaryNodeIDs(t *testing.T) {
	c := newOf(t, KindORMap)
	r := Replica{Node: "\xff\xfe node", Now: func() int64 { return 5 }}
	bad := &anypb.Any{TypeUrl: "\xc3\x28", Value: []byte{0, 1, 2}}
	must(t, c.Apply(r, ormapD(false, nil, nil, entries(&protocol.ORMapEntryDelta{Key: bad, Delta: lwwD("v", 0, 0)}))))
	back := roundTrip(t, c)
	if _, ok := back.View(r).(ORMapView)[KeyOf(bad)]; !ok {
		t.Fatal("binary key lost in a round trip")
	}
}
