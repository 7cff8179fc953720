package storecli

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Type URL prefixes of Cloudstate's own payload encodings (PROTOCOL.md §3):
// a primitive, or UTF-8 JSON, in field 1 of an unnamed message.
const (
	primitivePrefix = "p.cloudstate.io/"
	jsonPrefix      = "json.cloudstate.io/"
)

// rendered is a payload as printed: JSON when its type is known, base64 of
// its bytes otherwise.
type rendered struct {
	typeURL string
	json    []byte // compact JSON; nil when the type is unknown
	base64  string // set when json is nil
}

// text is the payload as one line: the JSON, or "base64:<bytes>".
func (r rendered) text() string {
	if r.json != nil {
		return string(r.json)
	}
	return "base64:" + r.base64
}

// indented is the JSON indented by two spaces, or "base64:<bytes>".
func (r rendered) indented() string {
	if r.json == nil {
		return r.text()
	}
	var b bytes.Buffer
	if err := json.Indent(&b, r.json, "", "  "); err != nil {
		return string(r.json)
	}
	return b.String()
}

// payloadJSON is a payload in --json output: "payload" holding its JSON,
// or "bytes" holding base64 when the type is unknown.
type payloadJSON struct {
	TypeURL string          `json:"type_url"`
	Payload json.RawMessage `json:"payload,omitempty"`
	Bytes   *string         `json:"bytes,omitempty"`
}

func (r rendered) forJSON() payloadJSON {
	p := payloadJSON{TypeURL: r.typeURL}
	if r.json != nil {
		p.Payload = r.json
	} else {
		p.Bytes = &r.base64
	}
	return p
}

// isPrimitive reports whether url names one of Cloudstate's own encodings,
// which need no descriptors.
func isPrimitive(url string) bool {
	return strings.HasPrefix(url, primitivePrefix) || strings.HasPrefix(url, jsonPrefix)
}

// render turns a stored payload into JSON if it can.
func (t *typeSource) render(a *anypb.Any) rendered {
	r := rendered{typeURL: a.GetTypeUrl()}
	if j, ok := t.toJSON(a); ok {
		r.json = j
	} else {
		r.base64 = base64.StdEncoding.EncodeToString(a.GetValue())
	}
	return r
}

func (t *typeSource) toJSON(a *anypb.Any) ([]byte, bool) {
	url := a.GetTypeUrl()
	switch {
	case strings.HasPrefix(url, primitivePrefix):
		return primitiveJSON(strings.TrimPrefix(url, primitivePrefix), a.GetValue())
	case strings.HasPrefix(url, jsonPrefix):
		b, ok := field1(a.GetValue(), protowire.BytesType)
		if !ok || !json.Valid(b) {
			return nil, false
		}
		return compact(b)
	}
	mt, ok := t.messageType(url)
	if !ok {
		return nil, false
	}
	msg := mt.New().Interface()
	if err := (proto.UnmarshalOptions{Resolver: t}).Unmarshal(a.GetValue(), msg); err != nil {
		return nil, false
	}
	b, err := protojson.MarshalOptions{EmitUnpopulated: true, Resolver: t}.Marshal(msg)
	if err != nil {
		return nil, false
	}
	// protojson varies its whitespace on purpose; compacting makes the
	// output the same every time.
	return compact(b)
}

func compact(b []byte) ([]byte, bool) {
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return nil, false
	}
	return out.Bytes(), true
}

// primitiveJSON decodes a p.cloudstate.io/<kind> payload: field 1 of that
// kind, absent for the default value.
func primitiveJSON(kind string, b []byte) ([]byte, bool) {
	var wt protowire.Type
	switch kind {
	case "string", "bytes":
		wt = protowire.BytesType
	case "int32", "int64", "bool":
		wt = protowire.VarintType
	case "float":
		wt = protowire.Fixed32Type
	case "double":
		wt = protowire.Fixed64Type
	default:
		return nil, false
	}
	v, ok := field1(b, wt)
	if !ok {
		return nil, false
	}
	switch kind {
	case "string":
		return jsonValue(string(v))
	case "bytes":
		return jsonValue(v) // base64, as protojson prints bytes
	}
	var n uint64
	switch wt {
	case protowire.VarintType:
		if len(v) > 0 {
			var m int
			n, m = protowire.ConsumeVarint(v)
			if m < 0 {
				return nil, false
			}
		}
	case protowire.Fixed32Type:
		if len(v) > 0 {
			var m int
			var n32 uint32
			n32, m = protowire.ConsumeFixed32(v)
			if m < 0 {
				return nil, false
			}
			n = uint64(n32)
		}
	case protowire.Fixed64Type:
		if len(v) > 0 {
			var m int
			n, m = protowire.ConsumeFixed64(v)
			if m < 0 {
				return nil, false
			}
		}
	}
	switch kind {
	case "int32":
		return []byte(strconv.FormatInt(int64(int32(n)), 10)), true
	case "int64":
		return []byte(strconv.FormatInt(int64(n), 10)), true
	case "bool":
		return []byte(strconv.FormatBool(n != 0)), true
	case "float":
		return floatJSON(float64(math.Float32frombits(uint32(n))), 32)
	default: // double
		return floatJSON(math.Float64frombits(n), 64)
	}
}

// jsonValue encodes v without escaping <, > and &, which protojson leaves
// alone too.
func jsonValue(v any) ([]byte, bool) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, false
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), true
}

// floatJSON prints f, with NaN and infinities as strings, as protojson does.
func floatJSON(f float64, bits int) ([]byte, bool) {
	switch {
	case math.IsNaN(f):
		return []byte(`"NaN"`), true
	case math.IsInf(f, 1):
		return []byte(`"Infinity"`), true
	case math.IsInf(f, -1):
		return []byte(`"-Infinity"`), true
	}
	return []byte(strconv.FormatFloat(f, 'g', -1, bits)), true
}

// field1 returns the raw value of the last field 1 in b (the last one wins
// in protobuf), without its tag: for a varint or fixed field its encoded
// bytes, for a length-delimited one its contents. Field 1 absent gives an
// empty value; any other field, or a malformed message, gives false.
func field1(b []byte, want protowire.Type) ([]byte, bool) {
	var last []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num != 1 || typ != want {
			return nil, false
		}
		b = b[n:]
		var size int
		var value []byte
		switch typ {
		case protowire.BytesType:
			value, size = protowire.ConsumeBytes(b)
		default:
			size = protowire.ConsumeFieldValue(num, typ, b)
			if size >= 0 {
				value = b[:size]
			}
		}
		if size < 0 {
			return nil, false
		}
		last = value
		b = b[size:]
	}
	if last == nil {
		return []byte{}, true
	}
	return last, true
}
