package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"

	"github.com/cloudstate-go/cloudstate/protocol"
)

// ProxyName is the proxy_name this proxy sends in ProxyInfo.
const ProxyName = "cloudstate-go"

// Defaults of the Client options (BEHAVIOR.md DISC-2 for the backoff).
const (
	DefaultMinBackoff     = time.Second
	DefaultMaxBackoff     = 10 * time.Second
	DefaultBackoffJitter  = 0.2
	DefaultAttemptTimeout = 10 * time.Second
	DefaultReportTimeout  = 5 * time.Second
)

// failureLogInterval bounds how often a failing attempt is logged, so a user
// function that takes a minute to start does not flood the log.
const failureLogInterval = 5 * time.Second

// Client runs discovery against the user function and reports errors to it.
// Its methods may be called concurrently.
type Client struct {
	disc           protocol.EntityDiscoveryClient
	conn           grpc.ClientConnInterface
	build          BuildOptions
	proxyVersion   string
	minBackoff     time.Duration
	maxBackoff     time.Duration
	jitter         float64
	attemptTimeout time.Duration
	reportTimeout  time.Duration
	logInterval    time.Duration
	logger         *slog.Logger
}

// ClientOption configures a Client.
type ClientOption func(*Client)

// WithProxyVersion sets the proxy_version sent in ProxyInfo.
func WithProxyVersion(version string) ClientOption {
	return func(c *Client) { c.proxyVersion = version }
}

// WithBackoff sets the delays between failed discover attempts: the first
// retry waits min, each next one twice as long up to max, and each delay is
// stretched by a random factor in [0, jitter].
func WithBackoff(minDelay, maxDelay time.Duration, jitter float64) ClientOption {
	return func(c *Client) {
		c.minBackoff, c.maxBackoff, c.jitter = minDelay, maxDelay, jitter
	}
}

// WithAttemptTimeout bounds each discover call.
func WithAttemptTimeout(d time.Duration) ClientOption {
	return func(c *Client) { c.attemptTimeout = d }
}

// WithReportTimeout bounds each reportError call.
func WithReportTimeout(d time.Duration) ClientOption {
	return func(c *Client) { c.reportTimeout = d }
}

// WithLogger sets the logger; the default is slog.Default(). It is also used
// for Build's warnings when build.Logger is nil.
func WithLogger(l *slog.Logger) ClientOption {
	return func(c *Client) { c.logger = l }
}

// NewClient returns a Client that calls the user function over conn and
// validates its answer with build. When conn is a *grpc.ClientConn, each
// retry also resets its reconnection backoff, so discovery succeeds as soon
// as the user function listens rather than when gRPC's own backoff expires.
func NewClient(conn grpc.ClientConnInterface, build BuildOptions, opts ...ClientOption) *Client {
	c := &Client{
		disc:           protocol.NewEntityDiscoveryClient(conn),
		conn:           conn,
		build:          build,
		minBackoff:     DefaultMinBackoff,
		maxBackoff:     DefaultMaxBackoff,
		jitter:         DefaultBackoffJitter,
		attemptTimeout: DefaultAttemptTimeout,
		reportTimeout:  DefaultReportTimeout,
		logInterval:    failureLogInterval,
		logger:         slog.Default(),
	}
	for _, opt := range opts {
		opt(c)
	}
	if c.build.Logger == nil {
		c.build.Logger = c.logger
	}
	return c
}

// ProxyInfo is what Discover sends to the user function.
func (c *Client) ProxyInfo() *protocol.ProxyInfo {
	return &protocol.ProxyInfo{
		ProtocolMajorVersion: ProtocolMajorVersion,
		ProtocolMinorVersion: ProtocolMinorVersion,
		ProxyName:            ProxyName,
		ProxyVersion:         c.proxyVersion,
		SupportedEntityTypes: append([]string(nil), c.build.SupportedTypes...),
	}
}

// Discover calls discover until the user function answers, then validates
// the answer with Build. Failed calls (user function not listening yet, error
// statuses, timeouts) are retried with exponential backoff until ctx ends; the
// first attempt is immediate. An invalid spec is reported to the user function
// with reportError and returned (wrapping ErrInvalidSpec) without retrying.
// When ctx ends first, the error wraps ctx's error and names the last failure.
func (c *Client) Discover(ctx context.Context) (*Model, error) {
	info := c.ProxyInfo()
	var lastLog time.Time
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if err := c.wait(ctx, attempt); err != nil {
				return nil, err
			}
		}
		spec, err := c.discover(ctx, info)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("discovery: %w (last attempt: %v)", ctx.Err(), err)
			}
			if now := time.Now(); now.Sub(lastLog) >= c.logInterval {
				lastLog = now
				c.logger.Info("discovery: user function not answering yet, retrying", "attempt", attempt+1, "error", err)
			}
			continue
		}
		model, err := Build(spec, c.build)
		if err != nil {
			// Build only fails with ErrInvalidSpec: the user function must be
			// fixed, so asking again would get the same answer.
			_ = c.ReportError(ctx, err.Error())
			c.logger.Error("discovery failed: the user function's entity spec is invalid; the proxy will not become ready",
				"error", err.Error())
			return nil, err
		}
		return model, nil
	}
}

func (c *Client) discover(ctx context.Context, info *protocol.ProxyInfo) (*protocol.EntitySpec, error) {
	ctx, cancel := context.WithTimeout(ctx, c.attemptTimeout)
	defer cancel()
	spec, err := c.disc.Discover(ctx, info)
	if err != nil {
		return nil, fmt.Errorf("call discover: %w", err)
	}
	return spec, nil
}

// wait sleeps before retry number attempt (1 for the first retry).
func (c *Client) wait(ctx context.Context, attempt int) error {
	t := time.NewTimer(c.backoff(attempt))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("discovery: %w", ctx.Err())
	case <-t.C:
	}
	// A dial that failed puts the channel into its own backoff, which grows
	// past ours; retry the connection now instead.
	if r, ok := c.conn.(interface{ ResetConnectBackoff() }); ok {
		r.ResetConnectBackoff()
	}
	return nil
}

// backoff is the delay before retry number attempt: minBackoff doubled per
// earlier retry, capped at maxBackoff, stretched by up to jitter.
func (c *Client) backoff(attempt int) time.Duration {
	d := c.minBackoff
	for i := 1; i < attempt && d < c.maxBackoff; i++ {
		d *= 2
	}
	d = min(d, c.maxBackoff)
	if c.jitter > 0 {
		d += time.Duration(float64(d) * c.jitter * rand.Float64())
	}
	return d
}

// ReportError tells the user function about a mistake it made (an invalid
// spec, a forward to an unknown service, a protocol violation), so that it
// can log it prominently (PROTOCOL.md §5.3). The call is bounded by the
// report timeout and still attempted when ctx is already cancelled, since it
// is often the last word before giving up. The result only says whether the
// user function received the message; callers usually ignore it.
func (c *Client) ReportError(ctx context.Context, msg string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.reportTimeout)
	defer cancel()
	if _, err := c.disc.ReportError(ctx, &protocol.UserFunctionError{Message: msg}); err != nil {
		c.logger.Debug("reportError to the user function failed", "error", err)
		return fmt.Errorf("call reportError: %w", err)
	}
	return nil
}
