package ingress

import (
	"fmt"
	"io"
	"slices"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	rpbalpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/cloudstate-go/cloudstate/internal/discovery"
)

// Names of the two reflection services, as listed by list_services.
const (
	reflectionV1AlphaName = "grpc.reflection.v1alpha.ServerReflection"
	reflectionV1Name      = "grpc.reflection.v1.ServerReflection"
)

// Reflection serves gRPC server reflection (BEHAVIOR ING-8) over the
// descriptors of the current discovery model. The proxy serves user services
// without generated code, so grpc-go's stock reflection cannot see them.
//
// The same implementation answers grpc.reflection.v1alpha (used by the TCK)
// and grpc.reflection.v1 (grpcurl and newer clients). Behaviour:
//   - list_services returns the reflection service's own name first, then
//     the discovered services sorted by name.
//   - file requests answer with the requested file followed by its transitive
//     imports. Like grpc-go, an import already sent earlier on the same stream
//     is not sent again (the requested file itself always is); the set is
//     forgotten when the model changes.
//   - An unknown file, symbol or extension gives an empty
//     file_descriptor_response, and all_extension_numbers_of_type for an
//     unknown type gives an empty list: never an error, which the TCK checks.
//   - Besides the model, the reflection protos themselves can be fetched, so
//     clients that describe every listed service (grpcurl describe) work.
//
// Reflection is safe for concurrent use by many streams.
type Reflection struct {
	current func() *discovery.Model

	mu    sync.Mutex
	index *reflectionIndex // for the model current returned last
}

// NewReflection returns a reflection service answering from current(), which
// is called once per request and returns nil until discovery has succeeded.
// Before that, list_services lists only the reflection service itself.
func NewReflection(current func() *discovery.Model) *Reflection {
	return &Reflection{current: current}
}

// Register adds grpc.reflection.v1alpha.ServerReflection and
// grpc.reflection.v1.ServerReflection to s. Pass the *grpc.Server.
func (r *Reflection) Register(s grpc.ServiceRegistrar) {
	rpbalpha.RegisterServerReflectionServer(s, v1alphaReflectionServer{r: r})
	rpb.RegisterServerReflectionServer(s, v1ReflectionServer{r: r})
}

// v1ReflectionServer is the v1 face of Reflection.
type v1ReflectionServer struct {
	rpb.UnimplementedServerReflectionServer
	r *Reflection
}

// ServerReflectionInfo serves one v1 reflection stream.
func (s v1ReflectionServer) ServerReflectionInfo(stream rpb.ServerReflection_ServerReflectionInfoServer) error {
	return s.r.serve(reflectionV1Name, stream.Recv, stream.Send)
}

// v1alphaReflectionServer is the v1alpha face of Reflection. The v1alpha
// messages have exactly the v1 wire shape, so each message is converted by
// re-encoding and the v1 logic does the work.
type v1alphaReflectionServer struct {
	rpbalpha.UnimplementedServerReflectionServer
	r *Reflection
}

// ServerReflectionInfo serves one v1alpha reflection stream.
func (s v1alphaReflectionServer) ServerReflectionInfo(stream rpbalpha.ServerReflection_ServerReflectionInfoServer) error {
	recv := func() (*rpb.ServerReflectionRequest, error) {
		in, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		req := new(rpb.ServerReflectionRequest)
		if err := convertMessage(in, req); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "reflection: convert v1alpha request: %v", err)
		}
		return req, nil
	}
	send := func(resp *rpb.ServerReflectionResponse) error {
		out := new(rpbalpha.ServerReflectionResponse)
		if err := convertMessage(resp, out); err != nil {
			return status.Errorf(codes.Internal, "reflection: convert v1alpha response: %v", err)
		}
		return stream.Send(out)
	}
	return s.r.serve(reflectionV1AlphaName, recv, send)
}

// convertMessage copies from into to through the wire format; both must
// have the same field numbers and types.
func convertMessage(from, to proto.Message) error {
	b, err := proto.Marshal(from)
	if err != nil {
		return err
	}
	return proto.Unmarshal(b, to)
}

// serve answers requests from recv until the client closes its side.
// self is the reflection service name listed first by list_services.
func (r *Reflection) serve(self string, recv func() (*rpb.ServerReflectionRequest, error), send func(*rpb.ServerReflectionResponse) error) error {
	sent := make(map[string]bool) // file paths already sent on this stream
	var sentFor *discovery.Model
	for {
		req, err := recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		ix := r.indexFor(r.current())
		if ix.model != sentFor {
			// Files of an older model may differ under the same path.
			clear(sent)
			sentFor = ix.model
		}
		if err := send(ix.answer(self, req, sent)); err != nil {
			return err
		}
	}
}

// indexFor returns the index of m, building it the first time m is seen.
func (r *Reflection) indexFor(m *discovery.Model) *reflectionIndex {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.index == nil || r.index.model != m {
		r.index = newReflectionIndex(m)
	}
	return r.index
}

// descriptorSource is one set of files reflection can answer from.
type descriptorSource struct {
	files *protoregistry.Files
	// encoded maps a file path to its serialized FileDescriptorProto.
	encoded map[string][]byte
	// extensions maps an extended message's full name to its extensions.
	extensions map[protoreflect.FullName][]protoreflect.ExtensionDescriptor
}

// reflectionIndex is what reflection needs from one model; immutable.
type reflectionIndex struct {
	model *discovery.Model // nil before discovery
	// serviceNames are the discovered services, sorted.
	serviceNames []string
	// sources are searched in order: the model, then the reflection protos.
	sources []*descriptorSource
}

// builtinSource holds the reflection protos themselves.
var builtinSource = sync.OnceValue(func() *descriptorSource {
	files := new(protoregistry.Files)
	for _, fd := range []protoreflect.FileDescriptor{
		rpbalpha.File_grpc_reflection_v1alpha_reflection_proto,
		rpb.File_grpc_reflection_v1_reflection_proto,
	} {
		if err := files.RegisterFile(fd); err != nil {
			panic(fmt.Sprintf("reflection: register %s: %v", fd.Path(), err))
		}
	}
	return newDescriptorSource(files, nil)
})

func newReflectionIndex(m *discovery.Model) *reflectionIndex {
	ix := &reflectionIndex{model: m}
	if m != nil && m.Files != nil {
		encoded := make(map[string][]byte, len(m.FileProtos))
		for _, fp := range m.FileProtos {
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(fp)
			if err != nil {
				continue // encoded lazily from Files instead
			}
			encoded[fp.GetName()] = b
		}
		ix.sources = append(ix.sources, newDescriptorSource(m.Files, encoded))
	}
	if m != nil {
		ix.serviceNames = slices.Clone(m.ServiceNames)
		slices.Sort(ix.serviceNames) // the TCK checks the order
	}
	ix.sources = append(ix.sources, builtinSource())
	return ix
}

func newDescriptorSource(files *protoregistry.Files, encoded map[string][]byte) *descriptorSource {
	src := &descriptorSource{
		files:      files,
		encoded:    encoded,
		extensions: make(map[protoreflect.FullName][]protoreflect.ExtensionDescriptor),
	}
	files.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		src.addExtensions(fd.Extensions())
		src.addMessageExtensions(fd.Messages())
		return true
	})
	return src
}

func (src *descriptorSource) addMessageExtensions(mds protoreflect.MessageDescriptors) {
	for i := 0; i < mds.Len(); i++ {
		md := mds.Get(i)
		src.addExtensions(md.Extensions())
		src.addMessageExtensions(md.Messages())
	}
}

func (src *descriptorSource) addExtensions(xds protoreflect.ExtensionDescriptors) {
	for i := 0; i < xds.Len(); i++ {
		xd := xds.Get(i)
		extendee := xd.ContainingMessage().FullName()
		src.extensions[extendee] = append(src.extensions[extendee], xd)
	}
}

// encode returns fd serialized as a FileDescriptorProto, preferring the
// bytes of the descriptor set as the user function sent it.
func (src *descriptorSource) encode(fd protoreflect.FileDescriptor) ([]byte, error) {
	if b, ok := src.encoded[fd.Path()]; ok {
		return b, nil
	}
	return proto.MarshalOptions{Deterministic: true}.Marshal(protodesc.ToFileDescriptorProto(fd))
}

// answer builds the response to one request. sent is updated with the
// files the response carries.
func (ix *reflectionIndex) answer(self string, req *rpb.ServerReflectionRequest, sent map[string]bool) *rpb.ServerReflectionResponse {
	resp := &rpb.ServerReflectionResponse{ValidHost: req.GetHost(), OriginalRequest: req}
	switch mr := req.GetMessageRequest().(type) {
	case *rpb.ServerReflectionRequest_ListServices:
		services := make([]*rpb.ServiceResponse, 0, 1+len(ix.serviceNames))
		services = append(services, &rpb.ServiceResponse{Name: self})
		for _, name := range ix.serviceNames {
			services = append(services, &rpb.ServiceResponse{Name: name})
		}
		resp.MessageResponse = &rpb.ServerReflectionResponse_ListServicesResponse{
			ListServicesResponse: &rpb.ListServiceResponse{Service: services},
		}
	case *rpb.ServerReflectionRequest_FileByFilename:
		resp.MessageResponse = ix.fileResponse(sent, func(src *descriptorSource) (protoreflect.FileDescriptor, error) {
			return src.files.FindFileByPath(mr.FileByFilename)
		})
	case *rpb.ServerReflectionRequest_FileContainingSymbol:
		resp.MessageResponse = ix.fileResponse(sent, func(src *descriptorSource) (protoreflect.FileDescriptor, error) {
			d, err := src.files.FindDescriptorByName(protoreflect.FullName(mr.FileContainingSymbol))
			if err != nil {
				return nil, err
			}
			return d.ParentFile(), nil
		})
	case *rpb.ServerReflectionRequest_FileContainingExtension:
		extendee := protoreflect.FullName(mr.FileContainingExtension.GetContainingType())
		number := protoreflect.FieldNumber(mr.FileContainingExtension.GetExtensionNumber())
		resp.MessageResponse = ix.fileResponse(sent, func(src *descriptorSource) (protoreflect.FileDescriptor, error) {
			for _, xd := range src.extensions[extendee] {
				if xd.Number() == number {
					return xd.ParentFile(), nil
				}
			}
			return nil, protoregistry.NotFound
		})
	case *rpb.ServerReflectionRequest_AllExtensionNumbersOfType:
		extendee := protoreflect.FullName(mr.AllExtensionNumbersOfType)
		var numbers []int32
		for _, src := range ix.sources {
			for _, xd := range src.extensions[extendee] {
				numbers = append(numbers, int32(xd.Number()))
			}
		}
		slices.Sort(numbers)
		resp.MessageResponse = &rpb.ServerReflectionResponse_AllExtensionNumbersResponse{
			AllExtensionNumbersResponse: &rpb.ExtensionNumberResponse{
				BaseTypeName:    string(extendee),
				ExtensionNumber: slices.Compact(numbers),
			},
		}
	default:
		resp.MessageResponse = &rpb.ServerReflectionResponse_ErrorResponse{
			ErrorResponse: &rpb.ErrorResponse{
				ErrorCode:    int32(codes.InvalidArgument),
				ErrorMessage: "reflection: request has no known message_request",
			},
		}
	}
	return resp
}

// fileResponse answers a file request with the first file find locates in
// the sources, followed by its transitive imports not yet sent on this
// stream. If no source has it, the response is empty.
func (ix *reflectionIndex) fileResponse(sent map[string]bool, find func(*descriptorSource) (protoreflect.FileDescriptor, error)) *rpb.ServerReflectionResponse_FileDescriptorResponse {
	out := &rpb.FileDescriptorResponse{}
	for _, src := range ix.sources {
		fd, err := find(src)
		if err != nil || fd == nil || fd.IsPlaceholder() {
			continue
		}
		out.FileDescriptorProto = src.withImports(fd, sent)
		break
	}
	return &rpb.ServerReflectionResponse_FileDescriptorResponse{FileDescriptorResponse: out}
}

// withImports serializes fd and then, breadth first, each of its transitive
// imports that has not been sent on this stream, marking them sent. A file
// that was sent had all its imports sent with it, so the walk stops there.
func (src *descriptorSource) withImports(fd protoreflect.FileDescriptor, sent map[string]bool) [][]byte {
	var out [][]byte
	seen := map[string]bool{fd.Path(): true}
	queue := []protoreflect.FileDescriptor{fd}
	for len(queue) > 0 {
		f := queue[0]
		queue = queue[1:]
		if f != fd && sent[f.Path()] {
			continue
		}
		b, err := src.encode(f)
		if err != nil {
			continue // cannot happen for a resolved descriptor; skip rather than fail the stream
		}
		out = append(out, b)
		sent[f.Path()] = true
		imports := f.Imports()
		for i := 0; i < imports.Len(); i++ {
			imp := imports.Get(i).FileDescriptor
			if imp == nil || imp.IsPlaceholder() || seen[imp.Path()] {
				continue
			}
			seen[imp.Path()] = true
			queue = append(queue, imp)
		}
	}
	return out
}
