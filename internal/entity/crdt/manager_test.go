package crdt

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/cloudstate-go/cloudstate/crdt"
	"github.com/cloudstate-go/cloudstate/internal/route"
	"github.com/cloudstate-go/cloudstate/protocol"
)

// CRDT-2, CRDT-3, CRDT-12: init without a delta for a new entity, command
// ids from 1 per stream, streamed set only for streamed commands, metadata
// never sent; after passivation the state is kept and init carries it.
func TestInitCommandsAndReactivation(t *testing.T) {
	f := newFixture(t, 100*time.Millisecond)
	md := &protocol.Metadata{Entries: []*protocol.MetadataEntry{{Key: "x-user", Value: &protocol.MetadataEntry_StringValue{StringValue: "alice"}}}}

	u1 := f.unaryCall(route.Call{Method: f.do, EntityID: "a", Payload: msg("one"), Metadata: md})
	s := f.nextStream()
	if s.init.GetServiceName() != serviceName || s.init.GetEntityId() != "a" || s.init.GetDelta() != nil {
		t.Fatalf("init %v, want service %s, entity a and no delta", s.init, serviceName)
	}
	c1 := s.command(t)
	want1 := &protocol.Command{EntityId: "a", Id: 1, Name: "Do", Payload: msg("one")}
	if !proto.Equal(c1, want1) {
		t.Fatalf("command %v, want %v (no metadata, not streamed)", c1, want1)
	}

	// A streamed command while the first is in flight; its open stream
	// keeps the entity from passivating for the rest of the test.
	w := f.subscribe("a", "watch", nil)
	c2 := s.command(t)
	want2 := &protocol.Command{EntityId: "a", Id: 2, Name: "Watch", Payload: msg("watch"), Streamed: true}
	if !proto.Equal(c2, want2) {
		t.Fatalf("command %v, want %v", c2, want2)
	}
	s.reply(t, &protocol.CrdtReply{CommandId: 2, Streamed: true})
	if o := w.next(t); o.Action != nil {
		t.Fatalf("first outcome %v, want no client action", o.Action)
	}
	s.reply(t, &protocol.CrdtReply{CommandId: 1, ClientAction: replyOf("done one"), StateAction: update(gcounter(3))})
	awaitReply(t, u1, "done one")

	u3 := f.unary("a", "three")
	if c := s.command(t); c.GetId() != 3 || c.GetStreamed() || c.GetMetadata() != nil {
		t.Fatalf("command %v, want id 3, not streamed, no metadata", c)
	}
	s.reply(t, &protocol.CrdtReply{CommandId: 3, ClientAction: replyOf("done three")})
	awaitReply(t, u3, "done three")

	s.streamed(t, &protocol.CrdtStreamedMessage{CommandId: 2, EndStream: true})
	w.next(t) // the end message (no client action) is relayed as an empty outcome
	if err := w.end(t); err != nil {
		t.Fatalf("stream ended with %v, want normally", err)
	}

	// Now idle: the entity passivates, closing the stream gracefully.
	if err := s.ended(t); err != io.EOF {
		t.Fatalf("entity stream ended with %v, want a half-close (passivation)", err)
	}
	eventually(t, "the entity to passivate", func() bool { return f.mgr.Active() == 0 })

	u4 := f.unary("a", "four")
	s2 := f.nextStream()
	wantDelta(t, s2.init.GetDelta(), gcounter(3))
	if c := s2.command(t); c.GetId() != 1 || c.GetName() != "Do" {
		t.Fatalf("first command of the new stream %v, want id 1", c)
	}
	s2.reply(t, &protocol.CrdtReply{CommandId: 1, ClientAction: replyOf("done four")})
	awaitReply(t, u4, "done four")
	if n := f.fn.streamCount(); n != 2 {
		t.Fatalf("%d entity streams, want 2", n)
	}
	f.noReports()
}

// CRDT-3, PROTOCOL §7.3: several commands in flight, replies in any order,
// matched by id.
func TestRepliesInAnyOrderMatchedByID(t *testing.T) {
	f := newFixture(t, time.Minute)
	calls := map[string]<-chan result{}
	first := f.unary("a", "p0")
	calls["p0"] = first
	s := f.nextStream()
	cmds := []*protocol.Command{s.command(t)}
	for i := 1; i < 5; i++ {
		p := fmt.Sprintf("p%d", i)
		calls[p] = f.unary("a", p)
		cmds = append(cmds, s.command(t))
	}
	seen := map[int64]bool{}
	for _, c := range cmds {
		if c.GetId() < 1 || c.GetId() > 5 || seen[c.GetId()] {
			t.Fatalf("command ids %v, want 1..5 each once", cmds)
		}
		seen[c.GetId()] = true
	}
	// Reply last to first, each echoing its command's payload.
	for i := len(cmds) - 1; i >= 0; i-- {
		c := cmds[i]
		s.reply(t, &protocol.CrdtReply{CommandId: c.GetId(), ClientAction: replyOf("re " + string(c.GetPayload().GetValue()))})
	}
	for p, ch := range calls {
		awaitReply(t, ch, "re "+p)
	}
}

// CRDT-5, CRDT-6: an update is applied to the replicated state before the
// client gets the outcome, for every CRDT type; the function never gets
// its own update back; init after re-activation carries the full value.
func TestUpdatesOfEveryTypeAppliedBeforeTheReply(t *testing.T) {
	entry := func(key string, d *protocol.CrdtDelta) *protocol.ORMapEntryDelta {
		return &protocol.ORMapEntryDelta{Key: msg(key), Delta: d}
	}
	ormap := func(md *protocol.ORMapDelta) *protocol.CrdtDelta {
		return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Ormap{Ormap: md}}
	}
	orset := func(sd *protocol.ORSetDelta) *protocol.CrdtDelta {
		return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Orset{Orset: sd}}
	}
	lww := func(v string, clock protocol.CrdtClock, custom int64) *protocol.CrdtDelta {
		return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Lwwregister{Lwwregister: &protocol.LWWRegisterDelta{Value: msg(v), Clock: clock, CustomClockValue: custom}}}
	}
	vote := func(self bool, votesFor, total int32) *protocol.CrdtDelta {
		return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{Vote: &protocol.VoteDelta{SelfVote: self, VotesFor: votesFor, TotalVoters: total}}}
	}
	cases := []struct {
		name        string
		first, then *protocol.CrdtDelta
		afterFirst  crdt.View
		afterThen   crdt.View
		init        *protocol.CrdtDelta // nil: crdt.InitialDelta(afterThen)
	}{
		{name: "GCounter", first: gcounter(3), then: gcounter(4),
			afterFirst: crdt.GCounterView(3), afterThen: crdt.GCounterView(7)},
		{name: "PNCounter", first: pncounter(5), then: pncounter(-8),
			afterFirst: crdt.PNCounterView(5), afterThen: crdt.PNCounterView(-3)},
		{name: "GSet",
			first:      &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Gset{Gset: &protocol.GSetDelta{Added: anys("b", "a")}}},
			then:       &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Gset{Gset: &protocol.GSetDelta{Added: anys("c", "a")}}},
			afterFirst: crdt.GSetView(keys("a", "b")), afterThen: crdt.GSetView(keys("a", "b", "c"))},
		{name: "ORSet",
			first:      orset(&protocol.ORSetDelta{Added: anys("a", "b", "c")}),
			then:       orset(&protocol.ORSetDelta{Removed: anys("b"), Added: anys("d")}),
			afterFirst: crdt.ORSetView(keys("a", "b", "c")), afterThen: crdt.ORSetView(keys("a", "c", "d"))},
		{name: "ORSet cleared",
			first:      orset(&protocol.ORSetDelta{Added: anys("a", "b")}),
			then:       orset(&protocol.ORSetDelta{Cleared: true, Added: anys("z")}),
			afterFirst: crdt.ORSetView(keys("a", "b")), afterThen: crdt.ORSetView(keys("z"))},
		{name: "LWWRegister",
			first:      lww("x", protocol.CrdtClock_DEFAULT, 0),
			then:       lww("y", protocol.CrdtClock_CUSTOM_AUTO_INCREMENT, 1),
			afterFirst: crdt.LWWRegisterView(crdt.KeyOf(msg("x"))), afterThen: crdt.LWWRegisterView(crdt.KeyOf(msg("y"))),
			init: &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Lwwregister{Lwwregister: &protocol.LWWRegisterDelta{Value: msg("y")}}}},
		{name: "Flag", first: flag(false), then: flag(true),
			afterFirst: crdt.FlagView(false), afterThen: crdt.FlagView(true)},
		{name: "ORMap",
			first: ormap(&protocol.ORMapDelta{Added: []*protocol.ORMapEntryDelta{
				entry("k1", gcounter(2)), entry("k2", flag(true)),
			}}),
			then: ormap(&protocol.ORMapDelta{
				Removed: anys("k2"),
				Updated: []*protocol.ORMapEntryDelta{entry("k1", gcounter(3))},
				Added:   []*protocol.ORMapEntryDelta{entry("k3", orset(&protocol.ORSetDelta{Added: anys("z")}))},
			}),
			afterFirst: crdt.ORMapView{crdt.KeyOf(msg("k1")): crdt.GCounterView(2), crdt.KeyOf(msg("k2")): crdt.FlagView(true)},
			afterThen:  crdt.ORMapView{crdt.KeyOf(msg("k1")): crdt.GCounterView(5), crdt.KeyOf(msg("k3")): crdt.ORSetView(keys("z"))}},
		{name: "Vote",
			// The function sets only self_vote; the proxy ignores the
			// other two fields and fills all three itself.
			first:      vote(false, 0, 0),
			then:       vote(true, 42, 99),
			afterFirst: crdt.VoteView{SelfVote: false, VotesFor: 0, TotalVoters: 1},
			afterThen:  crdt.VoteView{SelfVote: true, VotesFor: 1, TotalVoters: 1},
			init:       vote(true, 1, 1)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 50*time.Millisecond)
			u1 := f.unary("e", "first")
			s := f.nextStream()
			c1 := s.command(t)
			u2 := f.unary("e", "then")
			c2 := s.command(t)

			s.reply(t, &protocol.CrdtReply{CommandId: c1.GetId(), ClientAction: replyOf("ok1"), StateAction: update(tc.first)})
			awaitReply(t, u1, "ok1")
			f.wantValue("e", tc.afterFirst)

			s.reply(t, &protocol.CrdtReply{CommandId: c2.GetId(), ClientAction: replyOf("ok2"), StateAction: update(tc.then)})
			awaitReply(t, u2, "ok2")
			f.wantValue("e", tc.afterThen)

			// Passivation: nothing but the half-close may reach the
			// function (its own updates never come back as deltas).
			if err := s.ended(t); err != io.EOF {
				t.Fatalf("stream ended with %v, want a half-close", err)
			}
			eventually(t, "the entity to passivate", func() bool { return f.mgr.Active() == 0 })

			u3 := f.unary("e", "again")
			s2 := f.nextStream()
			want := tc.init
			if want == nil {
				want = crdt.InitialDelta(tc.afterThen)
			}
			wantDelta(t, s2.init.GetDelta(), want)
			c3 := s2.command(t)
			s2.reply(t, &protocol.CrdtReply{CommandId: c3.GetId(), ClientAction: replyOf("ok3")})
			awaitReply(t, u3, "ok3")
			f.noReports()
		})
	}
}

// CRDT-4: with nothing in flight, a change made elsewhere is pushed at
// once as a delta of the difference.
func TestRemoteChangePushedWhenIdle(t *testing.T) {
	f := newFixture(t, time.Minute)
	u := f.unary("a", "inc")
	s := f.nextStream()
	c := s.command(t)
	s.reply(t, &protocol.CrdtReply{CommandId: c.GetId(), ClientAction: replyOf("ok"), StateAction: update(gcounter(1))})
	awaitReply(t, u, "ok")

	r := remoteGCounter(t, 5)
	f.remote("a", r)
	wantDelta(t, s.delta(t), gcounter(5))

	if err := r.Apply(crdt.Replica{Node: "node-2"}, gcounter(2)); err != nil {
		t.Fatal(err)
	}
	f.remote("a", r)
	wantDelta(t, s.delta(t), gcounter(2))
	f.wantValue("a", crdt.GCounterView(8))

	// Merging the same state again changes nothing: no delta.
	f.remote("a", r)
	u2 := f.unary("a", "next")
	if c := s.command(t); c.GetId() != 2 {
		t.Fatalf("command %v, want id 2 with no delta before it", c)
	}
	s.reply(t, &protocol.CrdtReply{CommandId: 2, ClientAction: replyOf("ok2")})
	awaitReply(t, u2, "ok2")
}

// CRDT-4: a remote change made while a command is in flight reaches the
// function only after the reply, as one delta that leaves out the
// function's own update; the function never gets its own update back.
func TestRemoteChangeDeferredWhileCommandInFlight(t *testing.T) {
	f := newFixture(t, time.Minute)
	u := f.unary("a", "create")
	s := f.nextStream()
	s.command(t)
	s.reply(t, &protocol.CrdtReply{CommandId: 1, ClientAction: replyOf("ok"), StateAction: update(gcounter(1))})
	awaitReply(t, u, "ok")

	u2 := f.unary("a", "busy")
	s.command(t)
	gets := f.counted.gets.Load()
	r := remoteGCounter(t, 5)
	f.remote("a", r)
	if err := r.Apply(crdt.Replica{Node: "node-2"}, gcounter(2)); err != nil {
		t.Fatal(err)
	}
	f.remote("a", r)
	f.loopBarrier(s, 8)
	if n := f.counted.gets.Load() - gets; n != 0 {
		t.Fatalf("the entity read the replicator %d times while a command was in flight, want no delta computed", n)
	}
	if n := len(s.in); n != 0 {
		t.Fatalf("the function got %d messages while a command was in flight, want none", n)
	}

	s.reply(t, &protocol.CrdtReply{CommandId: 2, ClientAction: replyOf("ok2"), StateAction: update(gcounter(1))})
	awaitReply(t, u2, "ok2")
	f.wantValue("a", crdt.GCounterView(9))
	// One delta with both remote changes (7), without the function's own +1.
	wantDelta(t, s.delta(t), gcounter(7))

	u3 := f.unary("a", "after")
	if c := s.command(t); c.GetId() != 3 {
		t.Fatalf("command %v, want id 3 and no second delta", c)
	}
	s.reply(t, &protocol.CrdtReply{CommandId: 3, ClientAction: replyOf("ok3"), StateAction: update(gcounter(10))})
	awaitReply(t, u3, "ok3")
	u4 := f.unary("a", "after")
	if c := s.command(t); c.GetId() != 4 {
		t.Fatalf("command %v, want id 4: the function's own update must not come back", c)
	}
	s.reply(t, &protocol.CrdtReply{CommandId: 4})
	if out, err := await(t, u4); err != nil || out.Action != nil {
		t.Fatalf("outcome %v, %v; want no client action", out, err)
	}
	f.wantValue("a", crdt.GCounterView(19))
}

// A remote change creating the CRDT while the function has none yet: the
// function learns it with the full value once idle.
func TestRemoteCreationPushedAsFullValue(t *testing.T) {
	f := newFixture(t, time.Minute)
	u := f.unary("a", "noop")
	s := f.nextStream()
	s.command(t)
	s.reply(t, &protocol.CrdtReply{CommandId: 1, ClientAction: replyOf("ok")})
	awaitReply(t, u, "ok")
	f.remote("a", remoteGCounter(t, 4))
	wantDelta(t, s.delta(t), gcounter(4))
}

// CRDT-7: a streamed command's first reply with streamed=true keeps the
// client stream open; streamed messages are relayed with their side
// effects; end_stream completes the client stream.
func TestStreamedCommandRelaysMessagesUntilEndStream(t *testing.T) {
	f := newFixture(t, time.Minute)
	w := f.subscribe("a", "sub", nil)
	s := f.nextStream()
	c := s.command(t)
	if !c.GetStreamed() || c.GetName() != "Watch" {
		t.Fatalf("command %v, want a streamed Watch", c)
	}
	s.reply(t, &protocol.CrdtReply{CommandId: c.GetId(), Streamed: true, ClientAction: replyOf("first"), SideEffects: []*protocol.SideEffect{sideEffect("se1")}})
	o := w.nextText(t, "first")
	if len(o.SideEffects) != 1 || !proto.Equal(o.SideEffects[0], sideEffect("se1")) {
		t.Fatalf("first outcome side effects %v, want se1", o.SideEffects)
	}
	s.streamed(t, &protocol.CrdtStreamedMessage{CommandId: c.GetId(), ClientAction: replyOf("m1"), SideEffects: []*protocol.SideEffect{sideEffect("se2")}})
	o = w.nextText(t, "m1")
	if len(o.SideEffects) != 1 || !proto.Equal(o.SideEffects[0], sideEffect("se2")) {
		t.Fatalf("streamed outcome side effects %v, want se2", o.SideEffects)
	}
	s.streamed(t, &protocol.CrdtStreamedMessage{CommandId: c.GetId(), ClientAction: replyOf("m2")})
	w.nextText(t, "m2")
	s.streamed(t, &protocol.CrdtStreamedMessage{CommandId: c.GetId(), ClientAction: replyOf("last"), EndStream: true})
	w.nextText(t, "last")
	if err := w.end(t); err != nil {
		t.Fatalf("stream ended with %v, want normally", err)
	}

	// The function ended it: no stream_cancelled follows.
	u := f.unary("a", "x")
	if c := s.command(t); c.GetStreamed() {
		t.Fatalf("command %v, want the unary command next", c)
	}
	s.reply(t, &protocol.CrdtReply{CommandId: 2, ClientAction: replyOf("ok")})
	awaitReply(t, u, "ok")
	f.noReports()
}

// CRDT-7: a first reply with streamed=false ends the client stream after
// that one message.
func TestStreamedCommandAnsweredOnce(t *testing.T) {
	f := newFixture(t, time.Minute)
	w := f.subscribe("a", "sub", nil)
	s := f.nextStream()
	c := s.command(t)
	s.reply(t, &protocol.CrdtReply{CommandId: c.GetId(), ClientAction: replyOf("only")})
	w.nextText(t, "only")
	if err := w.end(t); err != nil {
		t.Fatalf("stream ended with %v, want normally", err)
	}
	// No stream_cancelled for it: the next message is the next command.
	u := f.unary("a", "x")
	if c := s.command(t); c.GetId() != 2 {
		t.Fatalf("command %v, want id 2", c)
	}
	s.reply(t, &protocol.CrdtReply{CommandId: 2, ClientAction: replyOf("ok")})
	awaitReply(t, u, "ok")
}

// CRDT-7, CRDT-11: streamed=true on a reply to a unary command crashes the
// entity: everything in flight fails with "Entity terminating".
func TestStreamedReplyToUnaryCommandCrashes(t *testing.T) {
	f := newFixture(t, time.Minute)
	u1 := f.unary("a", "pending")
	s := f.nextStream()
	s.command(t)
	w := f.subscribe("a", "sub", nil)
	s.command(t)
	s.reply(t, &protocol.CrdtReply{CommandId: 2, Streamed: true, ClientAction: replyOf("open")})
	w.nextText(t, "open")
	u3 := f.unary("a", "bad")
	s.command(t)
	s.reply(t, &protocol.CrdtReply{CommandId: 3, Streamed: true, ClientAction: replyOf("nope")})

	awaitStatus(t, u3, codes.Unknown, "Entity terminating")
	awaitStatus(t, u1, codes.Unknown, "Entity terminating")
	wantStatus(t, w.end(t), codes.Unknown, "Entity terminating")
	f.report("streamed")
	s.aborted(t)

	// The next command starts a new activation.
	u4 := f.unary("a", "again")
	s2 := f.nextStream()
	if c := s2.command(t); c.GetId() != 1 {
		t.Fatalf("command %v, want id 1 on a new stream", c)
	}
	s2.reply(t, &protocol.CrdtReply{CommandId: 1, ClientAction: replyOf("ok")})
	awaitReply(t, u4, "ok")
}

// CRDT-8: the client leaving a streamed call makes the proxy send
// stream_cancelled; until the response no delta is sent; the response's
// state action is applied and its side effects performed (deviation).
func TestClientCancelsStream(t *testing.T) {
	f := newFixture(t, time.Minute)
	u := f.unary("a", "create")
	s := f.nextStream()
	s.command(t)
	s.reply(t, &protocol.CrdtReply{CommandId: 1, ClientAction: replyOf("ok"), StateAction: update(gcounter(1))})
	awaitReply(t, u, "ok")

	w := f.subscribe("a", "sub", nil)
	c := s.command(t)
	s.reply(t, &protocol.CrdtReply{CommandId: c.GetId(), Streamed: true, ClientAction: replyOf("hello")})
	w.nextText(t, "hello")

	w.cancel()
	if err := w.end(t); codes.Canceled != statusCode(err) {
		t.Fatalf("stream ended with %v, want CANCELED", err)
	}
	sc := s.streamCancelled(t)
	if sc.GetEntityId() != "a" || sc.GetId() != c.GetId() {
		t.Fatalf("stream_cancelled %v, want entity a id %d", sc, c.GetId())
	}

	// A remote change while the cancellation is outstanding is held back.
	gets := f.counted.gets.Load()
	f.remote("a", remoteGCounter(t, 5))
	f.loopBarrier(s, 8)
	if n := f.counted.gets.Load() - gets; n != 0 {
		t.Fatalf("the entity read the replicator %d times while a cancellation was outstanding, want no delta computed", n)
	}
	if n := len(s.in); n != 0 {
		t.Fatalf("the function got %d messages while a cancellation was outstanding, want none", n)
	}

	effects := []*protocol.SideEffect{sideEffect("left"), sideEffect("bye")}
	s.cancelledResponse(t, &protocol.CrdtStreamCancelledResponse{CommandId: c.GetId(), SideEffects: effects, StateAction: update(gcounter(1))})
	select {
	case ec := <-f.effects:
		if ec.from.Method != f.watch || ec.from.EntityID != "a" || len(ec.effects) != 2 ||
			!proto.Equal(ec.effects[0], effects[0]) || !proto.Equal(ec.effects[1], effects[1]) {
			t.Fatalf("side effects %v from %s/%s, want %v from Watch/a", ec.effects, ec.from.Method.Name, ec.from.EntityID, effects)
		}
	case <-time.After(waitFor):
		t.Fatal("the stream-cancelled response's side effects were not performed")
	}
	// The remote change follows as one delta, without the function's +1.
	wantDelta(t, s.delta(t), gcounter(5))
	f.wantValue("a", crdt.GCounterView(7))

	u2 := f.unary("a", "after")
	if c := s.command(t); c.GetName() != "Do" {
		t.Fatalf("command %v, want the unary command next", c)
	}
	s.reply(t, &protocol.CrdtReply{CommandId: c.GetId() + 1, ClientAction: replyOf("ok2")})
	awaitReply(t, u2, "ok2")
}

// CRDT-8: a client that leaves before the function's first reply: a reply
// that opens the stream is followed by stream_cancelled.
func TestClientLeavesBeforeTheFirstReply(t *testing.T) {
	f := newFixture(t, time.Minute)
	w := f.subscribe("a", "sub", nil)
	s := f.nextStream()
	c := s.command(t)
	w.cancel()
	if err := w.end(t); statusCode(err) != codes.Canceled {
		t.Fatalf("stream ended with %v, want CANCELED", err)
	}
	s.reply(t, &protocol.CrdtReply{CommandId: c.GetId(), Streamed: true, ClientAction: replyOf("late")})
	if sc := s.streamCancelled(t); sc.GetId() != c.GetId() {
		t.Fatalf("stream_cancelled %v, want id %d", sc, c.GetId())
	}
	s.cancelledResponse(t, &protocol.CrdtStreamCancelledResponse{CommandId: c.GetId()})

	// A reply that does not open the stream needs no cancellation.
	w2 := f.subscribe("a", "sub2", nil)
	c2 := s.command(t)
	w2.cancel()
	if err := w2.end(t); statusCode(err) != codes.Canceled {
		t.Fatalf("stream ended with %v, want CANCELED", err)
	}
	s.reply(t, &protocol.CrdtReply{CommandId: c2.GetId(), ClientAction: replyOf("single")})
	u := f.unary("a", "x")
	if c := s.command(t); c.GetName() != "Do" {
		t.Fatalf("got %v, want the unary command and no stream_cancelled", c)
	}
	s.reply(t, &protocol.CrdtReply{CommandId: c2.GetId() + 1, ClientAction: replyOf("ok")})
	awaitReply(t, u, "ok")
}

// CRDT-7: a streamed message for a command with no open stream is reported
// and dropped; the entity and its open streams go on.
func TestStreamedMessageForUnknownCommandReported(t *testing.T) {
	f := newFixture(t, time.Minute)
	w := f.subscribe("a", "sub", nil)
	s := f.nextStream()
	c := s.command(t)
	s.reply(t, &protocol.CrdtReply{CommandId: c.GetId(), Streamed: true})
	w.next(t)
	s.streamed(t, &protocol.CrdtStreamedMessage{CommandId: 42, ClientAction: replyOf("lost")})
	f.report("42")
	s.streamed(t, &protocol.CrdtStreamedMessage{CommandId: c.GetId(), ClientAction: replyOf("still here")})
	w.nextText(t, "still here")

	u := f.unary("a", "x")
	s.command(t)
	s.reply(t, &protocol.CrdtReply{CommandId: 2, ClientAction: replyOf("ok")})
	awaitReply(t, u, "ok")
	if n := f.fn.streamCount(); n != 1 {
		t.Fatalf("%d entity streams, want 1", n)
	}
}

// CRDT-9: a delete from the function answers its command, cuts the stream,
// fails everything else in flight with "Entity deleted", and every later
// command for the id fails the same way, also after re-activation.
func TestDeleteFromTheFunction(t *testing.T) {
	for _, streamed := range []bool{false, true} {
		t.Run(fmt.Sprintf("streamed=%v", streamed), func(t *testing.T) {
			f := newFixture(t, time.Minute)
			u := f.unary("a", "create")
			s := f.nextStream()
			s.command(t)
			s.reply(t, &protocol.CrdtReply{CommandId: 1, ClientAction: replyOf("ok"), StateAction: update(gcounter(1))})
			awaitReply(t, u, "ok")

			w := f.subscribe("a", "open", nil)
			s.command(t)
			s.reply(t, &protocol.CrdtReply{CommandId: 2, Streamed: true})
			w.next(t)
			pending := f.unary("a", "pending")
			s.command(t)

			var del *subscriber
			var delUnary <-chan result
			if streamed {
				del = f.subscribe("a", "delete", nil)
			} else {
				delUnary = f.unary("a", "delete")
			}
			c := s.command(t)
			s.reply(t, &protocol.CrdtReply{CommandId: c.GetId(), ClientAction: replyOf("bye"), StateAction: deleteAction(), Streamed: streamed})
			if streamed {
				del.nextText(t, "bye")
				if err := del.end(t); err != nil {
					t.Fatalf("deleting stream ended with %v, want normally", err)
				}
			} else {
				awaitReply(t, delUnary, "bye")
			}
			if _, deleted := f.value("a"); !deleted {
				t.Fatal("the CRDT is not deleted in the replicator")
			}
			awaitStatus(t, pending, codes.Unknown, "Entity deleted")
			wantStatus(t, w.end(t), codes.Unknown, "Entity deleted")
			s.aborted(t)

			for i := 0; i < 2; i++ {
				_, err := f.mgr.Unary(context.Background(), route.Call{Method: f.do, EntityID: "a", Payload: msg("late")})
				wantStatus(t, err, codes.Unknown, "Entity deleted")
				late := f.subscribe("a", "late", nil)
				wantStatus(t, late.end(t), codes.Unknown, "Entity deleted")
			}
			if n := f.fn.streamCount(); n != 1 {
				t.Fatalf("%d entity streams, want 1 (a deleted entity is not activated again)", n)
			}
			f.noReports()
		})
	}
}

// CRDT-9: a delete made elsewhere is sent to the function as delete, the
// stream is closed, open client streams end with "Entity deleted".
func TestDeleteElsewhere(t *testing.T) {
	f := newFixture(t, time.Minute)
	u := f.unary("a", "create")
	s := f.nextStream()
	s.command(t)
	s.reply(t, &protocol.CrdtReply{CommandId: 1, ClientAction: replyOf("ok"), StateAction: update(gcounter(1))})
	awaitReply(t, u, "ok")
	w := f.subscribe("a", "open", nil)
	s.command(t)
	s.reply(t, &protocol.CrdtReply{CommandId: 2, Streamed: true})
	w.next(t)

	if err := f.rep.Delete(context.Background(), f.key("a"), protocol.CrdtWriteConsistency_LOCAL); err != nil {
		t.Fatal(err)
	}
	if m := s.next(t); m.GetDelete() == nil {
		t.Fatalf("function got %v, want delete", m)
	}
	if err := s.ended(t); err != io.EOF {
		t.Fatalf("stream ended with %v after delete, want a half-close", err)
	}
	wantStatus(t, w.end(t), codes.Unknown, "Entity deleted")
	_, err := f.mgr.Unary(context.Background(), route.Call{Method: f.do, EntityID: "a", Payload: msg("late")})
	wantStatus(t, err, codes.Unknown, "Entity deleted")
	if n := f.fn.streamCount(); n != 1 {
		t.Fatalf("%d entity streams, want 1", n)
	}
}

// CRDT-4, CRDT-9: a delete made elsewhere while a command is in flight
// reaches the function after the reply.
func TestDeleteElsewhereWaitsForTheReply(t *testing.T) {
	f := newFixture(t, time.Minute)
	u := f.unary("a", "create")
	s := f.nextStream()
	s.command(t)
	s.reply(t, &protocol.CrdtReply{CommandId: 1, ClientAction: replyOf("ok"), StateAction: update(gcounter(1))})
	awaitReply(t, u, "ok")

	busy := f.unary("a", "busy")
	s.command(t)
	if err := f.rep.Delete(context.Background(), f.key("a"), protocol.CrdtWriteConsistency_LOCAL); err != nil {
		t.Fatal(err)
	}
	f.loopBarrier(s, 4)
	if n := len(s.in); n != 0 {
		t.Fatalf("the function got %d messages while a command was in flight, want none", n)
	}
	s.reply(t, &protocol.CrdtReply{CommandId: 2, ClientAction: replyOf("ok2")})
	awaitReply(t, busy, "ok2")
	if m := s.next(t); m.GetDelete() == nil {
		t.Fatalf("function got %v, want delete", m)
	}
	if err := s.ended(t); err != io.EOF {
		t.Fatalf("stream ended with %v, want a half-close", err)
	}
}

// CRDT-9 (reference: an update merged with a delete stays deleted, and the
// reply still goes out): the function's update racing with a delete made
// elsewhere is not the function's fault, so the entity does not crash and
// blame it; the function is told about the delete.
func TestUpdateRacingWithDeleteElsewhere(t *testing.T) {
	f := newFixture(t, time.Minute)
	u := f.unary("a", "create")
	s := f.nextStream()
	s.command(t)
	s.reply(t, &protocol.CrdtReply{CommandId: 1, ClientAction: replyOf("ok"), StateAction: update(gcounter(1))})
	awaitReply(t, u, "ok")

	busy := f.unary("a", "busy")
	s.command(t)
	if err := f.rep.Delete(context.Background(), f.key("a"), protocol.CrdtWriteConsistency_LOCAL); err != nil {
		t.Fatal(err)
	}
	s.reply(t, &protocol.CrdtReply{CommandId: 2, ClientAction: replyOf("ok2"), StateAction: update(gcounter(1))})
	out, err := await(t, busy)
	if err != nil && statusMessage(err) != "Entity deleted" {
		t.Fatalf("command racing with a delete failed with %v, want its reply or \"Entity deleted\"", err)
	}
	if err == nil && textOf(out) != "ok2" {
		t.Fatalf("reply %q, want ok2", textOf(out))
	}
	if m := s.next(t); m.GetDelete() == nil {
		t.Fatalf("function got %v, want delete", m)
	}
	f.noReports()
}

// CRDT-10: a top-level failure naming a command fails that command with a
// generic text and the entity goes on; one naming no command is reported.
func TestTopLevelFailure(t *testing.T) {
	f := newFixture(t, time.Minute)
	u1 := f.unary("a", "one")
	s := f.nextStream()
	s.command(t)
	u2 := f.unary("a", "two")
	s.command(t)
	s.failure(t, &protocol.Failure{CommandId: 1, Description: "internal details"})
	awaitStatus(t, u1, codes.Unknown, "Unexpected entity failure")
	s.reply(t, &protocol.CrdtReply{CommandId: 2, ClientAction: replyOf("ok2")})
	awaitReply(t, u2, "ok2")

	s.failure(t, &protocol.Failure{Description: "something odd"})
	f.report("something odd")

	// An open stream named by a failure ends with the same text.
	w := f.subscribe("a", "sub", nil)
	c := s.command(t)
	s.reply(t, &protocol.CrdtReply{CommandId: c.GetId(), Streamed: true})
	w.next(t)
	s.failure(t, &protocol.Failure{CommandId: c.GetId(), Description: "stream broke"})
	wantStatus(t, w.end(t), codes.Unknown, "Unexpected entity failure")

	u4 := f.unary("a", "four")
	if c := s.command(t); c.GetId() != 4 {
		t.Fatalf("command %v, want id 4 on the same stream", c)
	}
	s.reply(t, &protocol.CrdtReply{CommandId: 4, ClientAction: replyOf("ok4")})
	awaitReply(t, u4, "ok4")
	if n := f.fn.streamCount(); n != 1 {
		t.Fatalf("%d entity streams, want 1", n)
	}
}

// CRDT-5 and the reference: a state action with neither update nor delete
// (only a write consistency) changes nothing.
func TestStateActionWithoutActionChangesNothing(t *testing.T) {
	f := newFixture(t, time.Minute)
	u := f.unary("a", "create")
	s := f.nextStream()
	s.command(t)
	s.reply(t, &protocol.CrdtReply{CommandId: 1, ClientAction: replyOf("ok"), StateAction: update(gcounter(2))})
	awaitReply(t, u, "ok")
	u2 := f.unary("a", "noop")
	s.command(t)
	s.reply(t, &protocol.CrdtReply{CommandId: 2, ClientAction: replyOf("ok2"), StateAction: &protocol.CrdtStateAction{WriteConsistency: protocol.CrdtWriteConsistency_MAJORITY}})
	awaitReply(t, u2, "ok2")
	f.wantValue("a", crdt.GCounterView(2))
	f.noReports()
}

// CRDT-6, CRDT-11: an update the CRDT cannot take crashes the entity:
// everything in flight fails with "Entity terminating", it is reported,
// the state is unchanged, and the next command re-activates.
func TestInvalidUpdateCrashesTheEntity(t *testing.T) {
	cases := []struct {
		name    string
		initial *protocol.CrdtDelta
		bad     *protocol.CrdtDelta
		value   crdt.View
	}{
		{"wrong type", gcounter(2), flag(true), crdt.GCounterView(2)},
		{"flag switched off", flag(true), flag(false), crdt.FlagView(true)},
		{"empty delta", gcounter(2), &protocol.CrdtDelta{}, crdt.GCounterView(2)},
		{"gcounter increment of 2^63", gcounter(2), gcounter(1 << 63), crdt.GCounterView(2)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, time.Minute)
			u := f.unary("a", "create")
			s := f.nextStream()
			s.command(t)
			s.reply(t, &protocol.CrdtReply{CommandId: 1, ClientAction: replyOf("ok"), StateAction: update(tc.initial)})
			awaitReply(t, u, "ok")

			w := f.subscribe("a", "open", nil)
			s.command(t)
			s.reply(t, &protocol.CrdtReply{CommandId: 2, Streamed: true})
			w.next(t)
			pending := f.unary("a", "pending")
			s.command(t)
			bad := f.unary("a", "bad")
			s.command(t)
			s.reply(t, &protocol.CrdtReply{CommandId: 4, ClientAction: replyOf("never"), StateAction: update(tc.bad)})

			awaitStatus(t, pending, codes.Unknown, "Entity terminating")
			wantStatus(t, w.end(t), codes.Unknown, "Entity terminating")
			f.report("crashed")
			s.aborted(t)
			f.wantValue("a", tc.value)

			u2 := f.unary("a", "again")
			s2 := f.nextStream()
			wantDelta(t, s2.init.GetDelta(), crdt.InitialDelta(tc.value))
			s2.command(t)
			s2.reply(t, &protocol.CrdtReply{CommandId: 1, ClientAction: replyOf("back")})
			awaitReply(t, u2, "back")

			// The command whose reply carried the update was in flight
			// when the entity crashed (CRDT-11; the reference answers it
			// "Entity terminating" too). The update was never replicated,
			// so "Failed to update CRDT at requested write consistency"
			// would mislead.
			awaitStatus(t, bad, codes.Unknown, "Entity terminating")
		})
	}
}

// CRDT-11: the function closing or failing its stream crashes the entity;
// its own status never reaches clients (ERR-2).
func TestFunctionEndingItsStreamCrashesTheEntity(t *testing.T) {
	cases := []struct {
		name   string
		err    error
		report string
	}{
		{"closed", nil, "Unexpected entity termination due to stream closure"},
		{"failed", fmt.Errorf("function exploded"), "Entity crashed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, time.Minute)
			u := f.unary("a", "pending")
			s := f.nextStream()
			s.command(t)
			w := f.subscribe("a", "open", nil)
			s.command(t)
			s.reply(t, &protocol.CrdtReply{CommandId: 2, Streamed: true})
			w.next(t)

			s.finish(tc.err)
			awaitStatus(t, u, codes.Unknown, "Entity terminating")
			wantStatus(t, w.end(t), codes.Unknown, "Entity terminating")
			f.report(tc.report)

			u2 := f.unary("a", "again")
			s2 := f.nextStream()
			s2.command(t)
			s2.reply(t, &protocol.CrdtReply{CommandId: 1, ClientAction: replyOf("back")})
			awaitReply(t, u2, "back")
		})
	}
}

// CRDT-12: an entity with an open stream does not passivate; once the
// stream ends it does.
func TestPassivationWaitsForOpenStreams(t *testing.T) {
	f := newFixture(t, 20*time.Millisecond)
	w := f.subscribe("a", "open", nil)
	s := f.nextStream()
	c := s.command(t)
	s.reply(t, &protocol.CrdtReply{CommandId: c.GetId(), Streamed: true})
	w.next(t)
	// Many passivation periods pass while the stream is open: the entity
	// stream must stay (this waits for something not to happen).
	select {
	case m, ok := <-s.in:
		t.Fatalf("function got %v (open %v) while a client stream was open, want nothing", m, ok)
	case <-time.After(300 * time.Millisecond):
	}
	if f.mgr.Active() != 1 {
		t.Fatal("entity passivated with a client stream open")
	}
	s.streamed(t, &protocol.CrdtStreamedMessage{CommandId: c.GetId(), ClientAction: replyOf("end"), EndStream: true})
	w.nextText(t, "end")
	if err := w.end(t); err != nil {
		t.Fatalf("stream ended with %v", err)
	}
	if err := s.ended(t); err != io.EOF {
		t.Fatalf("stream ended with %v, want a half-close", err)
	}
	eventually(t, "the entity to passivate", func() bool { return f.mgr.Active() == 0 })
}

// CRDT-12: Shutdown ends open client streams normally and passivates.
func TestShutdownEndsOpenStreams(t *testing.T) {
	f := newFixture(t, time.Minute)
	w := f.subscribe("a", "open", nil)
	s := f.nextStream()
	c := s.command(t)
	s.reply(t, &protocol.CrdtReply{CommandId: c.GetId(), Streamed: true, ClientAction: replyOf("hi")})
	w.nextText(t, "hi")

	done := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		f.mgr.Shutdown(ctx)
		close(done)
	}()
	if err := w.end(t); err != nil {
		t.Fatalf("stream ended with %v at shutdown, want normally", err)
	}
	if err := s.ended(t); err != io.EOF {
		t.Fatalf("entity stream ended with %v, want a half-close", err)
	}
	select {
	case <-done:
	case <-time.After(waitFor):
		t.Fatal("Shutdown did not return")
	}
	if f.mgr.Active() != 0 {
		t.Fatalf("%d entities active after shutdown", f.mgr.Active())
	}
	_, err := f.mgr.Unary(context.Background(), route.Call{Method: f.do, EntityID: "a", Payload: msg("late")})
	if statusCode(err) != codes.Unavailable {
		t.Fatalf("got %v after shutdown, want UNAVAILABLE", err)
	}
}

// CRDT-12: a streamed command still in flight when shutdown begins: its
// stream, opened by the reply during the drain, must end too.
func TestShutdownEndsStreamOpenedWhileDraining(t *testing.T) {
	f := newFixture(t, time.Minute)
	w := f.subscribe("a", "open", nil)
	s := f.nextStream()
	c := s.command(t)

	done := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		f.mgr.Shutdown(ctx)
		close(done)
	}()
	// The entity loop is idle, waiting on the same channel: once it is
	// closed the loop sees the shutdown before the reply can arrive.
	mb := f.lookup("a")
	if mb == nil {
		t.Fatal("entity a is not active")
	}
	select {
	case <-mb.Stopping():
	case <-time.After(waitFor):
		t.Fatal("shutdown did not begin")
	}
	s.reply(t, &protocol.CrdtReply{CommandId: c.GetId(), Streamed: true, ClientAction: replyOf("hi")})
	w.nextText(t, "hi")
	if err := w.end(t); err != nil {
		t.Fatalf("stream ended with %v at shutdown, want normally", err)
	}
	select {
	case <-done:
	case <-time.After(waitFor):
		t.Fatal("Shutdown did not return")
	}
}

// Registry.Shutdown: when its context ends, Kill cuts the entity streams
// and every loop must return, even one waiting for a reply that never
// comes. Several entities, because whether a loop notices depends on a
// random select.
func TestShutdownTimeoutStopsBusyEntities(t *testing.T) {
	const entities = 10
	f := newFixture(t, time.Minute)
	var calls []<-chan result
	for i := 0; i < entities; i++ {
		calls = append(calls, f.unary(fmt.Sprintf("e%d", i), "never answered"))
		s := f.nextStream()
		s.command(t)
	}
	if !f.shutdown(200 * time.Millisecond) {
		t.Fatalf("Shutdown hung after its context ended; %d entities still active", f.mgr.Active())
	}
	for _, ch := range calls {
		if _, err := await(t, ch); err == nil {
			t.Fatal("a command cut by shutdown succeeded")
		}
	}
}

// CRDT-10 (reference): a client-action failure is delivered like any
// reply, its state action is still applied, and side effects come along.
func TestClientActionFailureStillUpdates(t *testing.T) {
	f := newFixture(t, time.Minute)
	u := f.unary("a", "x")
	s := f.nextStream()
	s.command(t)
	fail := &protocol.ClientAction{Action: &protocol.ClientAction_Failure{Failure: &protocol.Failure{Description: "not allowed"}}}
	effects := []*protocol.SideEffect{sideEffect("audit")}
	s.reply(t, &protocol.CrdtReply{CommandId: 1, ClientAction: fail, SideEffects: effects,
		StateAction: &protocol.CrdtStateAction{Action: &protocol.CrdtStateAction_Update{Update: gcounter(2)}, WriteConsistency: protocol.CrdtWriteConsistency_ALL}})
	out, err := await(t, u)
	if err != nil || out.Action.GetFailure().GetDescription() != "not allowed" {
		t.Fatalf("outcome %v, %v; want the client-action failure", out.Action, err)
	}
	if len(out.SideEffects) != 1 || !proto.Equal(out.SideEffects[0], effects[0]) {
		t.Fatalf("side effects %v, want %v", out.SideEffects, effects)
	}
	f.wantValue("a", crdt.GCounterView(2))
}

// CRDT-11: messages that break the protocol crash the entity.
func TestProtocolViolationsCrashTheEntity(t *testing.T) {
	cases := []struct {
		name   string
		send   func(s *ufStream, id int64) *protocol.CrdtStreamOut
		report string
	}{
		{"empty message", func(*ufStream, int64) *protocol.CrdtStreamOut { return &protocol.CrdtStreamOut{} }, "empty message"},
		{"reply to a command not in flight", func(_ *ufStream, id int64) *protocol.CrdtStreamOut {
			return &protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_Reply{Reply: &protocol.CrdtReply{CommandId: id + 10}}}
		}, "not in flight"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, time.Minute)
			u := f.unary("a", "pending")
			s := f.nextStream()
			c := s.command(t)
			s.mustSend(t, tc.send(s, c.GetId()))
			awaitStatus(t, u, codes.Unknown, "Entity terminating")
			f.report(tc.report)
			s.aborted(t)
		})
	}
}

// CRDT-8: a stream-cancelled response for a command that was not cancelled
// is reported and ignored.
func TestUnexpectedStreamCancelledResponseReported(t *testing.T) {
	f := newFixture(t, time.Minute)
	u := f.unary("a", "x")
	s := f.nextStream()
	s.command(t)
	s.cancelledResponse(t, &protocol.CrdtStreamCancelledResponse{CommandId: 1, StateAction: update(gcounter(5))})
	f.report("stream cancellation")
	s.reply(t, &protocol.CrdtReply{CommandId: 1, ClientAction: replyOf("ok")})
	awaitReply(t, u, "ok")
	if _, deleted := f.value("a"); deleted {
		t.Fatal("deleted")
	}
	if v, _ := f.value("a"); v != nil {
		t.Fatalf("value %v, want none: the stray response's update must be ignored", v)
	}
}

// CRDT-8, CRDT-9: a stream-cancelled response may delete the CRDT.
func TestDeleteFromStreamCancelledResponse(t *testing.T) {
	f := newFixture(t, time.Minute)
	u := f.unary("a", "create")
	s := f.nextStream()
	s.command(t)
	s.reply(t, &protocol.CrdtReply{CommandId: 1, ClientAction: replyOf("ok"), StateAction: update(gcounter(1))})
	awaitReply(t, u, "ok")
	other := f.subscribe("a", "other", nil)
	s.command(t)
	s.reply(t, &protocol.CrdtReply{CommandId: 2, Streamed: true})
	other.next(t)
	w := f.subscribe("a", "leaving", nil)
	s.command(t)
	s.reply(t, &protocol.CrdtReply{CommandId: 3, Streamed: true})
	w.next(t)
	w.cancel()
	w.end(t)
	if sc := s.streamCancelled(t); sc.GetId() != 3 {
		t.Fatalf("stream_cancelled %v, want id 3", sc)
	}
	s.cancelledResponse(t, &protocol.CrdtStreamCancelledResponse{CommandId: 3, StateAction: deleteAction()})
	wantStatus(t, other.end(t), codes.Unknown, "Entity deleted")
	s.aborted(t)
	if _, deleted := f.value("a"); !deleted {
		t.Fatal("the CRDT is not deleted")
	}
	_, err := f.mgr.Unary(context.Background(), route.Call{Method: f.do, EntityID: "a", Payload: msg("late")})
	wantStatus(t, err, codes.Unknown, "Entity deleted")
}

// CRDT-4, CRDT-8 (reference: a failure naming a closing stream completes
// it): a function that answers stream_cancelled with a failure instead of
// a response must not leave the entity busy for good, which would stop
// deltas and passivation.
func TestFailureAnsweringStreamCancelledEndsTheCancellation(t *testing.T) {
	f := newFixture(t, time.Minute)
	u := f.unary("a", "create")
	s := f.nextStream()
	s.command(t)
	s.reply(t, &protocol.CrdtReply{CommandId: 1, ClientAction: replyOf("ok"), StateAction: update(gcounter(1))})
	awaitReply(t, u, "ok")
	w := f.subscribe("a", "sub", nil)
	s.command(t)
	s.reply(t, &protocol.CrdtReply{CommandId: 2, Streamed: true})
	w.next(t)
	w.cancel()
	w.end(t)
	s.streamCancelled(t)
	s.failure(t, &protocol.Failure{CommandId: 2, Description: "cancel handler failed"})

	f.remote("a", remoteGCounter(t, 5))
	wantDelta(t, s.delta(t), gcounter(5))
}

// CRDT-6: every Vote delta the proxy sends carries all three fields. Two
// cluster members, so that another node's vote changes the tally.
func TestVoteDeltasCarryAllThreeFields(t *testing.T) {
	f := newFixture(t, time.Minute)
	f.rep.replica.Members = []string{"node-1", "node-2"} // before any entity runs
	vote := func(self bool, votesFor, total int32) *protocol.CrdtDelta {
		return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{Vote: &protocol.VoteDelta{SelfVote: self, VotesFor: votesFor, TotalVoters: total}}}
	}
	u := f.unary("a", "vote yes")
	s := f.nextStream()
	s.command(t)
	s.reply(t, &protocol.CrdtReply{CommandId: 1, ClientAction: replyOf("ok"), StateAction: update(vote(true, 0, 0))})
	awaitReply(t, u, "ok")
	// The function counted only itself as a voter; the proxy corrects it.
	wantDelta(t, s.delta(t), vote(true, 1, 2))

	other, err := crdt.FromDelta(crdt.Replica{Node: "node-2"}, vote(true, 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	f.remote("a", other)
	wantDelta(t, s.delta(t), vote(true, 2, 2))
	if err := other.Apply(crdt.Replica{Node: "node-2"}, vote(false, 0, 0)); err != nil {
		t.Fatal(err)
	}
	f.remote("a", other)
	wantDelta(t, s.delta(t), vote(true, 1, 2))
}
