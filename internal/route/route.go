// Package route sends every call — from a client, a forward or a side effect —
// to the handler of its entity type, and carries out what the entity asked
// for afterwards: side effects first, then the client action (a reply, a
// forward to another method, or a failure). It is the one place where the
// proxy's call graph is followed (BEHAVIOR.md ROUTE-1, FX-1..FX-5).
package route

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/internal/discovery"
	"github.com/cloudstate-go/cloudstate/protocol"
)

// Call is one unary call addressed to an entity (or an action).
type Call struct {
	Method *discovery.Method
	// EntityID is the id extracted from the payload's key fields ("" for actions).
	EntityID string
	// Payload is the request message as an Any of the method's input type.
	Payload *anypb.Any
	// Metadata is the call's metadata; nil when there is none.
	Metadata *protocol.Metadata
}

// Outcome is what an entity answered for a call, after its state was
// persisted: the client action (nil for "no reply") and the side effects to
// perform before it.
type Outcome struct {
	Action      *protocol.ClientAction
	SideEffects []*protocol.SideEffect
}

// Handler serves the calls of one entity type. Unary is called concurrently
// from many goroutines and blocks until the entity answered; the error it
// returns is a gRPC status error for the client.
type Handler interface {
	Unary(ctx context.Context, call Call) (Outcome, error)
}

// Reporter tells the user function about a mistake it made
// (EntityDiscovery.reportError). It must not block for long.
type Reporter interface {
	ReportError(ctx context.Context, msg string)
}

// maxSideEffectDepth bounds nested synchronous side effects so that a
// function whose side effects call themselves fails the call instead of
// exhausting the stack.
const maxSideEffectDepth = 64

// Router routes calls for one discovered model.
type Router struct {
	model    *discovery.Model
	handlers map[string]Handler
	reporter Reporter
	log      *slog.Logger

	// bg is the lifetime of asynchronous side effects; Close waits for them.
	bg       context.Context
	cancelBg context.CancelFunc
	async    sync.WaitGroup

	warnedMu sync.Mutex
	warned   map[string]bool // methods already reported for a reply type mismatch
}

// New returns a router for model. handlers maps an entity type (e.g.
// discovery.EventSourced) to its handler.
func New(model *discovery.Model, handlers map[string]Handler, reporter Reporter, log *slog.Logger) *Router {
	bg, cancel := context.WithCancel(context.Background())
	return &Router{
		model:    model,
		handlers: handlers,
		reporter: reporter,
		log:      log,
		bg:       bg,
		cancelBg: cancel,
		warned:   make(map[string]bool),
	}
}

// Model returns the model this router serves.
func (r *Router) Model() *discovery.Model { return r.model }

// Close waits for asynchronous side effects still running, until ctx ends;
// then it cancels them.
func (r *Router) Close(ctx context.Context) {
	done := make(chan struct{})
	go func() { r.async.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		r.cancelBg()
		<-done
	}
	r.cancelBg()
}

// Unary serves one unary call of method m with the request bytes payload and
// returns the reply for the client: nil means "no message". Forwards are
// followed and side effects performed. The error is a gRPC status error.
func (r *Router) Unary(ctx context.Context, m *discovery.Method, payload []byte, md *protocol.Metadata) (*protocol.Reply, error) {
	call, err := newCall(m, &anypb.Any{TypeUrl: m.InputTypeURL, Value: payload}, md)
	if err != nil {
		return nil, err
	}
	return r.serve(ctx, call, nil, 0)
}

// newCall extracts the entity id of a call; a bad payload is the caller's
// mistake (INVALID_ARGUMENT, BEHAVIOR.md ERR-1 deviation).
func newCall(m *discovery.Method, payload *anypb.Any, md *protocol.Metadata) (Call, error) {
	id, err := EntityID(m, payload.GetValue())
	if err != nil {
		return Call{}, status.Errorf(codes.InvalidArgument, "%s: %v", m.Path, err)
	}
	return Call{Method: m, EntityID: id, Payload: payload, Metadata: md}, nil
}

// trace is the chain of forwards and side effects that led to a call, for
// the messages sent with reportError.
type trace []string

func (t trace) with(line string) trace {
	return append(append(trace(nil), t...), line)
}

func (t trace) String() string {
	if len(t) == 0 {
		return ""
	}
	return "\n  " + strings.Join(t, "\n  ")
}

// serve runs call and follows its forwards iteratively: the reference does
// no loop detection, and a loop must not grow the stack (it ends when the
// client's deadline does).
func (r *Router) serve(ctx context.Context, call Call, tr trace, depth int) (*protocol.Reply, error) {
	for {
		h := r.handlers[call.Method.Service.EntityType]
		if h == nil {
			return nil, status.Errorf(codes.Unimplemented, "entity type %s of service %s is not supported by this proxy",
				call.Method.Service.EntityType, call.Method.Service.Name)
		}
		out, err := h.Unary(ctx, call)
		if err != nil {
			return nil, err
		}
		if err := r.sideEffects(ctx, call, out.SideEffects, tr, depth); err != nil {
			return nil, err
		}
		switch a := out.Action.GetAction().(type) {
		case nil:
			return nil, nil
		case *protocol.ClientAction_Reply:
			r.checkReplyType(ctx, call.Method, a.Reply)
			if a.Reply.GetPayload() == nil {
				return nil, nil
			}
			return a.Reply, nil
		case *protocol.ClientAction_Failure:
			return nil, status.Error(codes.Unknown, a.Failure.GetDescription())
		case *protocol.ClientAction_Forward:
			f := a.Forward
			tr = tr.with(fmt.Sprintf("forwarded from %s", call.Method.Path))
			next, err := r.target(ctx, f.GetServiceName(), f.GetCommandName(), f.GetPayload(), f.GetMetadata(), tr)
			if err != nil {
				return nil, err
			}
			call = next
		}
	}
}

// sideEffects performs effects in order: synchronous ones are awaited (their
// errors fail the call), asynchronous ones are started and only logged.
func (r *Router) sideEffects(ctx context.Context, from Call, effects []*protocol.SideEffect, tr trace, depth int) error {
	for _, se := range effects {
		etr := tr.with(fmt.Sprintf("side-effect of %s", from.Method.Path))
		call, err := r.target(ctx, se.GetServiceName(), se.GetCommandName(), se.GetPayload(), se.GetMetadata(), etr)
		if err != nil {
			if se.GetSynchronous() {
				return err
			}
			r.log.Warn("asynchronous side effect dropped", "from", from.Method.Path, "err", err)
			continue
		}
		if depth >= maxSideEffectDepth {
			return status.Errorf(codes.Internal, "side effects nested deeper than %d calls at %s", maxSideEffectDepth, call.Method.Path)
		}
		if se.GetSynchronous() {
			if _, err := r.serve(ctx, call, etr, depth+1); err != nil {
				r.log.Debug("synchronous side effect failed", "from", from.Method.Path, "to", call.Method.Path, "err", err)
				if isFailureResult(err) {
					// The effect's own failure reply is a result, and results
					// of side effects are discarded (FX-3).
					continue
				}
				return status.Errorf(codes.Internal, "synchronous side effect %s failed: %v", call.Method.Path, status.Convert(err).Message())
			}
			continue
		}
		r.async.Add(1)
		go func() {
			defer r.async.Done()
			if _, err := r.serve(r.bg, call, etr, depth+1); err != nil && !isFailureResult(err) {
				r.log.Warn("asynchronous side effect failed", "from", from.Method.Path, "to", call.Method.Path, "err", err)
			}
		}()
	}
	return nil
}

// isFailureResult reports whether err is a function's own failure reply
// (UNKNOWN with its description) rather than a transport or routing error.
func isFailureResult(err error) bool {
	return status.Code(err) == codes.Unknown
}

// target resolves a forward or side-effect destination to a call. An unknown
// service or method is the function's mistake: it is reported to it and the
// operation fails with INTERNAL (FX-1).
func (r *Router) target(ctx context.Context, service, method string, payload *anypb.Any, md *protocol.Metadata, tr trace) (Call, error) {
	svc := r.model.Services[service]
	var msg string
	switch {
	case svc == nil:
		msg = fmt.Sprintf("Service [%s] unknown", service)
	case svc.Methods[method] == nil:
		msg = fmt.Sprintf("Service [%s] does not have a command named: [%s]", service, method)
	}
	if msg != "" {
		r.report(ctx, msg+tr.String())
		return Call{}, status.Error(codes.Internal, msg)
	}
	if payload == nil {
		payload = &anypb.Any{}
	}
	return newCall(svc.Methods[method], payload, md)
}

// checkReplyType warns (once per method) when a reply's type differs from
// the method's output type; the bytes are still sent (ING-5).
func (r *Router) checkReplyType(ctx context.Context, m *discovery.Method, reply *protocol.Reply) {
	p := reply.GetPayload()
	if p == nil || p.GetTypeUrl() == m.OutputTypeURL {
		return
	}
	r.warnedMu.Lock()
	seen := r.warned[m.Path]
	r.warned[m.Path] = true
	r.warnedMu.Unlock()
	if seen {
		return
	}
	msg := fmt.Sprintf("Warning: %s.%s: Expected reply type_url to be [%s] but was [%s].",
		m.Service.Name, m.Name, m.OutputTypeURL, p.GetTypeUrl())
	r.log.Warn(msg)
	r.report(ctx, msg)
}

func (r *Router) report(ctx context.Context, msg string) {
	if r.reporter != nil {
		r.reporter.ReportError(context.WithoutCancel(ctx), msg)
	}
}

// PerformSideEffects runs effects that belong to no client call (the side
// effects of a CRDT stream-cancelled response) on the router's own
// goroutine; failures are logged.
func (r *Router) PerformSideEffects(from Call, effects []*protocol.SideEffect) {
	if len(effects) == 0 {
		return
	}
	r.async.Add(1)
	go func() {
		defer r.async.Done()
		if err := r.sideEffects(r.bg, from, effects, nil, 0); err != nil {
			r.log.Warn("side effects of a cancelled stream failed", "from", from.Method.Path, "err", err)
		}
	}()
}
