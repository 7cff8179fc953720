package httpe2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// requireTool returns the path of a program the test needs. A missing one
// skips the test, or fails it when CLOUDSTATE_REQUIRE_SERVICES=1 (as in CI,
// whose .ci/run installs it).
func requireTool(t *testing.T, names ...string) string {
	t.Helper()
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	msg := fmt.Sprintf("%s is not installed", names[0])
	if os.Getenv("CLOUDSTATE_REQUIRE_SERVICES") == "1" {
		t.Fatalf("%s (CLOUDSTATE_REQUIRE_SERVICES=1, so this is a failure)", msg)
	}
	t.Skipf("%s; skipping (set CLOUDSTATE_REQUIRE_SERVICES=1 to fail instead)", msg)
	return ""
}

// browserPage calls the proxy from another origin with fetch: AddItem over
// gRPC-Web (JSON messages in gRPC-Web frames, status from the trailer
// frame), GetCart over Connect, and the HTTP/JSON additional binding; then
// it writes the results into the page.
const browserPage = `<!doctype html>
<html><head><title>pending</title></head><body><pre id="out">pending</pre>
<script>
const proxy = %q;
function frame(text) {
  const body = new TextEncoder().encode(text);
  const f = new Uint8Array(5 + body.length);
  new DataView(f.buffer).setUint32(1, body.length);
  f.set(body, 5);
  return f;
}
async function grpcWebAdd() {
  const res = await fetch(proxy + "/com.example.shoppingcart.ShoppingCart/AddItem", {
    method: "POST",
    headers: {"Content-Type": "application/grpc-web+json", "X-Grpc-Web": "1"},
    body: frame(JSON.stringify({userId: "browser", productId: "kiwi", name: "Kiwi", quantity: 4})),
  });
  const buf = new Uint8Array(await res.arrayBuffer());
  let i = 0, messages = 0, trailer = "";
  while (i + 5 <= buf.length) {
    const n = new DataView(buf.buffer, i + 1, 4).getUint32(0);
    const body = buf.subarray(i + 5, i + 5 + n);
    if (buf[i] & 0x80) { trailer = new TextDecoder().decode(body); } else { messages++; }
    i += 5 + n;
  }
  const m = /grpc-status: *(\d+)/.exec(trailer);
  return "grpc-web AddItem: http " + res.status + ", " + messages + " message, grpc-status " + (m ? m[1] : "missing");
}
async function connectGet() {
  const res = await fetch(proxy + "/com.example.shoppingcart.ShoppingCart/GetCart", {
    method: "POST",
    headers: {"Content-Type": "application/json", "Connect-Protocol-Version": "1"},
    body: JSON.stringify({userId: "browser"}),
  });
  return "connect GetCart: http " + res.status + " " + await res.text();
}
async function jsonGet() {
  const res = await fetch(proxy + "/carts/browser/items");
  return "http/json GET: " + res.status + " " + await res.text();
}
(async () => {
  const lines = [];
  try {
    lines.push(await grpcWebAdd());
    lines.push(await connectGet());
    lines.push(await jsonGet());
  } catch (e) {
    lines.push("error: " + e);
  }
  document.getElementById("out").textContent = lines.join("\n");
  document.title = "done";
})();
</script></body></html>
`

// TestBrowser loads a page from one origin in headless Chromium; the page
// calls the proxy, on another origin with CORS allowed for the page's, over
// gRPC-Web, Connect and HTTP/JSON. The test reads the results from the
// dumped DOM. Against a proxy without CORS the browser refuses the calls.
func TestBrowser(t *testing.T) {
	chromium := requireTool(t, "chromium", "chromium-browser")
	if testing.Short() {
		t.Skip("runs the real binaries and a browser; skipped with -short")
	}
	var proxyBase atomic.Pointer[string] // the proxy the page calls
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, browserPage, *proxyBase.Load())
	}))
	defer page.Close()

	s := startStack(t, "--cors-allowed-origins", page.URL)
	proxyBase.Store(&s.base)
	dom := runChromium(t, chromium, page.URL+"/index.html")
	for _, want := range []string{
		"<title>done</title>",
		"grpc-web AddItem: http 200, 1 message, grpc-status 0",
		`connect GetCart: http 200 {"items":[{"productId":"kiwi","name":"Kiwi","quantity":4}]}`,
		`http/json GET: 200 [{"productId":"kiwi","name":"Kiwi","quantity":4}]`,
	} {
		if !strings.Contains(dom, want) {
			t.Fatalf("the page does not show %q; DOM:\n%s", want, dom)
		}
	}

	// The same page against a proxy that allows no other origin.
	closed := startStack(t)
	proxyBase.Store(&closed.base)
	dom = runChromium(t, chromium, page.URL+"/index.html")
	if !strings.Contains(dom, "<title>done</title>") || !strings.Contains(dom, "error: TypeError") {
		t.Fatalf("without CORS the page's calls should fail in the browser; DOM:\n%s", dom)
	}
}

// runChromium loads url in headless Chromium and returns the DOM once the
// page's script has finished.
func runChromium(t *testing.T, chromium, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage",
		"--user-data-dir="+t.TempDir(),
		// Virtual time does not advance while fetches are pending, so the
		// DOM is dumped after the page's script has finished.
		"--virtual-time-budget=30000",
		"--dump-dom", url)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	dom := string(out)
	if i, j := strings.Index(dom, `<pre id="out">`), strings.Index(dom, "</pre>"); i >= 0 && j > i {
		t.Logf("the page shows:\n%s", dom[i+len(`<pre id="out">`):j])
	}
	return dom
}
