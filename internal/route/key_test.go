package route

import (
	"errors"
	"math"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/cloudstate-go/cloudstate/internal/discovery"
)

// The key tests use these messages, built at run time as the proxy builds a
// user's descriptors:
//
//	// test/keys.proto
//	syntax = "proto3";
//	package test.keys;
//	enum Color { RED = 0; GREEN = 1; BLUE = 2; NEGATIVE = -1; }
//	message Nested { string x = 1; }
//	message All {
//	  string s = 1; int32 i32 = 2; int64 i64 = 3; uint32 u32 = 4; uint64 u64 = 5;
//	  sint32 s32 = 6; sint64 s64 = 7; fixed32 f32 = 8; fixed64 f64 = 9;
//	  sfixed32 sf32 = 10; sfixed64 sf64 = 11; bool b = 12; Color e = 13;
//	  Nested nested = 14; repeated int32 packed = 15; bytes data = 16;
//	}
//	service Keys { rpc Call(All) returns (All); rpc Defaults(Legacy) returns (All); }
//
//	// test/legacy.proto
//	syntax = "proto2";
//	package test.keys;
//	enum Size { SMALL = 1; LARGE = 2; }
//	message Legacy { optional string s = 1 [default = "dflt"]; optional int32 i = 2 [default = -7];
//	                 optional Size size = 3 [default = LARGE]; optional uint32 u = 4 [default = 4294967295]; }

func keysFile() *descriptorpb.FileDescriptorProto {
	f := func(name string, num int32, typ descriptorpb.FieldDescriptorProto_Type) *descriptorpb.FieldDescriptorProto {
		return &descriptorpb.FieldDescriptorProto{
			Name: proto.String(name), Number: proto.Int32(num), Type: typ.Enum(), JsonName: proto.String(name),
			Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
		}
	}
	withType := func(fd *descriptorpb.FieldDescriptorProto, name string) *descriptorpb.FieldDescriptorProto {
		fd.TypeName = proto.String(name)
		return fd
	}
	packed := f("packed", 15, descriptorpb.FieldDescriptorProto_TYPE_INT32)
	packed.Label = descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
	enumValue := func(name string, n int32) *descriptorpb.EnumValueDescriptorProto {
		return &descriptorpb.EnumValueDescriptorProto{Name: proto.String(name), Number: proto.Int32(n)}
	}
	return &descriptorpb.FileDescriptorProto{
		Name:    proto.String("test/keys.proto"),
		Package: proto.String("test.keys"),
		Syntax:  proto.String("proto3"),
		EnumType: []*descriptorpb.EnumDescriptorProto{{
			Name:  proto.String("Color"),
			Value: []*descriptorpb.EnumValueDescriptorProto{enumValue("RED", 0), enumValue("GREEN", 1), enumValue("BLUE", 2), enumValue("NEGATIVE", -1)},
		}},
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("Nested"), Field: []*descriptorpb.FieldDescriptorProto{f("x", 1, descriptorpb.FieldDescriptorProto_TYPE_STRING)}},
			{Name: proto.String("All"), Field: []*descriptorpb.FieldDescriptorProto{
				f("s", 1, descriptorpb.FieldDescriptorProto_TYPE_STRING),
				f("i32", 2, descriptorpb.FieldDescriptorProto_TYPE_INT32),
				f("i64", 3, descriptorpb.FieldDescriptorProto_TYPE_INT64),
				f("u32", 4, descriptorpb.FieldDescriptorProto_TYPE_UINT32),
				f("u64", 5, descriptorpb.FieldDescriptorProto_TYPE_UINT64),
				f("s32", 6, descriptorpb.FieldDescriptorProto_TYPE_SINT32),
				f("s64", 7, descriptorpb.FieldDescriptorProto_TYPE_SINT64),
				f("f32", 8, descriptorpb.FieldDescriptorProto_TYPE_FIXED32),
				f("f64", 9, descriptorpb.FieldDescriptorProto_TYPE_FIXED64),
				f("sf32", 10, descriptorpb.FieldDescriptorProto_TYPE_SFIXED32),
				f("sf64", 11, descriptorpb.FieldDescriptorProto_TYPE_SFIXED64),
				f("b", 12, descriptorpb.FieldDescriptorProto_TYPE_BOOL),
				withType(f("e", 13, descriptorpb.FieldDescriptorProto_TYPE_ENUM), ".test.keys.Color"),
				withType(f("nested", 14, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE), ".test.keys.Nested"),
				packed,
				f("data", 16, descriptorpb.FieldDescriptorProto_TYPE_BYTES),
			}},
		},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("Keys"),
			Method: []*descriptorpb.MethodDescriptorProto{
				{Name: proto.String("Call"), InputType: proto.String(".test.keys.All"), OutputType: proto.String(".test.keys.All")},
				{Name: proto.String("Defaults"), InputType: proto.String(".test.keys.Legacy"), OutputType: proto.String(".test.keys.All")},
			},
		}},
		Dependency: []string{"test/legacy.proto"},
	}
}

func legacyFile() *descriptorpb.FileDescriptorProto {
	opt := func(name string, num int32, typ descriptorpb.FieldDescriptorProto_Type, def string) *descriptorpb.FieldDescriptorProto {
		return &descriptorpb.FieldDescriptorProto{
			Name: proto.String(name), Number: proto.Int32(num), Type: typ.Enum(), DefaultValue: proto.String(def),
			Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
		}
	}
	size := opt("size", 3, descriptorpb.FieldDescriptorProto_TYPE_ENUM, "LARGE")
	size.TypeName = proto.String(".test.keys.Size")
	return &descriptorpb.FileDescriptorProto{
		Name:    proto.String("test/legacy.proto"),
		Package: proto.String("test.keys"),
		Syntax:  proto.String("proto2"),
		EnumType: []*descriptorpb.EnumDescriptorProto{{
			Name: proto.String("Size"),
			Value: []*descriptorpb.EnumValueDescriptorProto{
				{Name: proto.String("SMALL"), Number: proto.Int32(1)},
				{Name: proto.String("LARGE"), Number: proto.Int32(2)},
			},
		}},
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("Legacy"),
			Field: []*descriptorpb.FieldDescriptorProto{
				opt("s", 1, descriptorpb.FieldDescriptorProto_TYPE_STRING, "dflt"),
				opt("i", 2, descriptorpb.FieldDescriptorProto_TYPE_INT32, "-7"),
				size,
				opt("u", 4, descriptorpb.FieldDescriptorProto_TYPE_UINT32, "4294967295"),
			},
		}},
	}
}

// keysService is the test.keys.Keys service, built once.
var keysService = func() protoreflect.ServiceDescriptor {
	files := new(protoregistry.Files)
	for _, fdp := range []*descriptorpb.FileDescriptorProto{legacyFile(), keysFile()} {
		fd, err := protodesc.NewFile(fdp, files)
		if err != nil {
			panic(err)
		}
		if err := files.RegisterFile(fd); err != nil {
			panic(err)
		}
	}
	d, err := files.FindDescriptorByName("test.keys.Keys")
	if err != nil {
		panic(err)
	}
	return d.(protoreflect.ServiceDescriptor)
}()

// keyMethod returns a method of test.keys.Keys whose key fields are the
// named fields of its input, in the order given.
func keyMethod(t testing.TB, method string, keys ...string) *discovery.Method {
	t.Helper()
	md := keysService.Methods().ByName(protoreflect.Name(method))
	if md == nil {
		t.Fatalf("no method %s", method)
	}
	m := &discovery.Method{Name: method, Desc: md, Path: "/test.keys.Keys/" + method}
	for _, k := range keys {
		fd := md.Input().Fields().ByName(protoreflect.Name(k))
		if fd == nil {
			t.Fatalf("no field %s in %s", k, md.Input().FullName())
		}
		m.KeyFields = append(m.KeyFields, fd)
	}
	return m
}

// Wire-building helpers.

func vfield(num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
}

func sfield(num protowire.Number, s string) []byte {
	return protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), s)
}

func f32field(num protowire.Number, v uint32) []byte {
	return protowire.AppendFixed32(protowire.AppendTag(nil, num, protowire.Fixed32Type), v)
}

func f64field(num protowire.Number, v uint64) []byte {
	return protowire.AppendFixed64(protowire.AppendTag(nil, num, protowire.Fixed64Type), v)
}

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func neg(v int64) uint64 { return uint64(v) }

func TestEntityID(t *testing.T) {
	packed := protowire.AppendTag(nil, 15, protowire.BytesType)
	packed = protowire.AppendBytes(packed, cat(protowire.AppendVarint(nil, neg(-1)), protowire.AppendVarint(nil, 300)))
	group := cat(protowire.AppendTag(nil, 20, protowire.StartGroupType), sfield(1, "in a group"), protowire.AppendTag(nil, 20, protowire.EndGroupType))

	cases := []struct {
		name    string
		method  string
		keys    []string
		payload []byte
		want    string
	}{
		{"no key fields", "Call", nil, sfield(1, "ignored"), ""},
		{"no key fields, garbage", "Call", nil, []byte{0xff, 0xff}, ""},
		{"string", "Call", []string{"s"}, sfield(1, "user-1"), "user-1"},
		{"string, unicode", "Call", []string{"s"}, sfield(1, "ünïcødé ✓"), "ünïcødé ✓"},
		{"string, last wins", "Call", []string{"s"}, cat(sfield(1, "first"), vfield(2, 3), sfield(1, "second")), "second"},
		{"string among other fields", "Call", []string{"s"}, cat(vfield(2, 1), packed, sfield(14, "\x0a\x01x"), group, sfield(1, "k"), sfield(16, "\x00\xff")), "k"},
		{"int32", "Call", []string{"i32"}, vfield(2, 42), "42"},
		{"int32 negative", "Call", []string{"i32"}, vfield(2, neg(-5)), "-5"},
		{"int32 unset", "Call", []string{"i32"}, sfield(1, "x"), "0"},
		{"int32 truncates a wide varint", "Call", []string{"i32"}, vfield(2, 1<<32+7), "7"},
		{"int64 max", "Call", []string{"i64"}, vfield(3, math.MaxInt64), "9223372036854775807"},
		{"int64 min", "Call", []string{"i64"}, vfield(3, neg(math.MinInt64)), "-9223372036854775808"},
		{"uint32 as Java int", "Call", []string{"u32"}, vfield(4, math.MaxUint32), "-1"},
		{"uint32 small", "Call", []string{"u32"}, vfield(4, 123), "123"},
		{"uint64 as Java long", "Call", []string{"u64"}, vfield(5, math.MaxUint64), "-1"},
		{"uint64 2^63", "Call", []string{"u64"}, vfield(5, 1<<63), "-9223372036854775808"},
		{"sint32", "Call", []string{"s32"}, vfield(6, protowire.EncodeZigZag(-3)), "-3"},
		{"sint32 min", "Call", []string{"s32"}, vfield(6, protowire.EncodeZigZag(math.MinInt32)), "-2147483648"},
		{"sint64", "Call", []string{"s64"}, vfield(7, protowire.EncodeZigZag(-1234567890123)), "-1234567890123"},
		{"fixed32 as Java int", "Call", []string{"f32"}, f32field(8, math.MaxUint32), "-1"},
		{"fixed64 as Java long", "Call", []string{"f64"}, f64field(9, math.MaxUint64-1), "-2"},
		{"sfixed32", "Call", []string{"sf32"}, f32field(10, uint32(0xfffffffe)), "-2"},
		{"sfixed64", "Call", []string{"sf64"}, f64field(11, 77), "77"},
		{"bool true", "Call", []string{"b"}, vfield(12, 1), "true"},
		{"bool any nonzero varint", "Call", []string{"b"}, vfield(12, 2), "true"},
		{"bool false", "Call", []string{"b"}, vfield(12, 0), "false"},
		{"bool unset", "Call", []string{"b"}, nil, "false"},
		{"enum", "Call", []string{"e"}, vfield(13, 2), "BLUE"},
		{"enum negative", "Call", []string{"e"}, vfield(13, neg(-1)), "NEGATIVE"},
		{"enum unknown number", "Call", []string{"e"}, vfield(13, 9), "9"},
		{"enum unset", "Call", []string{"e"}, nil, "RED"},
		{"several keys in key order", "Call", []string{"s", "i32", "e"}, cat(vfield(13, 1), vfield(2, neg(-5)), sfield(1, "cart")), "cart--5-GREEN"},
		{"several keys, unset ones default", "Call", []string{"s", "b"}, nil, "-false"},
		{"several keys, hyphens kept", "Call", []string{"s", "s32"}, cat(sfield(1, "a-b"), vfield(6, 2)), "a-b-1"},
		{
			"more keys than kept inline", "Call", []string{"s", "i32", "i64", "u32", "u64", "b"},
			cat(sfield(1, "x"), vfield(2, 1), vfield(3, 2), vfield(4, 3), vfield(5, 4), vfield(12, 1)), "x-1-2-3-4-true",
		},
		{"proto2 string default", "Defaults", []string{"s"}, nil, "dflt"},
		{"proto2 int default", "Defaults", []string{"i"}, nil, "-7"},
		{"proto2 enum default", "Defaults", []string{"size"}, nil, "LARGE"},
		{"proto2 uint32 default as Java int", "Defaults", []string{"u"}, nil, "-1"},
		{"proto2 set", "Defaults", []string{"s", "i", "size"}, cat(sfield(1, "v"), vfield(2, 3), vfield(3, 1)), "v-3-SMALL"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := EntityID(keyMethod(t, c.method, c.keys...), c.payload)
			if err != nil {
				t.Fatalf("EntityID: %v", err)
			}
			if got != c.want {
				t.Errorf("EntityID = %q, want %q", got, c.want)
			}
		})
	}
}

func TestEntityIDErrors(t *testing.T) {
	cases := []struct {
		name    string
		method  string
		keys    []string
		payload []byte
		kind    error
		want    string // the error's text, or a prefix of it ending in ": "
	}{
		{"string unset", "Call", []string{"s"}, vfield(2, 1), ErrEmptyEntityID, "entity key s of test.keys.All is empty"},
		{"string empty", "Call", []string{"s"}, sfield(1, ""), ErrEmptyEntityID, "entity key s of test.keys.All is empty"},
		{"string emptied by a later occurrence", "Call", []string{"s"}, cat(sfield(1, "a"), sfield(1, "")), ErrEmptyEntityID, "entity key s of test.keys.All is empty"},
		{"proto2 empty string default", "Defaults", []string{"s"}, sfield(1, ""), ErrEmptyEntityID, "entity key s of test.keys.Legacy is empty"},
		{"string not UTF-8", "Call", []string{"s"}, sfield(1, "\xff\xfe"), ErrMalformedPayload, "request is not a valid test.keys.All: key field s is not valid UTF-8"},
		{"string not UTF-8 among keys", "Call", []string{"i32", "s"}, sfield(1, "a\xc0"), ErrMalformedPayload, "request is not a valid test.keys.All: key field s is not valid UTF-8"},
		{"string as varint", "Call", []string{"s"}, vfield(1, 5), ErrMalformedPayload, "request is not a valid test.keys.All: key field s (1) has wire type varint, want length-delimited"},
		{"int32 as bytes", "Call", []string{"i32"}, sfield(2, "5"), ErrMalformedPayload, "request is not a valid test.keys.All: key field i32 (2) has wire type length-delimited, want varint"},
		{"fixed32 as fixed64", "Call", []string{"f32"}, f64field(8, 1), ErrMalformedPayload, "request is not a valid test.keys.All: key field f32 (8) has wire type fixed64, want fixed32"},
		{"sfixed64 as varint", "Call", []string{"sf64"}, vfield(11, 1), ErrMalformedPayload, "request is not a valid test.keys.All: key field sf64 (11) has wire type varint, want fixed64"},
		{"truncated key string", "Call", []string{"s"}, sfield(1, "abcdef")[:4], ErrMalformedPayload, "request is not a valid test.keys.All: key field s (1) at byte 0: unexpected end of data"},
		{"truncated key varint", "Call", []string{"i64"}, []byte{0x18, 0x80}, ErrMalformedPayload, "request is not a valid test.keys.All: key field i64 (3) at byte 0: unexpected end of data"},
		{"truncated key fixed64", "Call", []string{"f64"}, f64field(9, 1)[:5], ErrMalformedPayload, "request is not a valid test.keys.All: key field f64 (9) at byte 0: unexpected end of data"},
		{"truncated other field", "Call", []string{"s"}, cat(sfield(1, "k"), sfield(16, "data")[:3]), ErrMalformedPayload, "request is not a valid test.keys.All: field 16 at byte 3: unexpected end of data"},
		{"truncated tag", "Call", []string{"s"}, cat(sfield(1, "k"), []byte{0x80}), ErrMalformedPayload, "request is not a valid test.keys.All: bad field tag at byte 3: unexpected end of data"},
		{"garbage", "Call", []string{"s"}, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, ErrMalformedPayload, "request is not a valid test.keys.All: bad field tag at byte 0: "},
		{"field number zero", "Call", []string{"s"}, []byte{0x02, 0x00}, ErrMalformedPayload, "request is not a valid test.keys.All: bad field tag at byte 0: invalid field number"},
		{"field number too large", "Call", []string{"s"}, protowire.AppendTag(nil, protowire.MaxValidNumber+1, protowire.VarintType), ErrMalformedPayload, "request is not a valid test.keys.All: bad field tag at byte 0: field number 536870912 out of range"},
		{"stray end group", "Call", []string{"s"}, protowire.AppendTag(nil, 20, protowire.EndGroupType), ErrMalformedPayload, "request is not a valid test.keys.All: field 20 at byte 0: mismatching end group marker"},
		{"unterminated group", "Call", []string{"s"}, protowire.AppendTag(nil, 20, protowire.StartGroupType), ErrMalformedPayload, "request is not a valid test.keys.All: field 20 at byte 0: unexpected end of data"},
		{"reserved wire type", "Call", []string{"s"}, []byte{0x16}, ErrMalformedPayload, "request is not a valid test.keys.All: field 2 at byte 0: cannot parse reserved wire type"},
		{"reserved wire type on a key", "Call", []string{"s"}, []byte{0x0e}, ErrMalformedPayload, "request is not a valid test.keys.All: key field s (1) has wire type 6, want length-delimited"},
		{"bytes key the discovery would reject", "Call", []string{"data"}, sfield(16, "x"), ErrMalformedPayload, "request is not a valid test.keys.All: key field data has kind bytes, which cannot be an entity key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id, err := EntityID(keyMethod(t, c.method, c.keys...), c.payload)
			if err == nil {
				t.Fatalf("EntityID = %q, want an error", id)
			}
			if !errors.Is(err, c.kind) {
				t.Errorf("error %q is not %v", err, c.kind)
			}
			got := err.Error()
			if strings.HasSuffix(c.want, ": ") {
				if !strings.HasPrefix(got, c.want) {
					t.Errorf("error\n got: %s\nwant: %s...", got, c.want)
				}
			} else if got != c.want {
				t.Errorf("error\n got: %s\nwant: %s", got, c.want)
			}
		})
	}
}

func TestEntityIDDoesNotAllocateForIntegerKeys(t *testing.T) {
	m := keyMethod(t, "Call", "i32")
	payload := cat(sfield(1, "other"), vfield(2, 7))
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := EntityID(m, payload); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("EntityID allocates %v times for a small integer key, want 0", allocs)
	}
	m = keyMethod(t, "Call", "s")
	payload = cat(vfield(2, 7), sfield(1, "a-rather-long-user-identifier-0123456789-0123456789-0123456789"))
	allocs = testing.AllocsPerRun(100, func() {
		if _, err := EntityID(m, payload); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 1 {
		t.Errorf("EntityID allocates %v times for a string key, want 1 (the id)", allocs)
	}
}

func BenchmarkEntityID(b *testing.B) {
	nested := sfield(14, string(sfield(1, strings.Repeat("x", 200))))
	cases := []struct {
		name    string
		keys    []string
		payload []byte
	}{
		{"string", []string{"s"}, cat(sfield(1, "user-1234567"), vfield(2, 3), nested)},
		{"int64", []string{"i64"}, cat(nested, vfield(3, 1234567890))},
		{"string-enum-int", []string{"s", "e", "i32"}, cat(sfield(1, "cart"), vfield(13, 2), vfield(2, 17), nested)},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			m := keyMethod(b, "Call", c.keys...)
			b.ReportAllocs()
			b.SetBytes(int64(len(c.payload)))
			for b.Loop() {
				if _, err := EntityID(m, c.payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
