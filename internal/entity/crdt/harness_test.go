package crdt

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"reflect"
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

	"github.com/cloudstate-go/cloudstate/crdt"
	"github.com/cloudstate-go/cloudstate/internal/discovery"
	"github.com/cloudstate-go/cloudstate/internal/entity"
	"github.com/cloudstate-go/cloudstate/internal/route"
	"github.com/cloudstate-go/cloudstate/protocol"
)

// The tests drive a Manager against a real gRPC server on 127.0.0.1:0 that
// plays the user function. By default every entity stream the proxy opens is
// handed to the test (fixture.nextStream), which then reads what the proxy
// sends and answers message by message, so each test controls exactly what
// is in flight. A test may instead install a script that serves streams on
// the server's goroutine (fan-out).

// waitFor bounds every wait for something the proxy or a client must do.
const waitFor = 5 * time.Second

const (
	serviceName   = "test.Crdt"
	persistenceID = "crdt-pid"
	msgType       = "type.googleapis.com/test.Msg"
)

// ufStream is the function's side of one entity stream.
type ufStream struct {
	srv protocol.Crdt_HandleServer
	// in yields what the proxy sent, in order; it is closed when Recv
	// fails, and recvErr then says why (io.EOF: the proxy half-closed).
	in      chan *protocol.CrdtStreamIn
	recvErr error
	// end ends the handler with the given error (nil: closes normally).
	end    chan error
	pumped chan struct{} // closed after in
	sendMu sync.Mutex
	init   *protocol.CrdtInit
}

func (s *ufStream) pump() {
	for {
		m, err := s.srv.Recv()
		if err != nil {
			s.recvErr = err
			close(s.in)
			close(s.pumped)
			return
		}
		s.in <- m
	}
}

// send sends one message to the proxy; safe from any goroutine.
func (s *ufStream) send(out *protocol.CrdtStreamOut) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.srv.Send(out)
}

func (s *ufStream) mustSend(t *testing.T, out *protocol.CrdtStreamOut) {
	t.Helper()
	if err := s.send(out); err != nil {
		t.Fatalf("function send: %v", err)
	}
}

func (s *ufStream) reply(t *testing.T, r *protocol.CrdtReply) {
	t.Helper()
	s.mustSend(t, &protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_Reply{Reply: r}})
}

func (s *ufStream) streamed(t *testing.T, m *protocol.CrdtStreamedMessage) {
	t.Helper()
	s.mustSend(t, &protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_StreamedMessage{StreamedMessage: m}})
}

func (s *ufStream) cancelledResponse(t *testing.T, r *protocol.CrdtStreamCancelledResponse) {
	t.Helper()
	s.mustSend(t, &protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_StreamCancelledResponse{StreamCancelledResponse: r}})
}

func (s *ufStream) failure(t *testing.T, f *protocol.Failure) {
	t.Helper()
	s.mustSend(t, &protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_Failure{Failure: f}})
}

// finish ends the function's side of the stream.
func (s *ufStream) finish(err error) {
	select {
	case s.end <- err:
	default:
	}
}

// next returns the next message from the proxy.
func (s *ufStream) next(t *testing.T) *protocol.CrdtStreamIn {
	t.Helper()
	timer := time.NewTimer(waitFor)
	defer timer.Stop()
	select {
	case m, ok := <-s.in:
		if !ok {
			t.Fatalf("entity stream ended (%v) while waiting for a message from the proxy", s.recvErr)
		}
		return m
	case <-timer.C:
		t.Fatal("timed out waiting for a message from the proxy")
	}
	return nil
}

func (s *ufStream) command(t *testing.T) *protocol.Command {
	t.Helper()
	m := s.next(t)
	c := m.GetCommand()
	if c == nil {
		t.Fatalf("function got %v, want a command", m)
	}
	return c
}

func (s *ufStream) delta(t *testing.T) *protocol.CrdtDelta {
	t.Helper()
	m := s.next(t)
	d := m.GetDelta()
	if d == nil {
		t.Fatalf("function got %v, want a delta", m)
	}
	return d
}

func (s *ufStream) streamCancelled(t *testing.T) *protocol.StreamCancelled {
	t.Helper()
	m := s.next(t)
	c := m.GetStreamCancelled()
	if c == nil {
		t.Fatalf("function got %v, want stream_cancelled", m)
	}
	return c
}

// ended waits until the proxy ends the stream, failing on any message
// received first, and returns how it ended (io.EOF: half-closed; a
// CANCELED status: aborted).
func (s *ufStream) ended(t *testing.T) error {
	t.Helper()
	timer := time.NewTimer(waitFor)
	defer timer.Stop()
	select {
	case m, ok := <-s.in:
		if ok {
			t.Fatalf("function got %v, want the end of the stream", m)
		}
		return s.recvErr
	case <-timer.C:
		t.Fatal("timed out waiting for the proxy to end the entity stream")
	}
	return nil
}

// aborted waits until the proxy cut the stream (no half-close).
func (s *ufStream) aborted(t *testing.T) {
	t.Helper()
	if err := s.ended(t); status.Code(err) != codes.Canceled {
		t.Fatalf("stream ended with %v, want it cancelled by the proxy", err)
	}
}

// fakeFunction serves cloudstate.crdt.Crdt/handle.
type fakeFunction struct {
	protocol.UnimplementedCrdtServer
	mu      sync.Mutex
	script  func(s *ufStream) error // nil: hand streams to the test
	count   int
	streams chan *ufStream
}

func (f *fakeFunction) Handle(srv protocol.Crdt_HandleServer) error {
	s := &ufStream{srv: srv, in: make(chan *protocol.CrdtStreamIn, 4096), end: make(chan error, 1), pumped: make(chan struct{})}
	go s.pump()
	f.mu.Lock()
	f.count++
	sc := f.script
	f.mu.Unlock()
	if sc != nil {
		return sc(s)
	}
	f.streams <- s
	// A well-behaved function closes its side when the proxy half-closes
	// (passivation); otherwise the test decides when the stream ends.
	select {
	case err := <-s.end:
		return err
	case <-s.pumped:
		if errors.Is(s.recvErr, io.EOF) {
			return nil
		}
		return s.recvErr
	}
}

func (f *fakeFunction) setScript(sc func(s *ufStream) error) {
	f.mu.Lock()
	f.script = sc
	f.mu.Unlock()
}

func (f *fakeFunction) streamCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.count
}

// countingReplicator is the Local replicator with a count of Get calls: the
// entity reads the replicator only when it is about to push a delta
// (CRDT-4), so an unchanged count proves no delta was computed.
type countingReplicator struct {
	*Local
	gets atomic.Int64
}

func (c *countingReplicator) Get(key string) (crdt.CRDT, bool) {
	c.gets.Add(1)
	return c.Local.Get(key)
}

// reporter records reportError messages.
type reporter chan string

func (r reporter) ReportError(_ context.Context, msg string) {
	select {
	case r <- msg:
	default:
	}
}

type effectsCall struct {
	from    route.Call
	effects []*protocol.SideEffect
}

type fixture struct {
	t       *testing.T
	fn      *fakeFunction
	rep     *Local
	counted *countingReplicator
	mgr     *Manager
	reports reporter
	effects chan effectsCall
	svc     *discovery.Service
	do      *discovery.Method // unary
	watch   *discovery.Method // server streaming

	ctx         context.Context // parent of client calls
	cancelCalls context.CancelFunc
}

func newFixture(t *testing.T, passivation time.Duration) *fixture {
	t.Helper()
	fn := &fakeFunction{streams: make(chan *ufStream, 100)}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	protocol.RegisterCrdtServer(srv, fn)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	svc := &discovery.Service{Name: serviceName, EntityType: discovery.CRDT, PersistenceID: persistenceID}
	do := &discovery.Method{Service: svc, Name: "Do", Path: "/test.Crdt/Do", InputTypeURL: msgType, OutputTypeURL: msgType}
	watch := &discovery.Method{Service: svc, Name: "Watch", Path: "/test.Crdt/Watch", InputTypeURL: msgType, OutputTypeURL: msgType, ServerStreaming: true}
	svc.Methods = map[string]*discovery.Method{"Do": do, "Watch": watch}

	rep := NewLocal("node-1")
	counted := &countingReplicator{Local: rep}
	f := &fixture{
		t: t, fn: fn, rep: rep, counted: counted,
		reports: make(reporter, 1000), effects: make(chan effectsCall, 100),
		svc: svc, do: do, watch: watch,
	}
	f.mgr = New(Config{
		Replicator: counted,
		Client:     protocol.NewCrdtClient(conn),
		Reporter:   f.reports,
		SideEffects: func(_ context.Context, from route.Call, effects []*protocol.SideEffect) {
			f.effects <- effectsCall{from: from, effects: effects}
		},
		PassivationTimeout: passivation,
		RelayTimeout:       waitFor,
		MailboxSize:        1000,
		CloseTimeout:       time.Second,
		Log:                slog.New(slog.DiscardHandler),
	})
	// Client calls end after the manager shut down (cleanups run last
	// first), so that shutdown meets their streams open.
	f.ctx, f.cancelCalls = context.WithCancel(context.Background())
	t.Cleanup(f.cancelCalls)
	t.Cleanup(func() {
		// Bounded, so that an entity that never stops fails the test
		// instead of hanging the whole run.
		if !f.shutdown(waitFor) {
			t.Error("Shutdown did not return after its context ended")
		}
	})
	return f
}

// shutdown shuts the manager down with a context of timeout and reports
// whether Shutdown returned within a second after that.
func (f *fixture) shutdown(timeout time.Duration) bool {
	done := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		f.mgr.Shutdown(ctx)
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(timeout + time.Second):
		return false
	}
}

// nextStream returns the next entity stream the proxy opened, after
// checking that it began with init.
func (f *fixture) nextStream() *ufStream {
	f.t.Helper()
	timer := time.NewTimer(waitFor)
	defer timer.Stop()
	var s *ufStream
	select {
	case s = <-f.fn.streams:
	case <-timer.C:
		f.t.Fatal("timed out waiting for the proxy to open an entity stream")
	}
	m := s.next(f.t)
	if m.GetInit() == nil {
		f.t.Fatalf("first message %v, want init", m)
	}
	s.init = m.GetInit()
	return s
}

func (f *fixture) key(id string) string { return Key(persistenceID, id) }

// value returns the replicated value of entity id and whether it is deleted.
func (f *fixture) value(id string) (crdt.View, bool) {
	c, deleted := f.rep.Get(f.key(id))
	if c == nil {
		return nil, deleted
	}
	return c.View(f.rep.Replica()), deleted
}

// wantValue checks the replicated value of entity id.
func (f *fixture) wantValue(id string, want crdt.View) {
	f.t.Helper()
	got, deleted := f.value(id)
	if deleted || !reflect.DeepEqual(got, want) {
		f.t.Fatalf("replicated value of %s is %#v (deleted %v), want %#v", id, got, deleted, want)
	}
}

// remote merges a state made by node-2 into entity id, as gossip would.
func (f *fixture) remote(id string, c crdt.CRDT) {
	f.t.Helper()
	if _, err := f.rep.Update(context.Background(), f.key(id), c, protocol.CrdtWriteConsistency_LOCAL); err != nil {
		f.t.Fatalf("remote update: %v", err)
	}
}

// report waits for the next reportError message and checks it contains want.
func (f *fixture) report(want string) string {
	f.t.Helper()
	timer := time.NewTimer(waitFor)
	defer timer.Stop()
	select {
	case msg := <-f.reports:
		if !strings.Contains(msg, want) {
			f.t.Fatalf("reported %q, want it to mention %q", msg, want)
		}
		return msg
	case <-timer.C:
		f.t.Fatalf("timed out waiting for a report mentioning %q", want)
	}
	return ""
}

func (f *fixture) noReports() {
	f.t.Helper()
	select {
	case msg := <-f.reports:
		f.t.Fatalf("unexpected report %q", msg)
	default:
	}
}

// loopBarrier makes the entity loop of s handle n harmless messages (streamed
// messages for an unknown command, each reported) and waits until it has.
// Every change the replicator signalled before is then, with overwhelming
// probability, seen by the loop.
func (f *fixture) loopBarrier(s *ufStream, n int) {
	f.t.Helper()
	for i := 0; i < n; i++ {
		s.streamed(f.t, &protocol.CrdtStreamedMessage{CommandId: 9999})
	}
	for i := 0; i < n; i++ {
		f.report("9999")
	}
}

type result struct {
	out route.Outcome
	err error
}

// unary calls Do on entity id in the background.
func (f *fixture) unary(id, payload string) <-chan result {
	return f.unaryCall(route.Call{Method: f.do, EntityID: id, Payload: msg(payload)})
}

func (f *fixture) unaryCall(call route.Call) <-chan result {
	ch := make(chan result, 1)
	go func() {
		out, err := f.mgr.Unary(f.ctx, call)
		ch <- result{out, err}
	}()
	return ch
}

// await returns the result of a background call.
func await(t *testing.T, ch <-chan result) (route.Outcome, error) {
	t.Helper()
	timer := time.NewTimer(waitFor)
	defer timer.Stop()
	select {
	case r := <-ch:
		return r.out, r.err
	case <-timer.C:
		t.Fatal("timed out waiting for a call to return")
	}
	return route.Outcome{}, nil
}

// awaitReply checks that a background call answered with a reply of text.
func awaitReply(t *testing.T, ch <-chan result, text string) route.Outcome {
	t.Helper()
	out, err := await(t, ch)
	if err != nil {
		t.Fatalf("call failed: %v, want reply %q", err, text)
	}
	if got := textOf(out); got != text {
		t.Fatalf("reply %q, want %q", got, text)
	}
	return out
}

func awaitStatus(t *testing.T, ch <-chan result, code codes.Code, desc string) {
	t.Helper()
	_, err := await(t, ch)
	wantStatus(t, err, code, desc)
}

func wantStatus(t *testing.T, err error, code codes.Code, desc string) {
	t.Helper()
	st, _ := status.FromError(err)
	if err == nil || st.Code() != code || st.Message() != desc {
		t.Fatalf("got error %v, want %s %q", err, code, desc)
	}
}

// subscriber is one streamed call (Watch) in the background.
type subscriber struct {
	outs   chan route.Outcome
	done   chan error
	cancel context.CancelFunc

	returned bool // done was received; err is the call's result
	err      error
}

// wait waits for the call to return; every outcome it relayed is in outs
// by then, since emit runs before Stream returns.
func (sub *subscriber) wait(t *testing.T) {
	t.Helper()
	if sub.returned {
		return
	}
	timer := time.NewTimer(waitFor)
	defer timer.Stop()
	select {
	case sub.err = <-sub.done:
		sub.returned = true
	case <-timer.C:
		t.Fatal("timed out waiting for the client stream to end")
	}
}

// subscribe calls Watch on entity id; emit, if set, replaces the recording
// of outcomes.
func (f *fixture) subscribe(id, payload string, emit func(route.Outcome) error) *subscriber {
	ctx, cancel := context.WithCancel(f.ctx)
	sub := &subscriber{outs: make(chan route.Outcome, 4096), done: make(chan error, 1), cancel: cancel}
	if emit == nil {
		emit = func(o route.Outcome) error {
			sub.outs <- o
			return nil
		}
	}
	p := msg(payload)
	call := route.StreamCall{Method: f.watch, EntityID: id, Recv: func() (*anypb.Any, error) { return p, nil }}
	go func() { sub.done <- f.mgr.Stream(ctx, call, emit) }()
	return sub
}

// next returns the next outcome relayed to the client.
func (sub *subscriber) next(t *testing.T) route.Outcome {
	t.Helper()
	timer := time.NewTimer(waitFor)
	defer timer.Stop()
	select {
	case o := <-sub.outs:
		return o
	case sub.err = <-sub.done:
		sub.returned = true
		select {
		case o := <-sub.outs:
			return o
		default:
		}
		t.Fatalf("stream ended (%v) while waiting for an outcome", sub.err)
	case <-timer.C:
		t.Fatal("timed out waiting for an outcome on the client stream")
	}
	return route.Outcome{}
}

func (sub *subscriber) nextText(t *testing.T, want string) route.Outcome {
	t.Helper()
	o := sub.next(t)
	if got := textOf(o); got != want {
		t.Fatalf("client stream got %q, want %q", got, want)
	}
	return o
}

// end waits for the streamed call to return, failing if it relayed an
// outcome not read yet, and returns its result.
func (sub *subscriber) end(t *testing.T) error {
	t.Helper()
	sub.wait(t)
	select {
	case o := <-sub.outs:
		t.Fatalf("client stream got %q (action %v) before its end", textOf(o), o.Action)
	default:
	}
	return sub.err
}

func msg(text string) *anypb.Any { return &anypb.Any{TypeUrl: msgType, Value: []byte(text)} }

func replyOf(text string) *protocol.ClientAction {
	return &protocol.ClientAction{Action: &protocol.ClientAction_Reply{Reply: &protocol.Reply{Payload: msg(text)}}}
}

// textOf returns the reply text of an outcome ("" for none).
func textOf(o route.Outcome) string { return string(o.Action.GetReply().GetPayload().GetValue()) }

func sideEffect(name string) *protocol.SideEffect {
	return &protocol.SideEffect{ServiceName: serviceName, CommandName: name, Payload: msg(name)}
}

func update(d *protocol.CrdtDelta) *protocol.CrdtStateAction {
	return &protocol.CrdtStateAction{Action: &protocol.CrdtStateAction_Update{Update: d}}
}

func deleteAction() *protocol.CrdtStateAction {
	return &protocol.CrdtStateAction{Action: &protocol.CrdtStateAction_Delete{Delete: &protocol.CrdtDelete{}}}
}

func gcounter(n uint64) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Gcounter{Gcounter: &protocol.GCounterDelta{Increment: n}}}
}

func pncounter(n int64) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Pncounter{Pncounter: &protocol.PNCounterDelta{Change: n}}}
}

func flag(v bool) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Flag{Flag: &protocol.FlagDelta{Value: v}}}
}

func anys(texts ...string) []*anypb.Any {
	out := make([]*anypb.Any, len(texts))
	for i, s := range texts {
		out[i] = msg(s)
	}
	return out
}

func keys(texts ...string) []crdt.Key {
	out := make([]crdt.Key, len(texts))
	for i, s := range texts {
		out[i] = crdt.KeyOf(msg(s))
	}
	return out
}

// remoteGCounter is a GCounter in which node-2 counted n.
func remoteGCounter(t *testing.T, n uint64) crdt.CRDT {
	t.Helper()
	c, err := crdt.FromDelta(crdt.Replica{Node: "node-2"}, gcounter(n))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func wantDelta(t *testing.T, got, want *protocol.CrdtDelta) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Fatalf("delta %v, want %v", got, want)
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// lookup returns the active mailbox of entity id, or nil.
func (f *fixture) lookup(id string) *entity.Mailbox {
	return f.mgr.Lookup(entity.Key{Service: serviceName, ID: id})
}

func statusCode(err error) codes.Code { return status.Code(err) }

func statusMessage(err error) string { return status.Convert(err).Message() }
