package discovery

import (
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/cloudstate-go/cloudstate/internal/httpapi"
	"github.com/cloudstate-go/cloudstate/protocol"
)

// Entity type strings, as sent in Entity.entity_type and
// ProxyInfo.supported_entity_types (shared/spec/PROTOCOL.md §1.1).
const (
	EventSourced = "cloudstate.eventsourced.EventSourced"
	ValueEntity  = "cloudstate.valueentity.ValueEntity"
	CRDT         = "cloudstate.crdt.Crdt"
	Action       = "cloudstate.action.ActionProtocol"
)

// Model is the validated result of one discovery: everything the proxy serves.
// It is immutable once built and shared by every goroutine.
type Model struct {
	// Spec is the user function's answer as received.
	Spec *protocol.EntitySpec
	// Files holds the user's descriptors, resolved. It is private to this model
	// (never the global registry) so user files cannot clash with the proxy's.
	Files *protoregistry.Files
	// FileProtos are the descriptor set's files, in dependency order (a file
	// after its imports), for server reflection.
	FileProtos []*descriptorpb.FileDescriptorProto
	// Services maps a fully-qualified service name to the service.
	Services map[string]*Service
	// ServiceNames lists the keys of Services in sorted order.
	ServiceNames []string
	// HTTP is the services' compiled google.api.http bindings, checked at
	// discovery (HTTP-2) and kept so that ingress does not compile them
	// again. Nil for a model not made by Build.
	HTTP *httpapi.API
}

// Service is one discovered entity service.
type Service struct {
	// Name is the fully-qualified gRPC service name, e.g. "com.example.shoppingcart.ShoppingCart".
	Name string
	Desc protoreflect.ServiceDescriptor
	// EntityType is one of EventSourced, ValueEntity, CRDT or Action.
	EntityType    string
	PersistenceID string
	// Passivation is the entity's own idle timeout from its passivation
	// strategy, or 0 to use the proxy's default.
	Passivation time.Duration
	// Methods maps the bare method name ("AddItem") to the method.
	Methods map[string]*Method
}

// Method is one method of a discovered service, with what routing needs.
type Method struct {
	Service *Service
	// Name is the bare method name as declared ("AddItem").
	Name string
	Desc protoreflect.MethodDescriptor
	// Path is the gRPC path, "/<service>/<method>".
	Path string
	// InputTypeURL and OutputTypeURL are "type.googleapis.com/<full message name>".
	InputTypeURL  string
	OutputTypeURL string
	// KeyFields are the top-level input fields marked cloudstate.entity_key
	// (1080) or cloudstate.legacy_entity_key (50002), in declaration order.
	// Discovery guarantees each is a singular string, integer, bool or enum.
	KeyFields       []protoreflect.FieldDescriptor
	ClientStreaming bool
	ServerStreaming bool
}

// Lookup returns the method at service/method, or nil.
func (m *Model) Lookup(service, method string) *Method {
	s := m.Services[service]
	if s == nil {
		return nil
	}
	return s.Methods[method]
}
