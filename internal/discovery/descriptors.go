package discovery

import (
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	// Link every well-known type so that wellKnownFile can supply any
	// google/protobuf import a descriptor set leaves out.
	_ "google.golang.org/protobuf/types/known/anypb"
	_ "google.golang.org/protobuf/types/known/apipb"
	_ "google.golang.org/protobuf/types/known/durationpb"
	_ "google.golang.org/protobuf/types/known/emptypb"
	_ "google.golang.org/protobuf/types/known/fieldmaskpb"
	_ "google.golang.org/protobuf/types/known/sourcecontextpb"
	_ "google.golang.org/protobuf/types/known/structpb"
	_ "google.golang.org/protobuf/types/known/timestamppb"
	_ "google.golang.org/protobuf/types/known/typepb"
	_ "google.golang.org/protobuf/types/known/wrapperspb"
)

// wellKnownPrefix names the files that may be missing from a descriptor set
// and taken from the proxy's own copies instead: they never change between
// versions in ways that matter to a user service, and some support libraries
// omit them.
const wellKnownPrefix = "google/protobuf/"

// buildFiles resolves the files of set into a private registry, whatever
// their order in the set (a support library may list a file before its
// imports), and returns them in dependency order: every file after its
// imports. Well-known imports absent from the set come from the global
// registry; the set's own copies are preferred when present.
func buildFiles(set *descriptorpb.FileDescriptorSet) (*protoregistry.Files, []*descriptorpb.FileDescriptorProto, error) {
	byName := make(map[string]*descriptorpb.FileDescriptorProto, len(set.GetFile()))
	for _, f := range set.GetFile() {
		if prev, dup := byName[f.GetName()]; dup {
			// Identical copies are harmless; differing ones leave no way to choose.
			if !proto.Equal(prev, f) {
				return nil, nil, invalidf("The descriptor set contains two different files named [%s]", f.GetName())
			}
			continue
		}
		byName[f.GetName()] = f
	}

	r := resolver{
		byName: byName,
		state:  make(map[string]visitState, len(byName)),
		files:  new(protoregistry.Files),
	}
	for _, f := range set.GetFile() {
		if err := r.visit(f.GetName(), nil); err != nil {
			return nil, nil, err
		}
	}
	return r.files, r.ordered, nil
}

type visitState int

const (
	unvisited visitState = iota
	visiting
	visited
)

// resolver walks the import graph depth first, registering each file once
// all of its imports are registered.
type resolver struct {
	byName  map[string]*descriptorpb.FileDescriptorProto
	state   map[string]visitState
	files   *protoregistry.Files
	ordered []*descriptorpb.FileDescriptorProto
}

// visit registers the file called name; path is the chain of importers that
// led here, for naming a cycle.
func (r *resolver) visit(name string, path []string) error {
	switch r.state[name] {
	case visited:
		return nil
	case visiting:
		cycle := slices.Concat(path[slices.Index(path, name):], []string{name})
		return invalidf("Circular dependency detected: %s", strings.Join(cycle, " -> "))
	}
	fdp, ok := r.byName[name]
	if !ok {
		fdp = wellKnownFile(name)
		if fdp == nil {
			return invalidf("Descriptor dependency [%s] not found, imported by [%s]", name, path[len(path)-1])
		}
		r.byName[name] = fdp
	}
	r.state[name] = visiting
	path = append(path, name)
	for _, dep := range fdp.GetDependency() {
		if err := r.visit(dep, path); err != nil {
			return err
		}
	}
	fd, err := protodesc.NewFile(fdp, r.files)
	if err != nil {
		return invalidf("File [%s] of the descriptor set is not valid: %v", name, err)
	}
	if err := r.files.RegisterFile(fd); err != nil {
		return invalidf("File [%s] of the descriptor set cannot be registered: %v", name, err)
	}
	r.state[name] = visited
	r.ordered = append(r.ordered, fdp)
	return nil
}

// wellKnownFile returns the proxy's own copy of a google/protobuf file, or
// nil when name is not such a file.
func wellKnownFile(name string) *descriptorpb.FileDescriptorProto {
	if !strings.HasPrefix(name, wellKnownPrefix) {
		return nil
	}
	fd, err := protoregistry.GlobalFiles.FindFileByPath(name)
	if err != nil {
		return nil
	}
	return protodesc.ToFileDescriptorProto(fd)
}
