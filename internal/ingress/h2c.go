package ingress

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"

	"golang.org/x/net/http2/hpack"
)

// Classifying a cleartext HTTP/2 (h2c) connection by its first request;
// the mux (mux.go) acts on the verdict.
//
// The sniffer reads the frames that follow the client preface until the
// HPACK-coded header block of the first request shows its content-type,
// and keeps every byte it read so that the server taking the connection
// sees the connection from its first byte. grpc-go clients send nothing
// but their preface and SETTINGS until the server's SETTINGS arrive, so
// the sniffer sends a SETTINGS frame first: an empty one, which leaves
// every setting at its protocol default (what the client must assume of
// any server until it hears otherwise). The server that takes the
// connection then sends its own SETTINGS, a legal second frame.
//
// The client acknowledges the sniffer's SETTINGS. grpc-go ignores SETTINGS
// acknowledgements, so a gRPC connection is replayed byte for byte and then
// read directly. net/http's HTTP/2 server counts them and hangs up on one
// it did not ask for, so an HTTP connection goes through h2cConn, which
// drops the first acknowledgement (ACKs come in the order the SETTINGS
// were received, and the sniffer's came first) and is a plain pass-through
// after it.

// clientPreface opens every HTTP/2 connection (RFC 9113 §3.4).
const clientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// HTTP/2 frame layout and the types and flags the sniffer reads (RFC 9113 §6).
const (
	frameHeaderLen = 9
	// maxFrameLen is SETTINGS_MAX_FRAME_SIZE's initial value. The
	// sniffer's SETTINGS do not raise it, so a bigger frame is an error.
	maxFrameLen = 16384

	frameData         = 0x0
	frameHeaders      = 0x1
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	framePushPromise  = 0x5
	framePing         = 0x6
	frameGoAway       = 0x7
	frameContinuation = 0x9

	flagAck        = 0x1
	flagEndHeaders = 0x4
	flagPadded     = 0x8
	flagPriority   = 0x20
)

// emptySettings is the sniffer's server preface: a SETTINGS frame on
// stream 0 with no settings.
var emptySettings = []byte{0, 0, 0, frameSettings, 0, 0, 0, 0, 0}

// hpackTableSize is SETTINGS_HEADER_TABLE_SIZE's initial value, the
// dynamic table the client may use while it knows no other.
const hpackTableSize = 4096

// maxSniffBytes bounds what the sniffer holds for one connection: net/http's
// default limit on a request's headers, so that any first request the HTTP
// side would accept can be classified.
const maxSniffBytes = 1 << 20

// errSniffFull means the first request's content-type did not show within
// maxSniffBytes.
var errSniffFull = errors.New("h2c sniff: no content-type within the first MiB")

// h2cSniff is what the sniffer read after the client preface.
type h2cSniff struct {
	// grpc is the verdict: the connection goes to grpc-go.
	grpc bool
	// buf holds every byte read after the preface. buf[:parsed] is whole
	// frames; buf[parsed:] begins at a frame boundary (a partial frame, or
	// frames read along with the one that decided).
	buf    []byte
	parsed int
	// ackAt is the offset in buf of the first SETTINGS ACK among the parsed
	// frames, or -1.
	ackAt int
}

// sniffH2C reads frames from c (a connection), whose client preface has been read and
// answered with emptySettings, until it can tell where the connection
// goes. The first request goes to grpc-go exactly when grpc-go would
// accept its content-type (application/grpc, alone or followed by '+' or
// ';'), and to net/http otherwise, including when it has none.
//
// Whatever the sniffer cannot classify goes to grpc-go, which served every
// HTTP/2 connection before this file existed and reports protocol errors
// itself: a frame that breaks the protocol before the first request is
// complete, a PING (the client is idle and wants the connection kept
// alive, the way gRPC clients are), a header block that does not reveal
// the content-type within maxSniffBytes, and a read error (the deadline
// the caller set passing). The error is the read error, or errSniffFull;
// with an error the verdict is grpc-go, and the caller decides whether the
// connection is still worth handing over.
func sniffH2C(c io.Reader) (h2cSniff, error) {
	s := h2cSniff{grpc: true, buf: make([]byte, 0, 4096), ackAt: -1}
	var (
		contentType string
		found       bool
		inBlock     bool // inside a header block: HEADERS without END_HEADERS
		first       = true
	)
	dec := hpack.NewDecoder(hpackTableSize, func(f hpack.HeaderField) {
		if !found && f.Name == "content-type" {
			contentType, found = f.Value, true
		}
	})
	dec.SetMaxStringLength(maxSniffBytes)
	// need reads until buf holds n bytes from the parse offset.
	need := func(n int) error {
		for len(s.buf)-s.parsed < n {
			if len(s.buf) == cap(s.buf) {
				if cap(s.buf) >= maxSniffBytes {
					return errSniffFull
				}
				grown := make([]byte, len(s.buf), min(2*cap(s.buf), maxSniffBytes))
				copy(grown, s.buf)
				s.buf = grown
			}
			got, err := c.Read(s.buf[len(s.buf):cap(s.buf)])
			s.buf = s.buf[:len(s.buf)+got]
			if got == 0 && err != nil {
				return err
			}
		}
		return nil
	}
	for {
		if err := need(frameHeaderLen); err != nil {
			return s, err
		}
		h := s.buf[s.parsed : s.parsed+frameHeaderLen]
		length := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
		typ, flags := h[3], h[4]
		stream := binary.BigEndian.Uint32(h[5:]) & (1<<31 - 1)
		if length > maxFrameLen {
			return s, nil
		}
		if err := need(frameHeaderLen + length); err != nil {
			return s, err
		}
		start := s.parsed
		payload := s.buf[start+frameHeaderLen : start+frameHeaderLen+length]
		s.parsed += frameHeaderLen + length

		// The first frame must be SETTINGS, and nothing may interrupt a
		// header block (RFC 9113 §3.4, §6.10).
		if first && typ != frameSettings || inBlock && typ != frameContinuation {
			return s, nil
		}
		first = false
		var fragment []byte
		switch typ {
		case frameSettings:
			if flags&flagAck != 0 && s.ackAt < 0 {
				if length != 0 {
					return s, nil
				}
				s.ackAt = start
			}
			continue
		case framePing:
			if flags&flagAck == 0 {
				return s, nil
			}
			continue
		case frameHeaders:
			// Client streams have odd ids.
			if stream%2 != 1 {
				return s, nil
			}
			var ok bool
			if fragment, ok = headerFragment(flags, payload); !ok {
				return s, nil
			}
		case frameContinuation:
			if !inBlock {
				return s, nil
			}
			fragment = payload
		case frameData, frameRSTStream, framePushPromise, frameGoAway:
			// Not legal before a request, or the client leaving.
			return s, nil
		default:
			// WINDOW_UPDATE, PRIORITY, and frame types this reader does
			// not know, which a receiver ignores (RFC 9113 §5.5).
			continue
		}
		if _, err := dec.Write(fragment); err != nil {
			return s, nil
		}
		inBlock = flags&flagEndHeaders == 0
		if !found && !inBlock {
			if err := dec.Close(); err != nil {
				return s, nil
			}
		}
		if found || !inBlock {
			s.grpc = found && grpcContentType(contentType)
			return s, nil
		}
	}
}

// headerFragment returns the header block fragment of a HEADERS frame's
// payload, without its padding and priority fields.
func headerFragment(flags byte, p []byte) ([]byte, bool) {
	pad := 0
	if flags&flagPadded != 0 {
		if len(p) < 1 {
			return nil, false
		}
		pad, p = int(p[0]), p[1:]
	}
	if flags&flagPriority != 0 {
		if len(p) < 5 {
			return nil, false
		}
		p = p[5:]
	}
	if pad > len(p) {
		return nil, false
	}
	return p[:len(p)-pad], true
}

// grpcContentType reports whether grpc-go serves a request with content
// type ct: it takes application/grpc and its subtypes
// (application/grpc+proto, application/grpc;charset=...), compared as
// grpc-go does, case-sensitively. application/grpc-web is not one.
func grpcContentType(ct string) bool {
	const base = "application/grpc"
	rest, ok := strings.CutPrefix(ct, base)
	return ok && (rest == "" || rest[0] == '+' || rest[0] == ';')
}

// h2cConn is a connection for net/http's HTTP/2 server: it replays the
// preface and the frames the sniffer read, without the client's first
// SETTINGS ACK (the acknowledgement of the sniffer's SETTINGS, which the
// server did not send). Until that ACK has gone by it reads frame by frame;
// after it, Read is the connection's own. A Read may return fewer bytes
// than asked, as any net.Conn's may.
type h2cConn struct {
	net.Conn
	// out is bytes ready to return, already without the ACK.
	out []byte
	// in is bytes read but not yet looked at; they begin a frame header
	// when payload is 0.
	in []byte
	// payload is how many bytes of the current frame's payload are still
	// to pass through.
	payload int
	// stripped is set once the ACK is gone.
	stripped bool
}

// newH2CConn returns c with the preface and the sniffed bytes in front.
func newH2CConn(c net.Conn, s h2cSniff) *h2cConn {
	out := make([]byte, 0, len(clientPreface)+len(s.buf))
	out = append(out, clientPreface...)
	hc := &h2cConn{Conn: c, in: s.buf[s.parsed:]}
	if s.ackAt >= 0 {
		out = append(out, s.buf[:s.ackAt]...)
		out = append(out, s.buf[s.ackAt+frameHeaderLen:s.parsed]...)
		hc.stripped = true
	} else {
		out = append(out, s.buf[:s.parsed]...)
	}
	hc.out = out
	return hc
}

func (c *h2cConn) Read(p []byte) (int, error) {
	for {
		if len(c.out) > 0 {
			n := copy(p, c.out)
			c.out = c.out[n:]
			return n, nil
		}
		if c.stripped || c.payload > 0 {
			return c.pass(p)
		}
		if len(c.in) < frameHeaderLen {
			if err := c.fill(); err != nil {
				// The stream ends inside a frame header: hand over what
				// there is and stop looking.
				c.out, c.in, c.stripped = c.in, nil, true
				if len(c.out) == 0 {
					return 0, err
				}
				continue
			}
			continue
		}
		h := c.in[:frameHeaderLen]
		length := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
		if h[3] == frameSettings && h[4]&flagAck != 0 && length == 0 {
			c.in = c.in[frameHeaderLen:]
			c.stripped = true
			continue
		}
		c.payload = length
		c.out, c.in = h, c.in[frameHeaderLen:]
	}
}

// pass returns payload bytes (or, once the ACK is gone, any bytes): those
// left in in first, then the connection's.
func (c *h2cConn) pass(p []byte) (int, error) {
	limit := len(p)
	if !c.stripped {
		limit = min(limit, c.payload)
	}
	var n int
	var err error
	if len(c.in) > 0 {
		n = copy(p[:limit], c.in)
		c.in = c.in[n:]
		if len(c.in) == 0 {
			c.in = nil
		}
	} else {
		n, err = c.Conn.Read(p[:limit])
	}
	if !c.stripped {
		c.payload -= n
	}
	return n, err
}

// fill reads more of the connection into in.
func (c *h2cConn) fill() error {
	var b [512]byte
	n, err := c.Conn.Read(b[:])
	c.in = append(c.in, b[:n]...)
	if n == 0 && err != nil {
		return err
	}
	return nil
}
