package sdk

import (
	"errors"
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// PrimitiveTypeURLPrefix is the type URL prefix of primitive payloads: a
// message whose only field, number 1, holds the value. A default value
// encodes as zero bytes, so equal values always encode to equal bytes, which
// is what CRDT set elements and map keys need (they are compared as bytes).
const PrimitiveTypeURLPrefix = "p.cloudstate.io/"

// String returns s as a primitive payload (type URL p.cloudstate.io/string),
// the usual encoding of string CRDT elements, register values and map keys.
func String(s string) *anypb.Any {
	return primitive("string", protowire.BytesType, func(b []byte) []byte { return protowire.AppendString(b, s) }, s == "")
}

// Bytes returns b as a primitive payload (p.cloudstate.io/bytes).
func Bytes(b []byte) *anypb.Any {
	return primitive("bytes", protowire.BytesType, func(out []byte) []byte { return protowire.AppendBytes(out, b) }, len(b) == 0)
}

// Int32 returns v as a primitive payload (p.cloudstate.io/int32).
func Int32(v int32) *anypb.Any {
	return primitive("int32", protowire.VarintType, func(b []byte) []byte { return protowire.AppendVarint(b, uint64(int64(v))) }, v == 0)
}

// Int64 returns v as a primitive payload (p.cloudstate.io/int64).
func Int64(v int64) *anypb.Any {
	return primitive("int64", protowire.VarintType, func(b []byte) []byte { return protowire.AppendVarint(b, uint64(v)) }, v == 0)
}

// Bool returns v as a primitive payload (p.cloudstate.io/bool).
func Bool(v bool) *anypb.Any {
	return primitive("bool", protowire.VarintType, func(b []byte) []byte { return protowire.AppendVarint(b, protowire.EncodeBool(v)) }, !v)
}

// Float returns v as a primitive payload (p.cloudstate.io/float).
func Float(v float32) *anypb.Any {
	return primitive("float", protowire.Fixed32Type, func(b []byte) []byte { return protowire.AppendFixed32(b, math.Float32bits(v)) }, math.Float32bits(v) == 0)
}

// Double returns v as a primitive payload (p.cloudstate.io/double).
func Double(v float64) *anypb.Any {
	return primitive("double", protowire.Fixed64Type, func(b []byte) []byte { return protowire.AppendFixed64(b, math.Float64bits(v)) }, math.Float64bits(v) == 0)
}

func primitive(name string, typ protowire.Type, appendValue func([]byte) []byte, isDefault bool) *anypb.Any {
	a := &anypb.Any{TypeUrl: PrimitiveTypeURLPrefix + name}
	if !isDefault {
		a.Value = appendValue(protowire.AppendTag(nil, 1, typ))
	}
	return a
}

// StringValue decodes a primitive string payload (see String).
func StringValue(a *anypb.Any) (string, error) {
	var s string
	err := decodePrimitive(a, "string", protowire.BytesType, func(b []byte) int {
		v, n := protowire.ConsumeString(b)
		s = v
		return n
	})
	return s, err
}

// BytesValue decodes a primitive bytes payload (see Bytes).
func BytesValue(a *anypb.Any) ([]byte, error) {
	var out []byte
	err := decodePrimitive(a, "bytes", protowire.BytesType, func(b []byte) int {
		v, n := protowire.ConsumeBytes(b)
		out = append([]byte(nil), v...)
		return n
	})
	return out, err
}

// Int32Value decodes a primitive int32 payload (see Int32).
func Int32Value(a *anypb.Any) (int32, error) {
	var out int32
	err := decodePrimitive(a, "int32", protowire.VarintType, func(b []byte) int {
		v, n := protowire.ConsumeVarint(b)
		out = int32(v)
		return n
	})
	return out, err
}

// Int64Value decodes a primitive int64 payload (see Int64).
func Int64Value(a *anypb.Any) (int64, error) {
	var out int64
	err := decodePrimitive(a, "int64", protowire.VarintType, func(b []byte) int {
		v, n := protowire.ConsumeVarint(b)
		out = int64(v)
		return n
	})
	return out, err
}

// BoolValue decodes a primitive bool payload (see Bool).
func BoolValue(a *anypb.Any) (bool, error) {
	var out bool
	err := decodePrimitive(a, "bool", protowire.VarintType, func(b []byte) int {
		v, n := protowire.ConsumeVarint(b)
		out = protowire.DecodeBool(v)
		return n
	})
	return out, err
}

// FloatValue decodes a primitive float payload (see Float).
func FloatValue(a *anypb.Any) (float32, error) {
	var out float32
	err := decodePrimitive(a, "float", protowire.Fixed32Type, func(b []byte) int {
		v, n := protowire.ConsumeFixed32(b)
		out = math.Float32frombits(v)
		return n
	})
	return out, err
}

// DoubleValue decodes a primitive double payload (see Double).
func DoubleValue(a *anypb.Any) (float64, error) {
	var out float64
	err := decodePrimitive(a, "double", protowire.Fixed64Type, func(b []byte) int {
		v, n := protowire.ConsumeFixed64(b)
		out = math.Float64frombits(v)
		return n
	})
	return out, err
}

// decodePrimitive checks the type URL and reads field 1 with consume;
// unknown fields are skipped and the last field 1 wins, as protobuf
// decoding does.
func decodePrimitive(a *anypb.Any, name string, typ protowire.Type, consume func([]byte) int) error {
	if a == nil {
		return fmt.Errorf("decode primitive %s: nil payload", name)
	}
	if want := PrimitiveTypeURLPrefix + name; a.GetTypeUrl() != want {
		return fmt.Errorf("decode primitive %s: type URL is %q, want %q", name, a.GetTypeUrl(), want)
	}
	b := a.GetValue()
	for len(b) > 0 {
		num, t, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("decode primitive %s: %w", name, protowire.ParseError(n))
		}
		b = b[n:]
		if num == 1 && t == typ {
			n = consume(b)
		} else {
			n = protowire.ConsumeFieldValue(num, t, b)
		}
		if n < 0 {
			return fmt.Errorf("decode primitive %s: %w", name, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return nil
}

// encodeValue turns a CRDT element, register value or map key into the Any
// that goes on the wire. An *anypb.Any is taken as it is (copied); any other
// message is encoded deterministically, so that equal messages give equal
// bytes.
func encodeValue(v proto.Message) (*anypb.Any, error) {
	if !isSet(v) {
		return nil, errors.New("nil value")
	}
	if a, ok := v.(*anypb.Any); ok {
		return proto.CloneOf(a), nil
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("marshal %s: %w", v.ProtoReflect().Descriptor().FullName(), err)
	}
	return &anypb.Any{TypeUrl: TypeURLPrefix + string(v.ProtoReflect().Descriptor().FullName()), Value: b}, nil
}
