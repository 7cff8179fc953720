package sdk

import (
	"errors"
	"fmt"
	"reflect"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// EventSourcedEntityType is the entity type string of event-sourced entities
// in discovery.
const EventSourcedEntityType = "cloudstate.eventsourced.EventSourced"

// EventSourcedEntity describes an event-sourced entity whose in-memory state
// is a *T. Create it with NewEventSourcedEntity, add handlers with OnCommand,
// OnEvent and OnSnapshot, then pass it to Server.RegisterEventSourced (or to
// the testkit).
//
// Building an entity is not safe for concurrent use. Configuration mistakes
// (unknown method, wrong message type, duplicate handler) are collected and
// reported together when the entity is registered, so a definition reads as a
// flat list of calls.
type EventSourcedEntity[T any] struct {
	def *eventSourcedDef
}

// EventSourcedDefinition is implemented by *EventSourcedEntity[T] for every
// T; it lets a Server accept entities of any state type.
type EventSourcedDefinition interface {
	compileEventSourced() (*eventSourcedDef, error)
}

// EntityOption configures an entity.
type EntityOption func(*entityConfig)

type entityConfig struct {
	persistenceID      string
	snapshotEvery      int64
	passivationTimeout time.Duration
	errs               []error
}

// WithPersistenceID sets the namespace under which the proxy stores the
// entity's data. The default is the service's simple name (for example
// "ShoppingCart").
func WithPersistenceID(id string) EntityOption {
	return func(c *entityConfig) {
		if id == "" {
			c.errs = append(c.errs, errors.New("persistence id must not be empty"))
			return
		}
		c.persistenceID = id
	}
}

// WithSnapshotEvery makes an event-sourced entity attach a snapshot to the
// reply whose events take its sequence number across a multiple of n. Zero
// (the default) never snapshots. Snapshots need OnSnapshot; value entities
// refuse this option.
func WithSnapshotEvery(n int) EntityOption {
	return func(c *entityConfig) {
		if n < 0 {
			c.errs = append(c.errs, fmt.Errorf("snapshot interval %d must not be negative", n))
			return
		}
		c.snapshotEvery = int64(n)
	}
}

// WithPassivationTimeout asks the proxy to passivate an entity after d
// without commands. Zero (the default) leaves the choice to the proxy.
func WithPassivationTimeout(d time.Duration) EntityOption {
	return func(c *entityConfig) {
		if d < 0 {
			c.errs = append(c.errs, fmt.Errorf("passivation timeout %v must not be negative", d))
			return
		}
		c.passivationTimeout = d
	}
}

// eventSourcedDef is the type-erased form of an EventSourcedEntity that the
// runtime works with. After compileEventSourced it is never modified.
type eventSourcedDef struct {
	serviceName string
	service     protoreflect.ServiceDescriptor // nil when the lookup failed
	cfg         entityConfig
	newState    func(entityID string) (any, error)
	commands    map[string]*commandHandler
	events      map[protoreflect.FullName]*eventHandler
	snapshot    *snapshotHandler
	errs        []error
}

type commandHandler struct {
	method protoreflect.MethodDescriptor
	input  protoreflect.MessageType
	output protoreflect.MessageType
	call   func(ctx *CommandContext, state any, in proto.Message) (proto.Message, error)
}

type eventHandler struct {
	typ   protoreflect.MessageType
	apply func(state any, event proto.Message) error
}

type snapshotHandler struct {
	typ   protoreflect.MessageType
	take  func(state any) (proto.Message, error)
	apply func(state any, snapshot proto.Message) error
}

// NewEventSourcedEntity starts the definition of an event-sourced entity
// serving the gRPC service with the given full name (for example
// "com.example.shoppingcart.ShoppingCart"). The service must be in the global
// protobuf registry, that is, its generated Go code must be linked into the
// program. newState returns the empty state of a new entity; it is called once
// per activation, before the snapshot and the journal are applied.
func NewEventSourcedEntity[T any](service string, newState func(entityID string) *T, opts ...EntityOption) *EventSourcedEntity[T] {
	d := &eventSourcedDef{
		serviceName: service,
		commands:    make(map[string]*commandHandler),
		events:      make(map[protoreflect.FullName]*eventHandler),
	}
	if newState == nil {
		d.errs = append(d.errs, errors.New("state constructor must not be nil"))
	} else {
		d.newState = func(entityID string) (any, error) {
			s := newState(entityID)
			if s == nil {
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
	return &EventSourcedEntity[T]{def: d}
}

// OnCommand sets the handler of one gRPC method of the entity's service. In
// and Out must be the generated types of the method's input and output
// messages. The handler runs with exclusive access to the state; it changes
// the state only by emitting events (CommandContext.Emit). Returning an error
// fails the command and sends the error text to the client. A nil reply is
// sent as an empty Out message, unless the handler forwarded the command.
func OnCommand[T any, In, Out proto.Message](e *EventSourcedEntity[T], method string, handler func(ctx *CommandContext, state *T, in In) (Out, error)) {
	d := e.def
	if handler == nil {
		d.errs = append(d.errs, fmt.Errorf("command %s: handler must not be nil", method))
		return
	}
	if d.service == nil {
		return // already reported by NewEventSourcedEntity
	}
	md, in, out, err := unaryMethod[In, Out](d.service, method, "event-sourced entities")
	if err != nil {
		d.errs = append(d.errs, err)
		return
	}
	if _, dup := d.commands[method]; dup {
		d.errs = append(d.errs, fmt.Errorf("command %s: handler set twice", method))
		return
	}
	d.commands[method] = &commandHandler{
		method: md,
		input:  in,
		output: out,
		call: func(ctx *CommandContext, state any, msg proto.Message) (proto.Message, error) {
			reply, err := handler(ctx, state.(*T), msg.(In))
			if err != nil {
				return nil, err
			}
			return reply, nil
		},
	}
}

// OnEvent sets the handler that applies events of type E to the state. It
// runs for replayed events when an entity is activated and for every event a
// command handler emits, so it must be deterministic and must not fail for an
// event that was once accepted. An error from it fails the activation (during
// replay) or the command (when emitted).
func OnEvent[T any, E proto.Message](e *EventSourcedEntity[T], handler func(state *T, event E) error) {
	d := e.def
	typ, err := messageTypeOf[E]()
	if err == nil && handler == nil {
		err = errors.New("handler must not be nil")
	}
	if err != nil {
		d.errs = append(d.errs, fmt.Errorf("event handler: %w", err))
		return
	}
	name := typ.Descriptor().FullName()
	if _, dup := d.events[name]; dup {
		d.errs = append(d.errs, fmt.Errorf("event %s: handler set twice", name))
		return
	}
	d.events[name] = &eventHandler{
		typ: typ,
		apply: func(state any, ev proto.Message) error {
			return handler(state.(*T), ev.(E))
		},
	}
}

// OnSnapshot sets how the state becomes a snapshot message of type S (take)
// and how a snapshot is loaded into a freshly constructed state (apply).
// Required when WithSnapshotEvery is used; snapshots received from the proxy
// are applied with it in any case.
func OnSnapshot[T any, S proto.Message](e *EventSourcedEntity[T], take func(state *T) (S, error), apply func(state *T, snapshot S) error) {
	d := e.def
	typ, err := messageTypeOf[S]()
	if err == nil && (take == nil || apply == nil) {
		err = errors.New("take and apply must not be nil")
	}
	if err == nil && d.snapshot != nil {
		err = errors.New("set twice")
	}
	if err != nil {
		d.errs = append(d.errs, fmt.Errorf("snapshot handler: %w", err))
		return
	}
	d.snapshot = &snapshotHandler{
		typ: typ,
		take: func(state any) (proto.Message, error) {
			snap, err := take(state.(*T))
			if err != nil {
				return nil, err
			}
			if !snap.ProtoReflect().IsValid() {
				return nil, errors.New("snapshot function returned nil")
			}
			return snap, nil
		},
		apply: func(state any, snap proto.Message) error {
			return apply(state.(*T), snap.(S))
		},
	}
}

// compileEventSourced checks the definition and returns a frozen copy, so
// that later calls on the builder cannot race with running entities.
func (e *EventSourcedEntity[T]) compileEventSourced() (*eventSourcedDef, error) {
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
	if d.cfg.snapshotEvery > 0 && d.snapshot == nil {
		errs = append(errs, errors.New("WithSnapshotEvery needs OnSnapshot"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("event-sourced entity %s: %w", d.serviceName, err)
	}
	frozen := *d
	frozen.errs = nil
	frozen.cfg.errs = nil
	frozen.commands = make(map[string]*commandHandler, len(d.commands))
	for k, v := range d.commands {
		frozen.commands[k] = v
	}
	frozen.events = make(map[protoreflect.FullName]*eventHandler, len(d.events))
	for k, v := range d.events {
		frozen.events[k] = v
	}
	return &frozen, nil
}

// messageTypeOf returns the message type of a generated message type M (a
// pointer to a generated struct).
func messageTypeOf[M proto.Message]() (mt protoreflect.MessageType, err error) {
	var zero M
	if any(zero) == nil {
		return nil, fmt.Errorf("type %v is an interface, not a generated message type", reflect.TypeFor[M]())
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("type %v has no static message type: %v", reflect.TypeFor[M](), r)
		}
	}()
	// Generated messages answer ProtoReflect on a nil pointer with their type.
	return zero.ProtoReflect().Type(), nil
}
