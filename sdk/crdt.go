package sdk

import (
	"errors"
	"fmt"

	"github.com/cloudstate-go/cloudstate/protocol"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// CRDTEntityType is the entity type string of CRDT entities in discovery.
const CRDTEntityType = "cloudstate.crdt.Crdt"

// WriteConsistency says how far the proxy replicates a CRDT change before
// it answers the client.
type WriteConsistency int32

// The write consistencies (protocol enum CrdtWriteConsistency).
const (
	// WriteLocal writes to the proxy's node only; gossip spreads it later.
	WriteLocal WriteConsistency = WriteConsistency(protocol.CrdtWriteConsistency_LOCAL)
	// WriteMajority waits for a majority of the nodes.
	WriteMajority WriteConsistency = WriteConsistency(protocol.CrdtWriteConsistency_MAJORITY)
	// WriteAll waits for every node.
	WriteAll WriteConsistency = WriteConsistency(protocol.CrdtWriteConsistency_ALL)
)

// CRDTEntity describes a CRDT entity: an entity whose state is one CRDT
// (see CRDT), held and replicated by the proxy. Create it with
// NewCRDTEntity, add a handler for every method with OnCRDTCommand (unary
// methods) or OnCRDTStreamed (server-streaming methods), then pass it to
// Server.RegisterCRDT (or to the testkit).
//
// Building an entity is not safe for concurrent use. Configuration mistakes
// are collected and reported together when the entity is registered.
type CRDTEntity struct {
	def *crdtDef
}

// crdtDef is the runtime form of a CRDTEntity. After compileCRDT it is
// never modified.
type crdtDef struct {
	serviceName string
	service     protoreflect.ServiceDescriptor // nil when the lookup failed
	cfg         entityConfig
	commands    map[string]*crdtCommandHandler
	errs        []error
}

type crdtCommandHandler struct {
	method   protoreflect.MethodDescriptor
	input    protoreflect.MessageType
	output   protoreflect.MessageType
	streamed bool
	// call runs the handler; st is the stream of a streamed method, nil for
	// a unary one.
	call func(ctx *CRDTContext, st *crdtStream, in proto.Message) (proto.Message, error)
}

// NewCRDTEntity starts the definition of a CRDT entity serving the gRPC
// service with the given full name (for example
// "com.example.chat.presence.Presence"), whose generated Go code must be
// linked into the program. The options are WithPersistenceID (default: the
// service's full name; the proxy keys each CRDT by "<persistence id>-<entity
// id>") and WithPassivationTimeout.
func NewCRDTEntity(service string, opts ...EntityOption) *CRDTEntity {
	d := &crdtDef{serviceName: service, commands: make(map[string]*crdtCommandHandler)}
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
		d.cfg.persistenceID = string(sd.FullName())
	}
	for _, opt := range opts {
		opt(&d.cfg)
	}
	return &CRDTEntity{def: d}
}

// OnCRDTCommand sets the handler of a unary method of the CRDT entity's
// service. In and Out must be the generated types of the method's input and
// output messages.
//
// The handler reads and changes the entity's CRDT through ctx. Its changes
// are sent to the proxy with the reply and, if it fails (returns an error
// or calls ctx.Fail), undone, and the client gets the error text. A nil
// reply is sent as an empty Out message, unless the handler forwarded the
// command.
func OnCRDTCommand[In, Out proto.Message](e *CRDTEntity, method string, handler func(ctx *CRDTContext, in In) (Out, error)) {
	d := e.def
	if handler == nil {
		d.errs = append(d.errs, fmt.Errorf("command %s: handler must not be nil", method))
		return
	}
	if d.service == nil {
		return // already reported by NewCRDTEntity
	}
	md := d.service.Methods().ByName(protoreflect.Name(method))
	if md != nil && md.IsStreamingServer() && !md.IsStreamingClient() {
		d.errs = append(d.errs, fmt.Errorf("command %s: the method is server-streaming; use OnCRDTStreamed", method))
		return
	}
	md, in, out, err := unaryMethod[In, Out](d.service, method, "CRDT entities")
	if err != nil {
		d.errs = append(d.errs, err)
		return
	}
	d.add(method, &crdtCommandHandler{
		method: md, input: in, output: out,
		call: func(ctx *CRDTContext, _ *crdtStream, msg proto.Message) (proto.Message, error) {
			reply, err := handler(ctx, msg.(In))
			if err != nil {
				return nil, err
			}
			return reply, nil
		},
	})
}

// OnCRDTStreamed sets the handler of a server-streaming method of the CRDT
// entity's service. In and Out must be the generated types of the method's
// input and output messages.
//
// The handler runs like a unary one (see OnCRDTCommand), except that a nil
// reply sends the client nothing. To keep the client's stream open, it
// registers callbacks on ctx: OnChange, called after every change of the
// CRDT (a delta from the proxy, or another command or cancellation of this
// entity), may send the client more messages and end the stream;
// OnCancel, called when the client goes away, may change the CRDT. Without
// either callback, or after ctx.EndStream, the stream ends after the
// handler's reply.
func OnCRDTStreamed[In, Out proto.Message](e *CRDTEntity, method string, handler func(ctx *CRDTStreamContext[Out], in In) (Out, error)) {
	d := e.def
	if handler == nil {
		d.errs = append(d.errs, fmt.Errorf("command %s: handler must not be nil", method))
		return
	}
	if d.service == nil {
		return
	}
	md := d.service.Methods().ByName(protoreflect.Name(method))
	if md == nil {
		d.errs = append(d.errs, fmt.Errorf("command %s: service %s has no such method", method, d.service.FullName()))
		return
	}
	if !md.IsStreamingServer() || md.IsStreamingClient() {
		d.errs = append(d.errs, fmt.Errorf("command %s: OnCRDTStreamed is for server-streaming methods; CRDT entities do not support client streaming, and unary methods take OnCRDTCommand", method))
		return
	}
	in, out, err := methodTypes[In, Out](md)
	if err != nil {
		d.errs = append(d.errs, fmt.Errorf("command %s: %w", method, err))
		return
	}
	d.add(method, &crdtCommandHandler{
		method: md, input: in, output: out, streamed: true,
		call: func(ctx *CRDTContext, st *crdtStream, msg proto.Message) (proto.Message, error) {
			reply, err := handler(&CRDTStreamContext[Out]{CRDTContext: ctx, st: st}, msg.(In))
			if err != nil {
				return nil, err
			}
			return reply, nil
		},
	})
}

func (d *crdtDef) add(method string, h *crdtCommandHandler) {
	if _, dup := d.commands[method]; dup {
		d.errs = append(d.errs, fmt.Errorf("command %s: handler set twice", method))
		return
	}
	d.commands[method] = h
}

// compileCRDT checks the definition and returns a frozen copy.
func (e *CRDTEntity) compileCRDT() (*crdtDef, error) {
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
		errs = append(errs, errors.New("WithSnapshotEvery does not apply to CRDT entities"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("CRDT entity %s: %w", d.serviceName, err)
	}
	frozen := *d
	frozen.errs = nil
	frozen.cfg.errs = nil
	frozen.commands = make(map[string]*crdtCommandHandler, len(d.commands))
	for k, v := range d.commands {
		frozen.commands[k] = v
	}
	return &frozen, nil
}
