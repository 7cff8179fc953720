package call

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// FetchFiles asks the server on conn, through gRPC server reflection (v1alpha,
// else v1), for the files declaring each of symbols (full names of messages,
// enums or services) and their imports, and returns them resolved. unknown
// lists the symbols the server does not know, in the order given; they are
// not an error. It is what other commands (cloudstate store) use to turn
// type URLs into JSON with the same resolution as cloudstate call.
func FetchFiles(ctx context.Context, conn *grpc.ClientConn, symbols []string) (files *protoregistry.Files, unknown []string, err error) {
	rc, _, err := openReflection(ctx, conn)
	if err != nil {
		return nil, nil, fmt.Errorf("server reflection: %w", err)
	}
	defer rc.close()
	for _, sym := range symbols {
		found, err := rc.fetchSymbol(sym)
		if err != nil {
			return nil, nil, fmt.Errorf("server reflection: %w", err)
		}
		if !found {
			unknown = append(unknown, sym)
		}
	}
	files, err = rc.files()
	if err != nil {
		return nil, nil, err
	}
	return files, unknown, nil
}
