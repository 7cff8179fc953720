package sdk

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
)

// TypeURLPrefix is the type URL prefix of protobuf payloads in the Cloudstate
// protocol.
const TypeURLPrefix = "type.googleapis.com/"

// MarshalAny wraps m in an Any whose type URL is TypeURLPrefix followed by
// the message's full name, as the Cloudstate protocol requires.
func MarshalAny(m proto.Message) (*anypb.Any, error) {
	if m == nil {
		return nil, fmt.Errorf("marshal any: nil message")
	}
	value, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("marshal any %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return &anypb.Any{TypeUrl: TypeURLPrefix + string(m.ProtoReflect().Descriptor().FullName()), Value: value}, nil
}

// UnmarshalAny decodes a into a new message of the type its type URL names,
// looked up in the global protobuf registry (the registry holds every message
// type whose generated Go code is linked into the program).
func UnmarshalAny(a *anypb.Any) (proto.Message, error) {
	name := anyMessageName(a)
	mt, err := protoregistry.GlobalTypes.FindMessageByName(name)
	if err != nil {
		return nil, fmt.Errorf("unmarshal any %q: %w", a.GetTypeUrl(), err)
	}
	m := mt.New().Interface()
	if err := proto.Unmarshal(a.GetValue(), m); err != nil {
		return nil, fmt.Errorf("unmarshal any %q: %w", a.GetTypeUrl(), err)
	}
	return m, nil
}

// anyMessageName returns the message name of a type URL: the part after the
// last slash.
func anyMessageName(a *anypb.Any) protoreflect.FullName {
	url := a.GetTypeUrl()
	return protoreflect.FullName(url[strings.LastIndexByte(url, '/')+1:])
}

// unmarshalAnyAs decodes a into a new message of type mt after checking that
// the type URL names that type.
func unmarshalAnyAs(a *anypb.Any, mt protoreflect.MessageType) (proto.Message, error) {
	want := mt.Descriptor().FullName()
	if got := anyMessageName(a); got != want {
		return nil, fmt.Errorf("payload has type %q, want %s", a.GetTypeUrl(), want)
	}
	m := mt.New().Interface()
	if err := proto.Unmarshal(a.GetValue(), m); err != nil {
		return nil, fmt.Errorf("decode %s: %w", want, err)
	}
	return m, nil
}
