package value

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/internal/discovery"
	"github.com/cloudstate-go/cloudstate/internal/entity"
	"github.com/cloudstate-go/cloudstate/internal/route"
	"github.com/cloudstate-go/cloudstate/protocol"
	"github.com/cloudstate-go/cloudstate/store"
	"github.com/cloudstate-go/cloudstate/store/memory"
)

// The tests drive a Manager against a real gRPC server that plays the user
// function. A command's payload is an operation in text ("add:3", "get",
// "del", "fail", ...); the default script (ops) keeps a counter, answers
// with its total and stores it with an update. Tests that need another
// behaviour script the function's side of the stream themselves.

type script func(s *ufStream) error

// ufStream is the function's view of one entity stream. Its recorded
// fields are guarded by the function's mutex: the test reads them from
// its own goroutine.
type ufStream struct {
	grpc.BidiStreamingServer[protocol.ValueEntityStreamIn, protocol.ValueEntityStreamOut]
	fn     *fakeFunction
	init   *protocol.ValueEntityInit
	cmds   []*protocol.Command
	endErr error // what the last recv returned: io.EOF when the proxy half-closed
	total  int
}

// recv returns the next command, or the error that ended the stream. It
// checks the order the protocol requires: init first and only once.
func (s *ufStream) recv() (*protocol.Command, error) {
	for {
		in, err := s.Recv()
		if err != nil {
			s.fn.mu.Lock()
			s.endErr = err
			s.fn.mu.Unlock()
			return nil, err
		}
		switch m := in.Message.(type) {
		case *protocol.ValueEntityStreamIn_Init:
			s.fn.mu.Lock()
			second := s.init != nil
			s.init = m.Init
			s.fn.mu.Unlock()
			if second {
				s.fn.problem("second init on one stream")
			}
			if v := m.Init.GetState().GetValue(); v != nil {
				s.total = num(v)
			}
		case *protocol.ValueEntityStreamIn_Command:
			s.fn.mu.Lock()
			noInit := s.init == nil
			s.cmds = append(s.cmds, m.Command)
			s.fn.mu.Unlock()
			if noInit {
				s.fn.problem("command before init")
			}
			return m.Command, nil
		default:
			s.fn.problem("empty message from the proxy")
		}
	}
}

func (s *ufStream) reply(r *protocol.ValueEntityReply) error {
	return s.Send(&protocol.ValueEntityStreamOut{Message: &protocol.ValueEntityStreamOut_Reply{Reply: r}})
}

// opArg splits "add:3" into "add" and 3.
func opArg(cmd *protocol.Command) (string, int) {
	op, arg, _ := strings.Cut(string(cmd.GetPayload().GetValue()), ":")
	n, _ := strconv.Atoi(arg)
	return op, n
}

// handleOp answers the operations of the default script; ok is false for
// an operation it does not know.
func (s *ufStream) handleOp(cmd *protocol.Command) (*protocol.ValueEntityReply, bool) {
	op, n := opArg(cmd)
	r := &protocol.ValueEntityReply{CommandId: cmd.GetId()}
	switch op {
	case "add":
		s.total += n
		r.ClientAction = replyOf(s.total)
		r.StateAction = update(numAny(s.total))
	case "get":
		r.ClientAction = replyOf(s.total)
	case "del":
		s.total = 0
		r.ClientAction = replyOf(0)
		r.StateAction = &protocol.ValueEntityAction{Action: &protocol.ValueEntityAction_Delete{Delete: &protocol.ValueEntityDelete{}}}
	case "fail":
		// A failure that also (wrongly) carries an update and a side effect.
		r.ClientAction = &protocol.ClientAction{Action: &protocol.ClientAction_Failure{Failure: &protocol.Failure{CommandId: cmd.GetId(), Description: "no"}}}
		r.StateAction = update(numAny(999))
		r.SideEffects = []*protocol.SideEffect{{ServiceName: "test.Other", CommandName: "Do", Payload: numAny(1)}}
	case "fwd":
		s.total += n
		r.ClientAction = &protocol.ClientAction{Action: &protocol.ClientAction_Forward{Forward: &protocol.Forward{
			ServiceName: "test.Other", CommandName: "Do", Payload: numAny(s.total)}}}
		r.SideEffects = []*protocol.SideEffect{
			{ServiceName: "test.Other", CommandName: "First", Payload: numAny(1), Synchronous: true},
			{ServiceName: "test.Other", CommandName: "Second", Payload: numAny(2)},
		}
		r.StateAction = update(numAny(s.total))
	default:
		return nil, false
	}
	return r, true
}

// ops is the default script.
func ops(s *ufStream) error {
	for {
		cmd, err := s.recv()
		if err != nil {
			return nil
		}
		if op, _ := opArg(cmd); op == "hold" {
			// Tests queue commands behind a held one; once released it
			// answers the total without a state action.
			s.fn.hold()
			if err := s.reply(&protocol.ValueEntityReply{CommandId: cmd.GetId(), ClientAction: replyOf(s.total)}); err != nil {
				return err
			}
			continue
		}
		r, ok := s.handleOp(cmd)
		if !ok {
			return fmt.Errorf("unknown operation %q", cmd.GetPayload().GetValue())
		}
		if err := s.reply(r); err != nil {
			return err
		}
	}
}

func numAny(n int) *anypb.Any {
	return &anypb.Any{TypeUrl: "type.googleapis.com/test.Num", Value: []byte(strconv.Itoa(n))}
}

func num(a *anypb.Any) int {
	n, err := strconv.Atoi(string(a.GetValue()))
	if err != nil {
		return -1
	}
	return n
}

func opAny(op string) *anypb.Any {
	return &anypb.Any{TypeUrl: "type.googleapis.com/test.Op", Value: []byte(op)}
}

func replyOf(n int) *protocol.ClientAction {
	return &protocol.ClientAction{Action: &protocol.ClientAction_Reply{Reply: &protocol.Reply{Payload: numAny(n)}}}
}

func update(v *anypb.Any) *protocol.ValueEntityAction {
	return &protocol.ValueEntityAction{Action: &protocol.ValueEntityAction_Update{Update: &protocol.ValueEntityUpdate{Value: v}}}
}

// fakeFunction serves ValueEntity/handle with a script per stream and
// records every stream.
type fakeFunction struct {
	protocol.UnimplementedValueEntityServer
	mu       sync.Mutex
	script   script
	streams  []*ufStream
	problems []string
	ended    chan *ufStream
	held     chan struct{} // receives when a "hold" command arrives
	release  chan struct{} // closed by the test to let held commands go
}

func (f *fakeFunction) Handle(srv grpc.BidiStreamingServer[protocol.ValueEntityStreamIn, protocol.ValueEntityStreamOut]) error {
	s := &ufStream{BidiStreamingServer: srv, fn: f}
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

// hold blocks a command until the test releases it or the stream ends.
func (f *fakeFunction) hold() {
	f.held <- struct{}{}
	<-f.release
}

func (f *fakeFunction) problem(format string, args ...any) {
	f.mu.Lock()
	f.problems = append(f.problems, fmt.Sprintf(format, args...))
	f.mu.Unlock()
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

// streamView is a copy of what one stream recorded.
type streamView struct {
	init   *protocol.ValueEntityInit
	cmds   []*protocol.Command
	endErr error
}

// streamsOf returns what the streams of entity id recorded, in order.
func (f *fakeFunction) streamsOf(id string) []streamView {
	f.mu.Lock()
	defer f.mu.Unlock()
	var views []streamView
	for _, s := range f.streams {
		if s.init.GetEntityId() == id {
			views = append(views, streamView{init: s.init, cmds: append([]*protocol.Command(nil), s.cmds...), endErr: s.endErr})
		}
	}
	return views
}

// faultyStore wraps the memory store with switchable failures, and can
// hold writes until the test lets them go.
type faultyStore struct {
	store.ValueStore
	failGet, failPut atomic.Bool
	gate             atomic.Pointer[writeGate]
}

// writeGate holds a write: entered is closed when it starts, and the write
// proceeds once release is closed.
type writeGate struct {
	entered, release chan struct{}
}

var errInjected = errors.New("injected store failure")

func (s *faultyStore) GetValue(ctx context.Context, key string) (store.Value, error) {
	if s.failGet.Load() {
		return store.Value{}, errInjected
	}
	return s.ValueStore.GetValue(ctx, key)
}

func (s *faultyStore) PutValue(ctx context.Context, key string, expected int64, payload *anypb.Any) (int64, error) {
	if s.failPut.Load() {
		return 0, errInjected
	}
	if g := s.gate.Swap(nil); g != nil {
		close(g.entered)
		<-g.release
	}
	return s.ValueStore.PutValue(ctx, key, expected, payload)
}

type fixture struct {
	t     *testing.T
	fn    *fakeFunction
	mgr   *Manager
	store *faultyStore
	svc   *discovery.Service
	do    *discovery.Method
}

type fixtureOptions struct {
	passivation time.Duration
	relay       time.Duration
}

func newFixture(t *testing.T, opts fixtureOptions) *fixture {
	t.Helper()
	if opts.passivation == 0 {
		opts.passivation = time.Minute
	}
	if opts.relay == 0 {
		opts.relay = 5 * time.Second
	}
	fn := &fakeFunction{script: ops, ended: make(chan *ufStream, 100), held: make(chan struct{}, 10), release: make(chan struct{})}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	protocol.RegisterValueEntityServer(srv, fn)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	st := &faultyStore{ValueStore: memory.New()}
	svc := &discovery.Service{Name: "test.Counter", EntityType: discovery.ValueEntity, PersistenceID: "counter"}
	do := &discovery.Method{Service: svc, Name: "Do", Path: "/test.Counter/Do", InputTypeURL: "type.googleapis.com/test.Op", OutputTypeURL: "type.googleapis.com/test.Num"}
	svc.Methods = map[string]*discovery.Method{"Do": do}
	mgr := New(Config{
		Store:              st,
		Client:             protocol.NewValueEntityClient(conn),
		PassivationTimeout: opts.passivation,
		RelayTimeout:       opts.relay,
		MailboxSize:        1000,
		CloseTimeout:       time.Second,
		Log:                slog.New(slog.DiscardHandler),
	})
	t.Cleanup(func() {
		fn.mu.Lock()
		problems := fn.problems
		fn.mu.Unlock()
		for _, p := range problems {
			t.Errorf("the function saw a protocol problem: %s", p)
		}
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		mgr.Shutdown(ctx)
	})
	// Registered last so it runs first: held commands must go before
	// shutdown waits for their entities.
	t.Cleanup(func() {
		select {
		case <-fn.release:
		default:
			close(fn.release)
		}
	})
	return &fixture{t: t, fn: fn, mgr: mgr, store: st, svc: svc, do: do}
}

func (f *fixture) releaseHeld() { close(f.fn.release) }

// outcome sends op to entity id and returns the raw outcome.
func (f *fixture) outcome(ctx context.Context, id, op string) (route.Outcome, error) {
	return f.mgr.Unary(ctx, route.Call{Method: f.do, EntityID: id, Payload: opAny(op)})
}

// call sends op to entity id and returns the total it answered; a
// client-action failure comes back as an UNKNOWN status.
func (f *fixture) call(id, op string) (int, error) {
	out, err := f.outcome(context.Background(), id, op)
	if err != nil {
		return 0, err
	}
	if fl := out.Action.GetFailure(); fl != nil {
		return 0, status.Error(codes.Unknown, fl.GetDescription())
	}
	return num(out.Action.GetReply().GetPayload()), nil
}

func (f *fixture) mustCall(id, op string, want int) {
	f.t.Helper()
	total, err := f.call(id, op)
	if err != nil {
		f.t.Fatalf("%s on %s: %v", op, id, err)
	}
	if total != want {
		f.t.Fatalf("%s on %s answered %d, want %d", op, id, total, want)
	}
}

// stored returns what the store holds for entity id.
func (f *fixture) stored(id string) store.Value {
	f.t.Helper()
	v, err := f.store.ValueStore.GetValue(context.Background(), Key("counter", id))
	if err != nil {
		f.t.Fatal(err)
	}
	return v
}

func (f *fixture) wantStored(id string, want int) {
	f.t.Helper()
	v := f.stored(id)
	if v.Payload == nil || num(v.Payload) != want {
		f.t.Fatalf("stored value of %s is %v, want %d", id, v.Payload, want)
	}
}

// startHeld starts a "hold" command on entity id, which the function
// answers only when the test releases it, and returns once the command is
// in flight at the function.
func (f *fixture) startHeld(id string) <-chan error {
	f.t.Helper()
	errs := make(chan error, 1)
	go func() { _, err := f.call(id, "hold"); errs <- err }()
	select {
	case <-f.fn.held:
	case <-time.After(5 * time.Second):
		f.t.Fatal("the held command did not reach the function")
	}
	return errs
}

// waitQueued waits until entity id has n commands queued.
func (f *fixture) waitQueued(id string, n int) {
	f.t.Helper()
	eventually(f.t, fmt.Sprintf("%d queued commands on %s", n, id), func() bool {
		return f.mgr.Waiting(entity.Key{Service: "test.Counter", ID: id}) == n
	})
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

func waitEnded(t *testing.T, fn *fakeFunction, what string) *ufStream {
	t.Helper()
	select {
	case s := <-fn.ended:
		return s
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		return nil
	}
}

func TestInitAndCommandsOfANewEntity(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	md := &protocol.Metadata{Entries: []*protocol.MetadataEntry{{Key: "x-user", Value: &protocol.MetadataEntry_StringValue{StringValue: "ann"}}}}
	for i, op := range []string{"add:3", "add:4", "get"} {
		out, err := f.mgr.Unary(context.Background(), route.Call{Method: f.do, EntityID: "a", Payload: opAny(op), Metadata: md})
		if err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		if got, want := num(out.Action.GetReply().GetPayload()), []int{3, 7, 7}[i]; got != want {
			t.Fatalf("%s answered %d, want %d", op, got, want)
		}
	}
	views := f.fn.streamsOf("a")
	if len(views) != 1 {
		t.Fatalf("%d streams, want 1", len(views))
	}
	v := views[0]
	if v.init.GetServiceName() != "test.Counter" || v.init.GetEntityId() != "a" {
		t.Fatalf("init %v", v.init)
	}
	if v.init.GetState() == nil || v.init.GetState().GetValue() != nil {
		t.Fatalf("init state %v, want present and without a value", v.init.GetState())
	}
	for i, op := range []string{"add:3", "add:4", "get"} {
		want := &protocol.Command{EntityId: "a", Id: int64(i + 1), Name: "Do", Payload: opAny(op)}
		if !proto.Equal(v.cmds[i], want) {
			t.Fatalf("command %d is %v, want %v (ids from 1, no metadata)", i, v.cmds[i], want)
		}
	}
}

func TestInitCarriesTheStoredValue(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	if _, err := f.store.PutValue(context.Background(), Key("counter", "b"), 0, numAny(40)); err != nil {
		t.Fatal(err)
	}
	f.mustCall("b", "add:2", 42)
	views := f.fn.streamsOf("b")
	if len(views) != 1 || !proto.Equal(views[0].init.GetState().GetValue(), numAny(40)) {
		t.Fatalf("init %v, want the stored value 40", views)
	}
}

func TestUpdateIsStoredBeforeTheReply(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	f.mustCall("a", "add:5", 5)
	f.wantStored("a", 5)
	if v := f.stored("a"); v.Version != 1 || !proto.Equal(v.Payload, numAny(5)) {
		t.Fatalf("stored %+v, want the update's exact value at version 1", v)
	}
	f.mustCall("a", "add:1", 6)
	f.wantStored("a", 6)
}

func TestOutcomeWaitsForTheWrite(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	f.mustCall("a", "add:1", 1)
	g := &writeGate{entered: make(chan struct{}), release: make(chan struct{})}
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(g.release) }) }
	t.Cleanup(release) // before shutdown, which waits for the entity
	f.store.gate.Store(g)
	done := make(chan error, 1)
	go func() { _, err := f.call("a", "add:2"); done <- err }()
	<-g.entered
	// While the write is held the caller must not have its answer.
	select {
	case err := <-done:
		t.Fatalf("the outcome (%v) was released before the write completed", err)
	case <-time.After(50 * time.Millisecond):
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	f.wantStored("a", 3)
}

func TestDeleteRemovesTheValue(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	f.mustCall("a", "add:5", 5)
	f.mustCall("a", "del", 0)
	if v := f.stored("a"); v.Payload != nil {
		t.Fatalf("stored %v after delete, want nothing", v.Payload)
	}
	// The entity goes on writing after its delete.
	f.mustCall("a", "add:2", 2)
	f.wantStored("a", 2)
}

func TestNoStateActionLeavesTheValue(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	f.mustCall("a", "add:5", 5)
	before := f.stored("a")
	f.mustCall("a", "get", 5)
	if after := f.stored("a"); after.Version != before.Version || !proto.Equal(after.Payload, before.Payload) {
		t.Fatalf("stored %+v after a reply without state action, want %+v", after, before)
	}
}

func TestForwardAndSideEffectsAreCarried(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	out, err := f.outcome(context.Background(), "a", "fwd:7")
	if err != nil {
		t.Fatal(err)
	}
	want := route.Outcome{
		Action: &protocol.ClientAction{Action: &protocol.ClientAction_Forward{Forward: &protocol.Forward{
			ServiceName: "test.Other", CommandName: "Do", Payload: numAny(7)}}},
		SideEffects: []*protocol.SideEffect{
			{ServiceName: "test.Other", CommandName: "First", Payload: numAny(1), Synchronous: true},
			{ServiceName: "test.Other", CommandName: "Second", Payload: numAny(2)},
		},
	}
	if !proto.Equal(out.Action, want.Action) || len(out.SideEffects) != 2 ||
		!proto.Equal(out.SideEffects[0], want.SideEffects[0]) || !proto.Equal(out.SideEffects[1], want.SideEffects[1]) {
		t.Fatalf("outcome %v, want %v", out, want)
	}
	f.wantStored("a", 7)
}

func TestClientFailureIsDeliveredAndTheValueKept(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	f.mustCall("a", "add:5", 5)
	before := f.stored("a")
	out, err := f.outcome(context.Background(), "a", "fail")
	if err != nil {
		t.Fatal(err)
	}
	if out.Action.GetFailure().GetDescription() != "no" {
		t.Fatalf("outcome %v, want the failure \"no\"", out.Action)
	}
	if after := f.stored("a"); after.Version != before.Version || num(after.Payload) != 5 {
		t.Fatalf("stored %+v after a failure carrying an update, want the value 5 untouched", after)
	}
	// The same stream goes on with the next id.
	f.mustCall("a", "add:1", 6)
	views := f.fn.streamsOf("a")
	if len(views) != 1 || len(views[0].cmds) != 3 || views[0].cmds[2].GetId() != 3 {
		t.Fatalf("want one stream with commands 1..3, got %d streams", len(views))
	}
	f.wantStored("a", 6)
}

func TestProtocolViolationsStopTheEntity(t *testing.T) {
	cases := []struct {
		name string
		bad  func(s *ufStream, cmd *protocol.Command) error // io.EOF: end the stream normally
		desc string
	}{
		{"wrong command id", func(s *ufStream, cmd *protocol.Command) error {
			return s.reply(&protocol.ValueEntityReply{CommandId: cmd.GetId() + 7, ClientAction: replyOf(1)})
		}, "Unexpected Value entity reply"},
		{"top-level failure", func(s *ufStream, cmd *protocol.Command) error {
			return s.Send(&protocol.ValueEntityStreamOut{Message: &protocol.ValueEntityStreamOut_Failure{Failure: &protocol.Failure{CommandId: cmd.GetId(), Description: "internal details"}}})
		}, "Unexpected Value entity failure"},
		{"empty message", func(s *ufStream, cmd *protocol.Command) error {
			return s.Send(&protocol.ValueEntityStreamOut{})
		}, "Unexpected Value entity failure"},
		{"stream closed", func(s *ufStream, cmd *protocol.Command) error {
			return io.EOF
		}, "Unexpected Value entity termination"},
		{"stream error", func(s *ufStream, cmd *protocol.Command) error {
			return status.Error(codes.Internal, "function crashed")
		}, "Unexpected Value entity termination"},
		{"update without value", func(s *ufStream, cmd *protocol.Command) error {
			return s.reply(&protocol.ValueEntityReply{CommandId: cmd.GetId(), ClientAction: replyOf(1), StateAction: update(nil)})
		}, "Unexpected Value entity failure"},
		{"empty state action", func(s *ufStream, cmd *protocol.Command) error {
			return s.reply(&protocol.ValueEntityReply{CommandId: cmd.GetId(), ClientAction: replyOf(1), StateAction: &protocol.ValueEntityAction{}})
		}, "Unexpected Value entity failure"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, fixtureOptions{})
			inFlight := make(chan struct{})
			release := make(chan struct{})
			f.fn.setScript(func(s *ufStream) error {
				for {
					cmd, err := s.recv()
					if err != nil {
						return nil
					}
					if op, _ := opArg(cmd); op == "bad" {
						close(inFlight)
						<-release // others queue behind this command
						if err := tc.bad(s, cmd); err != nil {
							if err == io.EOF {
								return nil
							}
							return err
						}
						continue
					}
					r, _ := s.handleOp(cmd)
					if err := s.reply(r); err != nil {
						return err
					}
				}
			})
			f.mustCall("a", "add:2", 2)
			badErr := make(chan error, 1)
			go func() { _, err := f.call("a", "bad"); badErr <- err }()
			<-inFlight
			queuedErr := make(chan error, 1)
			go func() { _, err := f.call("a", "add:100"); queuedErr <- err }()
			f.waitQueued("a", 1)
			close(release)
			wantStatus(t, <-badErr, codes.Unknown, tc.desc)
			wantStatus(t, <-queuedErr, codes.Unknown, "Value entity terminated")
			f.wantStored("a", 2)
			// The next command activates the entity again, from the store.
			f.mustCall("a", "add:3", 5)
			views := f.fn.streamsOf("a")
			if len(views) != 2 || !proto.Equal(views[1].init.GetState().GetValue(), numAny(2)) {
				t.Fatalf("want a second stream whose init carries 2, got %d streams", len(views))
			}
			f.wantStored("a", 5)
		})
	}
}

// An entity has no reader while idle (see package entity, serial.go), so a
// message the function sends with nothing in flight is found by the next
// command, which fails; the entity then serves again from the store.
func TestUnexpectedMessageWhileIdleFailsTheNextCommand(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	f.fn.setScript(func(s *ufStream) error {
		cmd, err := s.recv()
		if err != nil {
			return nil
		}
		r, _ := s.handleOp(cmd)
		if err := s.reply(r); err != nil {
			return err
		}
		// A second, unsolicited reply while nothing is in flight.
		if err := s.reply(&protocol.ValueEntityReply{CommandId: cmd.GetId(), ClientAction: replyOf(0)}); err != nil {
			return err
		}
		_, _ = s.recv()
		return nil
	})
	f.mustCall("a", "add:4", 4)
	f.fn.setScript(ops)
	_, err := f.call("a", "add:1")
	wantStatus(t, err, codes.Unknown, "Unexpected Value entity reply")
	eventually(t, "the entity to stop", func() bool { return f.mgr.Active() == 0 })
	f.mustCall("a", "add:1", 5)
	if n := len(f.fn.streamsOf("a")); n != 2 {
		t.Fatalf("%d streams, want 2", n)
	}
}

func TestStaleWriteFailsTheCommandAndReloads(t *testing.T) {
	for _, op := range []string{"add:1", "del"} {
		t.Run(op, func(t *testing.T) {
			f := newFixture(t, fixtureOptions{})
			ctx := context.Background()
			f.mustCall("a", "add:1", 1)
			// Another writer changes the value behind the entity's back.
			v := f.stored("a")
			if _, err := f.store.PutValue(ctx, Key("counter", "a"), v.Version, numAny(100)); err != nil {
				t.Fatal(err)
			}
			_, err := f.call("a", op)
			wantStatus(t, err, codes.Aborted, "Unexpected Value entity failure")
			f.wantStored("a", 100)
			f.mustCall("a", "add:1", 101)
			views := f.fn.streamsOf("a")
			if len(views) != 2 || !proto.Equal(views[1].init.GetState().GetValue(), numAny(100)) {
				t.Fatalf("want a second stream whose init carries the other writer's 100, got %d streams", len(views))
			}
			f.wantStored("a", 101)
		})
	}
}

func TestStoreWriteFailureFailsQueuedCommands(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	inFlight := make(chan struct{})
	release := make(chan struct{})
	f.fn.setScript(func(s *ufStream) error {
		for {
			cmd, err := s.recv()
			if err != nil {
				return nil
			}
			if cmd.GetId() == 2 {
				close(inFlight)
				<-release
			}
			r, _ := s.handleOp(cmd)
			if err := s.reply(r); err != nil {
				return err
			}
		}
	})
	f.mustCall("a", "add:1", 1)
	errs := make(chan error, 1)
	go func() { _, err := f.call("a", "add:1"); errs <- err }()
	<-inFlight
	queued := make(chan error, 1)
	go func() { _, err := f.call("a", "add:1"); queued <- err }()
	f.waitQueued("a", 1)
	f.store.failPut.Store(true)
	close(release)
	wantStatus(t, <-errs, codes.Unknown, "Unexpected Value entity failure")
	wantStatus(t, <-queued, codes.Unknown, "Value entity terminated")
	f.store.failPut.Store(false)
	f.mustCall("a", "add:1", 2)
}

func TestStoreReadFailureFailsActivation(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	f.store.failGet.Store(true)
	_, err := f.call("a", "add:1")
	wantStatus(t, err, codes.Unknown, "Value entity terminated")
	if n := f.fn.streamCount(); n != 0 {
		t.Fatalf("%d streams opened although the value could not be read", n)
	}
	eventually(t, "the entity to stop", func() bool { return f.mgr.Active() == 0 })
	f.store.failGet.Store(false)
	f.mustCall("a", "add:1", 1)
}

func TestCancelledCallerIsNotSent(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	held := f.startHeld("a")
	ctx, cancel := context.WithCancel(context.Background())
	gone := make(chan error, 1)
	go func() { _, err := f.outcome(ctx, "a", "add:50"); gone <- err }()
	f.waitQueued("a", 1)
	cancel()
	if err := <-gone; status.Code(err) != codes.Canceled {
		t.Fatalf("got %v, want CANCELLED", err)
	}
	f.releaseHeld()
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	f.mustCall("a", "add:1", 1)
	views := f.fn.streamsOf("a")
	if len(views) != 1 || len(views[0].cmds) != 2 || views[0].cmds[1].GetId() != 2 || string(views[0].cmds[1].GetPayload().GetValue()) != "add:1" {
		t.Fatalf("the cancelled command reached the function: %v", views)
	}
}

func TestRelayTimeoutStopsTheEntity(t *testing.T) {
	f := newFixture(t, fixtureOptions{relay: time.Second})
	f.mustCall("a", "add:3", 3)
	_, err := f.call("a", "hold")
	if status.Code(err) != codes.Internal {
		t.Fatalf("got %v, want INTERNAL after the relay timeout", err)
	}
	<-f.fn.held
	// The entity gives up on its stream too; the next command starts over.
	eventually(t, "the entity to stop", func() bool { return f.mgr.Active() == 0 })
	f.mustCall("a", "add:1", 4)
	if n := len(f.fn.streamsOf("a")); n != 2 {
		t.Fatalf("%d streams, want 2", n)
	}
}

func TestPassivationClosesTheStreamAndReactivates(t *testing.T) {
	f := newFixture(t, fixtureOptions{passivation: 50 * time.Millisecond})
	f.mustCall("a", "add:2", 2)
	s := waitEnded(t, f.fn, "the stream to close after the passivation timeout")
	f.fn.mu.Lock()
	endErr := s.endErr
	f.fn.mu.Unlock()
	if endErr != io.EOF {
		t.Fatalf("the function saw %v, want EOF (a half-close)", endErr)
	}
	eventually(t, "no active entity", func() bool { return f.mgr.Active() == 0 })
	f.mustCall("a", "add:3", 5)
	views := f.fn.streamsOf("a")
	if len(views) != 2 || !proto.Equal(views[1].init.GetState().GetValue(), numAny(2)) {
		t.Fatalf("want a second stream whose init carries 2, got %d streams", len(views))
	}
	if views[1].cmds[0].GetId() != 1 {
		t.Fatalf("first command of the new stream has id %d, want 1", views[1].cmds[0].GetId())
	}
}

func TestServiceOwnPassivationTimeoutWins(t *testing.T) {
	f := newFixture(t, fixtureOptions{passivation: time.Hour})
	f.svc.Passivation = 30 * time.Millisecond
	f.mustCall("a", "add:1", 1)
	waitEnded(t, f.fn, "the service's own passivation timeout")
	eventually(t, "no active entity", func() bool { return f.mgr.Active() == 0 })
}

// strictCounter answers like ops but receives on its own goroutine, so a
// command the proxy sends before it has the previous reply is seen at once.
func strictCounter(s *ufStream) error {
	var outstanding atomic.Bool
	cmds := make(chan *protocol.Command)
	go func() {
		defer close(cmds)
		for {
			cmd, err := s.recv()
			if err != nil {
				return
			}
			if outstanding.Swap(true) {
				s.fn.problem("entity %s: command %d arrived before the previous reply", cmd.GetEntityId(), cmd.GetId())
			}
			select {
			case cmds <- cmd:
			case <-s.Context().Done():
				return
			}
		}
	}()
	for cmd := range cmds {
		// Give a wrongly sent next command a chance to overtake the reply.
		for i := 0; i < 5; i++ {
			runtime.Gosched()
		}
		r, _ := s.handleOp(cmd)
		outstanding.Store(false)
		if err := s.reply(r); err != nil {
			return err
		}
	}
	return nil
}

func TestConcurrentCommandsOneAtATimePerEntity(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	f.fn.setScript(strictCounter)
	const entities, perEntity = 50, 4
	var wg sync.WaitGroup
	var mu sync.Mutex
	answers := make(map[string][]int)
	errs := make(chan error, entities*perEntity)
	for i := 0; i < entities*perEntity; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			id := strconv.Itoa(i % entities)
			total, err := f.call(id, "add:1")
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			answers[id] = append(answers[id], total)
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for e := 0; e < entities; e++ {
		id := strconv.Itoa(e)
		f.wantStored(id, perEntity)
		got := answers[id]
		sort.Ints(got)
		if fmt.Sprint(got) != "[1 2 3 4]" {
			t.Fatalf("entity %s answered %v, want each of 1..4 once", id, got)
		}
		if n := len(f.fn.streamsOf(id)); n != 1 {
			t.Fatalf("entity %s had %d streams, want 1", id, n)
		}
	}
}

func TestShutdownPassivatesAndRefusesNewCommands(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	f.mustCall("a", "add:1", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	f.mgr.Shutdown(ctx)
	if f.mgr.Active() != 0 {
		t.Fatalf("%d entities still active after shutdown", f.mgr.Active())
	}
	s := waitEnded(t, f.fn, "the stream to close at shutdown")
	f.fn.mu.Lock()
	endErr := s.endErr
	f.fn.mu.Unlock()
	if endErr != io.EOF {
		t.Fatalf("the function saw %v at shutdown, want EOF (a graceful half-close)", endErr)
	}
	_, err := f.call("a", "add:1")
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("got %v, want UNAVAILABLE after shutdown", err)
	}
	f.wantStored("a", 1)
}
