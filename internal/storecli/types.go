package storecli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/cloudstate-go/cloudstate/internal/call"
	"github.com/cloudstate-go/cloudstate/internal/discovery"
	"github.com/cloudstate-go/cloudstate/protocol"
)

// descriptorsNone turns type resolution off (--descriptors none).
const descriptorsNone = "none"

// resolveTimeout bounds learning descriptors from a server, so that a
// proxy that is not running (the usual case with Pebble) costs little.
const resolveTimeout = 5 * time.Second

// typeSource finds the message types of payloads. It learns descriptors
// once, from spec (--descriptors), for the types the binary does not know
// itself, and remembers the type URLs it could not resolve so that Run can
// say why they were printed as base64.
type typeSource struct {
	spec string

	local   *dynamicpb.Types // nil until descriptors were learned
	why     string           // why descriptors are missing, for the note
	unknown []string         // type URLs printed as base64, first seen first
}

// load learns the descriptors of the message types named by typeURLs that
// are neither Cloudstate primitives nor linked into this binary. Failing
// to learn them is not an error: those payloads are printed as base64.
func (t *typeSource) load(ctx context.Context, typeURLs []string) {
	var names []string
	for _, url := range typeURLs {
		if isPrimitive(url) {
			continue
		}
		name := typeName(url)
		if _, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(name)); err == nil {
			continue
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return
	}
	files, err := t.fetch(ctx, names)
	if err != nil {
		t.why = err.Error()
		return
	}
	t.local = dynamicpb.NewTypes(files)
}

// fetch gets the files declaring names from the descriptor set file or the
// server spec names.
func (t *typeSource) fetch(ctx context.Context, names []string) (*protoregistry.Files, error) {
	if t.spec == "" || t.spec == descriptorsNone {
		return nil, errors.New("--descriptors none")
	}
	if info, err := os.Stat(t.spec); err == nil && info.Mode().IsRegular() {
		b, err := os.ReadFile(t.spec)
		if err != nil {
			return nil, err
		}
		set := new(descriptorpb.FileDescriptorSet)
		if err := proto.Unmarshal(b, set); err != nil {
			return nil, fmt.Errorf("%s is not a FileDescriptorSet: %v", t.spec, err)
		}
		files, err := buildFiles(set)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", t.spec, err)
		}
		t.why = "not in " + t.spec
		return files, nil
	}

	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	conn, err := grpc.NewClient(t.spec, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("--descriptors %s: %w", t.spec, err)
	}
	defer conn.Close()
	files, _, err := call.FetchFiles(ctx, conn, names)
	switch {
	case err == nil:
		// A proxy knows what its user function declared in discovery.
		t.why = "the server at " + t.spec + " does not know them; a proxy only knows the types its user function sent in discovery (try --descriptors with a descriptor set file)"
		return files, nil
	case status.Code(err) != codes.Unimplemented:
		return nil, fmt.Errorf("no descriptors from %s: %s", t.spec, status.Convert(err).Message())
	}
	// No reflection: a user function answers discovery instead.
	spec, err := protocol.NewEntityDiscoveryClient(conn).Discover(ctx, &protocol.ProxyInfo{
		ProtocolMajorVersion: discovery.ProtocolMajorVersion,
		ProtocolMinorVersion: discovery.ProtocolMinorVersion,
		ProxyName:            "cloudstate store",
		SupportedEntityTypes: []string{discovery.EventSourced, discovery.ValueEntity, discovery.Action},
	})
	if err != nil {
		return nil, fmt.Errorf("no descriptors from %s (neither server reflection nor discovery): %s", t.spec, status.Convert(err).Message())
	}
	set := new(descriptorpb.FileDescriptorSet)
	if err := proto.Unmarshal(spec.GetProto(), set); err != nil {
		return nil, fmt.Errorf("the discovery answer of %s has no valid descriptor set: %v", t.spec, err)
	}
	files, err = buildFiles(set)
	if err != nil {
		return nil, fmt.Errorf("the discovery answer of %s: %w", t.spec, err)
	}
	t.why = "the user function at " + t.spec + " did not declare them in discovery (try --descriptors with a descriptor set file)"
	return files, nil
}

// buildFiles resolves set into a registry. Imports the set leaves out are
// taken from the files linked into this binary (well-known types, the
// Cloudstate protocol), so a set made without --include_imports works too.
func buildFiles(set *descriptorpb.FileDescriptorSet) (*protoregistry.Files, error) {
	have := make(map[string]bool, len(set.GetFile()))
	for _, f := range set.GetFile() {
		have[f.GetName()] = true
	}
	all := slices.Clone(set.GetFile())
	for i := 0; i < len(all); i++ {
		for _, dep := range all[i].GetDependency() {
			if have[dep] {
				continue
			}
			fd, err := protoregistry.GlobalFiles.FindFileByPath(dep)
			if err != nil {
				return nil, fmt.Errorf("import %s is missing from the descriptor set", dep)
			}
			have[dep] = true
			all = append(all, protodesc.ToFileDescriptorProto(fd))
		}
	}
	files, err := protodesc.NewFiles(&descriptorpb.FileDescriptorSet{File: all})
	if err != nil {
		return nil, fmt.Errorf("resolve descriptors: %w", err)
	}
	return files, nil
}

// messageType returns the type named by a type URL, or false. A miss is
// remembered for the note.
func (t *typeSource) messageType(url string) (protoreflect.MessageType, bool) {
	if mt, err := t.FindMessageByURL(url); err == nil {
		return mt, true
	}
	t.missed(url)
	return nil, false
}

// missed remembers that url was printed as base64.
func (t *typeSource) missed(url string) {
	if !slices.Contains(t.unknown, url) {
		t.unknown = append(t.unknown, url)
	}
}

// reportUnknown writes a note to w naming the type URLs printed as base64
// and why their descriptors were not found.
func (t *typeSource) reportUnknown(w io.Writer) {
	if len(t.unknown) == 0 {
		return
	}
	why := t.why
	if why == "" {
		why = "unknown types"
	}
	fmt.Fprintf(w, "cloudstate store: payloads of %d type(s) are printed as base64 (%s):\n  %s\n",
		len(t.unknown), why, strings.Join(t.unknown, "\n  "))
}

// typeName is the message name of a type URL: what follows its last "/".
func typeName(url string) string {
	if i := strings.LastIndexByte(url, '/'); i >= 0 {
		return url[i+1:]
	}
	return url
}

// FindMessageByName, FindMessageByURL, FindExtensionByName and
// FindExtensionByNumber make a typeSource the resolver of protojson and
// proto.Unmarshal (for Any fields inside payloads): learned descriptors
// first, then the types linked into this binary.
func (t *typeSource) FindMessageByName(name protoreflect.FullName) (protoreflect.MessageType, error) {
	if t.local != nil {
		if mt, err := t.local.FindMessageByName(name); err == nil {
			return mt, nil
		}
	}
	return protoregistry.GlobalTypes.FindMessageByName(name)
}

func (t *typeSource) FindMessageByURL(url string) (protoreflect.MessageType, error) {
	if t.local != nil {
		if mt, err := t.local.FindMessageByURL(url); err == nil {
			return mt, nil
		}
	}
	return protoregistry.GlobalTypes.FindMessageByURL(url)
}

func (t *typeSource) FindExtensionByName(name protoreflect.FullName) (protoreflect.ExtensionType, error) {
	if t.local != nil {
		if xt, err := t.local.FindExtensionByName(name); err == nil {
			return xt, nil
		}
	}
	return protoregistry.GlobalTypes.FindExtensionByName(name)
}

func (t *typeSource) FindExtensionByNumber(message protoreflect.FullName, number protoreflect.FieldNumber) (protoreflect.ExtensionType, error) {
	if t.local != nil {
		if xt, err := t.local.FindExtensionByNumber(message, number); err == nil {
			return xt, nil
		}
	}
	return protoregistry.GlobalTypes.FindExtensionByNumber(message, number)
}
