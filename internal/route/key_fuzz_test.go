package route

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

// allKeys are the key-capable fields of test.keys.All.
var allKeys = []string{"s", "i32", "i64", "u32", "u64", "s32", "s64", "f32", "f64", "sf32", "sf64", "b", "e"}

// FuzzEntityID checks that EntityID never panics, and that on every payload
// the protobuf runtime accepts as the input message it yields what rendering
// the decoded message gives, so the wire scanner and a full unmarshal agree.
func FuzzEntityID(f *testing.F) {
	seeds := [][]byte{
		nil,
		sfield(1, "user-1"),
		cat(sfield(1, "a"), vfield(2, neg(-5)), vfield(4, 1<<32-1), vfield(6, 3), f32field(8, 9), f64field(9, 1<<63), vfield(12, 1), vfield(13, 2)),
		cat(sfield(1, "a"), sfield(1, "b"), vfield(13, 99), vfield(7, protowire.EncodeZigZag(-8))),
		cat(sfield(14, string(sfield(1, "nested"))), sfield(16, "\xff"), vfield(2, 1)),
		cat(protowire.AppendTag(nil, 20, protowire.StartGroupType), vfield(1, 1), protowire.AppendTag(nil, 20, protowire.EndGroupType)),
		sfield(2, "wrong wire type"),
		{0xff, 0xff, 0xff},
		{0x0a, 0x05, 'a'},
	}
	for _, s := range seeds {
		f.Add(false, s)
		f.Add(true, s)
	}
	single := keyMethod(f, "Call", "s")
	multi := keyMethod(f, "Call", allKeys...)
	input := multi.Desc.Input()

	f.Fuzz(func(t *testing.T, useAll bool, payload []byte) {
		m := single
		if useAll {
			m = multi
		}
		id, err := EntityID(m, payload)
		if err != nil && !errors.Is(err, ErrMalformedPayload) && !errors.Is(err, ErrEmptyEntityID) {
			t.Fatalf("EntityID error %q is neither ErrMalformedPayload nor ErrEmptyEntityID", err)
		}

		msg := dynamicpb.NewMessage(input)
		if proto.Unmarshal(payload, msg) != nil {
			return // EntityID may accept more (it does not decode nested messages).
		}
		want := renderKeys(msg, m.KeyFields)
		switch {
		case errors.Is(err, ErrMalformedPayload):
			// The runtime keeps a key field of the wrong wire type as an
			// unknown field; EntityID rejects it instead.
			if !hasUnknownKey(msg.GetUnknown(), m.KeyFields) {
				t.Fatalf("EntityID rejected a payload that unmarshals cleanly to %v: %v", msg, err)
			}
		case errors.Is(err, ErrEmptyEntityID):
			if want != "" {
				t.Fatalf("EntityID said empty, the decoded message renders %q", want)
			}
		case id != want:
			t.Fatalf("EntityID = %q, the decoded message renders %q", id, want)
		}
	})
}

// renderKeys renders the key fields of a decoded message, independently of
// EntityID's wire-level code.
func renderKeys(msg protoreflect.Message, keys []protoreflect.FieldDescriptor) string {
	parts := make([]string, 0, len(keys))
	for _, fd := range keys {
		v := msg.Get(fd)
		var s string
		switch fd.Kind() {
		case protoreflect.StringKind:
			s = v.String()
		case protoreflect.BoolKind:
			s = strconv.FormatBool(v.Bool())
		case protoreflect.EnumKind:
			if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
				s = string(ev.Name())
			} else {
				s = strconv.Itoa(int(v.Enum()))
			}
		case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
			s = strconv.Itoa(int(int32(uint32(v.Uint()))))
		case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
			s = strconv.FormatInt(int64(v.Uint()), 10)
		default:
			s = strconv.FormatInt(v.Int(), 10)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "-")
}

func hasUnknownKey(unknown []byte, keys []protoreflect.FieldDescriptor) bool {
	for len(unknown) > 0 {
		num, typ, n := protowire.ConsumeTag(unknown)
		if n < 0 {
			return false
		}
		unknown = unknown[n:]
		for _, fd := range keys {
			if fd.Number() == num {
				return true
			}
		}
		n = protowire.ConsumeFieldValue(num, typ, unknown)
		if n < 0 {
			return false
		}
		unknown = unknown[n:]
	}
	return false
}
