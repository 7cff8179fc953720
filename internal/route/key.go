package route

import (
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/cloudstate-go/cloudstate/internal/discovery"
)

// Errors of EntityID, checked with errors.Is. Both are the caller's mistake
// (INVALID_ARGUMENT); the error's text is a sentence fit for the client.
var (
	// ErrMalformedPayload: the request bytes are not a valid message of the
	// method's input type (bad wire structure, a key field with the wrong
	// wire type, a key string that is not UTF-8).
	ErrMalformedPayload = errors.New("route: malformed request payload")
	// ErrEmptyEntityID: the key fields render as the empty string, which
	// names no entity (BEHAVIOR.md ROUTE-4).
	ErrEmptyEntityID = errors.New("route: empty entity id")
)

// keyError carries a client-facing message and the sentinel it matches.
type keyError struct {
	msg  string
	kind error
}

func (e *keyError) Error() string { return e.msg }
func (e *keyError) Unwrap() error { return e.kind }

func malformed(m *discovery.Method, format string, args ...any) error {
	return &keyError{
		msg:  fmt.Sprintf("request is not a valid %s: ", m.Desc.Input().FullName()) + fmt.Sprintf(format, args...),
		kind: ErrMalformedPayload,
	}
}

// rawKey is the last occurrence of one key field on the wire.
type rawKey struct {
	set bool
	v   uint64 // varint, fixed32 and fixed64 values
	b   []byte // string bytes, aliasing the payload
}

// inlineKeys is how many key fields EntityID tracks without allocating;
// real messages rarely have more than two.
const inlineKeys = 4

// EntityID returns the entity id of a request to m from the request's wire
// bytes (PROTOCOL.md §6). Only the top-level fields are walked, so nested
// messages are not decoded; that walk still checks the top-level wire
// structure. Key fields follow proto3 decoding (the last occurrence wins,
// unset fields take their default) and are rendered as the reference proxy
// does: strings as-is, integers in decimal with 32- and 64-bit unsigned
// values read as Java's signed int and long, bools as "true"/"false", enums
// by value name (decimal for an unknown number). Several keys are joined
// with "-". A method without key fields (an action) has the id "".
//
// Errors wrap ErrMalformedPayload or ErrEmptyEntityID.
func EntityID(m *discovery.Method, payload []byte) (string, error) {
	keys := m.KeyFields
	if len(keys) == 0 {
		return "", nil
	}
	var inline [inlineKeys]rawKey
	var raw []rawKey
	if len(keys) <= inlineKeys {
		raw = inline[:len(keys)]
	} else {
		raw = make([]rawKey, len(keys))
	}

	b := payload
	for len(b) > 0 {
		offset := len(payload) - len(b)
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", malformed(m, "bad field tag at byte %d: %v", offset, wireProblem(n))
		}
		if num > protowire.MaxValidNumber {
			return "", malformed(m, "bad field tag at byte %d: field number %d out of range", offset, num)
		}
		b = b[n:]
		i := keyIndex(keys, num)
		if i < 0 {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return "", malformed(m, "field %d at byte %d: %v", num, offset, wireProblem(n))
			}
			b = b[n:]
			continue
		}
		fd := keys[i]
		if want := wireType(fd.Kind()); typ != want {
			return "", malformed(m, "key field %s (%d) has wire type %s, want %s", fd.Name(), num, wireName(typ), wireName(want))
		}
		r := rawKey{set: true}
		switch typ {
		case protowire.VarintType:
			r.v, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var v uint32
			v, n = protowire.ConsumeFixed32(b)
			r.v = uint64(v)
		case protowire.Fixed64Type:
			r.v, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			r.b, n = protowire.ConsumeBytes(b)
		default:
			// Only a group-typed key gets here; discovery rejects those,
			// and appendKey reports it.
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return "", malformed(m, "key field %s (%d) at byte %d: %v", fd.Name(), num, offset, wireProblem(n))
		}
		raw[i] = r
		b = b[n:]
	}

	// The common case, one string key, converts straight from the payload.
	if len(keys) == 1 && keys[0].Kind() == protoreflect.StringKind && raw[0].set {
		if !utf8.Valid(raw[0].b) {
			return "", malformed(m, "key field %s is not valid UTF-8", keys[0].Name())
		}
		if len(raw[0].b) == 0 {
			return "", emptyKey(m, keys[0])
		}
		return string(raw[0].b), nil
	}

	var buf [64]byte
	id := buf[:0]
	for i, fd := range keys {
		if i > 0 {
			id = append(id, '-')
		}
		var err error
		if id, err = appendKey(id, fd, raw[i]); err != nil {
			return "", malformed(m, "%v", err)
		}
	}
	if len(id) == 0 {
		return "", emptyKey(m, keys[0])
	}
	return string(id), nil
}

// wireProblem describes a protowire error code for a client.
func wireProblem(n int) string {
	err := protowire.ParseError(n)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return "unexpected end of data"
	}
	// The protobuf runtime prefixes its errors with "proto:"; the message
	// already says what was being parsed.
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, "proto:"); ok {
		msg = strings.TrimLeft(rest, " \u00a0")
	}
	return msg
}

func emptyKey(m *discovery.Method, fd protoreflect.FieldDescriptor) error {
	return &keyError{
		msg:  fmt.Sprintf("entity key %s of %s is empty", fd.Name(), m.Desc.Input().FullName()),
		kind: ErrEmptyEntityID,
	}
}

func keyIndex(keys []protoreflect.FieldDescriptor, num protowire.Number) int {
	for i, fd := range keys {
		if fd.Number() == num {
			return i
		}
	}
	return -1
}

// wireType is the wire type of a singular field of kind k.
func wireType(k protoreflect.Kind) protowire.Type {
	switch k {
	case protoreflect.StringKind, protoreflect.BytesKind, protoreflect.MessageKind:
		return protowire.BytesType
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		return protowire.Fixed32Type
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		return protowire.Fixed64Type
	case protoreflect.GroupKind:
		return protowire.StartGroupType
	}
	return protowire.VarintType
}

func wireName(t protowire.Type) string {
	switch t {
	case protowire.VarintType:
		return "varint"
	case protowire.Fixed32Type:
		return "fixed32"
	case protowire.Fixed64Type:
		return "fixed64"
	case protowire.BytesType:
		return "length-delimited"
	case protowire.StartGroupType:
		return "start-group"
	case protowire.EndGroupType:
		return "end-group"
	}
	return strconv.Itoa(int(t))
}

// appendKey renders one key field's value, or its default when unset.
func appendKey(dst []byte, fd protoreflect.FieldDescriptor, r rawKey) ([]byte, error) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		if !r.set {
			return append(dst, fd.Default().String()...), nil
		}
		if !utf8.Valid(r.b) {
			return dst, fmt.Errorf("key field %s is not valid UTF-8", fd.Name())
		}
		return append(dst, r.b...), nil
	case protoreflect.BoolKind:
		if !r.set {
			return strconv.AppendBool(dst, fd.Default().Bool()), nil
		}
		return strconv.AppendBool(dst, r.v != 0), nil
	case protoreflect.EnumKind:
		n := fd.Default().Enum()
		if r.set {
			n = protoreflect.EnumNumber(int32(r.v))
		}
		if v := fd.Enum().Values().ByNumber(n); v != nil {
			return append(dst, v.Name()...), nil
		}
		return strconv.AppendInt(dst, int64(n), 10), nil
	}

	// Integers. Unsigned kinds render as Java's signed int and long did
	// in the reference, so 2^32-1 as uint32 reads "-1".
	var v int64
	switch fd.Kind() {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		v = fd.Default().Int()
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind,
		protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		v = int64(fd.Default().Uint())
	default:
		return dst, fmt.Errorf("key field %s has kind %s, which cannot be an entity key", fd.Name(), fd.Kind())
	}
	if r.set {
		v = int64(r.v)
	}
	switch fd.Kind() {
	case protoreflect.Int32Kind, protoreflect.Sfixed32Kind, protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		v = int64(int32(v))
	case protoreflect.Sint32Kind:
		if r.set {
			v = int64(int32(protowire.DecodeZigZag(r.v & math.MaxUint32)))
		}
	case protoreflect.Sint64Kind:
		if r.set {
			v = protowire.DecodeZigZag(r.v)
		}
	}
	return strconv.AppendInt(dst, v, 10), nil
}
