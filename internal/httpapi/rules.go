package httpapi

import (
	"fmt"
	"net/http"
	"strings"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// binding is one validated HTTP binding of a method: the primary rule or
// one of its additional bindings.
type binding struct {
	method     protoreflect.MethodDescriptor
	httpMethod string // GET, PUT, POST, DELETE, PATCH, or "*" for custom kind "*"
	tmpl       *template
	// rule is the binding alone, without additional bindings.
	rule *annotations.HttpRule
	// pathFields are the field paths the path variables set, each by its
	// proto names and by its JSON names ("inner.id", "inner.id").
	pathFields []string
}

// matches reports whether a request with this HTTP method and escaped path
// is bound by b, and returns the path variables' captured values.
func (b *binding) matches(httpMethod, path string) ([]string, bool) {
	if b.httpMethod != "*" && b.httpMethod != httpMethod {
		return nil, false
	}
	return b.tmpl.match(path)
}

// configError is a rule the reference proxy rejects at start-up; its text
// carries the reference's "HTTP API Config: " prefix.
func configError(format string, args ...any) error {
	return fmt.Errorf("HTTP API Config: "+format, args...)
}

// httpExtensionTypes resolves only google.api.http, so that method options
// can be decoded the same way whether the extension arrived resolved, as a
// dynamic message or as unknown fields.
var httpExtensionTypes = func() *protoregistry.Types {
	t := new(protoregistry.Types)
	if err := t.RegisterExtension(annotations.E_Http); err != nil {
		panic(err)
	}
	return t
}()

// splitOptions returns the google.api.http rule of a method's options (nil
// if it has none) and a copy of the options without it.
func splitOptions(opts *descriptorpb.MethodOptions) (*annotations.HttpRule, *descriptorpb.MethodOptions, error) {
	if opts == nil {
		return nil, nil, nil
	}
	b, err := proto.Marshal(opts)
	if err != nil {
		return nil, nil, fmt.Errorf("encode method options: %w", err)
	}
	rest := new(descriptorpb.MethodOptions)
	if err := (proto.UnmarshalOptions{Resolver: httpExtensionTypes}).Unmarshal(b, rest); err != nil {
		return nil, nil, fmt.Errorf("decode the google.api.http option: %w", err)
	}
	if !proto.HasExtension(rest, annotations.E_Http) {
		return nil, rest, nil
	}
	rule := proto.GetExtension(rest, annotations.E_Http).(*annotations.HttpRule)
	proto.ClearExtension(rest, annotations.E_Http)
	return rule, rest, nil
}

// defaultRule is the binding of a method without a rule (HTTP-1).
func defaultRule(md protoreflect.MethodDescriptor) *annotations.HttpRule {
	return &annotations.HttpRule{
		Selector: string(md.FullName()),
		Pattern:  &annotations.HttpRule_Post{Post: "/" + string(md.Parent().FullName()) + "/" + string(md.Name())},
		Body:     "*",
	}
}

// methodBindings validates a method's rule and returns its primary binding
// followed by its additional bindings, in declaration order. The checks and
// their messages are the reference proxy's (BEHAVIOR.md HTTP-2), except that
// nested field paths are accepted in path variables.
func methodBindings(md protoreflect.MethodDescriptor, rule *annotations.HttpRule) ([]*binding, error) {
	for _, extra := range rule.GetAdditionalBindings() {
		if len(extra.GetAdditionalBindings()) > 0 {
			return nil, configError("Only one level of additionalBindings supported, but [%s] has more than one!", ruleText(rule))
		}
	}
	all := append([]*annotations.HttpRule{rule}, rule.GetAdditionalBindings()...)
	out := make([]*binding, 0, len(all))
	for _, r := range all {
		b, err := checkBinding(md, r)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

func checkBinding(md protoreflect.MethodDescriptor, rule *annotations.HttpRule) (*binding, error) {
	if sel := rule.GetSelector(); sel != "" && sel != string(md.FullName()) {
		return nil, configError("Rule selector [%s] must be empty or [%s]", sel, md.FullName())
	}
	var httpMethod, path string
	switch p := rule.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		httpMethod, path = http.MethodGet, p.Get
	case *annotations.HttpRule_Put:
		httpMethod, path = http.MethodPut, p.Put
	case *annotations.HttpRule_Post:
		httpMethod, path = http.MethodPost, p.Post
	case *annotations.HttpRule_Delete:
		httpMethod, path = http.MethodDelete, p.Delete
	case *annotations.HttpRule_Patch:
		httpMethod, path = http.MethodPatch, p.Patch
	case *annotations.HttpRule_Custom:
		if k := p.Custom.GetKind(); k != "*" {
			return nil, configError("Only Custom patterns with [*] kind supported but [%s] found!", k)
		}
		httpMethod, path = "*", p.Custom.GetPath()
	default:
		return nil, configError("Pattern missing for rule [%s]!", ruleText(rule))
	}
	tmpl, err := parseTemplate(path)
	if err != nil {
		return nil, err
	}
	for _, v := range tmpl.vars {
		if err := checkPathVariable(md, v.fieldPath); err != nil {
			return nil, err
		}
	}
	if err := checkBody(md, rule.GetBody()); err != nil {
		return nil, err
	}
	if rb := rule.GetResponseBody(); rb != "" && md.Output().Fields().ByName(protoreflect.Name(rb)) == nil {
		return nil, configError("Response body field [%s] does not exist on type [%s]", rb, md.Output().FullName())
	}
	single := proto.CloneOf(rule)
	single.AdditionalBindings = nil
	single.Selector = string(md.FullName())
	b := &binding{method: md, httpMethod: httpMethod, tmpl: tmpl, rule: single}
	for _, v := range tmpl.vars {
		b.pathFields = append(b.pathFields, strings.Join(v.fieldPath, "."), jsonPath(md.Input(), v.fieldPath))
	}
	return b, nil
}

// checkPathVariable checks the field a path variable names: every element
// but the last a singular message field, the last a singular scalar.
func checkPathVariable(md protoreflect.MethodDescriptor, path []string) error {
	msg := md.Input()
	for i, name := range path {
		fd := msg.Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			return configError("Unknown field name [%s] in type [%s] reference in path template for method [%s]", name, msg.FullName(), md.FullName())
		}
		if i < len(path)-1 {
			if fd.Message() == nil || fd.IsList() || fd.IsMap() {
				return configError("Field [%s] in path variable [%s] of method [%s] must be a singular message field to hold [%s]",
					fd.FullName(), strings.Join(path, "."), md.FullName(), path[i+1])
			}
			msg = fd.Message()
			continue
		}
		switch {
		case fd.IsMap():
			return configError("Map parameters [%s] are not allowed as path variables", fd.FullName())
		case fd.IsList():
			return configError("Repeated parameters [%s] are not allowed as path variables", fd.FullName())
		case fd.Kind() == protoreflect.EnumKind:
			return configError("Enum path parameters not supported! (field [%s])", fd.FullName())
		case fd.Message() != nil:
			return configError("Message path parameters not supported! (field [%s])", fd.FullName())
		}
	}
	return nil
}

// jsonPath spells a checked field path with JSON names.
func jsonPath(msg protoreflect.MessageDescriptor, path []string) string {
	names := make([]string, len(path))
	for i, name := range path {
		fd := msg.Fields().ByName(protoreflect.Name(name))
		names[i] = fd.JSONName()
		msg = fd.Message()
	}
	return strings.Join(names, ".")
}

func checkBody(md protoreflect.MethodDescriptor, body string) error {
	if body == "" || body == "*" {
		return nil
	}
	fd := md.Input().Fields().ByName(protoreflect.Name(body))
	switch {
	case fd == nil:
		return configError("Body configured to [%s] but that field does not exist on input type.", body)
	case fd.IsList() || fd.IsMap():
		return configError("Body configured to [%s] but that field is a repeated field.", body)
	}
	return nil
}

// ruleText prints a rule on one line for error messages, in compact JSON
// (the text format varies its spacing from build to build).
func ruleText(rule *annotations.HttpRule) string {
	b, err := protojson.Marshal(rule)
	if err != nil {
		return fmt.Sprint(rule)
	}
	if b, err = compactFrom(b, 0); err != nil {
		return fmt.Sprint(rule)
	}
	return string(b)
}
