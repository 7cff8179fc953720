// Package httpapi turns the user function's descriptors and their
// google.api.http rules into the HTTP surface of the proxy: HTTP/JSON routes
// (BEHAVIOR.md §10), gRPC-Web and the Connect protocol, all transcoded by
// connectrpc.com/vanguard into gRPC for one in-process handler.
//
// It validates the rules with the reference proxy's checks and messages
// (HTTP-2), adds the default binding of methods without a rule (HTTP-1),
// resolves bindings that collide exactly by keeping the last declared, and
// builds the transcoder. It knows nothing of routing or entities: the
// handler it is given serves gRPC (application/grpc+proto, uncompressed)
// at /<service>/<method>.
//
// Discovery calls Validate so that a bad rule fails discovery; the ingress
// calls Compile and Transcoder with the same input, so whatever discovery
// accepted can be served.
package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"connectrpc.com/connect"
	"connectrpc.com/vanguard"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// API is the compiled HTTP surface of a set of services. It is immutable
// and safe for concurrent use.
type API struct {
	services []protoreflect.ServiceDescriptor
	resolver *typeResolver
	// bindings are the bindings served, in declaration order.
	bindings []*binding
	// bodyless are the bindings whose rule takes no body.
	bodyless []*binding
	// rest is the same surface with server streams declared unary, for
	// HTTP/JSON (stream.go).
	rest restSurface
}

// Compile validates the rules of the named services (fully-qualified
// names, in declaration order) and prepares their bindings. Its error names
// the first invalid google.api.http rule, or a set of bindings the
// transcoder cannot serve, with the method, in one sentence fit for
// reportError. files must hold
// every file the services need, imports included, in any order.
func Compile(files []*descriptorpb.FileDescriptorProto, services []string) (*API, error) {
	// The transcoder reads rules from the method options. Rules are taken
	// out of a copy of every file, checked, completed with defaults and
	// written back, so that it sees exactly the bindings chosen here.
	copies := make([]*descriptorpb.FileDescriptorProto, len(files))
	methods := make(map[string]*descriptorpb.MethodDescriptorProto)
	rules := make(map[string]*annotations.HttpRule)
	for i, f := range files {
		c := proto.CloneOf(f)
		copies[i] = c
		for _, s := range c.GetService() {
			for _, m := range s.GetMethod() {
				full := qualify(c.GetPackage(), s.GetName()) + "." + m.GetName()
				rule, rest, err := splitOptions(m.GetOptions())
				if err != nil {
					return nil, fmt.Errorf("method [%s]: %w", full, err)
				}
				m.Options = rest
				methods[full] = m
				if rule != nil {
					rules[full] = rule
				}
			}
		}
	}
	reg, err := protodesc.NewFiles(&descriptorpb.FileDescriptorSet{File: copies})
	if err != nil {
		return nil, fmt.Errorf("rebuild the descriptors: %w", err)
	}

	api := &API{}
	byKey := make(map[string]int) // HTTP method and template key → index in api.bindings
	for _, name := range services {
		d, err := reg.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			return nil, fmt.Errorf("service [%s] not found in the descriptors: %w", name, err)
		}
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			return nil, fmt.Errorf("[%s] is not a service", name)
		}
		api.services = append(api.services, sd)
		for i := range sd.Methods().Len() {
			md := sd.Methods().Get(i)
			rule, ok := rules[string(md.FullName())]
			if !ok {
				rule = defaultRule(md)
			}
			bs, err := methodBindings(md, rule)
			if err != nil {
				return nil, fmt.Errorf("invalid google.api.http rule of method [%s]: %w", md.FullName(), err)
			}
			for _, b := range bs {
				// When bindings collide, the last declared wins (HTTP-1).
				key := b.httpMethod + " " + b.tmpl.key()
				if prev, dup := byKey[key]; dup {
					api.bindings[prev] = nil
				}
				byKey[key] = len(api.bindings)
				api.bindings = append(api.bindings, b)
			}
		}
	}
	kept := api.bindings[:0]
	for _, b := range api.bindings {
		if b != nil {
			kept = append(kept, b)
		}
	}
	api.bindings = kept
	for _, b := range api.bindings {
		if b.rule.GetBody() == "" {
			api.bodyless = append(api.bodyless, b)
		}
	}

	// Write the chosen bindings back into the option copies: the first as
	// the rule, the others as its additional bindings.
	served := make(map[string]*annotations.HttpRule)
	for _, b := range api.bindings {
		full := string(b.method.FullName())
		r := served[full]
		if r == nil {
			served[full] = proto.CloneOf(b.rule)
			continue
		}
		r.AdditionalBindings = append(r.AdditionalBindings, b.rule)
	}
	for full, r := range served {
		m := methods[full]
		if m.Options == nil {
			m.Options = new(descriptorpb.MethodOptions)
		}
		proto.SetExtension(m.Options, annotations.E_Http, r)
	}
	reg, err = protodesc.NewFiles(&descriptorpb.FileDescriptorSet{File: copies})
	if err != nil {
		return nil, fmt.Errorf("rebuild the descriptors with their HTTP bindings: %w", err)
	}
	for i, sd := range api.services {
		d, err := reg.FindDescriptorByName(sd.FullName())
		if err != nil {
			return nil, fmt.Errorf("service [%s] lost in the rebuilt descriptors: %w", sd.FullName(), err)
		}
		api.services[i] = d.(protoreflect.ServiceDescriptor)
	}
	api.resolver = &typeResolver{local: dynamicpb.NewTypes(reg)}
	if api.rest, err = compileREST(copies, services); err != nil {
		return nil, err
	}

	// Whatever passes the checks above must also pass the transcoder's own:
	// find out now, at discovery, rather than when serving.
	for _, unary := range []bool{false, true} {
		if _, err := api.Transcoder(Options{Handler: http.NotFoundHandler(), ServerStreamsAsUnary: unary}); err != nil {
			return nil, fmt.Errorf("the HTTP bindings cannot be served: %w", err)
		}
	}
	return api, nil
}

func qualify(pkg, name string) string {
	if pkg == "" {
		return name
	}
	return pkg + "." + name
}

// Options configure the transcoder.
type Options struct {
	// Handler serves gRPC for every method: POST /<service>/<method> with
	// content type application/grpc+proto, uncompressed messages, grpc-status
	// and grpc-message as trailers.
	Handler http.Handler
	// NotFound serves requests that match no binding and no method; nil
	// means a plain 404.
	NotFound http.Handler
	// MaxMessageBytes bounds one request or response message; 0 means the
	// transcoder's default (4 GiB).
	MaxMessageBytes int
	// ServerStreamsAsUnary declares every server-streaming method (not
	// client-streaming too) unary, so that the transcoder decodes HTTP/JSON
	// requests to them as it does for unary methods and leaves the response
	// to Handler (stream.go). Such a transcoder is for HTTP/JSON only.
	ServerStreamsAsUnary bool
}

// Transcoder returns an http.Handler serving HTTP/JSON (from the bindings),
// gRPC-Web, Connect (unary and streaming, JSON or proto) and gRPC over HTTP/2
// for the API's services, by calling opts.Handler in gRPC.
func (a *API) Transcoder(opts Options) (http.Handler, error) {
	schemas, resolver := a.services, a.resolver
	if opts.ServerStreamsAsUnary {
		schemas, resolver = a.rest.services, a.rest.resolver
	}
	svcOpts := []vanguard.ServiceOption{
		vanguard.WithTargetProtocols(vanguard.ProtocolGRPC),
		vanguard.WithTargetCodecs(vanguard.CodecProto),
		vanguard.WithNoTargetCompression(),
		vanguard.WithTypeResolver(resolver),
	}
	if opts.MaxMessageBytes > 0 {
		svcOpts = append(svcOpts, vanguard.WithMaxMessageBufferBytes(uint32(min(opts.MaxMessageBytes, 1<<32-1))))
	}
	services := make([]*vanguard.Service, len(schemas))
	for i, sd := range schemas {
		services[i] = vanguard.NewServiceWithSchema(sd, opts.Handler)
	}
	topts := []vanguard.TranscoderOption{
		vanguard.WithDefaultServiceOptions(svcOpts...),
		vanguard.WithCodec(func(res vanguard.TypeResolver) vanguard.Codec { return newJSONCodec(res) }),
	}
	if opts.NotFound != nil {
		topts = append(topts, vanguard.WithUnknownHandler(opts.NotFound))
	}
	t, err := vanguard.NewTranscoder(services, topts...)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// EmptyVariable reports the first path variable left empty by a request
// with this HTTP method and escaped path, naming it by its field path. Only
// a path with an empty segment can leave a variable empty; other paths
// return at once.
func (a *API) EmptyVariable(httpMethod, path string) (field string, ok bool) {
	if !strings.Contains(path, "//") && !strings.HasSuffix(path, "/") && !strings.Contains(path, "/:") {
		return "", false
	}
	for i := len(a.bindings) - 1; i >= 0; i-- {
		b := a.bindings[i]
		captures, ok := b.matches(httpMethod, path)
		if !ok {
			continue
		}
		for j, c := range captures {
			if c == "" {
				return strings.Join(b.tmpl.vars[j].fieldPath, "."), true
			}
		}
	}
	return "", false
}

// IgnoresBody reports whether a request with this HTTP method and escaped
// path is bound to a rule without a body, whose body is then ignored
// (HTTP-5; the transcoder would reject it). When a rule with a body matches
// the path too, the body is kept.
func (a *API) IgnoresBody(httpMethod, path string) bool {
	matches := func(b *binding) bool {
		_, ok := b.matches(httpMethod, path)
		return ok
	}
	found := false
	for _, b := range a.bodyless {
		if matches(b) {
			found = true
			break
		}
	}
	if !found {
		return false
	}
	for _, b := range a.bindings {
		if b.rule.GetBody() != "" && matches(b) {
			return false
		}
	}
	return true
}

// QueryFilter says which query parameters of a request with this HTTP
// method and escaped path the reference proxy would not apply (HTTP-5):
// all of them when the rule takes the whole body (body "*"), and otherwise
// those naming a field a path variable sets, since the path wins. The
// transcoder applies query parameters last, so they must be removed before.
func (a *API) QueryFilter(httpMethod, path string) (dropAll bool, drop []string) {
	matched, allWholeBody := false, true
	for _, b := range a.bindings {
		if _, ok := b.matches(httpMethod, path); !ok {
			continue
		}
		matched = true
		allWholeBody = allWholeBody && b.rule.GetBody() == "*"
		drop = append(drop, b.pathFields...)
	}
	if matched && allWholeBody {
		return true, nil
	}
	return false, drop
}

// QueryParamConflict is two query parameters that name the same field, one
// by its JSON name and one by its proto name (or mixing them along a path).
type QueryParamConflict struct {
	First, Second string // the parameters as sent, in sorted order
	Field         string // the field path by proto names
}

// QueryConflict finds two query parameters of a request that set the same
// field under different spellings ("display_name" and "displayName"). The
// transcoder accepts both spellings but applies parameters in map order, so
// the winner would be random; such a request is refused instead. Parameters
// that name no field are left to the transcoder, which reports them.
func (a *API) QueryConflict(httpMethod, path string, q url.Values) (QueryParamConflict, bool) {
	if len(q) < 2 {
		return QueryParamConflict{}, false
	}
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, b := range a.bindings {
		if _, ok := b.matches(httpMethod, path); !ok {
			continue
		}
		seen := make(map[string]string, len(keys))
		for _, k := range keys {
			field, ok := canonicalFieldPath(b.method.Input(), k)
			if !ok {
				continue
			}
			if first, dup := seen[field]; dup {
				return QueryParamConflict{First: first, Second: k, Field: field}, true
			}
			seen[field] = k
		}
	}
	return QueryParamConflict{}, false
}

// canonicalFieldPath resolves a dotted query parameter name, each segment a
// proto or JSON field name, to the field path by proto names.
func canonicalFieldPath(md protoreflect.MessageDescriptor, name string) (string, bool) {
	var b strings.Builder
	for i, seg := range strings.Split(name, ".") {
		if md == nil {
			return "", false
		}
		fd := md.Fields().ByName(protoreflect.Name(seg))
		if fd == nil {
			fd = md.Fields().ByJSONName(seg)
		}
		if fd == nil {
			return "", false
		}
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(string(fd.Name()))
		md = fd.Message()
	}
	return b.String(), true
}

// typeResolver resolves the user's types from their own descriptors first
// and falls back to the types linked into the proxy (for the contents of
// google.protobuf.Any, such as error details).
type typeResolver struct {
	local *dynamicpb.Types
}

func (r *typeResolver) FindMessageByName(name protoreflect.FullName) (protoreflect.MessageType, error) {
	if mt, err := r.local.FindMessageByName(name); err == nil {
		return mt, nil
	}
	return protoregistry.GlobalTypes.FindMessageByName(name)
}

func (r *typeResolver) FindMessageByURL(url string) (protoreflect.MessageType, error) {
	if mt, err := r.local.FindMessageByURL(url); err == nil {
		return mt, nil
	}
	return protoregistry.GlobalTypes.FindMessageByURL(url)
}

func (r *typeResolver) FindExtensionByName(name protoreflect.FullName) (protoreflect.ExtensionType, error) {
	if xt, err := r.local.FindExtensionByName(name); err == nil {
		return xt, nil
	}
	return protoregistry.GlobalTypes.FindExtensionByName(name)
}

func (r *typeResolver) FindExtensionByNumber(message protoreflect.FullName, field protoreflect.FieldNumber) (protoreflect.ExtensionType, error) {
	if xt, err := r.local.FindExtensionByNumber(message, field); err == nil {
		return xt, nil
	}
	return protoregistry.GlobalTypes.FindExtensionByNumber(message, field)
}

// jsonCodec is the proto3 JSON mapping as the reference proxy prints it
// (HTTP-7): lowerCamelCase names, default-valued scalars and empty lists
// included, unset messages omitted, no whitespace. Input accepts JSON and
// original field names and rejects unknown fields (HTTP-5).
type jsonCodec struct {
	vanguard.JSONCodec
}

func newJSONCodec(res vanguard.TypeResolver) *jsonCodec {
	return &jsonCodec{JSONCodec: vanguard.JSONCodec{
		MarshalOptions:   protojson.MarshalOptions{Resolver: res, EmitDefaultValues: true},
		UnmarshalOptions: protojson.UnmarshalOptions{Resolver: res},
	}}
}

// MarshalAppend marshals msg without insignificant whitespace: protojson
// may add spaces after separators, and clients compare bodies exactly.
func (c *jsonCodec) MarshalAppend(base []byte, msg proto.Message) ([]byte, error) {
	out, err := c.JSONCodec.MarshalAppend(base, msg)
	if err != nil {
		return nil, err
	}
	return compactFrom(out, len(base))
}

// MarshalAppendField marshals one field of msg, for response_body.
func (c *jsonCodec) MarshalAppendField(base []byte, msg proto.Message, field protoreflect.FieldDescriptor) ([]byte, error) {
	out, err := c.JSONCodec.MarshalAppendField(base, msg, field)
	if err != nil {
		return nil, err
	}
	return compactFrom(out, len(base))
}

// Unmarshal decodes a request body; a body that is not valid JSON for the
// message is the client's mistake (INVALID_ARGUMENT).
func (c *jsonCodec) Unmarshal(data []byte, msg proto.Message) error {
	if err := c.JSONCodec.Unmarshal(data, msg); err != nil {
		return bodyError(err)
	}
	return nil
}

// UnmarshalField decodes a request body bound to one field (body: "field").
func (c *jsonCodec) UnmarshalField(data []byte, msg proto.Message, field protoreflect.FieldDescriptor) error {
	if err := c.JSONCodec.UnmarshalField(data, msg, field); err != nil {
		return bodyError(err)
	}
	return nil
}

// bodyError is a JSON decoding error as the client sees it: INVALID_ARGUMENT
// with protojson's text, less its "proto:" prefix, which protojson writes
// with a space or a no-break space depending on the build.
func bodyError(err error) error {
	msg := strings.TrimLeft(strings.TrimPrefix(err.Error(), "proto:"), " \u00a0")
	return connect.NewError(connect.CodeInvalidArgument, errors.New("invalid JSON body: "+msg))
}

// compactFrom removes insignificant whitespace from b[start:].
func compactFrom(b []byte, start int) ([]byte, error) {
	if bytes.IndexByte(b[start:], ' ') < 0 {
		return b, nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b[start:]); err != nil {
		return nil, err
	}
	return append(b[:start], buf.Bytes()...), nil
}
