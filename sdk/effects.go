package sdk

import (
	"fmt"

	"github.com/cloudstate-go/cloudstate/protocol"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
)

// EffectOption configures a forward or a side effect.
type EffectOption func(*effectConfig)

type effectConfig struct {
	metadata Metadata
}

// WithMetadata attaches metadata to a forward or a side effect.
func WithMetadata(md Metadata) EffectOption {
	return func(c *effectConfig) { c.metadata = md }
}

// effects collects what a handler asks for besides its reply: a failure, a
// forward, side effects and reply metadata. Every context type (commands of
// event-sourced and value entities, action calls) records into one, so the
// rules for forwards and side effects are the same everywhere.
type effects struct {
	err           error // first failure recorded by Fail, Forward, SideEffect or the state methods
	forward       *protocol.Forward
	sideEffects   []*protocol.SideEffect
	replyMetadata Metadata
}

func (e *effects) fail(err error) {
	if e.err == nil {
		e.err = err
	}
}

// failf records a Failure with the formatted description and returns it.
func (e *effects) failf(format string, args ...any) error {
	f := &Failure{Description: fmt.Sprintf(format, args...)}
	e.fail(f)
	return f
}

func (e *effects) addForward(service, method string, msg proto.Message, opts []EffectOption) {
	if e.forward != nil {
		e.fail(fmt.Errorf("forward to %s/%s: the command already forwards to %s/%s",
			service, method, e.forward.GetServiceName(), e.forward.GetCommandName()))
		return
	}
	payload, md, err := effect(service, method, msg, opts)
	if err != nil {
		e.fail(fmt.Errorf("forward: %w", err))
		return
	}
	e.forward = &protocol.Forward{ServiceName: service, CommandName: method, Payload: payload, Metadata: md}
}

func (e *effects) addSideEffect(service, method string, msg proto.Message, synchronous bool, opts []EffectOption) {
	payload, md, err := effect(service, method, msg, opts)
	if err != nil {
		e.fail(fmt.Errorf("side effect: %w", err))
		return
	}
	e.sideEffects = append(e.sideEffects, &protocol.SideEffect{
		ServiceName: service, CommandName: method, Payload: payload, Synchronous: synchronous, Metadata: md,
	})
}

// clientAction builds the forward or reply of a successful command of an
// entity: a nil reply becomes the empty output message, because an entity
// command always answers the client.
func (e *effects) clientAction(command string, method protoreflect.MethodDescriptor, output protoreflect.MessageType, reply proto.Message) (*protocol.ClientAction, error) {
	if e.forward != nil {
		if isSet(reply) {
			return nil, fmt.Errorf("command %s both forwarded and returned a reply", command)
		}
		return &protocol.ClientAction{Action: &protocol.ClientAction_Forward{Forward: e.forward}}, nil
	}
	if !isSet(reply) {
		reply = output.New().Interface()
	}
	r, err := e.reply(command, method, reply)
	if err != nil {
		return nil, err
	}
	return &protocol.ClientAction{Action: &protocol.ClientAction_Reply{Reply: r}}, nil
}

// reply encodes reply as the method's output, with the reply metadata.
func (e *effects) reply(command string, method protoreflect.MethodDescriptor, reply proto.Message) (*protocol.Reply, error) {
	value, err := proto.Marshal(reply)
	if err != nil {
		return nil, fmt.Errorf("marshal reply of command %s: %w", command, err)
	}
	payload := &anypb.Any{TypeUrl: TypeURLPrefix + string(method.Output().FullName()), Value: value}
	return &protocol.Reply{Payload: payload, Metadata: e.replyMetadata.toProto()}, nil
}

// isSet reports whether m is a message, not nil or a typed nil pointer.
func isSet(m proto.Message) bool {
	return m != nil && m.ProtoReflect().IsValid()
}

// effect checks a forward or side effect target and encodes its payload.
func effect(service, method string, msg proto.Message, opts []EffectOption) (*anypb.Any, *protocol.Metadata, error) {
	var cfg effectConfig
	for _, opt := range opts {
		opt(&cfg)
	}
	desc, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
	if err != nil {
		return nil, nil, fmt.Errorf("service %q: %w", service, err)
	}
	sd, ok := desc.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil, nil, fmt.Errorf("%q is not a service", service)
	}
	md := sd.Methods().ByName(protoreflect.Name(method))
	if md == nil {
		return nil, nil, fmt.Errorf("service %s has no method %q", service, method)
	}
	if !isSet(msg) {
		return nil, nil, fmt.Errorf("%s/%s: nil message", service, method)
	}
	if got := msg.ProtoReflect().Descriptor().FullName(); got != md.Input().FullName() {
		return nil, nil, fmt.Errorf("%s/%s takes %s, got %s", service, method, md.Input().FullName(), got)
	}
	payload, err := MarshalAny(msg)
	if err != nil {
		return nil, nil, err
	}
	return payload, cfg.metadata.toProto(), nil
}
