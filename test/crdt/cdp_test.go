package crdte2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudstate-go/cloudstate/internal/testproc"
)

// A minimal Chrome DevTools Protocol client over --remote-debugging-pipe:
// Chromium reads commands from its fd 3 and writes answers and events to
// its fd 4, each a JSON object ended by a NUL byte. A pipe needs no port,
// no websocket library and no origin check, and goes away with the
// process. Sessions are "flat" (Target.attachToTarget with flatten), so a
// command for a page carries its sessionId.

// browser is a headless Chromium driven over the pipe.
type browser struct {
	cmd    *exec.Cmd
	logs   *testproc.LogBuffer
	toCr   *os.File // our end of fd 3
	done   chan struct{}
	reader chan struct{} // closed when the reading goroutine ends

	// writeMu keeps each message one write; it is separate from mu, so a
	// write blocked on a full pipe never stops answers being delivered.
	writeMu sync.Mutex

	mu      sync.Mutex
	nextID  int64
	pending map[int64]chan cdpAnswer
	// exceptions are uncaught exceptions in the pages, shown on failure.
	exceptions []string
}

type cdpAnswer struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// startBrowser starts Chromium with the flags of a quiet headless run and
// the debugging pipe. It is closed at cleanup.
func startBrowser(t *testing.T, chromium string) *browser {
	t.Helper()
	cmdIn, toCr, err := os.Pipe() // Chromium reads commands on fd 3
	if err != nil {
		t.Fatal(err)
	}
	fromCr, cmdOut, err := os.Pipe() // and writes answers on fd 4
	if err != nil {
		t.Fatal(err)
	}
	b := &browser{logs: &testproc.LogBuffer{}, toCr: toCr, done: make(chan struct{}), reader: make(chan struct{}),
		pending: make(map[int64]chan cdpAnswer)}
	b.cmd = exec.Command(chromium,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--window-size=1000,800", "--hide-scrollbars",
		"--user-data-dir="+t.TempDir(),
		"--remote-debugging-pipe", "about:blank")
	b.cmd.ExtraFiles = []*os.File{cmdIn, cmdOut}
	b.cmd.Stdout, b.cmd.Stderr = b.logs, b.logs
	b.cmd.WaitDelay = 2 * time.Second
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	// Chromium has its ends now.
	cmdIn.Close()
	cmdOut.Close()
	go func() {
		_ = b.cmd.Wait()
		close(b.done)
	}()
	go b.read(fromCr)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = b.call(ctx, "", "Browser.close", nil)
		select {
		case <-b.done:
		case <-time.After(10 * time.Second):
			_ = b.cmd.Process.Kill()
			<-b.done
		}
		toCr.Close()
		<-b.reader
		if t.Failed() {
			b.mu.Lock()
			t.Logf("--- page exceptions ---\n%s", strings.Join(b.exceptions, "\n"))
			b.mu.Unlock()
			t.Logf("--- output of chromium (pid %d) ---\n%s", b.cmd.Process.Pid, b.logs.String())
		}
	})
	return b
}

// read delivers answers to their callers until Chromium closes the pipe.
func (b *browser) read(r io.ReadCloser) {
	defer close(b.reader)
	defer r.Close()
	br := bufio.NewReader(r)
	for {
		raw, err := br.ReadBytes(0)
		if err != nil {
			b.mu.Lock()
			for id, ch := range b.pending {
				delete(b.pending, id)
				close(ch)
			}
			b.mu.Unlock()
			return
		}
		var msg struct {
			ID     int64           `json:"id"`
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
			cdpAnswer
		}
		if err := json.Unmarshal(raw[:len(raw)-1], &msg); err != nil {
			continue
		}
		if msg.ID == 0 {
			if msg.Method == "Runtime.exceptionThrown" {
				b.mu.Lock()
				b.exceptions = append(b.exceptions, string(msg.Params))
				b.mu.Unlock()
			}
			continue
		}
		b.mu.Lock()
		ch := b.pending[msg.ID]
		delete(b.pending, msg.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- msg.cdpAnswer
		}
	}
}

// call sends one command (to a page's session, or to the browser when
// session is "") and waits for its answer.
func (b *browser) call(ctx context.Context, session, method string, params any) (json.RawMessage, error) {
	if params == nil {
		params = struct{}{}
	}
	ch := make(chan cdpAnswer, 1)
	b.mu.Lock()
	b.nextID++
	id := b.nextID
	b.pending[id] = ch
	b.mu.Unlock()
	req := map[string]any{"id": id, "method": method, "params": params}
	if session != "" {
		req["sessionId"] = session
	}
	data, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	b.writeMu.Lock()
	_, err = b.toCr.Write(append(data, 0))
	b.writeMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("%s: write to chromium: %w", method, err)
	}
	select {
	case a, ok := <-ch:
		if !ok {
			return nil, fmt.Errorf("%s: chromium closed the pipe", method)
		}
		if a.Error != nil {
			return nil, fmt.Errorf("%s: %s (%d)", method, a.Error.Message, a.Error.Code)
		}
		return a.Result, nil
	case <-ctx.Done():
		b.mu.Lock()
		delete(b.pending, id)
		b.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// page is one tab.
type page struct {
	t       *testing.T
	b       *browser
	session string
	name    string
}

// openPage opens url in a new tab and attaches to it.
func (b *browser) openPage(t *testing.T, name, url string) *page {
	t.Helper()
	ctx := callCtx(t)
	res, err := b.call(ctx, "", "Target.createTarget", map[string]any{"url": url})
	if err != nil {
		t.Fatal(err)
	}
	var target struct {
		TargetID string `json:"targetId"`
	}
	if err := json.Unmarshal(res, &target); err != nil {
		t.Fatal(err)
	}
	res, err = b.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true})
	if err != nil {
		t.Fatal(err)
	}
	var attached struct {
		SessionID string `json:"sessionId"`
	}
	if err := json.Unmarshal(res, &attached); err != nil {
		t.Fatal(err)
	}
	p := &page{t: t, b: b, session: attached.SessionID, name: name}
	if _, err := b.call(ctx, p.session, "Runtime.enable", nil); err != nil {
		t.Fatal(err)
	}
	return p
}

// eval evaluates a JavaScript expression in the page (awaiting a promise)
// and decodes its value into out.
func (p *page) eval(expr string, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := p.b.call(ctx, p.session, "Runtime.evaluate", map[string]any{
		"expression": expr, "returnByValue": true, "awaitPromise": true,
	})
	if err != nil {
		return err
	}
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(res, &r); err != nil {
		return err
	}
	if e := r.ExceptionDetails; e != nil {
		return fmt.Errorf("%s: %s %s", expr, e.Text, e.Exception.Description)
	}
	if out == nil {
		return nil
	}
	if len(r.Result.Value) == 0 {
		return errors.New(expr + ": no value")
	}
	return json.Unmarshal(r.Result.Value, out)
}

// text returns an expression's string value; errors fail the test.
func (p *page) text(expr string) string {
	p.t.Helper()
	var s string
	if err := p.eval(expr, &s); err != nil {
		p.t.Fatalf("%s: %v", p.name, err)
	}
	return s
}

// click clicks the element that selector names, with real mouse events at
// its centre (so the page must show it, enabled, on top).
func (p *page) click(selector string) {
	p.t.Helper()
	var at struct{ X, Y float64 }
	expr := fmt.Sprintf(`(() => {
		const el = document.querySelector(%q);
		if (!el) throw new Error("no element " + %q);
		el.scrollIntoView({block: "center"});
		const r = el.getBoundingClientRect();
		return {X: r.x + r.width / 2, Y: r.y + r.height / 2};
	})()`, selector, selector)
	if err := p.eval(expr, &at); err != nil {
		p.t.Fatalf("%s: %v", p.name, err)
	}
	ctx := callCtx(p.t)
	for _, typ := range []string{"mouseMoved", "mousePressed", "mouseReleased"} {
		ev := map[string]any{"type": typ, "x": at.X, "y": at.Y}
		if typ != "mouseMoved" {
			ev["button"] = "left"
			ev["clickCount"] = 1
		}
		if _, err := p.b.call(ctx, p.session, "Input.dispatchMouseEvent", ev); err != nil {
			p.t.Fatalf("%s: click %s: %v", p.name, selector, err)
		}
	}
}

// waitFor polls expr, a JavaScript expression giving a string, until it
// gives want.
func (p *page) waitFor(what, expr, want string) {
	p.t.Helper()
	testproc.Eventually(p.t, 15*time.Second, func() error {
		var got string
		if err := p.eval(expr, &got); err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("%s: %s: %s is %q, want %q", p.name, what, expr, got, want)
		}
		return nil
	})
}

// screenshot returns a PNG of the page.
func (p *page) screenshot() []byte {
	p.t.Helper()
	res, err := p.b.call(callCtx(p.t), p.session, "Page.captureScreenshot", map[string]any{"format": "png"})
	if err != nil {
		p.t.Fatalf("%s: %v", p.name, err)
	}
	var shot struct {
		Data string `json:"data"`
	}
	if err := json.Unmarshal(res, &shot); err != nil {
		p.t.Fatal(err)
	}
	png, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil {
		p.t.Fatalf("%s: screenshot: %v", p.name, err)
	}
	return png
}
