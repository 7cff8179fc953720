package sdk

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"time"

	"github.com/cloudstate-go/cloudstate/protocol"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/emptypb"
)

// LibraryName and LibraryVersion identify this support library in discovery.
const (
	LibraryName    = "cloudstate-go-sdk"
	LibraryVersion = "0.1.0"
)

// The Cloudstate protocol version this library speaks.
const (
	ProtocolMajorVersion = 0
	ProtocolMinorVersion = 2
)

// discoveryService serves cloudstate.EntityDiscovery. Its spec is built once,
// when serving starts, so every discover call gets the same answer.
type discoveryService struct {
	protocol.UnimplementedEntityDiscoveryServer
	spec   *protocol.EntitySpec
	logger *slog.Logger
}

// Discover answers the proxy's handshake with the entities this function
// serves and the descriptors of their services.
func (d *discoveryService) Discover(_ context.Context, info *protocol.ProxyInfo) (*protocol.EntitySpec, error) {
	d.logger.Info("discovery requested by the proxy",
		"proxy", info.GetProxyName(), "proxy_version", info.GetProxyVersion(),
		"protocol", fmt.Sprintf("%d.%d", info.GetProtocolMajorVersion(), info.GetProtocolMinorVersion()))
	if info.GetProtocolMajorVersion() != ProtocolMajorVersion || info.GetProtocolMinorVersion() != ProtocolMinorVersion {
		d.logger.Warn("the proxy speaks a different protocol version",
			"proxy_protocol", fmt.Sprintf("%d.%d", info.GetProtocolMajorVersion(), info.GetProtocolMinorVersion()),
			"library_protocol", fmt.Sprintf("%d.%d", ProtocolMajorVersion, ProtocolMinorVersion))
	}
	for _, e := range d.spec.GetEntities() {
		if !slices.Contains(info.GetSupportedEntityTypes(), e.GetEntityType()) {
			d.logger.Warn("the proxy does not support an entity type this function uses",
				"entity_type", e.GetEntityType(), "service", e.GetServiceName(),
				"supported", info.GetSupportedEntityTypes())
		}
	}
	return proto.CloneOf(d.spec), nil
}

// ReportError logs an error the proxy found in this user function (a bad
// descriptor, a forward to an unknown service, ...). These are bugs in the
// function, so they are logged at error level.
func (d *discoveryService) ReportError(_ context.Context, e *protocol.UserFunctionError) (*emptypb.Empty, error) {
	d.logger.Error("the Cloudstate proxy reported an error in this user function", "message", e.GetMessage())
	return &emptypb.Empty{}, nil
}

// serviceInfo is what the function says about itself in discovery.
type serviceInfo struct {
	name, version string
}

// discovered is one registered service as discovery describes it.
type discovered struct {
	entity  *protocol.Entity
	service protoreflect.ServiceDescriptor
	// types are further messages the entity stores (events, snapshots):
	// their files go into the descriptor set too, so the proxy can show
	// stored payloads as JSON (reflection, `cloudstate store`).
	types []protoreflect.MessageDescriptor
}

// buildEntitySpec assembles the discovery answer for the registered
// services, in registration order.
func buildEntitySpec(info serviceInfo, entities []discovered) (*protocol.EntitySpec, error) {
	spec := &protocol.EntitySpec{
		ServiceInfo: &protocol.ServiceInfo{
			ServiceName:           info.name,
			ServiceVersion:        info.version,
			ServiceRuntime:        runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH,
			SupportLibraryName:    LibraryName,
			SupportLibraryVersion: LibraryVersion,
			ProtocolMajorVersion:  ProtocolMajorVersion,
			ProtocolMinorVersion:  ProtocolMinorVersion,
		},
	}
	var files []protoreflect.FileDescriptor
	for _, d := range entities {
		files = append(files, d.service.ParentFile())
		spec.Entities = append(spec.Entities, proto.CloneOf(d.entity))
	}
	for _, d := range entities {
		for _, md := range d.types {
			files = append(files, md.ParentFile())
		}
	}
	set, err := fileDescriptorSet(files)
	if err != nil {
		return nil, err
	}
	if spec.Proto, err = (proto.MarshalOptions{Deterministic: true}).Marshal(set); err != nil {
		return nil, fmt.Errorf("marshal descriptor set: %w", err)
	}
	return spec, nil
}

func passivationStrategy(cfg entityConfig) *protocol.EntityPassivationStrategy {
	if cfg.passivationTimeout <= 0 {
		return nil
	}
	// The wire unit is milliseconds; round up so a tiny timeout is not 0,
	// which a proxy would read as "not set".
	ms := (cfg.passivationTimeout + time.Millisecond - 1).Milliseconds()
	return &protocol.EntityPassivationStrategy{Strategy: &protocol.EntityPassivationStrategy_Timeout{
		Timeout: &protocol.TimeoutPassivationStrategy{Timeout: ms},
	}}
}

// fileDescriptorSet returns files and all their transitive imports, each
// once, every file after its imports.
func fileDescriptorSet(files []protoreflect.FileDescriptor) (*descriptorpb.FileDescriptorSet, error) {
	set := &descriptorpb.FileDescriptorSet{}
	seen := make(map[string]bool)
	var add func(fd protoreflect.FileDescriptor) error
	add = func(fd protoreflect.FileDescriptor) error {
		if seen[fd.Path()] {
			return nil
		}
		seen[fd.Path()] = true
		if fd.IsPlaceholder() {
			return fmt.Errorf("file %s is not linked into the program (import its generated Go package)", fd.Path())
		}
		imports := fd.Imports()
		for i := 0; i < imports.Len(); i++ {
			if err := add(imports.Get(i).FileDescriptor); err != nil {
				return fmt.Errorf("%s imports %w", fd.Path(), err)
			}
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
		return nil
	}
	for _, fd := range files {
		if err := add(fd); err != nil {
			return nil, fmt.Errorf("descriptors of %s: %w", fd.Path(), err)
		}
	}
	return set, nil
}
