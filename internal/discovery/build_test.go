package discovery

import (
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/cloudstate-go/cloudstate/protocol"
)

func TestBuildHappyPath(t *testing.T) {
	// A file listed before its imports, and the imports in reverse order.
	files := cartFiles()
	spec := newSpec(t, files, entity(EventSourced, "com.example.cart.ShoppingCart", "shopping-cart"))
	spec.Entities[0].PassivationStrategy = &protocol.EntityPassivationStrategy{
		Strategy: &protocol.EntityPassivationStrategy_Timeout{Timeout: &protocol.TimeoutPassivationStrategy{Timeout: 1500}},
	}

	model, err := Build(spec, BuildOptions{SupportedTypes: allTypes, CompatibilityCheck: true})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	if model.Spec != spec {
		t.Errorf("Spec is not the spec given")
	}
	if got, want := model.ServiceNames, []string{"com.example.cart.ShoppingCart"}; !slices.Equal(got, want) {
		t.Errorf("ServiceNames = %v, want %v", got, want)
	}
	assertDependencyOrder(t, model.FileProtos)
	if len(model.FileProtos) != 4 {
		t.Errorf("FileProtos has %d files, want 4", len(model.FileProtos))
	}
	if _, err := model.Files.FindFileByPath("example/cart.proto"); err != nil {
		t.Errorf("Files lacks the user file: %v", err)
	}

	svc := model.Services["com.example.cart.ShoppingCart"]
	if svc == nil {
		t.Fatalf("service missing from Services: %v", model.Services)
	}
	if svc.EntityType != EventSourced || svc.PersistenceID != "shopping-cart" || svc.Passivation != 1500*time.Millisecond {
		t.Errorf("service = {%s %s %v}, want {%s shopping-cart 1.5s}", svc.EntityType, svc.PersistenceID, svc.Passivation, EventSourced)
	}
	if svc.Desc == nil || svc.Desc.FullName() != "com.example.cart.ShoppingCart" {
		t.Errorf("service Desc = %v", svc.Desc)
	}

	m := model.Lookup("com.example.cart.ShoppingCart", "AddItem")
	if m == nil {
		t.Fatalf("Lookup(AddItem) = nil")
	}
	if m.Service != svc || m.Name != "AddItem" || m.Path != "/com.example.cart.ShoppingCart/AddItem" ||
		m.InputTypeURL != "type.googleapis.com/com.example.cart.AddLineItem" ||
		m.OutputTypeURL != "type.googleapis.com/google.protobuf.Empty" ||
		m.ClientStreaming || m.ServerStreaming || m.Desc.Name() != "AddItem" {
		t.Errorf("method = %+v", m)
	}
	if got := keyNames(m.KeyFields); !slices.Equal(got, []string{"user_id"}) {
		t.Errorf("AddItem KeyFields = %v, want [user_id]", got)
	}
	if model.Lookup("com.example.cart.ShoppingCart", "Nope") != nil || model.Lookup("Nope", "AddItem") != nil {
		t.Errorf("Lookup of an unknown method returned a method")
	}
}

func TestBuildServices(t *testing.T) {
	keys := userFile("example/keys.proto", "com.example.keys",
		[]string{"cloudstate/entity_key.proto", "cloudstate/legacy_entity_key.proto"},
		[]*descriptorpb.DescriptorProto{
			// Declaration order differs from field-number order: keys follow declarations.
			message("Multi",
				field("zone", 3, tString, key),
				field("note", 1, tString),
				field("user", 2, descriptorpb.FieldDescriptorProto_TYPE_SINT64, legacyKey),
				field("shard", 4, descriptorpb.FieldDescriptorProto_TYPE_BOOL, key)),
			message("Legacy", field("id", 1, tString, legacyKey)),
			message("Plain", field("text", 1, tString)),
		},
		service("Counter", method("Add", ".com.example.keys.Multi", ".com.example.keys.Plain", false, false)),
		service("Presence", method("Watch", ".com.example.keys.Legacy", ".com.example.keys.Plain", false, true)),
		service("Greeter",
			method("Unary", ".com.example.keys.Plain", ".com.example.keys.Plain", false, false),
			method("Bidi", ".com.example.keys.Plain", ".com.example.keys.Plain", true, true)),
		service("Store", method("Put", ".com.example.keys.Legacy", ".com.example.keys.Plain", false, false)))
	files := []*descriptorpb.FileDescriptorProto{keys, legacyKeyFileProto(), entityKeyFileProto(), descriptorFileProto()}
	spec := newSpec(t, files,
		entity(ValueEntity, "com.example.keys.Store", "things"),
		entity(CRDT, "com.example.keys.Presence", "presence"),
		entity(EventSourced, "com.example.keys.Counter", "things"), // same id as the value entity: a different store
		entity(Action, "com.example.keys.Greeter", ""),
	)
	spec.Entities[0].PassivationStrategy = &protocol.EntityPassivationStrategy{
		Strategy: &protocol.EntityPassivationStrategy_Timeout{Timeout: &protocol.TimeoutPassivationStrategy{Timeout: -5}},
	}

	model, err := Build(spec, BuildOptions{SupportedTypes: allTypes, CompatibilityCheck: true})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	wantNames := []string{"com.example.keys.Counter", "com.example.keys.Greeter", "com.example.keys.Presence", "com.example.keys.Store"}
	if !slices.Equal(model.ServiceNames, wantNames) {
		t.Errorf("ServiceNames = %v, want %v", model.ServiceNames, wantNames)
	}
	if p := model.Services["com.example.keys.Store"].Passivation; p != 0 {
		t.Errorf("negative passivation timeout gave %v, want 0", p)
	}
	if p := model.Services["com.example.keys.Presence"].Passivation; p != 0 {
		t.Errorf("no passivation strategy gave %v, want 0", p)
	}

	cases := []struct {
		service, method string
		keys            []string
		server, client  bool
	}{
		{"com.example.keys.Counter", "Add", []string{"zone", "user", "shard"}, false, false},
		{"com.example.keys.Presence", "Watch", []string{"id"}, true, false},
		{"com.example.keys.Store", "Put", []string{"id"}, false, false},
		{"com.example.keys.Greeter", "Unary", nil, false, false},
		{"com.example.keys.Greeter", "Bidi", nil, true, true},
	}
	for _, c := range cases {
		m := model.Lookup(c.service, c.method)
		if m == nil {
			t.Errorf("Lookup(%s, %s) = nil", c.service, c.method)
			continue
		}
		if got := keyNames(m.KeyFields); !slices.Equal(got, c.keys) {
			t.Errorf("%s KeyFields = %v, want %v", m.Path, got, c.keys)
		}
		if m.ServerStreaming != c.server || m.ClientStreaming != c.client {
			t.Errorf("%s streaming = (client %v, server %v), want (%v, %v)", m.Path, m.ClientStreaming, m.ServerStreaming, c.client, c.server)
		}
	}
}

func TestBuildWellKnownImports(t *testing.T) {
	t.Run("missing from the set", func(t *testing.T) {
		// google/protobuf/empty.proto and descriptor.proto are left out.
		spec := newSpec(t, []*descriptorpb.FileDescriptorProto{cartFile(), entityKeyFileProto()},
			entity(EventSourced, "com.example.cart.ShoppingCart", "cart"))
		model, err := Build(spec, BuildOptions{SupportedTypes: allTypes, CompatibilityCheck: true})
		if err != nil {
			t.Fatalf("Build: %v", err)
		}
		assertDependencyOrder(t, model.FileProtos)
		if _, err := model.Files.FindFileByPath("google/protobuf/empty.proto"); err != nil {
			t.Errorf("empty.proto not resolved: %v", err)
		}
		if len(model.FileProtos) != 4 {
			t.Errorf("FileProtos has %d files, want 4 (the set's two and the well-known two)", len(model.FileProtos))
		}
	})
	t.Run("the set's copy is preferred", func(t *testing.T) {
		empty := emptyFileProto()
		empty.MessageType = append(empty.MessageType, message("OnlyInTheSet"))
		spec := newSpec(t, []*descriptorpb.FileDescriptorProto{cartFile(), entityKeyFileProto(), empty, descriptorFileProto()},
			entity(EventSourced, "com.example.cart.ShoppingCart", "cart"))
		model, err := Build(spec, BuildOptions{SupportedTypes: allTypes, CompatibilityCheck: true})
		if err != nil {
			t.Fatalf("Build: %v", err)
		}
		if _, err := model.Files.FindDescriptorByName("google.protobuf.OnlyInTheSet"); err != nil {
			t.Errorf("the set's empty.proto was not used: %v", err)
		}
	})
	t.Run("identical duplicates are tolerated", func(t *testing.T) {
		spec := newSpec(t, append(cartFiles(), entityKeyFileProto()), entity(EventSourced, "com.example.cart.ShoppingCart", "cart"))
		if _, err := Build(spec, BuildOptions{SupportedTypes: allTypes, CompatibilityCheck: true}); err != nil {
			t.Fatalf("Build: %v", err)
		}
	})
}

func TestBuildIncompatibleVersionWithCheckDisabled(t *testing.T) {
	logs := newLogRecorder()
	spec := cartSpec(t)
	spec.ServiceInfo = serviceInfo(1, 0)
	model, err := Build(spec, BuildOptions{SupportedTypes: allTypes, CompatibilityCheck: false, Logger: slog.New(logs)})
	if err != nil {
		t.Fatalf("Build with the check disabled: %v", err)
	}
	if model.Services["com.example.cart.ShoppingCart"] == nil {
		t.Errorf("service missing")
	}
	if n := logs.count(slog.LevelWarn); n != 1 {
		t.Errorf("logged %d warnings, want 1", n)
	}
}

func TestBuildErrors(t *testing.T) {
	const cart = "com.example.cart.ShoppingCart"
	// withCart returns a spec whose cart file was changed by edit.
	withCart := func(t *testing.T, entityType string, edit func(f *descriptorpb.FileDescriptorProto)) *protocol.EntitySpec {
		files := cartFiles()
		edit(files[0])
		return newSpec(t, files, entity(entityType, cart, "cart"))
	}
	// withInput replaces AddItem's input with a message of the given fields.
	withInput := func(t *testing.T, entityType string, fields ...*descriptorpb.FieldDescriptorProto) *protocol.EntitySpec {
		return withCart(t, entityType, func(f *descriptorpb.FileDescriptorProto) {
			f.MessageType[0] = message("AddLineItem", fields...)
		})
	}
	// Services of a second file sharing the cart's messages.
	secondFile := func(services ...*descriptorpb.ServiceDescriptorProto) *descriptorpb.FileDescriptorProto {
		return userFile("example/more.proto", "com.example.more", []string{"example/cart.proto"}, nil, services...)
	}
	moreFiles := func() []*descriptorpb.FileDescriptorProto {
		return append(cartFiles(), secondFile(
			service("Cart2", method("Get", ".com.example.cart.GetShoppingCart", ".com.example.cart.Cart", false, false)),
			service("Cart3", method("Get", ".com.example.cart.GetShoppingCart", ".com.example.cart.Cart", false, false))))
	}

	cases := []struct {
		name      string
		spec      func(t *testing.T) *protocol.EntitySpec
		supported []string
		want      string
		prefix    bool // want is only the start of the error
	}{
		{
			name: "protocol version mismatch",
			spec: func(t *testing.T) *protocol.EntitySpec {
				s := cartSpec(t)
				s.ServiceInfo = serviceInfo(0, 1)
				return s
			},
			want: "Incompatible protocol version 0.1, only 0.2 is supported",
		},
		{
			name: "missing service info",
			spec: func(t *testing.T) *protocol.EntitySpec {
				s := cartSpec(t)
				s.ServiceInfo = nil
				return s
			},
			want: "Incompatible protocol version 0.0, only 0.2 is supported",
		},
		{
			name: "descriptor bytes that do not parse",
			spec: func(t *testing.T) *protocol.EntitySpec {
				s := cartSpec(t)
				s.Proto = []byte{0x0a, 0xff, 0x01}
				return s
			},
			want:   "The descriptor set (EntitySpec.proto) is not a valid google.protobuf.FileDescriptorSet: ",
			prefix: true, // the protobuf runtime's text varies on purpose
		},
		{
			name: "missing import",
			spec: func(t *testing.T) *protocol.EntitySpec {
				return newSpec(t, []*descriptorpb.FileDescriptorProto{cartFile(), emptyFileProto()}, entity(EventSourced, cart, "cart"))
			},
			want: "Descriptor dependency [cloudstate/entity_key.proto] not found, imported by [example/cart.proto]",
		},
		{
			name: "import cycle",
			spec: func(t *testing.T) *protocol.EntitySpec {
				a := userFile("a.proto", "a", []string{"b.proto"}, nil)
				b := userFile("b.proto", "b", []string{"c.proto"}, nil)
				c := userFile("c.proto", "c", []string{"a.proto"}, nil)
				return newSpec(t, append(cartFiles(), a, b, c), entity(EventSourced, cart, "cart"))
			},
			want: "Circular dependency detected: a.proto -> b.proto -> c.proto -> a.proto",
		},
		{
			name: "descriptor that fails validation",
			spec: func(t *testing.T) *protocol.EntitySpec {
				return withCart(t, EventSourced, func(f *descriptorpb.FileDescriptorProto) {
					f.MessageType[2].Field[0] = field("items", 1, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, typeName(".com.example.cart.Nope"))
				})
			},
			want:   "File [example/cart.proto] of the descriptor set is not valid: ",
			prefix: true,
		},
		{
			name: "two different files with one name",
			spec: func(t *testing.T) *protocol.EntitySpec {
				other := entityKeyFileProto()
				other.Package = proto.String("other")
				return newSpec(t, append(cartFiles(), other), entity(EventSourced, cart, "cart"))
			},
			want: "The descriptor set contains two different files named [cloudstate/entity_key.proto]",
		},
		{
			name: "no entities",
			spec: func(t *testing.T) *protocol.EntitySpec { return newSpec(t, cartFiles()) },
			want: "No entities were reported by the discover call",
		},
		{
			name: "service not found",
			spec: func(t *testing.T) *protocol.EntitySpec {
				return newSpec(t, cartFiles(), entity(EventSourced, "com.example.cart.Nope", "cart"))
			},
			want: "Service [com.example.cart.Nope] not found in the descriptor set",
		},
		{
			name: "service in another package",
			spec: func(t *testing.T) *protocol.EntitySpec {
				return newSpec(t, cartFiles(), entity(EventSourced, "com.example.ShoppingCart", "cart"))
			},
			want: "Service [com.example.ShoppingCart] not found in the descriptor set",
		},
		{
			name: "service name names a message",
			spec: func(t *testing.T) *protocol.EntitySpec {
				return newSpec(t, cartFiles(), entity(EventSourced, "com.example.cart.Cart", "cart"))
			},
			want: "Service [com.example.cart.Cart] not found in the descriptor set: that name declares a message, not a service",
		},
		{
			name:      "event sourced without a journal",
			spec:      func(t *testing.T) *protocol.EntitySpec { return cartSpec(t) },
			supported: []string{CRDT, Action},
			want: "Service [com.example.cart.ShoppingCart] is an event sourced entity, but this proxy has no event journal: " +
				"a store that supports event sourced journals must be configured to use event sourced entities",
		},
		{
			name: "value entities disabled",
			spec: func(t *testing.T) *protocol.EntitySpec {
				return newSpec(t, cartFiles(), entity(ValueEntity, cart, "cart"))
			},
			supported: []string{EventSourced, CRDT, Action},
			want: "Service [com.example.cart.ShoppingCart] declares the unsupported entity type [cloudstate.valueentity.ValueEntity]; " +
				"supported types are cloudstate.eventsourced.EventSourced, cloudstate.crdt.Crdt, cloudstate.action.ActionProtocol",
		},
		{
			name: "unknown entity type",
			spec: func(t *testing.T) *protocol.EntitySpec {
				return newSpec(t, cartFiles(), entity("cloudstate.Unknown", cart, "cart"))
			},
			want: "Service [com.example.cart.ShoppingCart] declares the unsupported entity type [cloudstate.Unknown]; " +
				"supported types are cloudstate.eventsourced.EventSourced, cloudstate.valueentity.ValueEntity, cloudstate.crdt.Crdt, cloudstate.action.ActionProtocol",
		},
		{
			name: "event sourced client streaming",
			spec: func(t *testing.T) *protocol.EntitySpec {
				return withCart(t, EventSourced, func(f *descriptorpb.FileDescriptorProto) { f.Service[0].Method[1].ClientStreaming = proto.Bool(true) })
			},
			want: "Method [com.example.cart.ShoppingCart.GetCart] is client streaming, which event sourced entities do not support",
		},
		{
			name: "event sourced server streaming",
			spec: func(t *testing.T) *protocol.EntitySpec {
				return withCart(t, EventSourced, func(f *descriptorpb.FileDescriptorProto) { f.Service[0].Method[1].ServerStreaming = proto.Bool(true) })
			},
			want: "Method [com.example.cart.ShoppingCart.GetCart] is server streaming, which event sourced entities do not support",
		},
		{
			name: "value entity server streaming",
			spec: func(t *testing.T) *protocol.EntitySpec {
				return withCart(t, ValueEntity, func(f *descriptorpb.FileDescriptorProto) { f.Service[0].Method[0].ServerStreaming = proto.Bool(true) })
			},
			want: "Method [com.example.cart.ShoppingCart.AddItem] is server streaming, which value entities do not support",
		},
		{
			name: "CRDT client streaming",
			spec: func(t *testing.T) *protocol.EntitySpec {
				return withCart(t, CRDT, func(f *descriptorpb.FileDescriptorProto) {
					f.Service[0].Method[0].ClientStreaming = proto.Bool(true)
					f.Service[0].Method[0].ServerStreaming = proto.Bool(true)
				})
			},
			want: "Method [com.example.cart.ShoppingCart.AddItem] is client streaming, which CRDT entities do not support",
		},
		{
			name: "event sourced method without a key",
			spec: func(t *testing.T) *protocol.EntitySpec {
				return withInput(t, EventSourced, field("user_id", 1, tString), field("quantity", 2, tInt32))
			},
			want: "Method [com.example.cart.ShoppingCart.AddItem] of event sourced entity [com.example.cart.ShoppingCart] has no entity key: " +
				"its input message [com.example.cart.AddLineItem] has no field marked (cloudstate.entity_key) = true",
		},
		{
			name: "CRDT method without a key",
			spec: func(t *testing.T) *protocol.EntitySpec {
				return withInput(t, CRDT, field("user_id", 1, tString))
			},
			want: "Method [com.example.cart.ShoppingCart.AddItem] of CRDT entity [com.example.cart.ShoppingCart] has no entity key: " +
				"its input message [com.example.cart.AddLineItem] has no field marked (cloudstate.entity_key) = true",
		},
		{
			name: "value entity method without a key",
			spec: func(t *testing.T) *protocol.EntitySpec {
				return withInput(t, ValueEntity)
			},
			want: "Method [com.example.cart.ShoppingCart.AddItem] of value entity [com.example.cart.ShoppingCart] has no entity key: " +
				"its input message [com.example.cart.AddLineItem] has no field marked (cloudstate.entity_key) = true",
		},
		{
			name: "repeated key",
			spec: func(t *testing.T) *protocol.EntitySpec {
				return withInput(t, EventSourced, field("user_id", 1, tString, key, repeated))
			},
			want: keyTypeError("user_id", "repeated"),
		},
		{
			name: "bytes key",
			spec: func(t *testing.T) *protocol.EntitySpec {
				return withInput(t, EventSourced, field("user_id", 1, descriptorpb.FieldDescriptorProto_TYPE_BYTES, key))
			},
			want: keyTypeError("user_id", "of type bytes"),
		},
		{
			name: "float key",
			spec: func(t *testing.T) *protocol.EntitySpec {
				return withInput(t, ValueEntity, field("user_id", 1, descriptorpb.FieldDescriptorProto_TYPE_FLOAT, key))
			},
			want: keyTypeError("user_id", "of type float"),
		},
		{
			name: "double key",
			spec: func(t *testing.T) *protocol.EntitySpec {
				return withInput(t, CRDT, field("user_id", 1, descriptorpb.FieldDescriptorProto_TYPE_DOUBLE, legacyKey))
			},
			want: keyTypeError("user_id", "of type double"),
		},
		{
			name: "message key",
			spec: func(t *testing.T) *protocol.EntitySpec {
				return withInput(t, EventSourced, field("user_id", 1, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, key, typeName(".com.example.cart.Cart")))
			},
			want: keyTypeError("user_id", "a message"),
		},
		{
			name: "map key",
			spec: func(t *testing.T) *protocol.EntitySpec {
				return withCart(t, EventSourced, func(f *descriptorpb.FileDescriptorProto) {
					entry := message("LabelsEntry", field("key", 1, tString), field("value", 2, tString))
					entry.Options = &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)}
					m := message("AddLineItem", field("labels", 1, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE,
						key, repeated, typeName(".com.example.cart.AddLineItem.LabelsEntry")))
					m.NestedType = []*descriptorpb.DescriptorProto{entry}
					f.MessageType[0] = m
				})
			},
			want: keyTypeError("labels", "a map"),
		},
		{
			name: "group key",
			spec: func(t *testing.T) *protocol.EntitySpec {
				return withCart(t, EventSourced, func(f *descriptorpb.FileDescriptorProto) {
					f.Syntax = proto.String("proto2")
					g := field("item", 1, descriptorpb.FieldDescriptorProto_TYPE_GROUP, key, typeName(".com.example.cart.AddLineItem.Item"))
					g.JsonName = nil
					m := message("AddLineItem", g)
					m.NestedType = []*descriptorpb.DescriptorProto{message("Item", field("id", 1, tString))}
					f.MessageType[0] = m
				})
			},
			want: keyTypeError("item", "a group"),
		},
		{
			name: "duplicate event sourced persistence id",
			spec: func(t *testing.T) *protocol.EntitySpec {
				return newSpec(t, moreFiles(),
					entity(EventSourced, "com.example.more.Cart2", "carts"),
					entity(CRDT, cart, "carts"),
					entity(EventSourced, "com.example.more.Cart3", "carts"))
			},
			want: "Services [com.example.more.Cart2] and [com.example.more.Cart3] both declare persistence id [carts]; each event sourced entity needs its own persistence id",
		},
		{
			name: "duplicate value entity persistence id",
			spec: func(t *testing.T) *protocol.EntitySpec {
				return newSpec(t, moreFiles(),
					entity(ValueEntity, "com.example.more.Cart2", ""),
					entity(ValueEntity, "com.example.more.Cart3", ""))
			},
			want: "Services [com.example.more.Cart2] and [com.example.more.Cart3] both declare persistence id []; each value entity needs its own persistence id",
		},
		{
			name: "HTTP rule the proxy cannot serve",
			spec: func(t *testing.T) *protocol.EntitySpec {
				return withCart(t, EventSourced, func(f *descriptorpb.FileDescriptorProto) {
					opts := &descriptorpb.MethodOptions{}
					proto.SetExtension(opts, annotations.E_Http, &annotations.HttpRule{
						Pattern: &annotations.HttpRule_Get{Get: "/carts/{user_id}"},
						Body:    "nope",
					})
					f.Service[0].Method[1].Options = opts
				})
			},
			want: "The HTTP API cannot be served: invalid google.api.http rule of method [com.example.cart.ShoppingCart.GetCart]: " +
				"HTTP API Config: Body configured to [nope] but that field does not exist on input type.",
		},
		{
			name: "service listed twice",
			spec: func(t *testing.T) *protocol.EntitySpec {
				return newSpec(t, cartFiles(), entity(EventSourced, cart, "a"), entity(CRDT, cart, "b"))
			},
			want: "Service [com.example.cart.ShoppingCart] is listed more than once in the discovered entities",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			supported := c.supported
			if supported == nil {
				supported = allTypes
			}
			model, err := Build(c.spec(t), BuildOptions{SupportedTypes: supported, CompatibilityCheck: true})
			if err == nil {
				t.Fatalf("Build succeeded with %d services, want error %q", len(model.Services), c.want)
			}
			if !errors.Is(err, ErrInvalidSpec) {
				t.Errorf("error %q does not wrap ErrInvalidSpec", err)
			}
			if got := err.Error(); got != c.want && !(c.prefix && strings.HasPrefix(got, c.want)) {
				t.Errorf("error\n got: %s\nwant: %s", err, c.want)
			}
		})
	}
}

func keyTypeError(fieldName, reason string) string {
	return "Entity key field [" + fieldName + "] of message [com.example.cart.AddLineItem] (input of method [com.example.cart.ShoppingCart.AddItem]) is " +
		reason + "; an entity key must be a singular string, integer, bool or enum field"
}

// TestIsEntityKey checks both ways the key option can reach the proxy: as a
// parsed extension, and as unknown bytes of FieldOptions.
func TestIsEntityKey(t *testing.T) {
	unknown := func(fields ...[2]uint64) *descriptorpb.FieldOptions {
		var b []byte
		for _, f := range fields {
			b = protowire.AppendTag(b, protowire.Number(f[0]), protowire.VarintType)
			b = protowire.AppendVarint(b, f[1])
		}
		opts := &descriptorpb.FieldOptions{}
		opts.ProtoReflect().SetUnknown(b)
		return opts
	}
	parsed := func(xt protoreflect.ExtensionType, v bool) *descriptorpb.FieldOptions {
		opts := &descriptorpb.FieldOptions{Deprecated: proto.Bool(true)}
		proto.SetExtension(opts, xt, v)
		return opts
	}
	cases := []struct {
		name string
		opts *descriptorpb.FieldOptions
		want bool
	}{
		{"no options", nil, false},
		{"other options only", &descriptorpb.FieldOptions{Deprecated: proto.Bool(true)}, false},
		{"parsed entity_key", parsed(protocol.E_EntityKey, true), true},
		{"parsed entity_key false", parsed(protocol.E_EntityKey, false), false},
		{"parsed legacy_entity_key", parsed(protocol.E_LegacyEntityKey, true), true},
		{"unknown entity_key", unknown([2]uint64{1080, 1}), true},
		{"unknown legacy_entity_key", unknown([2]uint64{50002, 1}), true},
		{"unknown other extension", unknown([2]uint64{1081, 1}), false},
		{"last occurrence wins", unknown([2]uint64{1080, 1}, [2]uint64{1080, 0}), false},
		{"either marker", unknown([2]uint64{1080, 0}, [2]uint64{50002, 1}), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := field("id", 1, tString)
			f.Options = c.opts
			fdp := userFile("k.proto", "k", nil, []*descriptorpb.DescriptorProto{message("M", f)})
			fd, err := protodesc.NewFile(fdp, new(protoregistry.Files))
			if err != nil {
				t.Fatalf("NewFile: %v", err)
			}
			if got := isEntityKey(fd.Messages().Get(0).Fields().Get(0)); got != c.want {
				t.Errorf("isEntityKey = %v, want %v", got, c.want)
			}
		})
	}
}

// assertDependencyOrder checks that every file comes after its imports.
func assertDependencyOrder(t *testing.T, files []*descriptorpb.FileDescriptorProto) {
	t.Helper()
	seen := map[string]bool{}
	for _, f := range files {
		for _, dep := range f.GetDependency() {
			if !seen[dep] {
				t.Errorf("file %s comes before its import %s", f.GetName(), dep)
			}
		}
		seen[f.GetName()] = true
	}
}

func keyNames(fields []protoreflect.FieldDescriptor) []string {
	var names []string
	for _, fd := range fields {
		names = append(names, string(fd.Name()))
	}
	return names
}
