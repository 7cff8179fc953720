// Package discovery performs the handshake with the user function and turns
// its answer (an EntitySpec) into the proxy's service Model.
//
// Build is pure: it validates an EntitySpec and builds the Model
// (shared/spec/PROTOCOL.md §5.2, BEHAVIOR.md DISC-3..DISC-7, ROUTE-3). Client
// runs the discover call against the user function, retrying until it
// answers, and reports a rejected spec back with reportError.
package discovery

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/cloudstate-go/cloudstate/internal/httpapi"
	"github.com/cloudstate-go/cloudstate/protocol"
)

// Protocol version this proxy implements (PROTOCOL.md §1).
const (
	ProtocolMajorVersion = 0
	ProtocolMinorVersion = 2
)

// ErrInvalidSpec marks every rejection of an EntitySpec by Build. Such an
// error is final: the spec is reported to the user function and discovery is
// not retried (BEHAVIOR.md DISC-3, and DISC-4's deviation for descriptors
// that do not parse or validate). Check with errors.Is.
var ErrInvalidSpec = errors.New("discovery: invalid entity spec")

// specError is a rejection whose Error text is a single sentence fit to be
// sent to the user function with reportError, without the sentinel's prefix.
type specError struct{ msg string }

func (e *specError) Error() string        { return e.msg }
func (e *specError) Is(target error) bool { return target == ErrInvalidSpec }

func invalidf(format string, args ...any) error {
	return &specError{msg: fmt.Sprintf(format, args...)}
}

// BuildOptions configures Build.
type BuildOptions struct {
	// SupportedTypes are the entity types this proxy has enabled (Action,
	// CRDT, and EventSourced / ValueEntity when their stores are configured).
	SupportedTypes []string
	// CompatibilityCheck rejects a spec whose protocol version is not exactly
	// 0.2. When false a mismatch is only logged as a warning.
	CompatibilityCheck bool
	// Logger receives the compatibility warning; nil means slog.Default().
	Logger *slog.Logger
}

// Build validates spec and builds the Model from it. Every rejection wraps
// ErrInvalidSpec and reads as one sentence naming what is wrong.
//
// Key fields are resolved for event-sourced, value and CRDT entities only;
// the methods of actions have no KeyFields because actions have no entity id.
func Build(spec *protocol.EntitySpec, opts BuildOptions) (*Model, error) {
	if err := checkVersion(spec.GetServiceInfo(), opts); err != nil {
		return nil, err
	}

	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(spec.GetProto(), &set); err != nil {
		return nil, invalidf("The descriptor set (EntitySpec.proto) is not a valid google.protobuf.FileDescriptorSet: %v", err)
	}
	files, fileProtos, err := buildFiles(&set)
	if err != nil {
		return nil, err
	}

	if len(spec.GetEntities()) == 0 {
		return nil, invalidf("No entities were reported by the discover call")
	}

	model := &Model{
		Spec:       spec,
		Files:      files,
		FileProtos: fileProtos,
		Services:   make(map[string]*Service, len(spec.GetEntities())),
	}
	// Persistence ids share a namespace per storage kind (ROUTE-3).
	persistenceOwners := map[string]map[string]string{EventSourced: {}, ValueEntity: {}}
	for _, entity := range spec.GetEntities() {
		name := entity.GetServiceName()
		if _, dup := model.Services[name]; dup {
			return nil, invalidf("Service [%s] is listed more than once in the discovered entities", name)
		}
		desc, err := files.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			return nil, invalidf("Service [%s] not found in the descriptor set", name)
		}
		sd, ok := desc.(protoreflect.ServiceDescriptor)
		if !ok {
			return nil, invalidf("Service [%s] not found in the descriptor set: that name declares a %s, not a service", name, descriptorKind(desc))
		}
		if err := checkEntityType(name, entity.GetEntityType(), opts.SupportedTypes); err != nil {
			return nil, err
		}
		svc, err := buildService(entity, sd)
		if err != nil {
			return nil, err
		}
		if owners, ok := persistenceOwners[svc.EntityType]; ok {
			if other, dup := owners[svc.PersistenceID]; dup {
				return nil, invalidf("Services [%s] and [%s] both declare persistence id [%s]; each %s entity needs its own persistence id",
					other, name, svc.PersistenceID, typeNoun(svc.EntityType))
			}
			owners[svc.PersistenceID] = name
		}
		model.Services[name] = svc
		model.ServiceNames = append(model.ServiceNames, name)
	}
	slices.Sort(model.ServiceNames)
	// An HTTP rule the proxy cannot serve fails discovery (BEHAVIOR.md DISC-4, HTTP-2).
	// Bindings compile in declaration order: of two identical ones, the
	// last declared wins (HTTP-1).
	declared := make([]string, 0, len(model.Services))
	for _, entity := range spec.GetEntities() {
		declared = append(declared, entity.GetServiceName())
	}
	api, err := httpapi.Compile(model.FileProtos, declared)
	if err != nil {
		return nil, invalidf("The HTTP API cannot be served: %v", err)
	}
	model.HTTP = api
	return model, nil
}

func checkVersion(info *protocol.ServiceInfo, opts BuildOptions) error {
	major, minor := info.GetProtocolMajorVersion(), info.GetProtocolMinorVersion()
	if major == ProtocolMajorVersion && minor == ProtocolMinorVersion {
		return nil
	}
	if opts.CompatibilityCheck {
		return invalidf("Incompatible protocol version %d.%d, only %d.%d is supported",
			major, minor, ProtocolMajorVersion, ProtocolMinorVersion)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger.Warn("user function speaks an incompatible protocol version; continuing because the compatibility check is disabled",
		"version", fmt.Sprintf("%d.%d", major, minor),
		"supported", fmt.Sprintf("%d.%d", ProtocolMajorVersion, ProtocolMinorVersion),
		"library", info.GetSupportLibraryName()+" "+info.GetSupportLibraryVersion())
	return nil
}

func checkEntityType(service, entityType string, supported []string) error {
	known := entityType == EventSourced || entityType == ValueEntity || entityType == CRDT || entityType == Action
	if known && slices.Contains(supported, entityType) {
		return nil
	}
	if entityType == EventSourced {
		return invalidf("Service [%s] is an event sourced entity, but this proxy has no event journal: "+
			"a store that supports event sourced journals must be configured to use event sourced entities", service)
	}
	return invalidf("Service [%s] declares the unsupported entity type [%s]; supported types are %s",
		service, entityType, strings.Join(supported, ", "))
}

func buildService(entity *protocol.Entity, sd protoreflect.ServiceDescriptor) (*Service, error) {
	svc := &Service{
		Name:          string(sd.FullName()),
		Desc:          sd,
		EntityType:    entity.GetEntityType(),
		PersistenceID: entity.GetPersistenceId(),
		Methods:       make(map[string]*Method, sd.Methods().Len()),
	}
	if ms := entity.GetPassivationStrategy().GetTimeout().GetTimeout(); ms > 0 {
		svc.Passivation = time.Duration(ms) * time.Millisecond
	}
	methods := sd.Methods()
	for i := range methods.Len() {
		md := methods.Get(i)
		m := &Method{
			Service:         svc,
			Name:            string(md.Name()),
			Desc:            md,
			Path:            "/" + svc.Name + "/" + string(md.Name()),
			InputTypeURL:    "type.googleapis.com/" + string(md.Input().FullName()),
			OutputTypeURL:   "type.googleapis.com/" + string(md.Output().FullName()),
			ClientStreaming: md.IsStreamingClient(),
			ServerStreaming: md.IsStreamingServer(),
		}
		if err := checkMethod(svc, m); err != nil {
			return nil, err
		}
		svc.Methods[m.Name] = m
	}
	return svc, nil
}

// checkMethod applies the per-type rules of PROTOCOL.md §5.2 step 6 and fills
// m.KeyFields for entity types that route by key.
func checkMethod(svc *Service, m *Method) error {
	if svc.EntityType == Action {
		return nil
	}
	noun := typeNoun(svc.EntityType)
	if m.ClientStreaming {
		return invalidf("Method [%s.%s] is client streaming, which %s entities do not support", svc.Name, m.Name, noun)
	}
	if m.ServerStreaming && svc.EntityType != CRDT {
		return invalidf("Method [%s.%s] is server streaming, which %s entities do not support", svc.Name, m.Name, noun)
	}
	keys, err := keyFields(svc, m)
	if err != nil {
		return err
	}
	if len(keys) == 0 {
		return invalidf("Method [%s.%s] of %s entity [%s] has no entity key: its input message [%s] has no field marked (cloudstate.entity_key) = true",
			svc.Name, m.Name, noun, svc.Name, m.Desc.Input().FullName())
	}
	m.KeyFields = keys
	return nil
}

// typeNoun is an entity type as it reads in an error sentence.
func typeNoun(entityType string) string {
	switch entityType {
	case EventSourced:
		return "event sourced"
	case ValueEntity:
		return "value"
	case CRDT:
		return "CRDT"
	case Action:
		return "action"
	}
	return entityType
}

func descriptorKind(d protoreflect.Descriptor) string {
	switch d.(type) {
	case protoreflect.MessageDescriptor:
		return "message"
	case protoreflect.EnumDescriptor:
		return "enum"
	case protoreflect.EnumValueDescriptor:
		return "enum value"
	case protoreflect.FieldDescriptor:
		return "field"
	case protoreflect.MethodDescriptor:
		return "method"
	}
	return "non-service declaration"
}
