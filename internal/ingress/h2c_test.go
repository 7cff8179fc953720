package ingress

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// clientFrames builds client frames after the preface with a real HTTP/2 framer.
type clientFrames struct {
	buf bytes.Buffer
	fr  *http2.Framer
}

func newFrames() *clientFrames {
	f := &clientFrames{}
	f.fr = http2.NewFramer(&f.buf, nil)
	return f
}

func (f *clientFrames) settings() *clientFrames     { _ = f.fr.WriteSettings(); return f }
func (f *clientFrames) settingsAck() *clientFrames  { _ = f.fr.WriteSettingsAck(); return f }
func (f *clientFrames) windowUpdate() *clientFrames { _ = f.fr.WriteWindowUpdate(0, 1<<20); return f }
func (f *clientFrames) ping() *clientFrames         { _ = f.fr.WritePing(false, [8]byte{}); return f }
func (f *clientFrames) data() *clientFrames         { _ = f.fr.WriteData(1, true, []byte("x")); return f }
func (f *clientFrames) priority() *clientFrames {
	_ = f.fr.WritePriority(3, http2.PriorityParam{Weight: 10})
	return f
}
func (f *clientFrames) unknown() *clientFrames {
	_ = f.fr.WriteRawFrame(0xbb, 0, 0, []byte("ext"))
	return f
}

// headers writes a request on stream 1 with the given content type ("" for
// none), its block split over HEADERS and CONTINUATION frames of at most
// split bytes (0: one frame), with padding and priority when asked.
func (f *clientFrames) headers(contentType string, split int, padded bool) *clientFrames {
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	fields := []hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: "example"}, {Name: ":path", Value: "/pkg.Service/Method"},
		{Name: "user-agent", Value: "test/1.0 with a value long enough to split the block"},
	}
	if contentType != "" {
		fields = append(fields, hpack.HeaderField{Name: "content-type", Value: contentType})
	}
	fields = append(fields, hpack.HeaderField{Name: "te", Value: "trailers"})
	for _, hf := range fields {
		_ = enc.WriteField(hf)
	}
	b := block.Bytes()
	first := b
	if split > 0 && split < len(b) {
		first, b = b[:split], b[split:]
	} else {
		b = nil
	}
	p := http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndHeaders: len(b) == 0}
	if padded {
		p.PadLength = 7
		p.Priority = http2.PriorityParam{StreamDep: 0, Weight: 200}
	}
	_ = f.fr.WriteHeaders(p)
	for len(b) > 0 {
		n := min(split, len(b))
		_ = f.fr.WriteContinuation(1, n == len(b), b[:n])
		b = b[n:]
	}
	return f
}

func (f *clientFrames) bytes() []byte { return f.buf.Bytes() }

func TestSniffH2CVerdicts(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		grpc bool
	}{
		{"gRPC", newFrames().settings().windowUpdate().headers("application/grpc", 0, false).bytes(), true},
		{"gRPC+proto", newFrames().settings().headers("application/grpc+proto", 0, false).bytes(), true},
		{"gRPC with parameters", newFrames().settings().headers("application/grpc;charset=utf-8", 0, false).bytes(), true},
		{"gRPC, padded with priority", newFrames().settings().headers("application/grpc", 0, true).bytes(), true},
		{"gRPC in CONTINUATION frames", newFrames().settings().headers("application/grpc", 5, false).bytes(), true},
		{"gRPC after priority and unknown frames", newFrames().settings().priority().unknown().settingsAck().headers("application/grpc", 0, false).bytes(), true},
		{"Connect", newFrames().settings().headers("application/connect+proto", 0, false).bytes(), false},
		{"Connect unary JSON", newFrames().settings().headers("application/json", 0, false).bytes(), false},
		{"Connect in CONTINUATION frames, padded", newFrames().settings().headers("application/proto", 3, true).bytes(), false},
		{"gRPC-Web", newFrames().settings().headers("application/grpc-web+proto", 0, false).bytes(), false},
		{"gRPC-Web text", newFrames().settings().headers("application/grpc-web-text", 0, false).bytes(), false},
		{"upper case, as grpc-go refuses it", newFrames().settings().headers("Application/grpc", 0, false).bytes(), false},
		{"no content-type", newFrames().settings().headers("", 0, false).bytes(), false},
		{"no content-type, CONTINUATION frames", newFrames().settings().headers("", 4, false).bytes(), false},
		{"PING first", newFrames().settings().ping().headers("application/proto", 0, false).bytes(), true},
		{"DATA before HEADERS", newFrames().settings().data().headers("application/proto", 0, false).bytes(), true},
		{"first frame not SETTINGS", newFrames().windowUpdate().headers("application/proto", 0, false).bytes(), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := sniffH2C(bytes.NewReader(tc.in))
			if err != nil {
				t.Fatalf("sniff: %v", err)
			}
			if s.grpc != tc.grpc {
				t.Fatalf("grpc = %v, want %v", s.grpc, tc.grpc)
			}
			if !bytes.Equal(s.buf, tc.in[:len(s.buf)]) {
				t.Fatal("sniffed bytes are not the stream's")
			}
		})
	}
	t.Run("decides on content-type before the block ends", func(t *testing.T) {
		// The stream stops after the content-type; the block is unfinished.
		var block bytes.Buffer
		enc := hpack.NewEncoder(&block)
		_ = enc.WriteField(hpack.HeaderField{Name: "content-type", Value: "application/connect+proto"})
		f := newFrames().settings()
		_ = f.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes()})
		s, err := sniffH2C(bytes.NewReader(f.bytes()))
		if err != nil || s.grpc {
			t.Fatalf("grpc %v, err %v; want net/http without reading further", s.grpc, err)
		}
	})
	t.Run("stream ends while sniffing", func(t *testing.T) {
		in := newFrames().settings().bytes()
		if _, err := sniffH2C(bytes.NewReader(in)); !errors.Is(err, io.EOF) {
			t.Fatalf("err %v, want io.EOF", err)
		}
	})
	t.Run("header block too big", func(t *testing.T) {
		f := newFrames().settings()
		_ = f.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x00, 0x01, 'x', 0x7f}})
		for range maxSniffBytes / maxFrameLen {
			_ = f.fr.WriteContinuation(1, false, make([]byte, maxFrameLen))
		}
		s, err := sniffH2C(bytes.NewReader(f.bytes()))
		if !errors.Is(err, errSniffFull) || !s.grpc {
			t.Fatalf("grpc %v, err %v; want grpc-go and errSniffFull", s.grpc, err)
		}
	})
}

func TestGRPCContentType(t *testing.T) {
	for ct, want := range map[string]bool{
		"application/grpc": true, "application/grpc+proto": true, "application/grpc+json": true,
		"application/grpc;charset=utf-8": true, "application/grpc-web": false, "application/grpc-web+proto": false,
		"application/grpc-web-text": false, "application/grpcx": false, "application/connect+proto": false,
		"application/proto": false, "": false, "Application/grpc": false,
	} {
		if got := grpcContentType(ct); got != want {
			t.Errorf("grpcContentType(%q) = %v, want %v", ct, got, want)
		}
	}
}

// chunkConn is a net.Conn over a byte slice whose reads return at most
// the next of sizes bytes (cycling).
type chunkConn struct {
	net.Conn
	r     *bytes.Reader
	sizes []int
	i     int
}

func (c *chunkConn) Read(p []byte) (int, error) {
	n := c.sizes[c.i%len(c.sizes)]
	c.i++
	return c.r.Read(p[:min(len(p), n)])
}

// withoutFirstAck is what net/http must read after the preface: the stream
// without its first zero-length SETTINGS ACK at a frame boundary.
func withoutFirstAck(b []byte) []byte {
	for off := 0; off+frameHeaderLen <= len(b); {
		h := b[off : off+frameHeaderLen]
		length := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
		if h[3] == frameSettings && h[4]&flagAck != 0 && length == 0 {
			return append(append([]byte{}, b[:off]...), b[off+frameHeaderLen:]...)
		}
		off += frameHeaderLen + length
	}
	return b
}

// readAllSized reads c to the end asking for sizes bytes at a time.
func readAllSized(c io.Reader, sizes []int) ([]byte, error) {
	var out []byte
	for i := 0; ; i++ {
		p := make([]byte, sizes[i%len(sizes)])
		n, err := c.Read(p)
		out = append(out, p[:n]...)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if i > 1<<20 {
			return out, errors.New("no progress")
		}
	}
}

// checkH2CConn sniffs in, and when the verdict is net/http, checks that
// h2cConn yields the preface and in without the first SETTINGS ACK,
// whatever the sizes of the reads on either side.
func checkH2CConn(t *testing.T, in []byte, connSizes, readSizes []int) {
	t.Helper()
	src := &chunkConn{r: bytes.NewReader(in), sizes: connSizes}
	s, err := sniffH2C(src)
	if s.parsed > len(s.buf) || s.ackAt >= s.parsed || !bytes.Equal(s.buf, in[:len(s.buf)]) {
		t.Fatalf("sniff state: parsed %d, ackAt %d, %d bytes read of %d", s.parsed, s.ackAt, len(s.buf), len(in))
	}
	if err != nil || s.grpc {
		return
	}
	got, err := readAllSized(newH2CConn(src, s), readSizes)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte(clientPreface), withoutFirstAck(in)...)
	if !bytes.Equal(got, want) {
		t.Fatalf("h2cConn read\n%x\nwant\n%x", got, want)
	}
}

func TestH2CConnStripsFirstAck(t *testing.T) {
	body := bytes.Repeat([]byte("payload "), 3000) // bigger than a read, two frames
	streams := map[string][]byte{
		"ack before the request": newFrames().settings().settingsAck().headers("application/proto", 0, false).bytes(),
		"ack after the request": func() []byte {
			f := newFrames().settings().headers("application/proto", 0, false)
			_ = f.fr.WriteData(1, false, body[:maxFrameLen])
			_ = f.fr.WriteData(1, true, body[maxFrameLen:])
			_ = f.fr.WriteSettingsAck()
			_ = f.fr.WriteWindowUpdate(0, 100)
			_ = f.fr.WriteSettingsAck() // the ACK of net/http's SETTINGS stays
			return f.bytes()
		}(),
		"ack in the frames read along with the request": newFrames().settings().headers("application/proto", 0, false).settingsAck().settingsAck().bytes(),
		"no ack": newFrames().settings().headers("", 0, false).windowUpdate().bytes(),
	}
	for name, in := range streams {
		t.Run(name, func(t *testing.T) {
			for _, sizes := range [][]int{{1 << 16}, {1}, {2, 9, 3}, {8, 1, 17}, {4096}} {
				for _, readSizes := range [][]int{{1 << 16}, {1}, {5, 9, 24}, {4096}} {
					checkH2CConn(t, in, sizes, readSizes)
				}
			}
		})
	}
}

// FuzzH2CSniff feeds arbitrary bytes after the preface to the sniffer and,
// on a net/http verdict, reads them back through h2cConn.
func FuzzH2CSniff(f *testing.F) {
	f.Add(newFrames().settings().settingsAck().headers("application/proto", 0, false).bytes(), uint8(3), uint8(7))
	f.Add(newFrames().settings().headers("application/grpc", 4, true).settingsAck().bytes(), uint8(1), uint8(1))
	f.Add(newFrames().settings().headers("", 0, false).data().settingsAck().bytes(), uint8(200), uint8(9))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), uint8(5), uint8(5))
	f.Fuzz(func(t *testing.T, in []byte, connSize, readSize uint8) {
		checkH2CConn(t, in, []int{int(connSize)%64 + 1, 1, 4096}, []int{int(readSize)%64 + 1, 4096})
	})
}
