package eventsourced

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/internal/discovery"
	"github.com/cloudstate-go/cloudstate/internal/entity"
	"github.com/cloudstate-go/cloudstate/internal/route"
	"github.com/cloudstate-go/cloudstate/protocol"
	"github.com/cloudstate-go/cloudstate/store"
	"github.com/cloudstate-go/cloudstate/store/memory"
)

// The tests drive a Manager against a real gRPC server that plays the user
// function. Each test scripts the function's side of the stream; the
// default script is a counter: a command's payload is a number, the reply
// emits it as an event and answers with the new total.

type script func(s *ufStream) error

// ufStream is the function's view of one entity stream.
type ufStream struct {
	protocol.EventSourced_HandleServer
	init   *protocol.EventSourcedInit
	events []*protocol.EventSourcedEvent
	total  int
}

// recv returns the next command, or io.EOF when the proxy half-closed.
func (s *ufStream) recv() (*protocol.Command, error) {
	for {
		in, err := s.Recv()
		if err != nil {
			return nil, err
		}
		switch m := in.Message.(type) {
		case *protocol.EventSourcedStreamIn_Init:
			if s.init != nil {
				return nil, errors.New("second init")
			}
			s.init = m.Init
			if snap := m.Init.GetSnapshot(); snap != nil {
				s.total = num(snap.GetSnapshot())
			}
		case *protocol.EventSourcedStreamIn_Event:
			s.events = append(s.events, m.Event)
			s.total += num(m.Event.GetPayload())
		case *protocol.EventSourcedStreamIn_Command:
			if s.init == nil {
				return nil, errors.New("command before init")
			}
			return m.Command, nil
		}
	}
}

func (s *ufStream) reply(r *protocol.EventSourcedReply) error {
	return s.Send(&protocol.EventSourcedStreamOut{Message: &protocol.EventSourcedStreamOut_Reply{Reply: r}})
}

// counter is the default script.
func counter(s *ufStream) error {
	for {
		cmd, err := s.recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		n := num(cmd.GetPayload())
		s.total += n
		if err := s.reply(&protocol.EventSourcedReply{
			CommandId:    cmd.GetId(),
			ClientAction: replyOf(s.total),
			Events:       []*anypb.Any{numAny(n)},
		}); err != nil {
			return err
		}
	}
}

func numAny(n int) *anypb.Any {
	return &anypb.Any{TypeUrl: "type.googleapis.com/test.Num", Value: []byte(strconv.Itoa(n))}
}

func num(a *anypb.Any) int {
	n, _ := strconv.Atoi(string(a.GetValue()))
	return n
}

func replyOf(n int) *protocol.ClientAction {
	return &protocol.ClientAction{Action: &protocol.ClientAction_Reply{Reply: &protocol.Reply{Payload: numAny(n)}}}
}

func failureOf(desc string, restart bool) *protocol.ClientAction {
	return &protocol.ClientAction{Action: &protocol.ClientAction_Failure{Failure: &protocol.Failure{Description: desc, Restart: restart}}}
}

// fakeFunction serves EventSourced/handle with a script per stream and
// records every stream's init and replayed events.
type fakeFunction struct {
	protocol.UnimplementedEventSourcedServer
	mu      sync.Mutex
	script  script
	streams []*ufStream
	ended   chan *ufStream
}

func (f *fakeFunction) Handle(srv protocol.EventSourced_HandleServer) error {
	s := &ufStream{EventSourced_HandleServer: srv}
	f.mu.Lock()
	f.streams = append(f.streams, s)
	sc := f.script
	f.mu.Unlock()
	err := sc(s)
	select {
	case f.ended <- s:
	default:
	}
	return err
}

func (f *fakeFunction) setScript(sc script) {
	f.mu.Lock()
	f.script = sc
	f.mu.Unlock()
}

func (f *fakeFunction) streamCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.streams)
}

type fixture struct {
	t     *testing.T
	fn    *fakeFunction
	mgr   *Manager
	store *memory.Store
	svc   *discovery.Service
	add   *discovery.Method
}

func newFixture(t *testing.T, passivation time.Duration) *fixture {
	t.Helper()
	fn := &fakeFunction{script: counter, ended: make(chan *ufStream, 100)}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	protocol.RegisterEventSourcedServer(srv, fn)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	st := memory.New()
	svc := &discovery.Service{Name: "test.Counter", EntityType: discovery.EventSourced, PersistenceID: "counter"}
	add := &discovery.Method{Service: svc, Name: "Add", Path: "/test.Counter/Add", InputTypeURL: "type.googleapis.com/test.Num", OutputTypeURL: "type.googleapis.com/test.Num"}
	svc.Methods = map[string]*discovery.Method{"Add": add}
	mgr := New(Config{
		Journal:            st,
		Snapshots:          st,
		Client:             protocol.NewEventSourcedClient(conn),
		PassivationTimeout: passivation,
		RelayTimeout:       5 * time.Second,
		MailboxSize:        1000,
		CloseTimeout:       time.Second,
		Log:                slog.New(slog.DiscardHandler),
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		mgr.Shutdown(ctx)
	})
	return &fixture{t: t, fn: fn, mgr: mgr, store: st, svc: svc, add: add}
}

// call sends Add(n) to entity id and returns the total it answered.
func (f *fixture) call(id string, n int) (int, error) {
	out, err := f.mgr.Unary(context.Background(), route.Call{Method: f.add, EntityID: id, Payload: numAny(n)})
	if err != nil {
		return 0, err
	}
	if fl := out.Action.GetFailure(); fl != nil {
		return 0, status.Error(codes.Unknown, fl.GetDescription())
	}
	return num(out.Action.GetReply().GetPayload()), nil
}

func (f *fixture) mustCall(id string, n int) int {
	f.t.Helper()
	total, err := f.call(id, n)
	if err != nil {
		f.t.Fatalf("Add(%s, %d): %v", id, n, err)
	}
	return total
}

func (f *fixture) journal(id string) []int {
	f.t.Helper()
	var seqs []int
	err := f.store.Replay(context.Background(), "counter|"+id, 0, func(ev store.Event) error {
		seqs = append(seqs, num(ev.Payload))
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return seqs
}

func wantStatus(t *testing.T, err error, code codes.Code, desc string) {
	t.Helper()
	st, _ := status.FromError(err)
	if err == nil || st.Code() != code || st.Message() != desc {
		t.Fatalf("got error %v, want %s %q", err, code, desc)
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPersistsEventsBeforeReplying(t *testing.T) {
	f := newFixture(t, time.Minute)
	if got := f.mustCall("a", 3); got != 3 {
		t.Fatalf("total %d, want 3", got)
	}
	if got := f.mustCall("a", 4); got != 7 {
		t.Fatalf("total %d, want 7", got)
	}
	if got := fmt.Sprint(f.journal("a")); got != "[3 4]" {
		t.Fatalf("journal %s, want [3 4]", got)
	}
	if f.fn.streamCount() != 1 {
		t.Fatalf("%d streams, want 1", f.fn.streamCount())
	}
	s := f.fn.streams[0]
	if s.init.GetServiceName() != "test.Counter" || s.init.GetEntityId() != "a" || s.init.GetSnapshot() != nil {
		t.Fatalf("init %v", s.init)
	}
}

func TestInitCarriesSnapshotThenLaterEvents(t *testing.T) {
	f := newFixture(t, time.Minute)
	ctx := context.Background()
	pid := "counter|a"
	if err := f.store.Append(ctx, pid, []store.Event{{Seq: 1, Payload: numAny(1)}, {Seq: 2, Payload: numAny(2)}, {Seq: 3, Payload: numAny(3)}, {Seq: 4, Payload: numAny(4)}}); err != nil {
		t.Fatal(err)
	}
	if err := f.store.SaveSnapshot(ctx, pid, store.Snapshot{Seq: 2, Payload: numAny(3)}); err != nil {
		t.Fatal(err)
	}
	if got := f.mustCall("a", 10); got != 20 {
		t.Fatalf("total %d, want 20", got)
	}
	s := f.fn.streams[0]
	if s.init.GetSnapshot().GetSnapshotSequence() != 2 {
		t.Fatalf("snapshot sequence %d, want 2", s.init.GetSnapshot().GetSnapshotSequence())
	}
	if len(s.events) != 2 || s.events[0].GetSequence() != 3 || s.events[1].GetSequence() != 4 {
		t.Fatalf("replayed %v, want sequences 3 and 4", s.events)
	}
	if got := fmt.Sprint(f.journal("a")); got != "[1 2 3 4 10]" {
		t.Fatalf("journal %s", got)
	}
}

func TestSnapshotSavedAtLastEventSequence(t *testing.T) {
	f := newFixture(t, time.Minute)
	f.fn.setScript(func(s *ufStream) error {
		for {
			cmd, err := s.recv()
			if err != nil {
				return nil
			}
			s.total += 2 * num(cmd.GetPayload())
			if err := s.reply(&protocol.EventSourcedReply{
				CommandId:    cmd.GetId(),
				ClientAction: replyOf(s.total),
				Events:       []*anypb.Any{cmd.GetPayload(), cmd.GetPayload()},
				Snapshot:     numAny(s.total),
			}); err != nil {
				return err
			}
		}
	})
	f.mustCall("a", 5)
	f.mustCall("a", 1)
	snap, ok, err := f.store.LatestSnapshot(context.Background(), "counter|a")
	if err != nil || !ok || snap.Seq != 4 || num(snap.Payload) != 12 {
		t.Fatalf("snapshot %+v ok=%v err=%v, want seq 4 value 12", snap, ok, err)
	}
}

func TestFailureIsDeliveredAndItsEventsDropped(t *testing.T) {
	f := newFixture(t, time.Minute)
	f.fn.setScript(func(s *ufStream) error {
		for {
			cmd, err := s.recv()
			if err != nil {
				return nil
			}
			r := &protocol.EventSourcedReply{CommandId: cmd.GetId(), ClientAction: replyOf(int(cmd.GetId())), Events: []*anypb.Any{numAny(1)}}
			if num(cmd.GetPayload()) < 0 {
				r.ClientAction = failureOf("negative", false)
			}
			if err := s.reply(r); err != nil {
				return err
			}
		}
	})
	f.mustCall("a", 1)
	_, err := f.call("a", -1)
	wantStatus(t, err, codes.Unknown, "negative")
	// The same stream goes on: the next command has id 3.
	if got := f.mustCall("a", 1); got != 3 {
		t.Fatalf("command id %d, want 3 (same stream)", got)
	}
	if got := fmt.Sprint(f.journal("a")); got != "[1 1]" {
		t.Fatalf("journal %s, want the failed command's event dropped", got)
	}
}

func TestRestartReplaysAndKeepsQueuedCommands(t *testing.T) {
	f := newFixture(t, time.Minute)
	release := make(chan struct{})
	inFlight := make(chan struct{})
	f.fn.setScript(func(s *ufStream) error {
		for {
			cmd, err := s.recv()
			if err != nil {
				return nil
			}
			if num(cmd.GetPayload()) == 0 {
				close(inFlight)
				<-release // hold the failing command so others queue behind it
				if err := s.reply(&protocol.EventSourcedReply{CommandId: cmd.GetId(), ClientAction: failureOf("boom", true)}); err != nil {
					return err
				}
				continue
			}
			n := num(cmd.GetPayload())
			s.total += n
			if err := s.reply(&protocol.EventSourcedReply{CommandId: cmd.GetId(), ClientAction: replyOf(s.total), Events: []*anypb.Any{numAny(n)}}); err != nil {
				return err
			}
		}
	})
	f.mustCall("a", 5)
	errs := make(chan error, 1)
	go func() { _, err := f.call("a", 0); errs <- err }()
	<-inFlight
	totals := make(chan int, 2)
	go func() { totals <- f.mustCall("a", 1) }()
	eventually(t, "a command to be queued", func() bool {
		return f.mgr.Waiting(entity.Key{Service: "test.Counter", ID: "a"}) == 1
	})
	close(release)
	wantStatus(t, <-errs, codes.Unknown, "boom")
	if got := <-totals; got != 6 {
		t.Fatalf("total after restart %d, want 6", got)
	}
	if f.fn.streamCount() != 2 {
		t.Fatalf("%d streams, want 2 (restart)", f.fn.streamCount())
	}
	s2 := f.fn.streams[1]
	if len(s2.events) != 1 || s2.events[0].GetSequence() != 1 {
		t.Fatalf("restart replayed %v, want event 1", s2.events)
	}
}

func TestProtocolViolationsStopTheEntity(t *testing.T) {
	cases := []struct {
		name string
		bad  func(s *ufStream, cmd *protocol.Command) error
		desc string
	}{
		{"wrong command id", func(s *ufStream, cmd *protocol.Command) error {
			return s.reply(&protocol.EventSourcedReply{CommandId: cmd.GetId() + 7})
		}, "Unexpected entity reply"},
		{"top-level failure", func(s *ufStream, cmd *protocol.Command) error {
			return s.Send(&protocol.EventSourcedStreamOut{Message: &protocol.EventSourcedStreamOut_Failure{Failure: &protocol.Failure{CommandId: cmd.GetId(), Description: "internal details"}}})
		}, "Unexpected entity failure"},
		{"empty message", func(s *ufStream, cmd *protocol.Command) error {
			return s.Send(&protocol.EventSourcedStreamOut{})
		}, "Unexpected entity message"},
		{"stream closed", func(s *ufStream, cmd *protocol.Command) error {
			return io.EOF
		}, "Unexpected entity termination"},
		{"stream error", func(s *ufStream, cmd *protocol.Command) error {
			return status.Error(codes.Internal, "function crashed")
		}, "Unexpected entity termination"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, time.Minute)
			f.fn.setScript(func(s *ufStream) error {
				for {
					cmd, err := s.recv()
					if err != nil {
						return nil
					}
					if num(cmd.GetPayload()) == 0 {
						if err := tc.bad(s, cmd); err != nil {
							if err == io.EOF {
								return nil
							}
							return err
						}
						continue
					}
					s.total += num(cmd.GetPayload())
					if err := s.reply(&protocol.EventSourcedReply{CommandId: cmd.GetId(), ClientAction: replyOf(s.total), Events: []*anypb.Any{cmd.GetPayload()}}); err != nil {
						return err
					}
				}
			})
			f.mustCall("a", 2)
			_, err := f.call("a", 0)
			wantStatus(t, err, codes.Unknown, tc.desc)
			// The entity serves again, from the store.
			if got := f.mustCall("a", 3); got != 5 {
				t.Fatalf("total after the violation %d, want 5", got)
			}
			eventually(t, "a second stream", func() bool { return f.fn.streamCount() == 2 })
		})
	}
}

func TestPassivationClosesTheStreamAndReactivates(t *testing.T) {
	f := newFixture(t, 50*time.Millisecond)
	f.mustCall("a", 2)
	select {
	case <-f.fn.ended:
	case <-time.After(5 * time.Second):
		t.Fatal("stream not closed after the passivation timeout")
	}
	eventually(t, "no active entity", func() bool { return f.mgr.Active() == 0 })
	if got := f.mustCall("a", 3); got != 5 {
		t.Fatalf("total after passivation %d, want 5", got)
	}
	if f.fn.streamCount() != 2 || len(f.fn.streams[1].events) != 1 {
		t.Fatalf("want a second stream replaying 1 event")
	}
}

func TestServiceOwnPassivationTimeoutWins(t *testing.T) {
	f := newFixture(t, time.Hour)
	f.svc.Passivation = 30 * time.Millisecond
	f.mustCall("a", 1)
	select {
	case <-f.fn.ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the service's own passivation timeout was not applied")
	}
}

func TestConcurrentCommandsKeepExactTotals(t *testing.T) {
	f := newFixture(t, time.Minute)
	const entities, perEntity = 50, 8
	var wg sync.WaitGroup
	errs := make(chan error, entities*perEntity)
	for i := 0; i < entities*perEntity; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if _, err := f.call(strconv.Itoa(i%entities), 1); err != nil {
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for e := 0; e < entities; e++ {
		if got := len(f.journal(strconv.Itoa(e))); got != perEntity {
			t.Fatalf("entity %d has %d events, want %d", e, got, perEntity)
		}
	}
}

func TestJournalConflictFailsTheCommandAndReloads(t *testing.T) {
	f := newFixture(t, time.Minute)
	f.mustCall("a", 1)
	// Another writer appends behind the entity's back.
	if err := f.store.Append(context.Background(), "counter|a", []store.Event{{Seq: 2, Payload: numAny(100)}}); err != nil {
		t.Fatal(err)
	}
	_, err := f.call("a", 1)
	wantStatus(t, err, codes.Aborted, "Unexpected entity failure")
	if got := f.mustCall("a", 1); got != 102 {
		t.Fatalf("total after reload %d, want 102", got)
	}
}

func TestShutdownRefusesNewCommands(t *testing.T) {
	f := newFixture(t, time.Minute)
	f.mustCall("a", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	f.mgr.Shutdown(ctx)
	if f.mgr.Active() != 0 {
		t.Fatalf("%d entities still active after shutdown", f.mgr.Active())
	}
	_, err := f.call("a", 1)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("got %v, want UNAVAILABLE after shutdown", err)
	}
}

func TestFunctionUnavailableFailsFast(t *testing.T) {
	f := newFixture(t, time.Minute)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there now
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	f.mgr.cfg.Client = protocol.NewEventSourcedClient(conn)
	_, err = f.call("a", 1)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("got %v, want UNAVAILABLE", err)
	}
}
