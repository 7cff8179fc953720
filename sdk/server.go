package sdk

import (
	"context"
	"errors"
	"fmt"
	"google.golang.org/protobuf/reflect/protoreflect"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudstate-go/cloudstate/protocol"
	"google.golang.org/grpc"
)

// Server is a Cloudstate user function: it serves entity discovery and the
// protocol of every entity type registered with it, for a Cloudstate proxy
// to call. Register entities first, then call Serve or ListenAndServe once.
// Its methods are safe for concurrent use.
type Server struct {
	opts serverOptions

	mu            sync.Mutex
	started       bool
	services      map[string]bool // every registered service, across entity types
	discovered    []discovered    // in registration order
	eventSourced  []*eventSourcedDef
	valueEntities []*valueEntityDef
	crdts         []*crdtDef
	actions       []*actionDef
}

// ServerOption configures a Server.
type ServerOption func(*serverOptions)

type serverOptions struct {
	name, version   string
	logger          *slog.Logger
	shutdownTimeout time.Duration
}

// WithServiceName sets the name the function reports to the proxy. The
// default is the executable's name.
func WithServiceName(name string) ServerOption {
	return func(o *serverOptions) { o.name = name }
}

// WithServiceVersion sets the version the function reports to the proxy. The
// default is the main module's version from the build information.
func WithServiceVersion(version string) ServerOption {
	return func(o *serverOptions) { o.version = version }
}

// WithLogger sets the logger; the default is slog.Default().
func WithLogger(l *slog.Logger) ServerOption {
	return func(o *serverOptions) { o.logger = l }
}

// WithShutdownTimeout bounds how long Serve waits, after its context ends,
// for commands in progress before it closes connections. Default 10s.
func WithShutdownTimeout(d time.Duration) ServerOption {
	return func(o *serverOptions) { o.shutdownTimeout = d }
}

// NewServer returns a server with no entities.
func NewServer(opts ...ServerOption) *Server {
	o := serverOptions{
		name:            filepath.Base(os.Args[0]),
		logger:          slog.Default(),
		shutdownTimeout: 10 * time.Second,
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		o.version = bi.Main.Version
	}
	for _, opt := range opts {
		opt(&o)
	}
	return &Server{opts: o, services: make(map[string]bool)}
}

// RegisterEventSourced adds an event-sourced entity. It reports every
// mistake in the entity's definition, and fails if the service is already
// registered or the server has started.
func (s *Server) RegisterEventSourced(e EventSourcedDefinition) error {
	if e == nil {
		return errors.New("register event-sourced entity: nil entity")
	}
	def, err := e.compileEventSourced()
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	var types []protoreflect.MessageDescriptor
	for _, h := range def.events {
		types = append(types, h.typ.Descriptor())
	}
	if def.snapshot != nil {
		types = append(types, def.snapshot.typ.Descriptor())
	}
	// Map order is random; a sorted list keeps the descriptor set the same
	// from one start to the next.
	slices.SortFunc(types, func(a, b protoreflect.MessageDescriptor) int {
		return strings.Compare(string(a.FullName()), string(b.FullName()))
	})
	return s.register(def.serviceName, discovered{
		service: def.service,
		types:   types,
		entity: &protocol.Entity{
			EntityType:          EventSourcedEntityType,
			ServiceName:         def.serviceName,
			PersistenceId:       def.cfg.persistenceID,
			PassivationStrategy: passivationStrategy(def.cfg),
		},
	}, func() { s.eventSourced = append(s.eventSourced, def) })
}

// RegisterValueEntity adds a value entity. It reports every mistake in the
// entity's definition, and fails if the service is already registered or
// the server has started.
func (s *Server) RegisterValueEntity(e ValueEntityDefinition) error {
	if e == nil {
		return errors.New("register value entity: nil entity")
	}
	def, err := e.compileValueEntity()
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	return s.register(def.serviceName, discovered{
		service: def.service,
		entity: &protocol.Entity{
			EntityType:          ValueEntityType,
			ServiceName:         def.serviceName,
			PersistenceId:       def.cfg.persistenceID,
			PassivationStrategy: passivationStrategy(def.cfg),
		},
	}, func() { s.valueEntities = append(s.valueEntities, def) })
}

// RegisterCRDT adds a CRDT entity. It reports every mistake in the entity's
// definition, and fails if the service is already registered or the server
// has started.
func (s *Server) RegisterCRDT(e *CRDTEntity) error {
	if e == nil {
		return errors.New("register CRDT entity: nil entity")
	}
	def, err := e.compileCRDT()
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	return s.register(def.serviceName, discovered{
		service: def.service,
		entity: &protocol.Entity{
			EntityType:          CRDTEntityType,
			ServiceName:         def.serviceName,
			PersistenceId:       def.cfg.persistenceID,
			PassivationStrategy: passivationStrategy(def.cfg),
		},
	}, func() { s.crdts = append(s.crdts, def) })
}

// RegisterAction adds an action. It reports every mistake in the action's
// definition, and fails if the service is already registered or the server
// has started.
func (s *Server) RegisterAction(a *Action) error {
	if a == nil {
		return errors.New("register action: nil action")
	}
	def, err := a.compileAction()
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	return s.register(def.serviceName, discovered{
		service: def.service,
		entity:  &protocol.Entity{EntityType: ActionEntityType, ServiceName: def.serviceName},
	}, func() { s.actions = append(s.actions, def) })
}

// register records a compiled definition: d for discovery, add for the
// protocol service that runs it.
func (s *Server) register(service string, d discovered, add func()) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return fmt.Errorf("register %s: the server has already started", service)
	}
	if s.services[service] {
		return fmt.Errorf("register %s: service already registered", service)
	}
	s.services[service] = true
	s.discovered = append(s.discovered, d)
	add()
	return nil
}

// ListenAndServe listens on the TCP address addr (see Addr) and calls Serve.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	return s.Serve(ctx, lis)
}

// Serve serves the proxy on lis until ctx ends, then shuts down gracefully:
// it stops accepting calls, lets commands in progress finish (for at most the
// shutdown timeout), ends the entity streams and returns nil. It returns an
// error if nothing is registered, if serving fails, or if called twice. Serve
// closes lis.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		lis.Close()
		return errors.New("serve: already started")
	}
	s.started = true
	entities := s.discovered
	eventSourced, valueEntities, crdts, actions := s.eventSourced, s.valueEntities, s.crdts, s.actions
	s.mu.Unlock()

	if len(entities) == 0 {
		lis.Close()
		return errors.New("serve: no entities registered")
	}
	spec, err := buildEntitySpec(serviceInfo{name: s.opts.name, version: s.opts.version}, entities)
	if err != nil {
		lis.Close()
		return fmt.Errorf("serve: %w", err)
	}

	logger := s.opts.logger
	stopping := make(chan struct{})
	busy := new(atomic.Int64)
	streams := entityStreams{stopping: stopping, busy: busy}
	// WaitForHandlers makes Stop wait for handlers too, so no stream handler
	// outlives this function. The interceptors count action calls in
	// progress, which shutdown lets finish.
	gs := grpc.NewServer(grpc.WaitForHandlers(true),
		// Handler goroutines are reused: a fresh goroutine per call grows
		// its stack through the dispatch path on every call, which cost
		// about a sixth of the function's CPU under load. Entity streams
		// hold a worker for their whole life; calls beyond the pool get
		// goroutines of their own, as without workers.
		grpc.NumStreamWorkers(64),
		// The proxy is next door: fixed flow-control windows turn off
		// gRPC's bandwidth-delay estimation and the pings it sends.
		grpc.InitialWindowSize(1<<20),
		grpc.InitialConnWindowSize(16<<20),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			busy.Add(1)
			defer busy.Add(-1)
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if strings.HasPrefix(info.FullMethod, "/cloudstate.action.") {
				busy.Add(1)
				defer busy.Add(-1)
			}
			return h(srv, ss)
		}))
	protocol.RegisterEntityDiscoveryServer(gs, &discoveryService{spec: spec, logger: logger})
	es := &eventSourcedService{entities: make(map[string]*eventSourcedDef), logger: logger, streams: streams}
	for _, d := range eventSourced {
		es.entities[d.serviceName] = d
	}
	protocol.RegisterEventSourcedServer(gs, es)
	ves := &valueEntityService{entities: make(map[string]*valueEntityDef), logger: logger, streams: streams}
	for _, d := range valueEntities {
		ves.entities[d.serviceName] = d
	}
	protocol.RegisterValueEntityServer(gs, ves)
	cs := &crdtService{entities: make(map[string]*crdtDef), logger: logger, streams: streams}
	for _, d := range crdts {
		cs.entities[d.serviceName] = d
	}
	protocol.RegisterCrdtServer(gs, cs)
	as := &actionService{actions: make(map[string]*actionDef), logger: logger}
	for _, d := range actions {
		as.actions[d.serviceName] = d
	}
	protocol.RegisterActionProtocolServer(gs, as)

	logger.Debug("cloudstate user function serving", "addr", lis.Addr().String())
	served := make(chan error, 1)
	go func() { served <- gs.Serve(lis) }()

	select {
	case err := <-served:
		close(stopping)
		gs.Stop()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}

	// Stop accepting, let the commands and action calls in progress finish
	// (at most the shutdown timeout), then cut the idle entity streams: an
	// idle stream waits for the proxy and would otherwise hold shutdown up
	// until the proxy passivates it.
	close(stopping)
	lis.Close()
	deadline := time.Now().Add(s.opts.shutdownTimeout)
	for busy.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := busy.Load(); n > 0 {
		logger.Warn("shutdown timeout reached; cutting calls in progress", "timeout", s.opts.shutdownTimeout, "in_progress", n)
	}
	gs.Stop()
	<-served
	return nil
}

// Addr returns the address a user function listens on by Cloudstate
// convention: $HOST:$PORT, by default 127.0.0.1:8080 (the proxy's
// USER_FUNCTION_HOST and USER_FUNCTION_PORT point there).
func Addr() string {
	host, port := os.Getenv("HOST"), os.Getenv("PORT")
	if host == "" {
		host = "127.0.0.1"
	}
	if port == "" {
		port = "8080"
	}
	return net.JoinHostPort(host, port)
}
