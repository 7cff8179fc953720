package crdte2e

import (
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cloudstate-go/cloudstate/internal/testproc"
	pb "github.com/cloudstate-go/cloudstate/test/crdt/testfunction/crdttestpb"
)

// passivation is the proxy's --passivation-timeout in the lifecycle tests.
const passivation = 200 * time.Millisecond

// awaitPassivation polls Get on id, less often than the passivation
// timeout, until the answer comes from a new activation (its command id is
// 1: the first command on a new entity stream), and returns that state.
func awaitPassivation(t *testing.T, client pb.CrdtTypesClient, id string) *pb.State {
	t.Helper()
	var got *pb.State
	testproc.EventuallyEvery(t, 10*time.Second, 3*passivation, func() error {
		st, err := client.Get(callCtx(t), &pb.Key{Id: id})
		if err != nil {
			return err
		}
		if st.GetCommandId() != 1 {
			return fmt.Errorf("%s answered command %d of an activation: still the same one", id, st.GetCommandId())
		}
		got = st
		return nil
	})
	return got
}

// TestPassivationKeepsState: every type of CRDT keeps its value when its
// entity passivates and is activated again (the proxy holds the state, and
// sends it with init).
func TestPassivationKeepsState(t *testing.T) {
	s := startStack(t, bins.testfunction, "--passivation-timeout", passivation.String())
	client := pb.NewCrdtTypesClient(s.conn)
	cases := typeCases("")
	for _, c := range cases {
		c.run(t, client, c.id("passivate-"))
	}
	for _, c := range cases {
		t.Run(c.typ, func(t *testing.T) {
			got := awaitPassivation(t, client, c.id("passivate-"))
			wantState(t, "after passivation", got, c.final())
			// And it changes on from there.
			req := proto.CloneOf(c.steps[0].change)
			req.Id = c.id("passivate-")
			if _, err := client.Change(callCtx(t), req); err != nil {
				t.Fatalf("Change after passivation: %v", err)
			}
		})
	}
	got, err := client.Get(callCtx(t), &pb.Key{Id: "passivate-PNCounter"})
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, "PNCounter changed after passivation", got, &pb.State{Type: "PNCounter", Pncounter: 2})
}

// TestOpenStreamKeepsEntityActive: an entity with a Watch open does not
// passivate, however long it is idle; once the watch is cancelled, it does.
func TestOpenStreamKeepsEntityActive(t *testing.T) {
	s := startStack(t, bins.testfunction, "--passivation-timeout", passivation.String())
	client := pb.NewCrdtTypesClient(s.conn)
	const id = "watched"
	if _, err := client.Change(callCtx(t), &pb.ChangeRequest{Id: id, Change: &pb.ChangeRequest_PncounterChange{PncounterChange: 1}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := contextWithCancel(t)
	stream, err := pb.NewCrdtTypesClient(dial(t, s.proxy.addr)).Watch(ctx, &pb.Key{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	states := streamReader(stream.Recv)
	first := nextMsg(t, "first state", states)
	// Idle for several passivation timeouts, with the stream open.
	quiet(t, "an idle watch", states, 5*passivation)
	got, err := client.Get(callCtx(t), &pb.Key{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetCommandId() <= first.GetCommandId() {
		t.Fatalf("Get was command %d after the watch's %d: the entity passivated with a stream open", got.GetCommandId(), first.GetCommandId())
	}
	cancel()
	if r := next(t, "end of the cancelled watch", states, 5*time.Second); status.Code(r.err) != codes.Canceled {
		t.Fatalf("cancelled watch ended with %v", r.err)
	}
	got = awaitPassivation(t, client, id)
	wantState(t, "after passivation", got, &pb.State{Type: "PNCounter", Pncounter: 1})
}

// TestDelete: after a Delete, every call for the id fails with "Entity
// deleted": unary and streamed, open streams included, and after the
// entity would have been activated again (CRDT-9). Other ids go on.
func TestDelete(t *testing.T) {
	s := startStack(t, bins.testfunction, "--passivation-timeout", passivation.String())
	client := pb.NewCrdtTypesClient(s.conn)
	other := pb.NewCrdtTypesClient(dial(t, s.proxy.addr))
	const id = "doomed"
	for _, c := range []*pb.ChangeRequest{
		{Id: id, Change: &pb.ChangeRequest_OrsetAdd{OrsetAdd: "a"}},
		{Id: "survivor", Change: &pb.ChangeRequest_OrsetAdd{OrsetAdd: "b"}},
	} {
		if _, err := client.Change(callCtx(t), c); err != nil {
			t.Fatal(err)
		}
	}
	stream, err := other.Watch(callCtx(t), &pb.Key{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	watch := streamReader(stream.Recv)
	wantState(t, "watch before delete", nextMsg(t, "first state", watch), &pb.State{Type: "ORSet", Elements: []string{"a"}})

	if _, err := client.Delete(callCtx(t), &pb.Key{Id: id}); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	r := next(t, "the open watch", watch, 5*time.Second)
	wantStatus(t, "the watch open during the delete", r.err, codes.Unknown, "Entity deleted")

	checkDeleted := func(when string) {
		t.Helper()
		_, err := client.Get(callCtx(t), &pb.Key{Id: id})
		wantStatus(t, when+": Get", err, codes.Unknown, "Entity deleted")
		_, err = other.Change(callCtx(t), &pb.ChangeRequest{Id: id, Change: &pb.ChangeRequest_OrsetAdd{OrsetAdd: "again"}})
		wantStatus(t, when+": Change", err, codes.Unknown, "Entity deleted")
		_, err = client.Delete(callCtx(t), &pb.Key{Id: id})
		wantStatus(t, when+": Delete", err, codes.Unknown, "Entity deleted")
		stream, err := other.Watch(callCtx(t), &pb.Key{Id: id})
		if err == nil {
			_, err = stream.Recv()
		}
		wantStatus(t, when+": Watch", err, codes.Unknown, "Entity deleted")
	}
	checkDeleted("right after the delete")

	// Long enough for any activation to have passivated: the deletion is
	// permanent, not a property of the instance.
	quiet(t, "the ended watch", watch, 3*passivation)
	checkDeleted("later")

	got, err := client.Get(callCtx(t), &pb.Key{Id: "survivor"})
	if err != nil {
		t.Fatalf("Get of another entity: %v", err)
	}
	wantState(t, "another entity", got, &pb.State{Type: "ORSet", Elements: []string{"b"}})
}

// TestShutdownEndsOpenStreams: when the proxy is stopped (SIGTERM) while
// streamed calls are open, it completes them (CRDT-12: "complete every open
// client stream") and exits promptly, instead of waiting for its
// graceful-termination timeout with the streams open and then cutting
// them.
func TestShutdownEndsOpenStreams(t *testing.T) {
	s := startStack(t, bins.testfunction)
	client := pb.NewCrdtTypesClient(s.conn)
	stream, err := client.Watch(callCtx(t), &pb.Key{Id: "open-at-shutdown"})
	if err != nil {
		t.Fatal(err)
	}
	watch := streamReader(stream.Recv)
	nextMsg(t, "first state", watch)

	start := time.Now()
	took := s.proxy.stopAndCheck(t)
	r := next(t, "the watch at shutdown", watch, 10*time.Second)
	if !errors.Is(r.err, io.EOF) {
		t.Errorf("the open watch ended with %v, want a completed stream (io.EOF)", r.err)
	}
	if limit := proxyShutdownTimeout / 2; took > limit {
		t.Errorf("the proxy took %v to stop with one open stream (its graceful-termination timeout is %v); want under %v", took.Round(time.Millisecond), proxyShutdownTimeout, limit)
	}
	t.Logf("proxy stopped %v after SIGTERM", time.Since(start).Round(time.Millisecond))
}
