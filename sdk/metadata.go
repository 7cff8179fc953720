package sdk

import (
	"strings"

	"github.com/cloudstate-go/cloudstate/protocol"
)

// Metadata is an ordered list of key/value entries attached to a command, a
// reply, a forward or a side effect. Keys may repeat. A nil Metadata is empty
// and ready to use.
type Metadata []MetadataEntry

// MetadataEntry is one metadata value. An entry is binary when Bytes is
// non-nil; otherwise its value is the text in Value.
type MetadataEntry struct {
	Key   string
	Value string
	Bytes []byte
}

// Get returns the first text value for key, compared case-insensitively
// because keys usually come from HTTP headers.
func (m Metadata) Get(key string) (string, bool) {
	for _, e := range m {
		if e.Bytes == nil && strings.EqualFold(e.Key, key) {
			return e.Value, true
		}
	}
	return "", false
}

// GetBytes returns the first binary value for key, compared
// case-insensitively.
func (m Metadata) GetBytes(key string) ([]byte, bool) {
	for _, e := range m {
		if e.Bytes != nil && strings.EqualFold(e.Key, key) {
			return e.Bytes, true
		}
	}
	return nil, false
}

// Add appends a text entry.
func (m *Metadata) Add(key, value string) {
	*m = append(*m, MetadataEntry{Key: key, Value: value})
}

// AddBytes appends a binary entry. A nil value is stored as an empty one so
// that the entry stays binary.
func (m *Metadata) AddBytes(key string, value []byte) {
	if value == nil {
		value = []byte{}
	}
	*m = append(*m, MetadataEntry{Key: key, Bytes: value})
}

// metadataFromProto converts wire metadata; nil in, nil out.
func metadataFromProto(pm *protocol.Metadata) Metadata {
	if len(pm.GetEntries()) == 0 {
		return nil
	}
	md := make(Metadata, 0, len(pm.GetEntries()))
	for _, e := range pm.GetEntries() {
		switch v := e.GetValue().(type) {
		case *protocol.MetadataEntry_BytesValue:
			md.AddBytes(e.GetKey(), v.BytesValue)
		default:
			md.Add(e.GetKey(), e.GetStringValue())
		}
	}
	return md
}

// toProto converts metadata for the wire; empty metadata is left unset.
func (m Metadata) toProto() *protocol.Metadata {
	if len(m) == 0 {
		return nil
	}
	pm := &protocol.Metadata{Entries: make([]*protocol.MetadataEntry, 0, len(m))}
	for _, e := range m {
		pe := &protocol.MetadataEntry{Key: e.Key}
		if e.Bytes != nil {
			pe.Value = &protocol.MetadataEntry_BytesValue{BytesValue: e.Bytes}
		} else {
			pe.Value = &protocol.MetadataEntry_StringValue{StringValue: e.Value}
		}
		pm.Entries = append(pm.Entries, pe)
	}
	return pm
}
