package call

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
)

// invoke calls md with the JSON request(s) read from input and prints every
// response to stdout. A non-OK status is returned as the stream's status
// error; local problems (bad JSON) as plain errors.
//
// Every call is opened as a server stream, even a unary one: on the wire
// it is the same, and it lets a unary method answer with no message (the
// proxy does that for replies without a payload) instead of failing.
func invoke(ctx context.Context, conn *grpc.ClientConn, md protoreflect.MethodDescriptor, types *resolver, input io.Reader, stdout io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	in := &requestReader{dec: json.NewDecoder(input), md: md, types: types}
	if !md.IsStreamingClient() {
		// Read the request before opening the stream so bad JSON never
		// reaches the server.
		req, err := in.next()
		if err == io.EOF {
			return fmt.Errorf("no request JSON for %s: pass it as an argument or on stdin ('{}' for an empty message)", md.Input().FullName())
		}
		if err != nil {
			return err
		}
		if err := in.expectEnd(); err != nil {
			return err
		}
		stream, err := openStream(ctx, conn, md)
		if err != nil {
			return err
		}
		if err := stream.SendMsg(req); err != nil && err != io.EOF {
			return fmt.Errorf("send request: %w", err)
		}
		if err := stream.CloseSend(); err != nil {
			return fmt.Errorf("close send: %w", err)
		}
		return receiveAll(stream, md, types, stdout)
	}

	stream, err := openStream(ctx, conn, md)
	if err != nil {
		return err
	}
	// The sender reads input while the responses are printed, so a bidi
	// exchange works line by line. It stops at the end of input, on bad
	// JSON (cancelling the call) or when the stream ends. If it is blocked
	// reading a terminal when the server ends the call, nothing can
	// interrupt that read; it returns at the next line or at process exit.
	sendErr := make(chan error, 1)
	go func() {
		err := sendAll(stream, in)
		sendErr <- err
		if err != nil {
			cancel()
		}
	}()
	recvErr := receiveAll(stream, md, types, stdout)
	select {
	case err := <-sendErr:
		if err != nil {
			return err // the reason the call was cancelled
		}
	default:
	}
	return recvErr
}

func openStream(ctx context.Context, conn *grpc.ClientConn, md protoreflect.MethodDescriptor) (grpc.ClientStream, error) {
	desc := &grpc.StreamDesc{
		StreamName:    string(md.Name()),
		ServerStreams: true,
		ClientStreams: md.IsStreamingClient(),
	}
	path := fmt.Sprintf("/%s/%s", md.Parent().FullName(), md.Name())
	return conn.NewStream(ctx, desc, path)
}

// sendAll sends every request from in, then half-closes the stream.
func sendAll(stream grpc.ClientStream, in *requestReader) error {
	for {
		req, err := in.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if err := stream.SendMsg(req); err != nil {
			if err == io.EOF {
				return nil // the server ended the call; receiveAll reports how
			}
			return fmt.Errorf("send request %d: %w", in.count, err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		return fmt.Errorf("close send: %w", err)
	}
	return nil
}

// receiveAll prints responses until the stream ends; it returns nil for an
// OK status and the status error otherwise.
func receiveAll(stream grpc.ClientStream, md protoreflect.MethodDescriptor, types *resolver, stdout io.Writer) error {
	// protojson varies its whitespace on purpose; re-indenting with
	// encoding/json gives output that reads the same every time.
	out := protojson.MarshalOptions{EmitUnpopulated: true, Resolver: types}
	for {
		resp := dynamicpb.NewMessage(md.Output())
		if err := stream.RecvMsg(resp); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		b, err := out.Marshal(resp)
		if err != nil {
			return fmt.Errorf("print %s as JSON: %w", md.Output().FullName(), err)
		}
		var pretty bytes.Buffer
		if err := json.Indent(&pretty, b, "", "  "); err != nil {
			return fmt.Errorf("print %s as JSON: %w", md.Output().FullName(), err)
		}
		if _, err := fmt.Fprintf(stdout, "%s\n", pretty.Bytes()); err != nil {
			return fmt.Errorf("write response: %w", err)
		}
	}
}

// requestReader decodes a sequence of JSON values (whitespace or newline
// separated) into request messages.
type requestReader struct {
	dec   *json.Decoder
	md    protoreflect.MethodDescriptor
	types *resolver
	count int // messages read so far
}

// next returns the next request, or io.EOF at the end of input.
func (r *requestReader) next() (proto.Message, error) {
	var raw json.RawMessage
	if err := r.dec.Decode(&raw); err != nil {
		if err == io.EOF {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("request JSON %d is not valid JSON: %w", r.count+1, err)
	}
	r.count++
	msg := dynamicpb.NewMessage(r.md.Input())
	if err := (protojson.UnmarshalOptions{Resolver: r.types}).Unmarshal(raw, msg); err != nil {
		return nil, fmt.Errorf("request JSON %d does not fit %s: %w", r.count, r.md.Input().FullName(), err)
	}
	return msg, nil
}

// expectEnd fails if more JSON follows the single request of a method
// that takes one.
func (r *requestReader) expectEnd() error {
	var raw json.RawMessage
	err := r.dec.Decode(&raw)
	switch {
	case err == io.EOF:
		return nil
	case err != nil:
		return fmt.Errorf("after request JSON: %w", err)
	default:
		return fmt.Errorf("%s takes one request message, but more JSON follows the first", r.md.FullName())
	}
}

// resolver finds message and extension types first among the descriptors
// learned through reflection, then among those linked into this binary
// (for google.protobuf.Any contents such as well-known types).
type resolver struct {
	local *dynamicpb.Types
}

func newResolver(files *protoregistry.Files) *resolver {
	return &resolver{local: dynamicpb.NewTypes(files)}
}

func (r *resolver) FindMessageByName(name protoreflect.FullName) (protoreflect.MessageType, error) {
	if mt, err := r.local.FindMessageByName(name); err == nil {
		return mt, nil
	}
	return protoregistry.GlobalTypes.FindMessageByName(name)
}

func (r *resolver) FindMessageByURL(url string) (protoreflect.MessageType, error) {
	if mt, err := r.local.FindMessageByURL(url); err == nil {
		return mt, nil
	}
	return protoregistry.GlobalTypes.FindMessageByURL(url)
}

func (r *resolver) FindExtensionByName(name protoreflect.FullName) (protoreflect.ExtensionType, error) {
	if xt, err := r.local.FindExtensionByName(name); err == nil {
		return xt, nil
	}
	return protoregistry.GlobalTypes.FindExtensionByName(name)
}

func (r *resolver) FindExtensionByNumber(message protoreflect.FullName, number protoreflect.FieldNumber) (protoreflect.ExtensionType, error) {
	if xt, err := r.local.FindExtensionByNumber(message, number); err == nil {
		return xt, nil
	}
	return protoregistry.GlobalTypes.FindExtensionByNumber(message, number)
}
