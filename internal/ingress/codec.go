package ingress

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"

	// Registers the "proto" codec that rawCodec falls back to.
	_ "google.golang.org/grpc/encoding/proto"
)

// rawMessage is a request or response of a user service as wire bytes. The
// proxy never decodes user messages on the gRPC path; the bytes go into (or
// come out of) a google.protobuf.Any unchanged (BEHAVIOR.md ING-3).
type rawMessage []byte

// rawCodec passes rawMessage through untouched and handles every other type
// (the reflection service's messages) with the standard proto codec.
type rawCodec struct {
	proto encoding.CodecV2
}

func newRawCodec() rawCodec {
	return rawCodec{proto: encoding.GetCodecV2("proto")}
}

func (c rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if m, ok := v.(*rawMessage); ok {
		return mem.BufferSlice{mem.SliceBuffer(*m)}, nil
	}
	return c.proto.Marshal(v)
}

func (c rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if m, ok := v.(*rawMessage); ok {
		// gRPC frees data when Unmarshal returns; the bytes outlive the call.
		*m = data.Materialize()
		return nil
	}
	return c.proto.Unmarshal(data, v)
}

func (rawCodec) Name() string { return "proto" }
