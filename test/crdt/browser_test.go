package crdte2e

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudstate-go/cloudstate/internal/testproc"
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
	msg := fmt.Sprintf("%s is not installed (Debian: apt-get install -y %s)", names[0], names[0])
	if os.Getenv("CLOUDSTATE_REQUIRE_SERVICES") == "1" {
		t.Fatalf("%s (CLOUDSTATE_REQUIRE_SERVICES=1, so this is a failure)", msg)
	}
	t.Skipf("%s; skipping (set CLOUDSTATE_REQUIRE_SERVICES=1 to fail instead)", msg)
	return ""
}

// startGatewayProcess starts the presence gateway in front of the proxy at
// proxyAddr and waits until it serves the page; it returns the page's URL.
func startGatewayProcess(t *testing.T, proxyAddr string) string {
	t.Helper()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(testproc.FreePort(t)))
	gw := startProcess(t, "gateway "+addr, nil, bins.gateway, "--listen", addr, "--proxy", proxyAddr)
	base := "http://" + addr
	testproc.WaitOK(t, gw, base+"/", 15*time.Second, 2*time.Second)
	return base
}

// card is a JavaScript expression for an attribute of a user's card.
func card(name, attr string) string {
	return fmt.Sprintf(`document.querySelector('li.user[data-name=%q]')?.dataset.%s ?? "no card"`, name, attr)
}

// TestBrowserPresence drives the presence page in headless Chromium, with
// the real proxy, presence sample and gateway: two tabs (two people at
// their screens), alice connects in one and bob in the other, each tab
// sees both online; alice disconnects and the other tab sees her go
// offline. A screenshot must show the page. Then the proxy stops, and the
// page says so.
func TestBrowserPresence(t *testing.T) {
	chromium := requireTool(t, "chromium", "chromium-browser")
	requireBinaries(t)
	s := startStack(t, bins.presence)
	base := startGatewayProcess(t, s.proxy.addr)
	b := startBrowser(t, chromium)

	tabA := b.openPage(t, "tab A", base+"/?users=alice,bob")
	tabB := b.openPage(t, "tab B", base+"/?users=bob,alice")
	for _, p := range []*page{tabA, tabB} {
		p.waitFor("gateway banner", `document.getElementById("gateway").className`, "banner ok")
		for _, u := range []string{"alice", "bob"} {
			p.waitFor(u+" offline at first", card(u, "online"), "false")
		}
	}

	tabA.click(`li.user[data-name="alice"] button.toggle`)
	tabB.click(`li.user[data-name="bob"] button.toggle`)
	for _, p := range []*page{tabA, tabB} {
		p.waitFor("alice online", card("alice", "online"), "true")
		p.waitFor("bob online", card("bob", "online"), "true")
		p.waitFor("alice's button", `document.querySelector('li.user[data-name="alice"] button.toggle').textContent`, "Disconnect")
	}

	tabA.click(`li.user[data-name="alice"] button.toggle`)
	tabB.waitFor("alice offline after she disconnects", card("alice", "online"), "false")
	tabA.waitFor("alice offline after she disconnects", card("alice", "online"), "false")
	tabB.waitFor("bob still online", card("bob", "online"), "true")
	if got := tabB.text(`document.querySelector('li.user[data-name="alice"] .presence').textContent`); got != "offline" {
		t.Fatalf("alice's card says %q, want offline", got)
	}

	shot := tabB.screenshot()
	checkScreenshot(t, shot)

	// The proxy goes away: the page says why the presence is unknown.
	s.proxy.stopAndCheck(t)
	tabB.waitFor("bob's presence without a proxy", card("bob", "online"), "unknown")
	// The first problem may be the proxy ending the calls as it stops; the
	// gateway retries every second, and then finds nothing listening.
	var problem string
	testproc.Eventually(t, 15*time.Second, func() error {
		if err := tabB.eval(`document.getElementById("problem").hidden ? "hidden" : document.getElementById("problem").textContent`, &problem); err != nil {
			return err
		}
		if !strings.Contains(problem, "the proxy at "+s.proxy.addr+" is unavailable") {
			return fmt.Errorf("the page's problem banner says %q, want the proxy at %s unavailable", problem, s.proxy.addr)
		}
		return nil
	})
	t.Logf("with the proxy down the page says: %s", problem)
}

// Colours of the page's avatars (page.html): online and offline.
var (
	onlineGreen  = [3]uint8{0x2f, 0x9e, 0x5a}
	offlineGrey  = [3]uint8{0x6b, 0x73, 0x85}
	colourSlack  = 6
	minColours   = 16
	minInkPixels = 0.02 // share of pixels that are not white or background
)

// checkScreenshot decodes the PNG and checks that it shows a page: many
// colours, a fair share of non-background pixels, and the avatars of an
// online and an offline user. It is saved in $CLOUDSTATE_SCREENSHOT_DIR if
// set.
func checkScreenshot(t *testing.T, data []byte) {
	t.Helper()
	if dir := os.Getenv("CLOUDSTATE_SCREENSHOT_DIR"); dir != "" {
		path := filepath.Join(dir, "presence.png")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Errorf("save screenshot: %v", err)
		} else {
			t.Logf("screenshot saved to %s", path)
		}
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("the screenshot is not a PNG: %v", err)
	}
	bounds := img.Bounds()
	if bounds.Dx() < 200 || bounds.Dy() < 200 {
		t.Fatalf("the screenshot is %v, too small", bounds)
	}
	bg := rgb(img, bounds.Min.X, bounds.Min.Y)
	colours := make(map[[3]uint8]bool)
	ink := 0
	var green, grey bool
	for y := bounds.Min.Y; y < bounds.Max.Y; y++ {
		for x := bounds.Min.X; x < bounds.Max.X; x++ {
			c := rgb(img, x, y)
			colours[c] = true
			if c != bg && c != [3]uint8{255, 255, 255} {
				ink++
			}
			green = green || near(c, onlineGreen)
			grey = grey || near(c, offlineGrey)
		}
	}
	share := float64(ink) / float64(bounds.Dx()*bounds.Dy())
	t.Logf("screenshot %dx%d: %d colours, %.1f%% ink, online avatar %v, offline avatar %v",
		bounds.Dx(), bounds.Dy(), len(colours), 100*share, green, grey)
	if len(colours) < minColours || share < minInkPixels {
		t.Fatalf("the screenshot looks blank: %d colours, %.2f%% of pixels not background", len(colours), 100*share)
	}
	if !green || !grey {
		t.Fatalf("the screenshot lacks an online (%v) or an offline (%v) avatar", green, grey)
	}
}

func rgb(img image.Image, x, y int) [3]uint8 {
	r, g, b, _ := img.At(x, y).RGBA()
	return [3]uint8{uint8(r >> 8), uint8(g >> 8), uint8(b >> 8)}
}

func near(c, want [3]uint8) bool {
	for i := range c {
		d := int(c[i]) - int(want[i])
		if d < -colourSlack || d > colourSlack {
			return false
		}
	}
	return true
}
