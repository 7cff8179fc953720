package discovery

import (
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Extension numbers of the entity key markers on google.protobuf.FieldOptions
// (PROTOCOL.md §4.1, §4.2).
const (
	entityKeyNumber       protowire.Number = 1080
	legacyEntityKeyNumber protowire.Number = 50002
)

// keyFields returns the top-level fields of m's input message marked as
// entity keys, in declaration order, and rejects key fields the router cannot
// render as text.
func keyFields(svc *Service, m *Method) ([]protoreflect.FieldDescriptor, error) {
	input := m.Desc.Input()
	fields := input.Fields()
	var keys []protoreflect.FieldDescriptor
	for i := range fields.Len() {
		fd := fields.Get(i)
		if !isEntityKey(fd) {
			continue
		}
		if reason := unusableKey(fd); reason != "" {
			return nil, invalidf("Entity key field [%s] of message [%s] (input of method [%s.%s]) is %s; an entity key must be a singular string, integer, bool or enum field",
				fd.Name(), input.FullName(), svc.Name, m.Name, reason)
		}
		keys = append(keys, fd)
	}
	return keys, nil
}

// isEntityKey reports whether fd carries (cloudstate.entity_key) = true or
// (cloudstate.legacy_entity_key) = true. The descriptors were built at run
// time, so the option is either a parsed extension or an unknown field
// depending on which extensions the decoder knew; re-encoding the options and
// scanning the bytes by field number handles both the same way.
func isEntityKey(fd protoreflect.FieldDescriptor) bool {
	opts := fd.Options()
	if opts == nil {
		return false
	}
	b, err := proto.MarshalOptions{AllowPartial: true}.Marshal(opts)
	if err != nil {
		return false
	}
	// Proto decoding keeps the last occurrence of a repeated scalar, so
	// track each marker separately; either one set to true makes a key.
	var entityKey, legacyKey bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		if (num == entityKeyNumber || num == legacyEntityKeyNumber) && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			if num == entityKeyNumber {
				entityKey = v != 0
			} else {
				legacyKey = v != 0
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return false
		}
		b = b[n:]
	}
	return entityKey || legacyKey
}

// unusableKey says why fd cannot be an entity key, or "" when it can.
func unusableKey(fd protoreflect.FieldDescriptor) string {
	switch {
	case fd.IsMap():
		return "a map"
	case fd.IsList():
		return "repeated"
	}
	switch fd.Kind() {
	case protoreflect.BytesKind:
		return "of type bytes"
	case protoreflect.MessageKind:
		return "a message"
	case protoreflect.GroupKind:
		return "a group"
	case protoreflect.FloatKind:
		return "of type float"
	case protoreflect.DoubleKind:
		return "of type double"
	}
	return ""
}
