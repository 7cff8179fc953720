package sdk

import (
	"errors"
	"fmt"

	"github.com/cloudstate-go/cloudstate/sdk/internal/bridge"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// ActionEntityType is the entity type string of actions in discovery.
const ActionEntityType = "cloudstate.action.ActionProtocol"

// Action describes a stateless service: every call of one of its gRPC
// methods runs a handler, with no entity, no key and no stored state. All
// four gRPC shapes are supported; each method gets a handler of the
// matching shape from OnUnary, OnServerStream, OnClientStream or
// OnBidiStream. Create it with NewAction, then pass it to
// Server.RegisterAction (or to the testkit).
//
// Building an action is not safe for concurrent use. Configuration mistakes
// are collected and reported together when the action is registered.
type Action struct {
	def *actionDef
}

// actionShape is the streaming shape of a gRPC method. The values are the
// bridge's, so that the testkit can name them.
type actionShape int

const (
	shapeUnary        = actionShape(bridge.Unary)
	shapeServerStream = actionShape(bridge.ServerStream)
	shapeClientStream = actionShape(bridge.ClientStream)
	shapeBidiStream   = actionShape(bridge.BidiStream)
)

func shapeOf(md protoreflect.MethodDescriptor) actionShape {
	switch {
	case md.IsStreamingClient() && md.IsStreamingServer():
		return shapeBidiStream
	case md.IsStreamingClient():
		return shapeClientStream
	case md.IsStreamingServer():
		return shapeServerStream
	default:
		return shapeUnary
	}
}

func (s actionShape) String() string {
	switch s {
	case shapeServerStream:
		return "server-streaming"
	case shapeClientStream:
		return "client-streaming"
	case shapeBidiStream:
		return "bidi-streaming"
	default:
		return "unary"
	}
}

// register names the function that registers handlers of this shape.
func (s actionShape) register() string {
	switch s {
	case shapeServerStream:
		return "OnServerStream"
	case shapeClientStream:
		return "OnClientStream"
	case shapeBidiStream:
		return "OnBidiStream"
	default:
		return "OnUnary"
	}
}

// actionDef is the runtime form of an Action. After compileAction it is
// never modified.
type actionDef struct {
	serviceName string
	service     protoreflect.ServiceDescriptor // nil when the lookup failed
	methods     map[string]*actionMethod
	errs        []error
}

// actionMethod is one method's handler, type-erased. Exactly the function
// of the method's shape is set.
type actionMethod struct {
	method protoreflect.MethodDescriptor
	shape  actionShape
	input  protoreflect.MessageType
	output protoreflect.MessageType

	unary        func(ctx *ActionContext, in proto.Message) (proto.Message, error)
	serverStream func(ctx *ActionContext, in proto.Message, send func(proto.Message) error) error
	clientStream func(ctx *ActionContext, recv func() (proto.Message, error)) (proto.Message, error)
	bidiStream   func(ctx *ActionContext, recv func() (proto.Message, error), send func(proto.Message) error) error
}

// NewAction starts the definition of an action serving the gRPC service
// with the given full name (for example "com.example.cartactions.CartActions"),
// whose generated Go code must be linked into the program.
func NewAction(service string) *Action {
	d := &actionDef{serviceName: service, methods: make(map[string]*actionMethod)}
	desc, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
	switch {
	case err != nil:
		d.errs = append(d.errs, fmt.Errorf("service %q is not in the protobuf registry (is its generated Go code imported?): %w", service, err))
	default:
		sd, ok := desc.(protoreflect.ServiceDescriptor)
		if !ok {
			d.errs = append(d.errs, fmt.Errorf("%q is a %T, not a service", service, desc))
			break
		}
		d.service = sd
	}
	return &Action{def: d}
}

// OnUnary sets the handler of a unary method. In and Out must be the
// generated types of the method's input and output messages.
//
// The call gets one response: a failure if the handler returns an error or
// called ctx.Fail, else a forward if it called ctx.Forward, else the reply
// it returns; a nil reply sends no message at all (the side effects still
// run). An error carrying a gRPC status (from status.Error) instead ends
// the call with that status.
func OnUnary[In, Out proto.Message](a *Action, method string, handler func(ctx *ActionContext, in In) (Out, error)) {
	m := addActionMethod[In, Out](a, method, shapeUnary, handler == nil)
	if m == nil {
		return
	}
	m.unary = func(ctx *ActionContext, in proto.Message) (proto.Message, error) {
		out, err := handler(ctx, in.(In))
		if err != nil {
			return nil, err
		}
		return out, nil
	}
}

// OnServerStream sets the handler of a server-streaming method. Each call
// of send makes one response: the reply out (nil for none), or the forward
// or failure recorded on ctx since the previous send, with the side effects
// recorded since then. A failure ends the client's call. Returning ends the
// stream; effects not yet sent, or a returned error, go out in one last
// response first (an error with a gRPC status ends the call with it).
func OnServerStream[In, Out proto.Message](a *Action, method string, handler func(ctx *ActionContext, in In, send func(Out) error) error) {
	m := addActionMethod[In, Out](a, method, shapeServerStream, handler == nil)
	if m == nil {
		return
	}
	m.serverStream = func(ctx *ActionContext, in proto.Message, send func(proto.Message) error) error {
		return handler(ctx, in.(In), typedSend[Out](send))
	}
}

// OnClientStream sets the handler of a client-streaming method. recv
// returns the client's messages in order, then io.EOF when the client has
// finished. The handler may return before that: the call is then complete
// and the remaining messages are discarded. The response is made as for
// OnUnary.
func OnClientStream[In, Out proto.Message](a *Action, method string, handler func(ctx *ActionContext, recv func() (In, error)) (Out, error)) {
	m := addActionMethod[In, Out](a, method, shapeClientStream, handler == nil)
	if m == nil {
		return
	}
	m.clientStream = func(ctx *ActionContext, recv func() (proto.Message, error)) (proto.Message, error) {
		out, err := handler(ctx, typedRecv[In](recv))
		if err != nil {
			return nil, err
		}
		return out, nil
	}
}

// OnBidiStream sets the handler of a bidirectional streaming method. recv
// behaves as in OnClientStream and send as in OnServerStream; they may be
// used from two goroutines at once (one receiving, one sending), but
// neither after the handler returns.
func OnBidiStream[In, Out proto.Message](a *Action, method string, handler func(ctx *ActionContext, recv func() (In, error), send func(Out) error) error) {
	m := addActionMethod[In, Out](a, method, shapeBidiStream, handler == nil)
	if m == nil {
		return
	}
	m.bidiStream = func(ctx *ActionContext, recv func() (proto.Message, error), send func(proto.Message) error) error {
		return handler(ctx, typedRecv[In](recv), typedSend[Out](send))
	}
}

// addActionMethod checks a handler registration and returns the method's
// entry to fill in, or nil after recording the mistake.
func addActionMethod[In, Out proto.Message](a *Action, method string, shape actionShape, nilHandler bool) *actionMethod {
	d := a.def
	if nilHandler {
		d.errs = append(d.errs, fmt.Errorf("method %s: handler must not be nil", method))
		return nil
	}
	if d.service == nil {
		return nil // already reported by NewAction
	}
	md := d.service.Methods().ByName(protoreflect.Name(method))
	if md == nil {
		d.errs = append(d.errs, fmt.Errorf("method %s: service %s has no such method", method, d.serviceName))
		return nil
	}
	if got := shapeOf(md); got != shape {
		d.errs = append(d.errs, fmt.Errorf("method %s is %s, so its handler must be set with %s, not %s", method, got, got.register(), shape.register()))
		return nil
	}
	in, out, err := methodTypes[In, Out](md)
	if err != nil {
		d.errs = append(d.errs, fmt.Errorf("method %s: %w", method, err))
		return nil
	}
	if _, dup := d.methods[method]; dup {
		d.errs = append(d.errs, fmt.Errorf("method %s: handler set twice", method))
		return nil
	}
	m := &actionMethod{method: md, shape: shape, input: in, output: out}
	d.methods[method] = m
	return m
}

func typedRecv[In proto.Message](recv func() (proto.Message, error)) func() (In, error) {
	return func() (In, error) {
		m, err := recv()
		if err != nil {
			var zero In
			return zero, err
		}
		return m.(In), nil
	}
}

func typedSend[Out proto.Message](send func(proto.Message) error) func(Out) error {
	return func(out Out) error { return send(out) }
}

// compileAction checks the definition and returns a frozen copy, so that
// later calls on the builder cannot race with running calls.
func (a *Action) compileAction() (*actionDef, error) {
	if a == nil || a.def == nil {
		return nil, errors.New("nil action")
	}
	d := a.def
	errs := append([]error(nil), d.errs...)
	if d.service != nil {
		methods := d.service.Methods()
		for i := 0; i < methods.Len(); i++ {
			if _, ok := d.methods[string(methods.Get(i).Name())]; !ok {
				errs = append(errs, fmt.Errorf("method %s: no handler", methods.Get(i).Name()))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("action %s: %w", d.serviceName, err)
	}
	frozen := *d
	frozen.errs = nil
	frozen.methods = make(map[string]*actionMethod, len(d.methods))
	for k, v := range d.methods {
		frozen.methods[k] = v
	}
	return &frozen, nil
}
