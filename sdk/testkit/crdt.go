package testkit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/cloudstate-go/cloudstate/protocol"
	"github.com/cloudstate-go/cloudstate/sdk"
	"github.com/cloudstate-go/cloudstate/sdk/internal/bridge"
	"google.golang.org/protobuf/proto"
)

// CRDT is one CRDT entity under test. The testkit plays the proxy: it sends
// commands (unary and streamed), the deltas and deletes a proxy would send
// for changes made elsewhere (Delta, Delete), and stream cancellations
// (CRDTStream.Cancel); it routes the entity's streamed messages to their
// streams. It is not safe for concurrent use.
//
//	e, err := testkit.NewCRDT(likes.New(), "item-1")
//	res, err := testkit.CallCRDT[*pb.LikeCount](e, "Like", &pb.LikeRequest{ItemId: "item-1"})
//	// res.Delta is the PNCounter delta the command sent, e.State() the counter.
type CRDT struct {
	def      bridge.CRDTDefinition
	entityID string
	logger   *slog.Logger

	inst          bridge.CRDTInstance
	nextCommandID int64
	streams       map[int64]*streamBuf // open streams
	deleted       bool
}

// streamBuf collects the messages the entity sent on one stream.
type streamBuf struct {
	messages []*protocol.CrdtStreamedMessage
	open     bool
}

// ErrDeleted is returned by the CRDT testkit's calls after the CRDT was
// deleted: the proxy would fail them with "Entity deleted".
var ErrDeleted = errors.New("entity deleted")

// WithCRDTValue starts a CRDT entity from a value, given as the delta the
// proxy sends in init (the whole value as a delta from empty).
func WithCRDTValue(d *protocol.CrdtDelta) Option {
	return func(o *options) { o.crdtValue = d }
}

// NewCRDT validates entity like sdk.Server.RegisterCRDT does and activates
// it for entityID, from the value given with WithCRDTValue if any.
func NewCRDT(entity *sdk.CRDTEntity, entityID string, opts ...Option) (*CRDT, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.snapshot != nil || len(o.events) > 0 || o.value != nil {
		return nil, errors.New("WithSnapshot, WithEvents and WithValue do not apply to CRDT entities; use WithCRDTValue")
	}
	def, err := bridge.CompileCRDT(entity)
	if err != nil {
		return nil, err
	}
	e := &CRDT{def: def, entityID: entityID, logger: o.logger}
	if err := e.start(o.crdtValue); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *CRDT) start(value *protocol.CrdtDelta) error {
	inst, err := e.def.Start(&protocol.CrdtInit{ServiceName: e.def.ServiceName(), EntityId: e.entityID, Delta: value}, e.logger)
	if err != nil {
		return fmt.Errorf("activate %q: %w", e.entityID, err)
	}
	for _, b := range e.streams {
		b.open = false
	}
	e.inst, e.nextCommandID, e.streams = inst, 1, make(map[int64]*streamBuf)
	return nil
}

// Restart ends the current activation (open streams end) and starts a new
// one from the current value, as the proxy does after passivation.
func (e *CRDT) Restart() error {
	if e.deleted {
		return ErrDeleted
	}
	return e.start(e.inst.FullDelta())
}

// State returns the entity's CRDT, nil if it has none. Read it only: a
// change outside a handler is not allowed.
func (e *CRDT) State() sdk.CRDT {
	s, _ := e.inst.State().(sdk.CRDT)
	return s
}

// Deleted reports whether the CRDT was deleted (by a command, a stream
// cancellation or Delete).
func (e *CRDT) Deleted() bool { return e.deleted }

// Delta sends d as the proxy does when the CRDT changed elsewhere; the
// open streams' OnChange callbacks run and their messages are collected.
func (e *CRDT) Delta(d *protocol.CrdtDelta) error {
	if e.deleted {
		return ErrDeleted
	}
	return e.handle("delta", 0, e.inst.HandleDelta(context.Background(), d))
}

// Delete deletes the CRDT as the proxy does when another node deleted it:
// the activation ends, and every later call fails with ErrDeleted.
func (e *CRDT) Delete() {
	e.inst.HandleDelete()
	e.setDeleted()
}

func (e *CRDT) setDeleted() {
	e.deleted = true
	for _, b := range e.streams {
		b.open = false
	}
	e.streams = nil
}

// handle routes the entity's messages after the first (already consumed):
// streamed messages go to their streams; a top-level failure is a crash,
// after which the entity restarts from its value.
func (e *CRDT) handle(what string, skip int, out []*protocol.CrdtStreamOut) error {
	for _, o := range out[skip:] {
		switch m := o.GetMessage().(type) {
		case *protocol.CrdtStreamOut_StreamedMessage:
			sm := m.StreamedMessage
			b := e.streams[sm.GetCommandId()]
			if b == nil {
				return fmt.Errorf("%s: streamed message for command %d, which has no open stream", what, sm.GetCommandId())
			}
			b.messages = append(b.messages, sm)
			if sm.GetEndStream() {
				b.open = false
				delete(e.streams, sm.GetCommandId())
			}
		case *protocol.CrdtStreamOut_Failure:
			restartErr := e.Restart()
			return errors.Join(fmt.Errorf("%s: %w: %s", what, ErrCrashed, m.Failure.GetDescription()), restartErr)
		default:
			return fmt.Errorf("%s: unexpected message %T", what, o.GetMessage())
		}
	}
	return nil
}

// CRDTResult is the outcome of one CRDT command, or the first reply of a
// streamed one.
type CRDTResult[Out proto.Message] struct {
	// Reply is the reply message; the zero Out when the command failed,
	// forwarded, or (streamed) sent nothing.
	Reply         Out
	ReplyMetadata sdk.Metadata
	// Failure is non-nil when the command failed.
	Failure *Failure
	// Forward is non-nil when the command was forwarded.
	Forward     *Effect
	SideEffects []Effect
	// Delta is the change the command sent the proxy, nil if none.
	Delta *protocol.CrdtDelta
	// Deleted is set when the command deleted the CRDT.
	Deleted          bool
	WriteConsistency sdk.WriteConsistency
}

// CallCRDT sends the unary command method with input in to the entity, as
// the proxy would. A client-visible failure is reported in
// CRDTResult.Failure; an error means the call could not be made or the
// entity crashed (ErrCrashed, after which it is restarted from its value).
// Messages the command caused on open streams are collected by those
// streams. Out is the method's reply type; write it explicitly:
//
//	res, err := testkit.CallCRDT[*pb.LikeCount](e, "GetLikes", &pb.GetLikesRequest{ItemId: "item-1"})
func CallCRDT[Out proto.Message, In proto.Message](e *CRDT, method string, in In, opts ...CallOption) (*CRDTResult[Out], error) {
	res, _, err := command[Out](e, method, in, false, opts)
	return res, err
}

// CRDTStream is a streamed command under test: its first reply and the
// messages the entity sent on it since.
type CRDTStream[Out proto.Message] struct {
	// Result is the first reply.
	Result *CRDTResult[Out]

	e   *CRDT
	id  int64
	buf *streamBuf
}

// StreamCRDT sends the streamed command method (a server-streaming method)
// with input in to the entity, as the proxy would. The stream stays open if
// the entity kept it open (Open); its later messages are read with
// Messages. Errors are those of CallCRDT.
func StreamCRDT[Out proto.Message, In proto.Message](e *CRDT, method string, in In, opts ...CallOption) (*CRDTStream[Out], error) {
	res, id, err := command[Out](e, method, in, true, opts)
	if err != nil {
		return nil, err
	}
	s := &CRDTStream[Out]{Result: res, e: e, id: id, buf: &streamBuf{}}
	if b := e.streams[id]; b != nil {
		s.buf = b
	}
	return s, nil
}

// CommandID returns the streamed command's id.
func (s *CRDTStream[Out]) CommandID() int64 { return s.id }

// Open reports whether the stream is still open: the entity kept it open
// and neither ended it nor was it cancelled.
func (s *CRDTStream[Out]) Open() bool { return s.buf.open }

// CRDTStreamedMessage is one message the entity sent on a stream after its
// first reply.
type CRDTStreamedMessage[Out proto.Message] struct {
	// Reply is the message for the client, the zero Out if none.
	Reply         Out
	ReplyMetadata sdk.Metadata
	// Failure is non-nil when the stream failed (it then ends).
	Failure     *Failure
	Forward     *Effect
	SideEffects []Effect
	// EndStream is set on the stream's last message.
	EndStream bool
}

// Messages returns the messages received on the stream since the last
// call, in order.
func (s *CRDTStream[Out]) Messages() ([]CRDTStreamedMessage[Out], error) {
	raw := s.buf.messages
	s.buf.messages = nil
	out := make([]CRDTStreamedMessage[Out], 0, len(raw))
	for _, sm := range raw {
		m := CRDTStreamedMessage[Out]{EndStream: sm.GetEndStream()}
		if f := sm.GetClientAction().GetFailure(); f != nil {
			m.Failure = &Failure{Description: f.GetDescription()}
			var err error
			if m.SideEffects, err = sideEffectsOf(sm.GetSideEffects()); err != nil {
				return nil, err
			}
		} else {
			client, err := clientOutcome[Out](sm.GetClientAction(), sm.GetSideEffects())
			if err != nil {
				return nil, fmt.Errorf("stream %d: %w", s.id, err)
			}
			m.Reply, m.ReplyMetadata, m.Forward, m.SideEffects = client.Reply, client.ReplyMetadata, client.Forward, client.SideEffects
		}
		out = append(out, m)
	}
	return out, nil
}

// Replies returns the replies among the messages received since the last
// call of Messages or Replies, skipping messages without one.
func (s *CRDTStream[Out]) Replies() ([]Out, error) {
	msgs, err := s.Messages()
	if err != nil {
		return nil, err
	}
	var out []Out
	for _, m := range msgs {
		if proto.Message(m.Reply) != nil && m.Reply.ProtoReflect().IsValid() {
			out = append(out, m.Reply)
		}
	}
	return out, nil
}

// CRDTCancelResult is the entity's answer to a stream cancellation.
type CRDTCancelResult struct {
	SideEffects []Effect
	// Delta is the change the cancellation sent the proxy, nil if none.
	Delta            *protocol.CrdtDelta
	Deleted          bool
	WriteConsistency sdk.WriteConsistency
}

// Cancel cancels the stream as the proxy does when its client goes away:
// the entity's OnCancel callback runs. Messages its change caused on other
// streams are collected by those streams. Cancelling a stream that is not
// open is allowed (the entity answers with an empty response).
func (s *CRDTStream[Out]) Cancel() (*CRDTCancelResult, error) {
	e := s.e
	if e.deleted {
		return nil, ErrDeleted
	}
	s.buf.open = false
	delete(e.streams, s.id)
	out := e.inst.HandleStreamCancelled(context.Background(), &protocol.StreamCancelled{EntityId: e.entityID, Id: s.id})
	if len(out) == 0 {
		return nil, fmt.Errorf("cancel stream %d: the entity sent no response", s.id)
	}
	r := out[0].GetStreamCancelledResponse()
	if r == nil {
		return nil, e.handle(fmt.Sprintf("cancel stream %d", s.id), 0, out)
	}
	if r.GetCommandId() != s.id {
		return nil, fmt.Errorf("cancel stream %d: response for command %d", s.id, r.GetCommandId())
	}
	res := &CRDTCancelResult{}
	var err error
	if res.SideEffects, err = sideEffectsOf(r.GetSideEffects()); err != nil {
		return nil, fmt.Errorf("cancel stream %d: %w", s.id, err)
	}
	res.Delta, res.Deleted, res.WriteConsistency = stateActionOf(r.GetStateAction())
	if res.Deleted {
		e.setDeleted()
		return res, nil
	}
	if err := e.handle(fmt.Sprintf("cancel stream %d", s.id), 1, out); err != nil {
		return nil, err
	}
	return res, nil
}

func stateActionOf(sa *protocol.CrdtStateAction) (*protocol.CrdtDelta, bool, sdk.WriteConsistency) {
	wc := sdk.WriteConsistency(sa.GetWriteConsistency())
	switch a := sa.GetAction().(type) {
	case *protocol.CrdtStateAction_Update:
		return a.Update, false, wc
	case *protocol.CrdtStateAction_Delete:
		return nil, true, wc
	}
	return nil, false, wc
}

// command sends one command and decodes its reply; it returns the command
// id.
func command[Out proto.Message](e *CRDT, method string, in proto.Message, streamed bool, opts []CallOption) (*CRDTResult[Out], int64, error) {
	if e.deleted {
		return nil, 0, fmt.Errorf("call %s: %w", method, ErrDeleted)
	}
	isStreamed, ok := e.def.Streamed(method)
	if !ok {
		return nil, 0, fmt.Errorf("call %s: the entity has no such method", method)
	}
	if isStreamed != streamed {
		if streamed {
			return nil, 0, fmt.Errorf("call %s: the method is unary; use CallCRDT", method)
		}
		return nil, 0, fmt.Errorf("call %s: the method is server-streaming; use StreamCRDT", method)
	}
	payload, err := sdk.MarshalAny(in)
	if err != nil {
		return nil, 0, fmt.Errorf("call %s: %w", method, err)
	}
	cmd := &protocol.Command{EntityId: e.entityID, Id: e.nextCommandID, Name: method, Payload: payload, Streamed: streamed}
	for _, opt := range opts {
		opt(cmd)
	}
	e.nextCommandID++
	out := e.inst.HandleCommand(context.Background(), cmd)
	if len(out) == 0 {
		return nil, 0, fmt.Errorf("call %s: the entity sent no reply", method)
	}
	reply := out[0].GetReply()
	if reply == nil {
		return nil, 0, e.handle("call "+method, 0, out)
	}
	if reply.GetCommandId() != cmd.GetId() {
		return nil, 0, fmt.Errorf("call %s: reply for command %d, want %d", method, reply.GetCommandId(), cmd.GetId())
	}
	if reply.GetStreamed() && !streamed {
		return nil, 0, fmt.Errorf("call %s: a streamed reply to a unary command", method)
	}
	res := &CRDTResult[Out]{}
	if f := reply.GetClientAction().GetFailure(); f != nil {
		res.Failure = &Failure{Description: f.GetDescription()}
		if reply.GetStateAction() != nil || len(reply.GetSideEffects()) > 0 {
			return nil, 0, fmt.Errorf("call %s: a failure with a state action or side effects", method)
		}
		return res, cmd.GetId(), nil
	}
	res.Delta, res.Deleted, res.WriteConsistency = stateActionOf(reply.GetStateAction())
	if reply.GetClientAction() != nil {
		client, err := clientOutcome[Out](reply.GetClientAction(), reply.GetSideEffects())
		if err != nil {
			return nil, 0, fmt.Errorf("call %s: %w", method, err)
		}
		res.Reply, res.ReplyMetadata, res.Forward, res.SideEffects = client.Reply, client.ReplyMetadata, client.Forward, client.SideEffects
	} else if res.SideEffects, err = sideEffectsOf(reply.GetSideEffects()); err != nil {
		return nil, 0, fmt.Errorf("call %s: %w", method, err)
	}
	if res.Deleted {
		e.setDeleted()
		return res, cmd.GetId(), nil
	}
	// The stream opens with the reply, before the messages that follow it.
	if reply.GetStreamed() {
		e.streams[cmd.GetId()] = &streamBuf{open: true}
	}
	if err := e.handle("call "+method, 1, out); err != nil {
		return nil, 0, err
	}
	return res, cmd.GetId(), nil
}
