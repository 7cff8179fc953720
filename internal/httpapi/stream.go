package httpapi

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// Server-streaming methods over HTTP/JSON (BEHAVIOR.md HTTP-8).
//
// The transcoder streams HTTP/JSON responses only for google.api.HttpBody
// outputs and refuses other server-streaming methods before decoding the
// request. The ingress still wants its request decoding, which is exactly
// the unary one (path variables, query parameters, body, and their 400s),
// so HTTP/JSON requests go to a second transcoder built from the same
// descriptors and bindings in which server-streaming methods are declared
// unary. It decodes the request and calls the handler as for a unary
// method; the handler then writes the stream to the client itself, with a
// Replies printer for the messages.

// restSurface is the API's services with server streams declared unary,
// each in a registry of its own with a resolver over that registry, so
// that the transcoder never mixes message descriptors of two registries.
type restSurface struct {
	services []protoreflect.ServiceDescriptor
	resolver *typeResolver
}

// compileREST builds the restSurface of the named services from files,
// which already carry the chosen HTTP bindings.
func compileREST(files []*descriptorpb.FileDescriptorProto, names []string) (restSurface, error) {
	unary := make([]*descriptorpb.FileDescriptorProto, len(files))
	for i, f := range files {
		c := proto.CloneOf(f)
		for _, s := range c.GetService() {
			for _, m := range s.GetMethod() {
				if m.GetServerStreaming() && !m.GetClientStreaming() {
					m.ServerStreaming = nil
				}
			}
		}
		unary[i] = c
	}
	reg, err := protodesc.NewFiles(&descriptorpb.FileDescriptorSet{File: unary})
	if err != nil {
		return restSurface{}, fmt.Errorf("rebuild the descriptors with server streams declared unary: %w", err)
	}
	out := restSurface{resolver: &typeResolver{local: dynamicpb.NewTypes(reg)}}
	for _, name := range names {
		d, err := reg.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			return restSurface{}, fmt.Errorf("service [%s] lost with server streams declared unary: %w", name, err)
		}
		out.services = append(out.services, d.(protoreflect.ServiceDescriptor))
	}
	return out, nil
}

// Replies prints the replies of one server-streaming method to one
// HTTP/JSON request, as HTTP-7 prints a unary response: the whole message,
// or the response_body field of the binding the request matched.
type Replies struct {
	output protoreflect.MessageDescriptor
	// field is the response_body field; nil prints the whole message.
	field protoreflect.FieldDescriptor
	codec *jsonCodec
}

// Replies returns the printer for the replies of method (a fully-qualified
// method name) to a request with this HTTP method and escaped path. When
// several bindings of the method match, the last declared wins (HTTP-1).
func (a *API) Replies(method protoreflect.FullName, httpMethod, path string) (*Replies, error) {
	md := a.method(method)
	if md == nil {
		return nil, fmt.Errorf("method [%s] is not served over HTTP", method)
	}
	p := &Replies{output: md.Output(), codec: newJSONCodec(a.resolver)}
	for i := len(a.bindings) - 1; i >= 0; i-- {
		b := a.bindings[i]
		if b.method.FullName() != method || b.httpMethod != "*" && b.httpMethod != httpMethod {
			continue
		}
		if _, ok := b.tmpl.match(path); !ok {
			continue
		}
		if rb := b.rule.GetResponseBody(); rb != "" {
			p.field = md.Output().Fields().ByName(protoreflect.Name(rb))
		}
		break
	}
	return p, nil
}

// method finds a method of the API's services in the descriptors that carry
// the served bindings.
func (a *API) method(name protoreflect.FullName) protoreflect.MethodDescriptor {
	for _, sd := range a.services {
		if sd.FullName() != name.Parent() {
			continue
		}
		return sd.Methods().ByName(name.Name())
	}
	return nil
}

// IsHTTPBody reports whether what is printed (the message, or its
// response_body field) is a google.api.HttpBody, whose data is sent raw.
func (p *Replies) IsHTTPBody() bool {
	md := p.output
	if p.field != nil {
		if p.field.IsList() || p.field.IsMap() {
			return false
		}
		md = p.field.Message()
	}
	return md != nil && md.FullName() == "google.api.HttpBody"
}

// decode parses a reply's payload as the output message.
func (p *Replies) decode(payload []byte) (*dynamicpb.Message, error) {
	msg := dynamicpb.NewMessage(p.output)
	if err := proto.Unmarshal(payload, msg); err != nil {
		return nil, fmt.Errorf("the reply is not a valid %s: %w", p.output.FullName(), err)
	}
	return msg, nil
}

// AppendJSON appends the JSON of one reply, given as its serialized output
// message, to dst, without insignificant whitespace (and so on one line).
func (p *Replies) AppendJSON(dst, payload []byte) ([]byte, error) {
	msg, err := p.decode(payload)
	if err != nil {
		return nil, err
	}
	if p.field != nil {
		return p.codec.MarshalAppendField(dst, msg, p.field)
	}
	return p.codec.MarshalAppend(dst, msg)
}

// HTTPBody returns the content type and data of one reply when IsHTTPBody
// holds; an unset response_body field has neither.
func (p *Replies) HTTPBody(payload []byte) (contentType string, data []byte, err error) {
	msg, err := p.decode(payload)
	if err != nil {
		return "", nil, err
	}
	body := msg.ProtoReflect()
	if p.field != nil {
		if !body.Has(p.field) {
			return "", nil, nil
		}
		body = body.Get(p.field).Message()
	}
	fields := body.Descriptor().Fields()
	return body.Get(fields.ByName("content_type")).String(), body.Get(fields.ByName("data")).Bytes(), nil
}

// PrintJSON prints any message as HTTP-7 prints responses (a
// google.rpc.Status of an error, say), resolving the contents of
// google.protobuf.Any from the function's types.
func (a *API) PrintJSON(msg proto.Message) ([]byte, error) {
	return newJSONCodec(a.resolver).MarshalAppend(nil, msg)
}
