package ingress

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// The public port speaks gRPC (HTTP/2 with prior knowledge) and HTTP/1.1
// (probes, and later HTTP/JSON). Rather than serving gRPC through
// net/http's HTTP/2 (much slower than grpc-go's own transport), each new
// connection is classified by its first bytes: the HTTP/2 client preface
// begins with "PRI", which no HTTP/1 method does.
const sniffTimeout = 10 * time.Second

// mux splits one listener into a gRPC and an HTTP/1 listener.
type mux struct {
	root     net.Listener
	grpc     *subListener
	http     *subListener
	closeErr error
	once     sync.Once
}

func newMux(l net.Listener) *mux {
	m := &mux{root: l}
	m.grpc = &subListener{m: m, conns: make(chan net.Conn), done: make(chan struct{})}
	m.http = &subListener{m: m, conns: make(chan net.Conn), done: make(chan struct{})}
	return m
}

// serve accepts connections until the root listener closes. Each connection
// is classified on its own goroutine so that a slow client cannot stall
// accepting others.
func (m *mux) serve() error {
	for {
		c, err := m.root.Accept()
		if err != nil {
			m.close()
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go m.classify(c)
	}
}

func (m *mux) classify(c net.Conn) {
	var head [3]byte
	_ = c.SetReadDeadline(time.Now().Add(sniffTimeout))
	n, err := io.ReadFull(c, head[:])
	_ = c.SetReadDeadline(time.Time{})
	if err != nil {
		c.Close()
		return
	}
	pc := &peekedConn{Conn: c, head: head[:n]}
	target := m.http
	if string(head[:n]) == "PRI" {
		target = m.grpc
	}
	select {
	case target.conns <- pc:
	case <-target.done:
		c.Close()
	}
}

func (m *mux) close() {
	m.once.Do(func() {
		m.closeErr = m.root.Close()
		close(m.grpc.done)
		close(m.http.done)
	})
}

// subListener hands out the connections classified for one protocol.
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

// Close closes the whole mux: both protocols stop accepting together.
func (l *subListener) Close() error {
	l.m.close()
	return nil
}

func (l *subListener) Addr() net.Addr { return l.m.root.Addr() }

// peekedConn replays the bytes read while classifying.
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
