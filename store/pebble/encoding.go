package pebble

import (
	"encoding/binary"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"
)

// Key spaces: the first byte of every key says what it holds (doc.go has the
// whole layout).
const (
	spaceMeta     byte = 0x00
	spaceEvent    byte = 'e'
	spaceSnapshot byte = 's'
	spaceValue    byte = 'v'
)

// formatKey holds formatVersion, so that a later layout can recognise (and
// refuse or migrate) a directory written by this one.
var formatKey = []byte{spaceMeta, 'f', 'o', 'r', 'm', 'a', 't'}

const formatVersion = "cloudstate-pebble/1"

// Value states, the byte after the version in a value record.
const (
	valueTombstone byte = 0
	valuePresent   byte = 1
)

// errCorrupt marks a record or key this package cannot have written.
var errCorrupt = errors.New("pebble store: corrupt record")

// idKey returns space, the length of id as a uvarint, then id, with room for
// extra more bytes. The length prefix is what keeps ids that are prefixes of
// each other apart: "a|1" and "a|10" start with different length bytes, so
// the events of one can never fall inside the key range of the other.
func idKey(space byte, id string, extra int) []byte {
	k := make([]byte, 0, 1+binary.MaxVarintLen64+len(id)+extra)
	k = append(k, space)
	k = binary.AppendUvarint(k, uint64(len(id)))
	return append(k, id...)
}

// eventKey returns the key of event seq of the entity whose idKey is prefix.
// The sequence number is big-endian so that byte order is seq order.
func eventKey(prefix []byte, seq int64) []byte {
	k := make([]byte, len(prefix), len(prefix)+8)
	copy(k, prefix)
	return binary.BigEndian.AppendUint64(k, uint64(seq))
}

// eventBounds returns the key range [lower, upper) of the events of an
// entity with a sequence number above afterSeq.
func eventBounds(prefix []byte, afterSeq int64) (lower, upper []byte) {
	lower = eventKey(prefix, max(afterSeq, 0)+1)
	// Sequence numbers are positive int64s, so all eight bytes 0xff sorts
	// after every one of them.
	upper = eventKey(prefix, -1)
	return lower, upper
}

// seqOfEventKey returns the sequence number at the end of an event key.
func seqOfEventKey(k []byte) (int64, error) {
	if len(k) < 8 {
		return 0, fmt.Errorf("event key %x: %w", k, errCorrupt)
	}
	return int64(binary.BigEndian.Uint64(k[len(k)-8:])), nil
}

// appendAny appends the protobuf encoding of a google.protobuf.Any holding
// typeURL and value: field 1 (type_url) and field 2 (value), each left out
// when empty, exactly as proto.Marshal would write it. Records are therefore
// readable by any protobuf tool.
func appendAny(b []byte, p *anypb.Any) []byte {
	if p.GetTypeUrl() != "" {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, p.GetTypeUrl())
	}
	if len(p.GetValue()) > 0 {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, p.GetValue())
	}
	return b
}

// anySize returns the length appendAny adds.
func anySize(p *anypb.Any) int {
	n := 0
	if u := p.GetTypeUrl(); u != "" {
		n += protowire.SizeTag(1) + protowire.SizeBytes(len(u))
	}
	if v := p.GetValue(); len(v) > 0 {
		n += protowire.SizeTag(2) + protowire.SizeBytes(len(v))
	}
	return n
}

// decodeAny decodes what appendAny wrote into a new Any that shares no
// memory with b (Pebble reuses the buffers it returns). Unknown fields are
// skipped, as protobuf parsers do.
func decodeAny(b []byte) (*anypb.Any, error) {
	p := &anypb.Any{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("payload tag: %w: %w", protowire.ParseError(n), errCorrupt)
		}
		b = b[n:]
		if (num == 1 || num == 2) && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, fmt.Errorf("payload field %d: %w: %w", num, protowire.ParseError(n), errCorrupt)
			}
			if num == 1 {
				p.TypeUrl = string(v)
			} else {
				p.Value = append([]byte(nil), v...)
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil, fmt.Errorf("payload field %d: %w: %w", num, protowire.ParseError(n), errCorrupt)
		}
		b = b[n:]
	}
	return p, nil
}

// encodeVersioned returns n as eight big-endian bytes, then extra, then the
// encoded payload p (if not nil). Snapshot records are seq + payload; value
// records are version + state + payload.
func encodeVersioned(n int64, extra []byte, p *anypb.Any) []byte {
	b := make([]byte, 0, 8+len(extra)+anySize(p))
	b = binary.BigEndian.AppendUint64(b, uint64(n))
	b = append(b, extra...)
	if p != nil {
		b = appendAny(b, p)
	}
	return b
}

// versionOf returns the leading eight-byte number of a snapshot or value
// record.
func versionOf(rec []byte) (int64, error) {
	if len(rec) < 8 {
		return 0, fmt.Errorf("record of %d bytes: %w", len(rec), errCorrupt)
	}
	return int64(binary.BigEndian.Uint64(rec)), nil
}

// encodeValue returns the record of a value at version (a tombstone if p is
// nil).
func encodeValue(version int64, p *anypb.Any) []byte {
	state := valuePresent
	if p == nil {
		state = valueTombstone
	}
	return encodeVersioned(version, []byte{state}, p)
}

// decodeValue decodes a value record into its version and payload (nil for a
// tombstone).
func decodeValue(rec []byte) (version int64, p *anypb.Any, err error) {
	if len(rec) < 9 {
		return 0, nil, fmt.Errorf("value record of %d bytes: %w", len(rec), errCorrupt)
	}
	version = int64(binary.BigEndian.Uint64(rec))
	switch rec[8] {
	case valueTombstone:
		return version, nil, nil
	case valuePresent:
		p, err = decodeAny(rec[9:])
		return version, p, err
	default:
		return 0, nil, fmt.Errorf("value state %d: %w", rec[8], errCorrupt)
	}
}

// decodeSnapshot decodes a snapshot record into its seq and payload.
func decodeSnapshot(rec []byte) (seq int64, p *anypb.Any, err error) {
	seq, err = versionOf(rec)
	if err != nil {
		return 0, nil, err
	}
	p, err = decodeAny(rec[8:])
	return seq, p, err
}
