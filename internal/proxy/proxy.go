// Package proxy wires the pipeline — ingress → route → entity → store —
// and owns its life cycle: start, discovery, readiness while the user
// function comes and goes, and an ordered shutdown. It holds no business
// logic of its own.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/cloudstate-go/cloudstate/internal/config"
	"github.com/cloudstate-go/cloudstate/internal/discovery"
	"github.com/cloudstate-go/cloudstate/internal/entity/action"
	crdtentity "github.com/cloudstate-go/cloudstate/internal/entity/crdt"
	"github.com/cloudstate-go/cloudstate/internal/entity/eventsourced"
	"github.com/cloudstate-go/cloudstate/internal/entity/value"
	"github.com/cloudstate-go/cloudstate/internal/ingress"
	"github.com/cloudstate-go/cloudstate/internal/route"
	"github.com/cloudstate-go/cloudstate/protocol"
)

// Proxy is one cloudstate proxy process.
type Proxy struct {
	cfg     config.Config
	log     *slog.Logger
	version string
	started time.Time
}

// New returns a proxy for a validated cfg. started is when the process
// started, for the time-to-ready log line.
func New(cfg config.Config, log *slog.Logger, version string, started time.Time) *Proxy {
	return &Proxy{cfg: cfg, log: log, version: version, started: started}
}

// Run serves until ctx ends, then shuts down gracefully: stop accepting,
// finish calls in flight, passivate entities. It returns an error only when
// the proxy could not start (a port that cannot be bound, a bad store).
func (p *Proxy) Run(ctx context.Context) error {
	lis, err := net.Listen("tcp", p.cfg.HTTPAddr())
	if err != nil {
		return fmt.Errorf("listen on %s (--http-port / HTTP_PORT): %w", p.cfg.HTTPAddr(), err)
	}
	st, err := openStores(ctx, p.cfg.Store, p.log)
	if err != nil {
		lis.Close()
		return err
	}
	defer st.close()
	conn, err := grpc.NewClient(p.cfg.UserFunctionAddr(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithIdleTimeout(0),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(p.cfg.MaxInboundMessageSize)),
		// Fixed flow-control windows turn off gRPC's bandwidth-delay
		// estimation, which pings the function on every burst of data: on a
		// sidecar's loopback hop there is no bandwidth to discover.
		grpc.WithInitialWindowSize(ingress.StreamWindow),
		grpc.WithInitialConnWindowSize(ingress.ConnWindow),
		// Reconnect quickly when the function comes back: gRPC's default
		// backoff grows to two minutes.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 2 * time.Second,
		}),
	)
	if err != nil {
		lis.Close()
		return fmt.Errorf("user function address %s (--user-function-host/--user-function-port): %w", p.cfg.UserFunctionAddr(), err)
	}
	defer conn.Close()

	ing := ingress.New(ingress.Options{MaxRecvMsgSize: p.cfg.MaxInboundMessageSize, CORSAllowedOrigins: p.cfg.CORSOrigins(), Log: p.log})
	disc := discovery.NewClient(conn, discovery.BuildOptions{
		SupportedTypes:     []string{discovery.EventSourced, discovery.ValueEntity, discovery.CRDT, discovery.Action},
		CompatibilityCheck: p.cfg.ProtocolCompatibilityCheck,
		Logger:             p.log,
	},
		discovery.WithProxyVersion(p.version),
		discovery.WithBackoff(p.cfg.DiscoveryBackoffMin, p.cfg.DiscoveryBackoffMax, p.cfg.DiscoveryBackoffJitter),
		discovery.WithLogger(p.log),
	)
	reporter := reporter{disc}
	// connGen changes whenever the connection to the function is lost, so
	// entities drop streams that died with it instead of failing a command
	// on them.
	var connGen atomic.Uint64
	es := eventsourced.New(eventsourced.Config{
		Journal:            st.journal,
		Snapshots:          st.snapshots,
		Client:             protocol.NewEventSourcedClient(conn),
		PassivationTimeout: p.cfg.PassivationTimeout,
		RelayTimeout:       p.cfg.RelayTimeout,
		MailboxSize:        p.cfg.EntityMailboxSize,
		Reporter:           reporter,
		Generation:         connGen.Load,
		Log:                p.log,
	})
	values := value.New(value.Config{
		Store:              st.values,
		Client:             protocol.NewValueEntityClient(conn),
		PassivationTimeout: p.cfg.PassivationTimeout,
		RelayTimeout:       p.cfg.RelayTimeout,
		MailboxSize:        p.cfg.EntityMailboxSize,
		Reporter:           reporter,
		Generation:         connGen.Load,
		Log:                p.log,
	})
	// The router exists only after discovery; CRDT entities reach it for
	// the side effects of cancelled streams.
	var current atomic.Pointer[route.Router]
	crdts := crdtentity.New(crdtentity.Config{
		Replicator: crdtentity.NewLocal(nodeName()),
		Client:     protocol.NewCrdtClient(conn),
		Reporter:   reporter,
		SideEffects: func(_ context.Context, from route.Call, effects []*protocol.SideEffect) {
			if r := current.Load(); r != nil {
				r.PerformSideEffects(from, effects)
			}
		},
		PassivationTimeout: p.cfg.PassivationTimeout,
		RelayTimeout:       p.cfg.RelayTimeout,
		MailboxSize:        p.cfg.EntityMailboxSize,
		Log:                p.log,
	})
	handlers := map[string]route.Handler{
		discovery.CRDT:         crdts,
		discovery.EventSourced: es,
		discovery.ValueEntity:  values,
		discovery.Action:       action.New(protocol.NewActionProtocolClient(conn)),
	}

	p.log.Info("cloudstate proxy listening", "addr", lis.Addr().String(), "user_function", p.cfg.UserFunctionAddr(), "version", p.version)

	serveCtx, stopServing := context.WithCancel(ctx)
	defer stopServing()
	g, gctx := errgroup.WithContext(serveCtx)
	g.Go(func() error { return ing.Serve(lis) })
	var router *route.Router
	routerReady := make(chan struct{})
	g.Go(func() error {
		model, err := disc.Discover(gctx)
		if err != nil {
			if gctx.Err() != nil {
				return nil
			}
			// Discovery problems are final (DISC-3): stay up, never ready.
			ing.SetNotReady("discovery failed: " + err.Error())
			return nil
		}
		router = route.New(model, handlers, reporter, p.log)
		current.Store(router)
		close(routerReady)
		ing.SetRouter(router)
		p.watchUserFunction(gctx, conn, disc, ing, &connGen)
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		var r *route.Router
		select {
		case <-routerReady:
			r = router // written before routerReady was closed
		default:
		}
		p.shutdown(ing, r, crdts, es, values)
		return nil
	})
	err = g.Wait()
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	p.log.Info("cloudstate proxy stopped")
	return nil
}

// shutdown stops in order: ingress (finishing calls in flight), then
// asynchronous side effects, then the event-sourced and value entities
// (passivated). CRDT entities start stopping together with ingress:
// their open streamed calls only end when their entities end them, and
// ingress would otherwise wait for those calls for the whole timeout.
func (p *Proxy) shutdown(ing *ingress.Server, router *route.Router, streaming interface{ Shutdown(context.Context) }, serial ...interface{ Shutdown(context.Context) }) {
	p.log.Info("shutting down", "timeout", p.cfg.ShutdownTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.ShutdownTimeout)
	defer cancel()
	var wg sync.WaitGroup
	stop := func(e interface{ Shutdown(context.Context) }) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.Shutdown(ctx)
		}()
	}
	stop(streaming)
	ing.Shutdown(ctx)
	if router != nil {
		router.Close(ctx)
	}
	for _, e := range serial {
		stop(e)
	}
	wg.Wait()
}

// watchUserFunction keeps readiness in step with the connection to the
// user function: ready while connected, not ready while it is gone. When it
// comes back it is asked to discover again, to notice a changed function.
func (p *Proxy) watchUserFunction(ctx context.Context, conn *grpc.ClientConn, disc *discovery.Client, ing *ingress.Server, gen *atomic.Uint64) {
	ready := false
	rediscover := false // true once the function has been lost after discovery
	for {
		st := conn.GetState()
		switch st {
		case connectivity.Ready:
			if !ready {
				if rediscover {
					m, err := disc.Discover(ctx)
					if err != nil {
						return
					}
					if !proto.Equal(m.Spec, ing.Model().Spec) {
						p.log.Error("the user function now reports different services than at start; still serving the ones discovered first; restart the proxy to serve the new ones")
					}
				}
				ing.SetReady()
				if rediscover {
					p.log.Info("cloudstate proxy ready again: the user function is back")
				} else {
					p.log.Info("cloudstate proxy ready", "services", ing.Model().ServiceNames,
						"since_start", time.Since(p.started).Round(100*time.Microsecond).String())
				}
				ready = true
			}
		case connectivity.Idle:
			if ready {
				gen.Add(1)
			}
			conn.Connect()
		case connectivity.TransientFailure, connectivity.Connecting:
			if ready {
				gen.Add(1)
				ready = false
				rediscover = true
				ing.SetNotReady("the user function at " + p.cfg.UserFunctionAddr() + " is unreachable")
				p.log.Warn("user function unreachable; not ready until it is back", "addr", p.cfg.UserFunctionAddr())
			}
		}
		if !conn.WaitForStateChange(ctx, st) {
			return
		}
	}
}

// reporter adapts the discovery client to route.Reporter: reportError's own
// failures are only logged, since there is nobody else to tell.
type reporter struct{ disc *discovery.Client }

func (r reporter) ReportError(ctx context.Context, msg string) {
	_ = r.disc.ReportError(ctx, msg)
}

// nodeName identifies this proxy among CRDT replicas: the host name, which
// is the pod name on Kubernetes.
func nodeName() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "cloudstate"
}
