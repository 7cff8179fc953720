package httpe2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// readmeCommand is one "$ curl ..." line of a console block and the output
// shown under it.
type readmeCommand struct {
	line   int
	cmd    string
	output string
}

// readmeCommands returns the curl commands of the console blocks of a
// README, in order.
func readmeCommands(t *testing.T, path string) []readmeCommand {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []readmeCommand
	var cur *readmeCommand
	var output []string
	flush := func() {
		if cur != nil {
			cur.output = strings.Join(output, "\n")
			out = append(out, *cur)
		}
		cur, output = nil, nil
	}
	inConsole := false
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case line == "```console":
			inConsole = true
		case inConsole && line == "```":
			flush()
			inConsole = false
		case inConsole && strings.HasPrefix(line, "$ "):
			flush()
			if cmd := strings.TrimPrefix(line, "$ "); strings.HasPrefix(cmd, "curl ") {
				cur = &readmeCommand{line: n, cmd: cmd}
			}
		case inConsole && cur != nil:
			output = append(output, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestREADMECurlCommands runs every curl command of the READMEs of the
// shopping-cart and cart-actions samples, in order, against a fresh proxy
// and sample, and compares the output with what the README shows.
func TestREADMECurlCommands(t *testing.T) {
	curl := requireTool(t, "curl")
	for _, tc := range []struct {
		sample  string
		bin     *string
		minCmds int // every method, binding and error the README covers
	}{
		{"shoppingcart", &bins.shoppingcart, 10},
		{"cartactions", &bins.cartactions, 4},
	} {
		t.Run(tc.sample, func(t *testing.T) {
			s := startSample(t, tc.sample, *tc.bin)
			readme := filepath.Join(repoRoot, "samples", tc.sample, "README.md")
			cmds := readmeCommands(t, readme)
			if len(cmds) < tc.minCmds {
				t.Fatalf("found %d curl commands in %s, want at least %d", len(cmds), readme, tc.minCmds)
			}
			for _, c := range cmds {
				cmd := curl + strings.TrimPrefix(strings.ReplaceAll(c.cmd, "localhost:9000", s.addr), "curl")
				out, err := exec.Command("sh", "-c", cmd).Output()
				if err != nil {
					t.Fatalf("README.md:%d: %s: %v", c.line, c.cmd, err)
				}
				if got := strings.TrimSuffix(string(out), "\n"); got != c.output {
					t.Errorf("README.md:%d: %s\n got: %q\nwant: %q", c.line, c.cmd, got, c.output)
				}
			}
		})
	}
}
