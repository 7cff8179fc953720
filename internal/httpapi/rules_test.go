package httpapi

import (
	"net/http"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/emptypb"
)

// The test descriptors: one file, package "test", whose service S has a
// method "fail" taking Msg (or Empty) with the rule under test.

func fieldProto(name string, number int32, typ descriptorpb.FieldDescriptorProto_Type, typeName string, repeated bool) *descriptorpb.FieldDescriptorProto {
	f := &descriptorpb.FieldDescriptorProto{
		Name:   proto.String(name),
		Number: proto.Int32(number),
		Type:   typ.Enum(),
		Label:  descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
	}
	if typeName != "" {
		f.TypeName = proto.String(typeName)
	}
	if repeated {
		f.Label = descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
	}
	return f
}

const (
	tString  = descriptorpb.FieldDescriptorProto_TYPE_STRING
	tInt64   = descriptorpb.FieldDescriptorProto_TYPE_INT64
	tEnum    = descriptorpb.FieldDescriptorProto_TYPE_ENUM
	tMessage = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE
)

// testFiles returns the descriptor set with method fail(input) → output
// carrying rule (nil: no rule), plus a method "other" without a rule.
func testFiles(input, output string, rule *annotations.HttpRule) []*descriptorpb.FileDescriptorProto {
	var opts *descriptorpb.MethodOptions
	if rule != nil {
		opts = &descriptorpb.MethodOptions{}
		proto.SetExtension(opts, annotations.E_Http, rule)
	}
	f := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("test/test.proto"),
		Package:    proto.String("test"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"google/protobuf/empty.proto"},
		MessageType: []*descriptorpb.DescriptorProto{
			{
				Name: proto.String("Msg"),
				Field: []*descriptorpb.FieldDescriptorProto{
					fieldProto("name", 1, tString, "", false),
					fieldProto("count", 2, tInt64, "", false),
					fieldProto("illegal_repeated", 3, tString, "", true),
					fieldProto("kind", 4, tEnum, ".test.Kind", false),
					fieldProto("inner", 5, tMessage, ".test.Inner", false),
					fieldProto("labels", 6, tMessage, ".test.Msg.LabelsEntry", true),
					fieldProto("inners", 7, tMessage, ".test.Inner", true),
				},
				NestedType: []*descriptorpb.DescriptorProto{{
					Name: proto.String("LabelsEntry"),
					Field: []*descriptorpb.FieldDescriptorProto{
						fieldProto("key", 1, tString, "", false),
						fieldProto("value", 2, tString, "", false),
					},
					Options: &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)},
				}},
			},
			{
				Name: proto.String("Inner"),
				Field: []*descriptorpb.FieldDescriptorProto{
					fieldProto("id", 1, tString, "", false),
					fieldProto("deeper", 2, tMessage, ".test.Inner", false),
				},
			},
		},
		EnumType: []*descriptorpb.EnumDescriptorProto{{
			Name:  proto.String("Kind"),
			Value: []*descriptorpb.EnumValueDescriptorProto{{Name: proto.String("KIND_UNSPECIFIED"), Number: proto.Int32(0)}},
		}},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("S"),
			Method: []*descriptorpb.MethodDescriptorProto{
				{Name: proto.String("fail"), InputType: proto.String(input), OutputType: proto.String(output), Options: opts},
				{Name: proto.String("other"), InputType: proto.String(".test.Msg"), OutputType: proto.String(".test.Msg")},
			},
		}},
	}
	return []*descriptorpb.FileDescriptorProto{f, protodesc.ToFileDescriptorProto(emptypb.File_google_protobuf_empty_proto)}
}

const empty = ".google.protobuf.Empty"

func get(path string) *annotations.HttpRule {
	return &annotations.HttpRule{Pattern: &annotations.HttpRule_Get{Get: path}}
}

func post(path, body string) *annotations.HttpRule {
	return &annotations.HttpRule{Pattern: &annotations.HttpRule_Post{Post: path}, Body: body}
}

func custom(kind, path string) *annotations.HttpRule {
	return &annotations.HttpRule{Pattern: &annotations.HttpRule_Custom{Custom: &annotations.CustomHttpPattern{Kind: kind, Path: path}}}
}

func with(r *annotations.HttpRule, edit func(*annotations.HttpRule)) *annotations.HttpRule {
	edit(r)
	return r
}

// TestIllegalRules is the reference proxy's IllegalHttpConfig0..9 and the
// other configurations it rejects (BEHAVIOR.md HTTP-2), plus what the
// transcoder cannot serve. Each must fail with a message naming the method.
func TestIllegalRules(t *testing.T) {
	const prefix = "invalid google.api.http rule of method [test.S.fail]: "
	for _, tc := range []struct {
		name          string
		input, output string
		rule          *annotations.HttpRule
		want          string // the message after prefix
	}{
		{"0 empty pattern", empty, empty, &annotations.HttpRule{},
			"HTTP API Config: Pattern missing for rule [{}]!"},
		{"1 wrong selector", empty, empty, with(get("/foo"), func(r *annotations.HttpRule) { r.Selector = "wrongSelector" }),
			"HTTP API Config: Rule selector [wrongSelector] must be empty or [test.S.fail]"},
		{"2 no initial slash", empty, empty, post("no/initial/slash", ""),
			"Template must start with a slash at character 1 of 'no/initial/slash'"},
		{"3 repeated path variable", ".test.Msg", empty, post("/{illegal_repeated}", ""),
			"HTTP API Config: Repeated parameters [test.Msg.illegal_repeated] are not allowed as path variables"},
		{"4 duplicate variable", ".test.Msg", empty, post("/{name}/{name}", ""),
			"Duplicate path in template at character 10 of '/{name}/{name}'"},
		{"5 custom kind", empty, empty, custom("not currently supported", "/foo"),
			"HTTP API Config: Only Custom patterns with [*] kind supported but [not currently supported] found!"},
		{"6 body field missing", empty, empty, with(get("/foo"), func(r *annotations.HttpRule) { r.Body = "not-available" }),
			"HTTP API Config: Body configured to [not-available] but that field does not exist on input type."},
		{"7 body field repeated", ".test.Msg", empty, with(get("/foo"), func(r *annotations.HttpRule) { r.Body = "illegal_repeated" }),
			"HTTP API Config: Body configured to [illegal_repeated] but that field is a repeated field."},
		{"8 response body missing", empty, empty, with(get("/foo"), func(r *annotations.HttpRule) { r.ResponseBody = "not-available" }),
			"HTTP API Config: Response body field [not-available] does not exist on type [google.protobuf.Empty]"},
		{"9 nested additional bindings", empty, empty, with(get("/foo"), func(r *annotations.HttpRule) {
			r.AdditionalBindings = []*annotations.HttpRule{with(get("/bar"), func(r *annotations.HttpRule) {
				r.AdditionalBindings = []*annotations.HttpRule{get("/baz")}
			})}
		}), "HTTP API Config: Only one level of additionalBindings supported, but ["},
		{"unknown path field", ".test.Msg", empty, get("/{nope}"),
			"HTTP API Config: Unknown field name [nope] in type [test.Msg] reference in path template for method [test.S.fail]"},
		{"unknown nested path field", ".test.Msg", empty, get("/{inner.nope}"),
			"HTTP API Config: Unknown field name [nope] in type [test.Inner] reference in path template for method [test.S.fail]"},
		{"path through a scalar", ".test.Msg", empty, get("/{name.id}"),
			"HTTP API Config: Field [test.Msg.name] in path variable [name.id] of method [test.S.fail] must be a singular message field to hold [id]"},
		{"path through a repeated message", ".test.Msg", empty, get("/{inners.id}"),
			"HTTP API Config: Field [test.Msg.inners] in path variable [inners.id] of method [test.S.fail] must be a singular message field to hold [id]"},
		{"map path variable", ".test.Msg", empty, get("/{labels}"),
			"HTTP API Config: Map parameters [test.Msg.labels] are not allowed as path variables"},
		{"enum path variable", ".test.Msg", empty, get("/{kind}"),
			"HTTP API Config: Enum path parameters not supported! (field [test.Msg.kind])"},
		{"message path variable", ".test.Msg", empty, get("/{inner}"),
			"HTTP API Config: Message path parameters not supported! (field [test.Msg.inner])"},
		{"additional binding with a bad selector", empty, empty, with(get("/foo"), func(r *annotations.HttpRule) {
			r.AdditionalBindings = []*annotations.HttpRule{with(get("/bar"), func(r *annotations.HttpRule) { r.Selector = "x" })}
		}), "HTTP API Config: Rule selector [x] must be empty or [test.S.fail]"},
		{"additional binding with an empty pattern", empty, empty, with(get("/foo"), func(r *annotations.HttpRule) {
			r.AdditionalBindings = []*annotations.HttpRule{{Body: "*"}}
		}), `HTTP API Config: Pattern missing for rule [{"body":"*"}]!`},
		{"double wildcard not last", empty, empty, get("/a/**/b"),
			"Multi segment matchers (**) may only be in the last position of the template at character 4 of '/a/**/b'"},
		{"nested variable", ".test.Msg", empty, get("/{name=a/{count}}"),
			"Variable segments may not be nested at character 10 of '/{name=a/{count}}'"},
		{"unclosed variable", ".test.Msg", empty, get("/{name"),
			"Unclosed variable or unexpected character at end of input of '/{name'"},
		{"variable not an identifier", ".test.Msg", empty, get("/{1name}"),
			"Expected identifier first letter, but got '1' at character 3 of '/{1name}'"},
		{"empty segment", empty, empty, get("/a//b"),
			"Expected a path segment at character 4 of '/a//b'"},
		{"root only", empty, empty, get("/"),
			"Expected a path segment at end of input of '/'"},
		{"reserved character in a literal", empty, empty, get("/a@b"),
			"Expected '/', ':', path literal character, or end of input at character 3 of '/a@b'"},
		{"empty verb", empty, empty, get("/a:"),
			"Expected a verb after ':' at end of input of '/a:'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(testFiles(tc.input, tc.output, tc.rule), []string{"test.S"})
			if err == nil {
				t.Fatalf("Compile accepted %s", ruleText(tc.rule))
			}
			if !strings.HasPrefix(err.Error(), prefix+tc.want) {
				t.Fatalf("error\n got: %v\nwant: %s%s", err, prefix, tc.want)
			}
			if _, err := Compile(testFiles(tc.input, tc.output, tc.rule), []string{"test.S"}); err == nil {
				t.Fatal("Validate accepted what Compile rejected")
			}
		})
	}
}

// TestLegalRules compiles every rule form the proxy serves and checks the
// bindings it keeps.
func TestLegalRules(t *testing.T) {
	for _, tc := range []struct {
		name string
		rule *annotations.HttpRule
		want []string // HTTP method and template key of test.S.fail's bindings
	}{
		{"no rule: the default binding", nil, []string{"POST /test.S/fail"}},
		{"get", get("/v1/things/{name}"), []string{"GET /v1/things/*"}},
		{"put", &annotations.HttpRule{Pattern: &annotations.HttpRule_Put{Put: "/v1/{name}"}, Body: "*"}, []string{"PUT /v1/*"}},
		{"post with body field", post("/v1/{name}:create", "inner"), []string{"POST /v1/*:create"}},
		{"delete", &annotations.HttpRule{Pattern: &annotations.HttpRule_Delete{Delete: "/v1/{name}"}}, []string{"DELETE /v1/*"}},
		{"patch", &annotations.HttpRule{Pattern: &annotations.HttpRule_Patch{Patch: "/v1/{name}"}, Body: "inner"}, []string{"PATCH /v1/*"}},
		{"custom any method", custom("*", "/any/{name}"), []string{"* /any/*"}},
		{"custom verb", post("/v1/{name}:cancel", "*"), []string{"POST /v1/*:cancel"}},
		{"nested field path", get("/v1/{inner.deeper.id}"), []string{"GET /v1/*"}},
		{"variable with segments", get("/v1/{name=shelves/*/books/*}"), []string{"GET /v1/shelves/*/books/*"}},
		{"rest of path", get("/files/{name=**}"), []string{"GET /files/**"}},
		{"wildcards", get("/a/*/b/**"), []string{"GET /a/*/b/**"}},
		{"integer variable", get("/count/{count}"), []string{"GET /count/*"}},
		{"response body", with(get("/v1/{name}/inner"), func(r *annotations.HttpRule) { r.ResponseBody = "inner" }), []string{"GET /v1/*/inner"}},
		{"repeated response body", with(get("/v1/{name}/all"), func(r *annotations.HttpRule) { r.ResponseBody = "inners" }), []string{"GET /v1/*/all"}},
		{"selector equal to the method", with(get("/x"), func(r *annotations.HttpRule) { r.Selector = "test.S.fail" }), []string{"GET /x"}},
		{"additional bindings", with(get("/v1/{name}"), func(r *annotations.HttpRule) {
			r.AdditionalBindings = []*annotations.HttpRule{post("/v2/{name}", "*"), get("/v3/{inner.id}")}
		}), []string{"GET /v1/*", "POST /v2/*", "GET /v3/*"}},
		{"colliding additional binding: the last declared wins", with(get("/v1/{name}"), func(r *annotations.HttpRule) {
			r.AdditionalBindings = []*annotations.HttpRule{with(get("/v1/{count}"), func(r *annotations.HttpRule) { r.ResponseBody = "name" })}
		}), []string{"GET /v1/*"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api, err := Compile(testFiles(".test.Msg", ".test.Msg", tc.rule), []string{"test.S"})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, b := range api.bindings {
				if b.method.Name() == "fail" {
					got = append(got, b.httpMethod+" "+b.tmpl.key())
				}
			}
			if strings.Join(got, ", ") != strings.Join(tc.want, ", ") {
				t.Fatalf("bindings %q, want %q", got, tc.want)
			}
			if _, err := api.Transcoder(Options{Handler: http.NotFoundHandler()}); err != nil {
				t.Fatalf("Transcoder: %v", err)
			}
		})
	}
}

// TestCollidingMethods: when two methods bind the same route, the later
// declared keeps it (HTTP-1).
func TestCollidingMethods(t *testing.T) {
	files := testFiles(".test.Msg", ".test.Msg", get("/shared/{name}"))
	opts := &descriptorpb.MethodOptions{}
	proto.SetExtension(opts, annotations.E_Http, get("/shared/{count}"))
	files[0].Service[0].Method[1].Options = opts
	api, err := Compile(files, []string{"test.S"})
	if err != nil {
		t.Fatal(err)
	}
	if len(api.bindings) != 1 || api.bindings[0].method.Name() != "other" {
		t.Fatalf("bindings %v, want only other's", api.bindings)
	}
}

// TestUnresolvedExtension: a rule that arrived as unknown fields of the
// method options (the set was decoded without google.api.http linked in) is
// read the same way.
func TestUnresolvedExtension(t *testing.T) {
	files := testFiles(".test.Msg", ".test.Msg", get("/v1/{name}"))
	b, err := proto.Marshal(files[0].Service[0].Method[0].Options)
	if err != nil {
		t.Fatal(err)
	}
	raw := &descriptorpb.MethodOptions{}
	if err := (proto.UnmarshalOptions{Resolver: emptyResolver{}}).Unmarshal(b, raw); err != nil {
		t.Fatal(err)
	}
	if proto.HasExtension(raw, annotations.E_Http) || len(raw.ProtoReflect().GetUnknown()) == 0 {
		t.Fatal("the test needs the rule as unknown fields")
	}
	files[0].Service[0].Method[0].Options = raw
	api, err := Compile(files, []string{"test.S"})
	if err != nil {
		t.Fatal(err)
	}
	if got := api.bindings[0].httpMethod + " " + api.bindings[0].tmpl.key(); got != "GET /v1/*" {
		t.Fatalf("first binding %q, want GET /v1/*", got)
	}
}

// emptyResolver resolves no extension.
type emptyResolver struct{}

func (emptyResolver) FindExtensionByName(protoreflect.FullName) (protoreflect.ExtensionType, error) {
	return nil, protoregistry.NotFound
}

func (emptyResolver) FindExtensionByNumber(protoreflect.FullName, protoreflect.FieldNumber) (protoreflect.ExtensionType, error) {
	return nil, protoregistry.NotFound
}
