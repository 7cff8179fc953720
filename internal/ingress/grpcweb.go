package ingress

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"io"
	"net/http"
	"strings"
)

// gRPC-Web details the transcoder leaves out (BEHAVIOR.md ING-7): the
// base64 "-text" variant, which it does not recognise, and lower-case names
// in the trailer frame, which it writes in canonical case.

const (
	grpcWebPrefix     = "application/grpc-web"
	grpcWebTextPrefix = "application/grpc-web-text"
)

// isGRPCWeb reports whether r is a gRPC-Web request, and whether its body is
// base64 text.
func isGRPCWeb(r *http.Request) (web, text bool) {
	ct := r.Header.Get("Content-Type")
	switch {
	case ct == grpcWebTextPrefix || strings.HasPrefix(ct, grpcWebTextPrefix+"+"):
		return true, true
	case ct == grpcWebPrefix || strings.HasPrefix(ct, grpcWebPrefix+"+"):
		return true, false
	}
	return false, false
}

// adaptGRPCWeb prepares a gRPC-Web request for the transcoder: a -text body
// is decoded and the request relabelled binary. The returned writer lowers
// the trailer names and, when the client asked for text (a -text request,
// or an Accept starting with application/grpc-web-text), encodes the
// response in base64 under the -text content type; finish must be called
// after the transcoder returns.
func adaptGRPCWeb(w http.ResponseWriter, r *http.Request, text bool) (*grpcWebWriter, *http.Request) {
	ct := r.Header.Get("Content-Type")
	if text {
		r.Header.Set("Content-Type", grpcWebPrefix+strings.TrimPrefix(ct, grpcWebTextPrefix))
		r.Header.Del("Content-Length")
		r.ContentLength = -1
		r.Body = struct {
			io.Reader
			io.Closer
		}{&base64QuantumReader{r: bufio.NewReader(r.Body)}, r.Body}
	}
	// The response keeps the request's content type, in text when asked.
	textOut := text || strings.HasPrefix(r.Header.Get("Accept"), grpcWebTextPrefix)
	if textOut && !text {
		ct = grpcWebTextPrefix + strings.TrimPrefix(ct, grpcWebPrefix)
	}
	return &grpcWebWriter{w: w, text: textOut, contentType: ct}, r
}

// base64QuantumReader decodes standard base64 four characters at a time, so
// that a body made of several padded chunks (allowed by gRPC-Web) decodes
// like one.
type base64QuantumReader struct {
	r       io.Reader
	in      [4]byte
	have    int    // bytes of in filled
	out     []byte // decoded bytes not yet returned
	outBuf  [3]byte
	readErr error
}

func (b *base64QuantumReader) Read(p []byte) (int, error) {
	for len(b.out) == 0 {
		if b.readErr != nil {
			if b.have != 0 && b.readErr == io.EOF {
				return 0, io.ErrUnexpectedEOF
			}
			return 0, b.readErr
		}
		var c [1]byte
		n, err := b.r.Read(c[:])
		if n == 1 {
			switch c[0] {
			case '\r', '\n', ' ', '\t':
				continue
			}
			b.in[b.have] = c[0]
			b.have++
			if b.have == 4 {
				m, derr := base64.StdEncoding.Decode(b.outBuf[:], b.in[:])
				if derr != nil {
					return 0, derr
				}
				b.out = b.outBuf[:m]
				b.have = 0
			}
		}
		if err != nil {
			b.readErr = err
		}
	}
	n := copy(p, b.out)
	b.out = b.out[n:]
	return n, nil
}

// grpcWebWriter rewrites a gRPC-Web response as it streams: data frames pass
// through, the trailer frame (flag 0x80) is collected and its header names
// lower-cased; with text set, everything is base64-encoded.
type grpcWebWriter struct {
	w           http.ResponseWriter
	text        bool
	contentType string // of the response
	wroteHeader bool

	hdr     [5]byte
	hdrHave int
	// remain is what is left of the current frame's payload.
	remain int
	// trailer collects a trailer frame's payload.
	trailer   []byte
	inTrailer bool

	carry  [3]byte // text: bytes not yet encoded (fewer than 3)
	nCarry int
}

func (g *grpcWebWriter) Header() http.Header { return g.w.Header() }

func (g *grpcWebWriter) WriteHeader(code int) {
	if g.wroteHeader {
		return
	}
	g.wroteHeader = true
	h := g.w.Header()
	if strings.HasPrefix(h.Get("Content-Type"), grpcWebPrefix) {
		h.Set("Content-Type", g.contentType)
	}
	if g.text {
		h.Del("Content-Length")
	}
	g.w.WriteHeader(code)
}

func (g *grpcWebWriter) Write(p []byte) (int, error) {
	if !g.wroteHeader {
		g.WriteHeader(http.StatusOK)
	}
	total := len(p)
	for len(p) > 0 {
		if g.remain == 0 && !g.inTrailer {
			// Reading a frame header.
			n := copy(g.hdr[g.hdrHave:], p)
			g.hdrHave += n
			p = p[n:]
			if g.hdrHave < 5 {
				break
			}
			g.hdrHave = 0
			g.remain = int(binary.BigEndian.Uint32(g.hdr[1:]))
			if g.hdr[0]&0x80 != 0 {
				g.inTrailer = true
				g.trailer = g.trailer[:0]
				if g.remain == 0 {
					if err := g.endTrailer(); err != nil {
						return 0, err
					}
				}
				continue
			}
			if err := g.emit(g.hdr[:]); err != nil {
				return 0, err
			}
			continue
		}
		n := min(len(p), g.remain)
		chunk := p[:n]
		p = p[n:]
		g.remain -= n
		if g.inTrailer {
			g.trailer = append(g.trailer, chunk...)
			if g.remain == 0 {
				if err := g.endTrailer(); err != nil {
					return 0, err
				}
			}
			continue
		}
		if err := g.emit(chunk); err != nil {
			return 0, err
		}
	}
	return total, nil
}

// endTrailer writes the collected trailer frame with lower-case names.
func (g *grpcWebWriter) endTrailer() error {
	g.inTrailer = false
	lines := bytes.Split(g.trailer, []byte("\r\n"))
	for _, line := range lines {
		if i := bytes.IndexByte(line, ':'); i > 0 {
			copy(line[:i], bytes.ToLower(line[:i]))
		}
	}
	body := bytes.Join(lines, []byte("\r\n"))
	var hdr [5]byte
	hdr[0] = g.hdr[0]
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(body)))
	if err := g.emit(hdr[:]); err != nil {
		return err
	}
	return g.emit(body)
}

// emit sends bytes of the binary response, encoding them in text mode.
func (g *grpcWebWriter) emit(p []byte) error {
	if !g.text {
		_, err := g.w.Write(p)
		return err
	}
	if g.nCarry > 0 {
		n := copy(g.carry[g.nCarry:], p)
		g.nCarry += n
		p = p[n:]
		if g.nCarry < 3 {
			return nil
		}
		if err := g.writeBase64(g.carry[:]); err != nil {
			return err
		}
		g.nCarry = 0
	}
	whole := len(p) / 3 * 3
	if whole > 0 {
		if err := g.writeBase64(p[:whole]); err != nil {
			return err
		}
	}
	g.nCarry = copy(g.carry[:], p[whole:])
	return nil
}

func (g *grpcWebWriter) writeBase64(p []byte) error {
	buf := make([]byte, base64.StdEncoding.EncodedLen(len(p)))
	base64.StdEncoding.Encode(buf, p)
	_, err := g.w.Write(buf)
	return err
}

// flushCarry encodes the last bytes with padding: a padded chunk may end
// any flush in gRPC-Web text.
func (g *grpcWebWriter) flushCarry() {
	if g.nCarry == 0 {
		return
	}
	_ = g.writeBase64(g.carry[:g.nCarry])
	g.nCarry = 0
}

// Flush sends what was written so far (server-streamed messages).
func (g *grpcWebWriter) Flush() {
	g.flushCarry()
	if f, ok := g.w.(http.Flusher); ok {
		f.Flush()
	}
}

// finish writes what is still held back.
func (g *grpcWebWriter) finish() {
	g.flushCarry()
}
