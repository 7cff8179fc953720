package main

import (
	"fmt"

	"google.golang.org/grpc/mem"
)

// rawMessage is a request or reply as wire bytes. The load generator never
// encodes or decodes messages while it measures, so the client's cost per
// call is the same whatever the target does with the bytes.
type rawMessage []byte

// rawCodec is a gRPC CodecV2 that passes rawMessage through untouched. It
// calls itself "proto" so the content type on the wire is the usual
// application/grpc+proto.
type rawCodec struct{}

// Marshal hands the request bytes to gRPC without copying.
func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*rawMessage)
	if !ok {
		return nil, fmt.Errorf("raw codec: cannot marshal %T, only *rawMessage", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(*m)}, nil
}

// Unmarshal copies the reply into m, reusing m's backing array when it is
// large enough: gRPC frees data when Unmarshal returns, and reusing the
// buffer keeps the client's allocations per call flat.
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*rawMessage)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T, only *rawMessage", v)
	}
	out := (*m)[:0]
	for _, b := range data {
		out = append(out, b.ReadOnlyData()...)
	}
	*m = out
	return nil
}

// Name is the content subtype.
func (rawCodec) Name() string { return "proto" }
