package crdte2e

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	pb "github.com/cloudstate-go/cloudstate/test/crdt/testfunction/crdttestpb"
)

// step is one change and the state the function must answer with.
type step struct {
	change *pb.ChangeRequest
	want   *pb.State
}

// typeCase drives one entity of one CRDT type.
type typeCase struct {
	typ   string
	steps []step
}

// typeCases changes one entity of each CRDT type; the final state of each
// is its last step's.
func typeCases(prefix string) []typeCase {
	ch := func(c *pb.ChangeRequest) *pb.ChangeRequest { return c }
	return []typeCase{
		{"GCounter", []step{
			{ch(&pb.ChangeRequest{Change: &pb.ChangeRequest_GcounterIncrement{GcounterIncrement: 3}}), &pb.State{Type: "GCounter", Gcounter: 3}},
			{ch(&pb.ChangeRequest{Change: &pb.ChangeRequest_GcounterIncrement{GcounterIncrement: 4}}), &pb.State{Type: "GCounter", Gcounter: 7}},
		}},
		{"PNCounter", []step{
			{ch(&pb.ChangeRequest{Change: &pb.ChangeRequest_PncounterChange{PncounterChange: 5}}), &pb.State{Type: "PNCounter", Pncounter: 5}},
			{ch(&pb.ChangeRequest{Change: &pb.ChangeRequest_PncounterChange{PncounterChange: -8}}), &pb.State{Type: "PNCounter", Pncounter: -3}},
		}},
		{"GSet", []step{
			{ch(&pb.ChangeRequest{Change: &pb.ChangeRequest_GsetAdd{GsetAdd: "b"}}), &pb.State{Type: "GSet", Elements: []string{"b"}}},
			{ch(&pb.ChangeRequest{Change: &pb.ChangeRequest_GsetAdd{GsetAdd: "a"}}), &pb.State{Type: "GSet", Elements: []string{"a", "b"}}},
			{ch(&pb.ChangeRequest{Change: &pb.ChangeRequest_GsetAdd{GsetAdd: "b"}}), &pb.State{Type: "GSet", Elements: []string{"a", "b"}}},
		}},
		{"ORSet", []step{
			{ch(&pb.ChangeRequest{Change: &pb.ChangeRequest_OrsetAdd{OrsetAdd: "x"}}), &pb.State{Type: "ORSet", Elements: []string{"x"}}},
			{ch(&pb.ChangeRequest{Change: &pb.ChangeRequest_OrsetAdd{OrsetAdd: "y"}}), &pb.State{Type: "ORSet", Elements: []string{"x", "y"}}},
			{ch(&pb.ChangeRequest{Change: &pb.ChangeRequest_OrsetAdd{OrsetAdd: "z"}}), &pb.State{Type: "ORSet", Elements: []string{"x", "y", "z"}}},
			{ch(&pb.ChangeRequest{Change: &pb.ChangeRequest_OrsetRemove{OrsetRemove: "y"}}), &pb.State{Type: "ORSet", Elements: []string{"x", "z"}}},
			{ch(&pb.ChangeRequest{Change: &pb.ChangeRequest_OrsetClear{OrsetClear: true}}), &pb.State{Type: "ORSet"}},
			{ch(&pb.ChangeRequest{Change: &pb.ChangeRequest_OrsetAdd{OrsetAdd: "w"}}), &pb.State{Type: "ORSet", Elements: []string{"w"}}},
		}},
		{"LWWRegister", []step{
			{ch(&pb.ChangeRequest{Change: &pb.ChangeRequest_LwwregisterSet{LwwregisterSet: "one"}}), &pb.State{Type: "LWWRegister", Register: "one"}},
			{ch(&pb.ChangeRequest{Change: &pb.ChangeRequest_LwwregisterSet{LwwregisterSet: "two"}}), &pb.State{Type: "LWWRegister", Register: "two"}},
		}},
		{"Flag", []step{
			{ch(&pb.ChangeRequest{Change: &pb.ChangeRequest_FlagEnable{FlagEnable: true}}), &pb.State{Type: "Flag", Flag: true}},
			{ch(&pb.ChangeRequest{Change: &pb.ChangeRequest_FlagEnable{FlagEnable: true}}), &pb.State{Type: "Flag", Flag: true}},
		}},
		{"Vote", []step{
			{ch(&pb.ChangeRequest{Change: &pb.ChangeRequest_Vote{Vote: true}}), &pb.State{Type: "Vote", Vote: &pb.VoteState{SelfVote: true, VotesFor: 1, TotalVoters: 1}}},
			{ch(&pb.ChangeRequest{Change: &pb.ChangeRequest_Vote{Vote: false}}), &pb.State{Type: "Vote", Vote: &pb.VoteState{SelfVote: false, VotesFor: 0, TotalVoters: 1}}},
			{ch(&pb.ChangeRequest{Change: &pb.ChangeRequest_Vote{Vote: true}}), &pb.State{Type: "Vote", Vote: &pb.VoteState{SelfVote: true, VotesFor: 1, TotalVoters: 1}}},
		}},
		{"ORMap", []step{
			{ch(&pb.ChangeRequest{Change: &pb.ChangeRequest_OrmapChange{OrmapChange: &pb.MapChange{Key: "a", Value: &pb.MapChange_CounterChange{CounterChange: 2}}}}),
				&pb.State{Type: "ORMap", Entries: []*pb.MapEntry{{Key: "a", Counter: 2}}}},
			{ch(&pb.ChangeRequest{Change: &pb.ChangeRequest_OrmapChange{OrmapChange: &pb.MapChange{Key: "b", Value: &pb.MapChange_RegisterSet{RegisterSet: "hi"}}}}),
				&pb.State{Type: "ORMap", Entries: []*pb.MapEntry{{Key: "a", Counter: 2}, {Key: "b", Register: "hi"}}}},
			{ch(&pb.ChangeRequest{Change: &pb.ChangeRequest_OrmapChange{OrmapChange: &pb.MapChange{Key: "a", Value: &pb.MapChange_CounterChange{CounterChange: 3}}}}),
				&pb.State{Type: "ORMap", Entries: []*pb.MapEntry{{Key: "a", Counter: 5}, {Key: "b", Register: "hi"}}}},
			{ch(&pb.ChangeRequest{Change: &pb.ChangeRequest_OrmapRemove{OrmapRemove: "b"}}),
				&pb.State{Type: "ORMap", Entries: []*pb.MapEntry{{Key: "a", Counter: 5}}}},
		}},
	}
}

// id is the entity id of a case: the type's name after the test's prefix.
func (c typeCase) id(prefix string) string { return prefix + c.typ }

// final is the state after every step.
func (c typeCase) final() *pb.State { return c.steps[len(c.steps)-1].want }

// run makes every change, checking each answer, on entity id.
func (c typeCase) run(t *testing.T, client pb.CrdtTypesClient, id string) {
	t.Helper()
	for i, s := range c.steps {
		req := proto.CloneOf(s.change)
		req.Id = id
		got, err := client.Change(callCtx(t), req)
		if err != nil {
			t.Fatalf("%s step %d: Change: %v", id, i, err)
		}
		wantState(t, fmt.Sprintf("%s after step %d", id, i), got, s.want)
	}
}

// sameState reports whether two states are equal, ignoring the command id.
func sameState(got, want *pb.State) bool {
	got = proto.CloneOf(got)
	got.CommandId = want.GetCommandId()
	return proto.Equal(got, want)
}

// wantState compares states, ignoring the command id.
func wantState(t testing.TB, what string, got, want *pb.State) {
	t.Helper()
	if !sameState(got, want) {
		t.Fatalf("%s: got state {%v}, want {%v}", what, prototext.Format(got), prototext.Format(want))
	}
}

// awaitState reads a watch until it sends want; states it sends before
// are skipped (a change that changes nothing may or may not be sent).
func awaitState(t testing.TB, what string, states <-chan recvResult[*pb.State], want *pb.State) {
	t.Helper()
	var seen []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := next(t, what, states, time.Until(deadline))
		if r.err != nil {
			t.Fatalf("%s: the stream ended: %v; saw %v", what, r.err, seen)
		}
		if sameState(r.msg, want) {
			return
		}
		seen = append(seen, "{"+prototext.Format(r.msg)+"}")
	}
}

// TestEveryType changes one entity of each CRDT type through the proxy and
// reads it back, on the same connection and on another one.
func TestEveryType(t *testing.T) {
	s := startStack(t, bins.testfunction)
	client := pb.NewCrdtTypesClient(s.conn)
	other := pb.NewCrdtTypesClient(dial(t, s.proxy.addr))

	// An entity that was never changed has no CRDT.
	got, err := client.Get(callCtx(t), &pb.Key{Id: "never-changed"})
	if err != nil {
		t.Fatalf("Get of a new entity: %v", err)
	}
	wantState(t, "a new entity", got, &pb.State{})

	for _, c := range typeCases("") {
		t.Run(c.typ, func(t *testing.T) {
			id := c.id("types-")
			c.run(t, client, id)
			got, err := other.Get(callCtx(t), &pb.Key{Id: id})
			if err != nil {
				t.Fatalf("Get from another client: %v", err)
			}
			wantState(t, "read back", got, c.final())
		})
	}
}

// TestFailedChangeIsUndone: a command that changes the CRDT and then fails
// answers the failure, and the change is not kept.
func TestFailedChangeIsUndone(t *testing.T) {
	s := startStack(t, bins.testfunction)
	client := pb.NewCrdtTypesClient(s.conn)
	ctx := callCtx(t)
	if _, err := client.Change(ctx, &pb.ChangeRequest{Id: "undo", Change: &pb.ChangeRequest_PncounterChange{PncounterChange: 2}}); err != nil {
		t.Fatal(err)
	}
	_, err := client.Change(ctx, &pb.ChangeRequest{Id: "undo", Change: &pb.ChangeRequest_PncounterChange{PncounterChange: 40}, Fail: "no, thanks"})
	wantStatus(t, "failing Change", err, codes.Unknown, "no, thanks")
	// A change of another type fails too.
	_, err = client.Change(ctx, &pb.ChangeRequest{Id: "undo", Change: &pb.ChangeRequest_GsetAdd{GsetAdd: "x"}})
	if err == nil {
		t.Fatal("adding to a set on a PNCounter entity succeeded")
	}
	got, err := client.Get(ctx, &pb.Key{Id: "undo"})
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, "after the failures", got, &pb.State{Type: "PNCounter", Pncounter: 2})
	// The entity goes on.
	got, err = client.Change(ctx, &pb.ChangeRequest{Id: "undo", Change: &pb.ChangeRequest_PncounterChange{PncounterChange: 1}})
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, "after one more change", got, &pb.State{Type: "PNCounter", Pncounter: 3})
}

// TestConcurrentChanges: many clients change one counter at once; every
// change counts once.
func TestConcurrentChanges(t *testing.T) {
	s := startStack(t, bins.testfunction)
	const clients, each = 20, 25
	errs := make(chan error, clients)
	for i := 0; i < clients; i++ {
		client := pb.NewCrdtTypesClient(s.conn)
		if i%2 == 1 {
			client = pb.NewCrdtTypesClient(dial(t, s.proxy.addr))
		}
		go func() {
			for j := 0; j < each; j++ {
				ctx := callCtx(t)
				if _, err := client.Change(ctx, &pb.ChangeRequest{Id: "busy", Change: &pb.ChangeRequest_GcounterIncrement{GcounterIncrement: 1}}); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for i := 0; i < clients; i++ {
		if err := <-errs; err != nil {
			t.Fatalf("Change: %v", err)
		}
	}
	got, err := pb.NewCrdtTypesClient(s.conn).Get(callCtx(t), &pb.Key{Id: "busy"})
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, "after every change", got, &pb.State{Type: "GCounter", Gcounter: clients * each})
}

// TestWatchSeesOtherClients: a Watch stream gets the state after every
// change that other clients make, for each type.
func TestWatchSeesOtherClients(t *testing.T) {
	s := startStack(t, bins.testfunction)
	watcher := pb.NewCrdtTypesClient(s.conn)
	changer := pb.NewCrdtTypesClient(dial(t, s.proxy.addr))
	for _, c := range typeCases("") {
		t.Run(c.typ, func(t *testing.T) {
			id := c.id("watch-")
			ctx := callCtx(t)
			stream, err := watcher.Watch(ctx, &pb.Key{Id: id})
			if err != nil {
				t.Fatalf("Watch: %v", err)
			}
			states := streamReader(stream.Recv)
			wantState(t, "first state", nextMsg(t, "first state", states), &pb.State{})
			for i, st := range c.steps {
				req := proto.CloneOf(st.change)
				req.Id = id
				if _, err := changer.Change(callCtx(t), req); err != nil {
					t.Fatalf("step %d: Change: %v", i, err)
				}
				if i > 0 && sameState(c.steps[i-1].want, st.want) {
					// Nothing changed, so there is nothing to watch.
					continue
				}
				awaitState(t, fmt.Sprintf("state after step %d", i), states, st.want)
			}
		})
	}
	// A change that fails sends nothing.
	ctx := callCtx(t)
	stream, err := watcher.Watch(ctx, &pb.Key{Id: "watch-PNCounter"})
	if err != nil {
		t.Fatal(err)
	}
	states := streamReader(stream.Recv)
	nextMsg(t, "first state", states)
	_, err = changer.Change(callCtx(t), &pb.ChangeRequest{Id: "watch-PNCounter", Change: &pb.ChangeRequest_PncounterChange{PncounterChange: 1}, Fail: "no"})
	wantStatus(t, "failing change", err, codes.Unknown, "no")
	quiet(t, "after a failed change", states, 200*time.Millisecond)
}
