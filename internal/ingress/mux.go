package ingress

import (
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// The public port speaks native gRPC, Connect and gRPC-Web over cleartext
// HTTP/2 with prior knowledge (h2c), and HTTP/1.1 (probes, HTTP/JSON,
// Connect and gRPC-Web). Native gRPC is served by grpc-go's own transport,
// much faster than gRPC through net/http's HTTP/2 server; everything else
// by net/http. The mux decides once per connection, from its first bytes,
// and then steps aside: the chosen server reads the connection directly.
//
//   - A connection that does not open with "PRI" (the HTTP/2 client
//     preface, which no HTTP/1 method starts with) is HTTP/1 and goes to
//     net/http.
//   - An HTTP/2 connection goes where its first request belongs: to grpc-go
//     when its content-type is one grpc-go accepts (application/grpc and
//     its subtypes), to net/http's HTTP/2 server otherwise (Connect,
//     gRPC-Web, HTTP/JSON over h2c). h2c.go reads the request's headers;
//     the bytes read are replayed to the server that takes the connection.
//     Later requests on the connection go to the same server, so a client
//     must not mix native gRPC with the other protocols on one connection
//     (no common client does: each opens its own).
//   - An HTTP/2 connection that sends no request within h2cSniffTimeout,
//     or whose first frames do not let the sniffer decide, goes to grpc-go,
//     as every HTTP/2 connection did before: gRPC clients connect ahead of
//     their first call and may stay idle for as long as they like, while
//     HTTP/2 clients of the other protocols open a connection to send a
//     request on it.
//
// The HTTP side must accept unencrypted HTTP/2 (httpProtocols), or it
// would read the h2c connections it is handed as malformed HTTP/1.

// httpProtocols are the protocols of the http.Server behind the mux's
// HTTP listener: HTTP/1, and HTTP/2 with prior knowledge for the h2c
// connections the mux hands it.
func httpProtocols() *http.Protocols {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return p
}

// sniffTimeout bounds the wait for a connection's first bytes (the first
// three, and the rest of an HTTP/2 preface): clients send them at once.
const sniffTimeout = 10 * time.Second

// h2cSniffTimeout bounds the wait for the first request on an HTTP/2
// connection. A client that sends none by then is idle and gets grpc-go.
// While it waits, nobody answers the client's SETTINGS; that costs an idle
// client nothing, and a PING ends the wait at once.
const h2cSniffTimeout = 10 * time.Second

// mux splits one listener into a gRPC and an HTTP listener.
type mux struct {
	root net.Listener
	grpc *subListener
	http *subListener
	// sniffTimeout and h2cTimeout are the constants above (tests shorten
	// them).
	sniffTimeout, h2cTimeout time.Duration

	// classifying is every connection not yet handed over; close closes
	// them, so that no classify goroutine outlives serve.
	mu          sync.Mutex
	classifying map[net.Conn]struct{}
	closed      bool
	wg          sync.WaitGroup
	once        sync.Once
}

func newMux(l net.Listener) *mux {
	m := &mux{root: l, sniffTimeout: sniffTimeout, h2cTimeout: h2cSniffTimeout, classifying: make(map[net.Conn]struct{})}
	m.grpc = &subListener{m: m, conns: make(chan net.Conn), done: make(chan struct{})}
	m.http = &subListener{m: m, conns: make(chan net.Conn), done: make(chan struct{})}
	return m
}

// serve accepts connections until the root listener closes. Each connection
// is classified on its own goroutine so that a slow client cannot stall
// accepting others. serve returns once every classify goroutine has ended.
func (m *mux) serve() error {
	defer m.wg.Wait()
	for {
		c, err := m.root.Accept()
		if err != nil {
			m.close()
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		if !m.track(c) {
			c.Close()
			continue
		}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			target, hc := m.classify(c)
			if !m.untrack(c) || hc == nil {
				c.Close()
				return
			}
			select {
			case target.conns <- hc:
			case <-target.done:
				c.Close()
			}
		}()
	}
}

// track records c as being classified; false when the mux is closed.
func (m *mux) track(c net.Conn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.classifying[c] = struct{}{}
	return true
}

// untrack forgets c; false when the mux closed meanwhile (and closed c).
func (m *mux) untrack(c net.Conn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.classifying, c)
	return !m.closed
}

// classify reads the first bytes of c and returns the listener it belongs
// to with a connection that replays them, or a nil connection when c is
// to be closed (the client left, or said nothing at all in time).
func (m *mux) classify(c net.Conn) (*subListener, net.Conn) {
	var head [len(clientPreface)]byte
	_ = c.SetReadDeadline(time.Now().Add(m.sniffTimeout))
	if _, err := io.ReadFull(c, head[:3]); err != nil {
		return nil, nil
	}
	if string(head[:3]) != clientPreface[:3] {
		_ = c.SetReadDeadline(time.Time{})
		return m.http, &peekedConn{Conn: c, head: head[:3]}
	}
	n, err := io.ReadFull(c, head[3:])
	if err != nil && n == 0 {
		return nil, nil
	}
	if err != nil || string(head[:]) != clientPreface {
		// Not HTTP/2 after all: grpc-go rejects the greeting, as before.
		_ = c.SetReadDeadline(time.Time{})
		return m.grpc, &peekedConn{Conn: c, head: head[:3+n]}
	}
	deadline := time.Now().Add(m.h2cTimeout)
	_ = c.SetWriteDeadline(deadline)
	if _, err := c.Write(emptySettings); err != nil {
		return nil, nil
	}
	_ = c.SetWriteDeadline(time.Time{})
	_ = c.SetReadDeadline(deadline)
	s, err := sniffH2C(c)
	_ = c.SetReadDeadline(time.Time{})
	if err != nil && !isTimeout(err) && !errors.Is(err, errSniffFull) {
		return nil, nil // the client left, or the mux closed c
	}
	if !s.grpc {
		return m.http, newH2CConn(c, s)
	}
	replay := make([]byte, 0, len(clientPreface)+len(s.buf))
	replay = append(append(replay, clientPreface...), s.buf...)
	return m.grpc, &peekedConn{Conn: c, head: replay}
}

// isTimeout reports whether err is a passed deadline.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (m *mux) close() {
	m.once.Do(func() {
		m.mu.Lock()
		m.closed = true
		for c := range m.classifying {
			c.Close()
		}
		m.mu.Unlock()
		_ = m.root.Close()
		close(m.grpc.done)
		close(m.http.done)
	})
}

// subListener hands out the connections classified for one server.
type subListener struct {
	m     *mux
	conns chan net.Conn
	done  chan struct{}
}

func (l *subListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close closes the whole mux: both servers stop accepting together.
func (l *subListener) Close() error {
	l.m.close()
	return nil
}

func (l *subListener) Addr() net.Addr { return l.m.root.Addr() }

// peekedConn replays the bytes read while classifying, then reads the
// connection directly: one length check per Read is all it adds.
type peekedConn struct {
	net.Conn
	head []byte
}

func (c *peekedConn) Read(p []byte) (int, error) {
	if len(c.head) > 0 {
		n := copy(p, c.head)
		c.head = c.head[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
