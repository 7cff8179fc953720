package crdt

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/types/known/anypb"
)

// Key is a set element, map key or register value: a google.protobuf.Any
// held as immutable strings. Two Keys are equal when type URL and value bytes
// are equal; that is how the protocol compares elements and keys. Key is
// comparable, so it works as a Go map key.
type Key struct {
	TypeURL string
	Value   string // the Any's value bytes
}

// KeyOf copies an Any into a Key. A nil Any gives the zero Key.
func KeyOf(a *anypb.Any) Key {
	return Key{TypeURL: a.GetTypeUrl(), Value: string(a.GetValue())}
}

// Any returns a new Any holding the Key.
func (k Key) Any() *anypb.Any {
	return &anypb.Any{TypeUrl: k.TypeURL, Value: []byte(k.Value)}
}

// Compare orders Keys by type URL, then by value bytes. The result is -1, 0
// or +1. Every list this package produces is sorted by it.
func (k Key) Compare(o Key) int {
	if c := strings.Compare(k.TypeURL, o.TypeURL); c != 0 {
		return c
	}
	return strings.Compare(k.Value, o.Value)
}

// String renders the Key for logs and errors: the type URL and the quoted
// value bytes, cut after 32 bytes.
func (k Key) String() string {
	v := k.Value
	if len(v) > 32 {
		return fmt.Sprintf("%s:%q...", k.TypeURL, v[:32])
	}
	return fmt.Sprintf("%s:%q", k.TypeURL, v)
}

func compareKeys(a, b Key) int { return a.Compare(b) }

// sortedKeys returns the keys of m in Key order.
func sortedKeys[V any](m map[Key]V) []Key {
	keys := make([]Key, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareKeys)
	return keys
}

// anys converts Keys into new Anys.
func anys(keys []Key) []*anypb.Any {
	if len(keys) == 0 {
		return nil
	}
	out := make([]*anypb.Any, len(keys))
	for i, k := range keys {
		out[i] = k.Any()
	}
	return out
}
