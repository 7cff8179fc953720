package call

import (
	"context"
	"fmt"
	"io"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	rpbalpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// reflectionClient is one open server reflection stream, v1alpha or v1,
// used strictly request by request from one goroutine.
type reflectionClient struct {
	roundTrip func(*rpb.ServerReflectionRequest) (*rpb.ServerReflectionResponse, error)
	close     func()
	// protos collects every file received on the stream, by name: a server
	// may skip files it already sent on this stream.
	protos map[string]*descriptorpb.FileDescriptorProto
}

// openReflection opens a reflection stream on conn, trying v1alpha first
// and v1 when the server does not implement v1alpha, and returns it with
// the server's service names. The caller must call close.
func openReflection(ctx context.Context, conn *grpc.ClientConn) (*reflectionClient, []string, error) {
	rc, names, err := tryReflection(ctx, conn, openV1Alpha)
	if status.Code(err) == codes.Unimplemented {
		rc, names, err = tryReflection(ctx, conn, openV1)
	}
	return rc, names, err
}

func tryReflection(ctx context.Context, conn *grpc.ClientConn, open func(context.Context, *grpc.ClientConn) (*reflectionClient, error)) (*reflectionClient, []string, error) {
	rc, err := open(ctx, conn)
	if err != nil {
		return nil, nil, err
	}
	names, err := rc.listServices()
	if err != nil {
		rc.close()
		return nil, nil, err
	}
	return rc, names, nil
}

func openV1(ctx context.Context, conn *grpc.ClientConn) (*reflectionClient, error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := rpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	return &reflectionClient{
		roundTrip: func(req *rpb.ServerReflectionRequest) (*rpb.ServerReflectionResponse, error) {
			if err := stream.Send(req); err != nil {
				return nil, streamErr(stream.RecvMsg, err)
			}
			return stream.Recv()
		},
		close:  func() { stream.CloseSend(); cancel() },
		protos: make(map[string]*descriptorpb.FileDescriptorProto),
	}, nil
}

// openV1Alpha opens a v1alpha stream; its messages have the v1 wire shape
// and are converted by re-encoding.
func openV1Alpha(ctx context.Context, conn *grpc.ClientConn) (*reflectionClient, error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := rpbalpha.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	return &reflectionClient{
		roundTrip: func(req *rpb.ServerReflectionRequest) (*rpb.ServerReflectionResponse, error) {
			alphaReq := new(rpbalpha.ServerReflectionRequest)
			if err := convertMessage(req, alphaReq); err != nil {
				return nil, fmt.Errorf("convert request to v1alpha: %w", err)
			}
			if err := stream.Send(alphaReq); err != nil {
				return nil, streamErr(stream.RecvMsg, err)
			}
			alphaResp, err := stream.Recv()
			if err != nil {
				return nil, err
			}
			resp := new(rpb.ServerReflectionResponse)
			if err := convertMessage(alphaResp, resp); err != nil {
				return nil, fmt.Errorf("convert v1alpha response: %w", err)
			}
			return resp, nil
		},
		close:  func() { stream.CloseSend(); cancel() },
		protos: make(map[string]*descriptorpb.FileDescriptorProto),
	}, nil
}

// streamErr turns io.EOF from Send into the stream's real status, which
// only Recv reports (e.g. UNIMPLEMENTED for a missing reflection service).
func streamErr(recvMsg func(any) error, sendErr error) error {
	if sendErr != io.EOF {
		return sendErr
	}
	if err := recvMsg(new(rpb.ServerReflectionResponse)); err != nil {
		return err
	}
	return sendErr
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

// ask sends one request and returns its response, turning an
// error_response into an error carrying its code.
func (rc *reflectionClient) ask(req *rpb.ServerReflectionRequest) (*rpb.ServerReflectionResponse, error) {
	resp, err := rc.roundTrip(req)
	if err != nil {
		return nil, err
	}
	if e := resp.GetErrorResponse(); e != nil {
		return nil, status.Error(codes.Code(e.GetErrorCode()), e.GetErrorMessage())
	}
	return resp, nil
}

func (rc *reflectionClient) listServices() ([]string, error) {
	resp, err := rc.ask(&rpb.ServerReflectionRequest{
		MessageRequest: &rpb.ServerReflectionRequest_ListServices{ListServices: "*"},
	})
	if err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	list := resp.GetListServicesResponse()
	if list == nil {
		return nil, fmt.Errorf("list services: server answered with %T", resp.GetMessageResponse())
	}
	var names []string
	for _, s := range list.GetService() {
		names = append(names, s.GetName())
	}
	return names, nil
}

// fetchSymbol asks for the file declaring symbol and its imports and keeps
// them; it reports whether the server knew the symbol.
func (rc *reflectionClient) fetchSymbol(symbol string) (bool, error) {
	resp, err := rc.ask(&rpb.ServerReflectionRequest{
		MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: symbol},
	})
	if status.Code(err) == codes.NotFound {
		return false, nil // grpc-go's reflection reports unknown symbols this way
	}
	if err != nil {
		return false, fmt.Errorf("file containing %s: %w", symbol, err)
	}
	return rc.keep(resp)
}

// fetchFile asks for a file by name and keeps it and its imports; it
// reports whether the server knew the file.
func (rc *reflectionClient) fetchFile(name string) (bool, error) {
	resp, err := rc.ask(&rpb.ServerReflectionRequest{
		MessageRequest: &rpb.ServerReflectionRequest_FileByFilename{FileByFilename: name},
	})
	if status.Code(err) == codes.NotFound {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("file %s: %w", name, err)
	}
	return rc.keep(resp)
}

// keep stores the files of a file_descriptor_response and reports whether
// there was any.
func (rc *reflectionClient) keep(resp *rpb.ServerReflectionResponse) (bool, error) {
	fdr := resp.GetFileDescriptorResponse()
	if fdr == nil {
		return false, fmt.Errorf("server answered with %T, want a file_descriptor_response", resp.GetMessageResponse())
	}
	for _, b := range fdr.GetFileDescriptorProto() {
		fp := new(descriptorpb.FileDescriptorProto)
		if err := proto.Unmarshal(b, fp); err != nil {
			return false, fmt.Errorf("decode file descriptor: %w", err)
		}
		rc.protos[fp.GetName()] = fp
	}
	return len(fdr.GetFileDescriptorProto()) > 0, nil
}

// files resolves every file received so far into a registry, first asking
// for any import the server has not sent. An import the server does not
// know is taken from the files linked into this binary (well-known types).
func (rc *reflectionClient) files() (*protoregistry.Files, error) {
	for {
		missing := rc.missingImport()
		if missing == "" {
			break
		}
		found, err := rc.fetchFile(missing)
		if err != nil {
			return nil, err
		}
		if _, ok := rc.protos[missing]; ok && found {
			continue
		}
		fd, err := protoregistry.GlobalFiles.FindFileByPath(missing)
		if err != nil {
			return nil, fmt.Errorf("server reflection does not have %s, an import", missing)
		}
		rc.protos[missing] = protodesc.ToFileDescriptorProto(fd)
	}
	set := &descriptorpb.FileDescriptorSet{}
	for _, fp := range rc.protos {
		set.File = append(set.File, fp)
	}
	files, err := protodesc.NewFiles(set)
	if err != nil {
		return nil, fmt.Errorf("resolve descriptors from server reflection: %w", err)
	}
	return files, nil
}

// missingImport returns the smallest import name not yet received, or "".
func (rc *reflectionClient) missingImport() string {
	var missing []string
	for _, fp := range rc.protos {
		for _, dep := range fp.GetDependency() {
			if _, ok := rc.protos[dep]; !ok {
				missing = append(missing, dep)
			}
		}
	}
	if len(missing) == 0 {
		return ""
	}
	return slices.Min(missing)
}
