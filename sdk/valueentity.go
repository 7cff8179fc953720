package sdk

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// ValueEntityType is the entity type string of value entities in discovery.
const ValueEntityType = "cloudstate.valueentity.ValueEntity"

// ValueEntity describes a value entity: an entity whose whole state is one
// protobuf message of type S (a generated message pointer such as
// *pb.Cart), which the proxy stores as a google.protobuf.Any and hands back
// when the entity is activated. Create it with NewValueEntity, add command
// handlers with OnValueCommand, then pass it to Server.RegisterValueEntity
// (or to the testkit).
//
// The state must be a protobuf message because the proxy stores it as one:
// to keep a Go value of another type, convert it to and from a message in
// the handlers.
//
// Building an entity is not safe for concurrent use. Configuration mistakes
// are collected and reported together when the entity is registered.
type ValueEntity[S proto.Message] struct {
	def *valueEntityDef
}

// ValueEntityDefinition is implemented by *ValueEntity[S] for every S; it
// lets a Server accept value entities of any state type.
type ValueEntityDefinition interface {
	compileValueEntity() (*valueEntityDef, error)
}

// valueEntityDef is the type-erased form of a ValueEntity that the runtime
// works with. After compileValueEntity it is never modified.
type valueEntityDef struct {
	serviceName string
	service     protoreflect.ServiceDescriptor // nil when the lookup failed
	cfg         entityConfig
	stateType   protoreflect.MessageType // nil when S is not a generated message
	newState    func(entityID string) (proto.Message, error)
	commands    map[string]*valueCommandHandler
	errs        []error
}

type valueCommandHandler struct {
	method protoreflect.MethodDescriptor
	input  protoreflect.MessageType
	output protoreflect.MessageType
	call   func(ctx *ValueContext, state, in proto.Message) (proto.Message, error)
}

// NewValueEntity starts the definition of a value entity serving the gRPC
// service with the given full name (for example
// "com.example.valueentity.shoppingcart.ShoppingCart"), whose generated Go
// code must be linked into the program. newState returns the state of an
// entity that has no stored value (a new one, or one whose value was
// deleted); nil means an empty S message. The options are WithPersistenceID
// (default: the service's simple name) and WithPassivationTimeout.
func NewValueEntity[S proto.Message](service string, newState func(entityID string) S, opts ...EntityOption) *ValueEntity[S] {
	d := &valueEntityDef{serviceName: service, commands: make(map[string]*valueCommandHandler)}
	st, err := messageTypeOf[S]()
	if err != nil {
		d.errs = append(d.errs, fmt.Errorf("state: %w", err))
	} else {
		d.stateType = st
		d.newState = func(entityID string) (proto.Message, error) {
			if newState == nil {
				return st.New().Interface(), nil
			}
			s := newState(entityID)
			if !isSet(s) {
				return nil, fmt.Errorf("state constructor returned nil for entity %q", entityID)
			}
			return s, nil
		}
	}
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
		d.cfg.persistenceID = string(sd.Name())
	}
	for _, opt := range opts {
		opt(&d.cfg)
	}
	return &ValueEntity[S]{def: d}
}

// OnValueCommand sets the handler of one gRPC method of the value entity's
// service. In and Out must be the generated types of the method's input and
// output messages. The handler runs with exclusive access to the entity.
//
// state is a copy of the entity's current value that the handler may read
// and modify freely: the value changes only through ctx.Update (store a new
// value) or ctx.Delete, and only if the command succeeds. Returning an error
// fails the command, sends the error text to the client and leaves the
// value as it was. A nil reply is sent as an empty Out message, unless the
// handler forwarded the command.
func OnValueCommand[S, In, Out proto.Message](e *ValueEntity[S], method string, handler func(ctx *ValueContext, state S, in In) (Out, error)) {
	d := e.def
	if handler == nil {
		d.errs = append(d.errs, fmt.Errorf("command %s: handler must not be nil", method))
		return
	}
	if d.service == nil {
		return // already reported by NewValueEntity
	}
	md, in, out, err := unaryMethod[In, Out](d.service, method, "value entities")
	if err != nil {
		d.errs = append(d.errs, err)
		return
	}
	if _, dup := d.commands[method]; dup {
		d.errs = append(d.errs, fmt.Errorf("command %s: handler set twice", method))
		return
	}
	d.commands[method] = &valueCommandHandler{
		method: md,
		input:  in,
		output: out,
		call: func(ctx *ValueContext, state, msg proto.Message) (proto.Message, error) {
			reply, err := handler(ctx, state.(S), msg.(In))
			if err != nil {
				return nil, err
			}
			return reply, nil
		},
	}
}

// unaryMethod looks up a unary method of sd for an entity type that only
// supports unary methods (kind names it in errors) and checks that In and
// Out are its input and output types.
func unaryMethod[In, Out proto.Message](sd protoreflect.ServiceDescriptor, method, kind string) (protoreflect.MethodDescriptor, protoreflect.MessageType, protoreflect.MessageType, error) {
	md := sd.Methods().ByName(protoreflect.Name(method))
	if md == nil {
		return nil, nil, nil, fmt.Errorf("command %s: service %s has no such method", method, sd.FullName())
	}
	if md.IsStreamingClient() || md.IsStreamingServer() {
		return nil, nil, nil, fmt.Errorf("command %s: streaming methods are not supported by %s", method, kind)
	}
	in, out, err := methodTypes[In, Out](md)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("command %s: %w", method, err)
	}
	return md, in, out, nil
}

// methodTypes checks that In and Out are md's input and output message types.
func methodTypes[In, Out proto.Message](md protoreflect.MethodDescriptor) (protoreflect.MessageType, protoreflect.MessageType, error) {
	in, err := messageTypeOf[In]()
	if err == nil && in.Descriptor().FullName() != md.Input().FullName() {
		err = fmt.Errorf("input type is %s, the method takes %s", in.Descriptor().FullName(), md.Input().FullName())
	}
	if err != nil {
		return nil, nil, err
	}
	out, err := messageTypeOf[Out]()
	if err == nil && out.Descriptor().FullName() != md.Output().FullName() {
		err = fmt.Errorf("reply type is %s, the method returns %s", out.Descriptor().FullName(), md.Output().FullName())
	}
	if err != nil {
		return nil, nil, err
	}
	return in, out, nil
}

// compileValueEntity checks the definition and returns a frozen copy, so
// that later calls on the builder cannot race with running entities.
func (e *ValueEntity[S]) compileValueEntity() (*valueEntityDef, error) {
	d := e.def
	errs := append(append([]error(nil), d.errs...), d.cfg.errs...)
	if d.service != nil {
		methods := d.service.Methods()
		for i := 0; i < methods.Len(); i++ {
			if _, ok := d.commands[string(methods.Get(i).Name())]; !ok {
				errs = append(errs, fmt.Errorf("command %s: no handler", methods.Get(i).Name()))
			}
		}
	}
	if d.cfg.snapshotEvery > 0 {
		errs = append(errs, errors.New("WithSnapshotEvery does not apply to value entities"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("value entity %s: %w", d.serviceName, err)
	}
	frozen := *d
	frozen.errs = nil
	frozen.cfg.errs = nil
	frozen.commands = make(map[string]*valueCommandHandler, len(d.commands))
	for k, v := range d.commands {
		frozen.commands[k] = v
	}
	return &frozen, nil
}
