package httpapi

import (
	"fmt"
	"strings"
)

// A path template of a google.api.http rule (BEHAVIOR.md HTTP-4):
//
//	Template  = "/" Segments [ ":" Verb ] ;
//	Segments  = Segment { "/" Segment } ;
//	Segment   = "*" | "**" | LITERAL | Variable ;
//	Variable  = "{" FieldPath [ "=" Segments ] "}" ;
//	FieldPath = IDENT { "." IDENT } ;
//
// The parser exists for two reasons the transcoder's own parser does not
// serve: discovery must reject bad templates with the reference proxy's
// messages, and a request whose path leaves a variable empty must be
// answered with the variable's name.

// segmentKind is what one flattened path segment matches.
type segmentKind int

const (
	literalSegment  segmentKind = iota // exactly its text
	starSegment                        // "*": any one segment
	starStarSegment                    // "**": the rest of the path
)

type segment struct {
	kind    segmentKind
	literal string
	column  int // 1-based, for error messages
}

// variable binds the path segments [start, end) to a field path; end is -1
// when the variable ends with "**" and takes the rest of the path.
type variable struct {
	fieldPath  []string
	start, end int
	// column is where the field path starts in the template, 1-based.
	column int
}

// template is a parsed path template: its segments flattened (a variable's
// own segments inline, a bare variable as "*"), its variables and its verb.
type template struct {
	raw      string
	segments []segment
	vars     []variable
	verb     string
}

// key is the template as the transcoder's router sees it: variables reduced
// to what they match. Two bindings with the same HTTP method and key
// collide.
func (t *template) key() string {
	var b strings.Builder
	for _, s := range t.segments {
		b.WriteByte('/')
		switch s.kind {
		case starSegment:
			b.WriteByte('*')
		case starStarSegment:
			b.WriteString("**")
		default:
			b.WriteString(s.literal)
		}
	}
	if t.verb != "" {
		b.WriteByte(':')
		b.WriteString(t.verb)
	}
	return b.String()
}

// templateError is a syntax error at a 1-based column of the template,
// worded like the reference proxy's PathTemplateParseException.
type templateError struct {
	msg    string
	tmpl   string
	column int
}

func (e *templateError) Error() string {
	if e.column > len(e.tmpl) {
		return fmt.Sprintf("%s at end of input of '%s'", e.msg, e.tmpl)
	}
	return fmt.Sprintf("%s at character %d of '%s'", e.msg, e.column, e.tmpl)
}

type templateParser struct {
	in   string
	pos  int // index of the next byte
	t    *template
	seen map[string]bool
	// inVar is true while parsing a variable's own segments.
	inVar bool
}

// parseTemplate parses a path template.
func parseTemplate(s string) (*template, error) {
	p := &templateParser{in: s, t: &template{raw: s}, seen: map[string]bool{}}
	if !p.accept('/') {
		return nil, p.errorf(1, "Template must start with a slash")
	}
	if err := p.segments(); err != nil {
		return nil, err
	}
	if p.accept(':') {
		start := p.pos
		verb := p.literal()
		if verb == "" {
			return nil, p.errorf(start+1, "Expected a verb after ':'")
		}
		p.t.verb = verb
	}
	if p.pos < len(p.in) {
		return nil, p.errorf(p.pos+1, "Expected '/', ':', path literal character, or end of input")
	}
	for i, s := range p.t.segments {
		if s.kind == starStarSegment && i != len(p.t.segments)-1 {
			return nil, p.errorf(s.column, "Multi segment matchers (**) may only be in the last position of the template")
		}
	}
	return p.t, nil
}

func (p *templateParser) errorf(column int, format string, args ...any) error {
	return &templateError{msg: fmt.Sprintf(format, args...), tmpl: p.in, column: column}
}

func (p *templateParser) peek() byte {
	if p.pos < len(p.in) {
		return p.in[p.pos]
	}
	return 0
}

func (p *templateParser) accept(c byte) bool {
	if p.pos < len(p.in) && p.in[p.pos] == c {
		p.pos++
		return true
	}
	return false
}

func (p *templateParser) segments() error {
	for {
		if err := p.segment(); err != nil {
			return err
		}
		if !p.accept('/') {
			return nil
		}
	}
}

func (p *templateParser) segment() error {
	start := p.pos
	switch c := p.peek(); {
	case c == '*':
		p.pos++
		kind := starSegment
		if p.accept('*') {
			kind = starStarSegment
		}
		p.t.segments = append(p.t.segments, segment{kind: kind, column: start + 1})
		return nil
	case c == '{':
		if p.inVar {
			return p.errorf(start+1, "Variable segments may not be nested")
		}
		p.pos++
		return p.variable()
	case isLiteralByte(c):
		p.t.segments = append(p.t.segments, segment{kind: literalSegment, literal: p.literal(), column: start + 1})
		return nil
	case c == 0 || c == '/':
		return p.errorf(start+1, "Expected a path segment")
	default:
		return p.errorf(start+1, "Unexpected character '%c' in a path segment (literals may use letters, digits, '-', '_', '.', '~' and %%-escapes)", c)
	}
}

// literal consumes a run of literal characters.
func (p *templateParser) literal() string {
	start := p.pos
	for p.pos < len(p.in) && isLiteralByte(p.in[p.pos]) {
		p.pos++
	}
	return p.in[start:p.pos]
}

// isLiteralByte reports whether c may appear in a literal segment or verb:
// the unreserved URL characters and percent escapes, which is what the
// transcoder's router accepts.
func isLiteralByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '_' || c == '.' || c == '~' || c == '%'
}

func (p *templateParser) variable() error {
	column := p.pos + 1
	var path []string
	for {
		identStart := p.pos
		c := p.peek()
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			if c == 0 {
				return p.errorf(p.pos+1, "Expected identifier first letter, but got end of input")
			}
			return p.errorf(p.pos+1, "Expected identifier first letter, but got '%c'", c)
		}
		for p.pos < len(p.in) && isIdentByte(p.in[p.pos]) {
			p.pos++
		}
		path = append(path, p.in[identStart:p.pos])
		if !p.accept('.') {
			break
		}
	}
	name := strings.Join(path, ".")
	if p.seen[name] {
		return p.errorf(column, "Duplicate path in template")
	}
	p.seen[name] = true
	v := variable{fieldPath: path, start: len(p.t.segments), column: column}
	if p.accept('=') {
		p.inVar = true
		err := p.segments()
		p.inVar = false
		if err != nil {
			return err
		}
	} else {
		p.t.segments = append(p.t.segments, segment{kind: starSegment, column: column})
	}
	if !p.accept('}') {
		return p.errorf(p.pos+1, "Unclosed variable or unexpected character")
	}
	v.end = len(p.t.segments)
	if p.t.segments[v.end-1].kind == starStarSegment {
		v.end = -1
	}
	p.t.vars = append(p.t.vars, v)
	return nil
}

func isIdentByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

// match matches an escaped request path against t and returns the raw
// (still escaped) text each variable captured, in t.vars order; ok is
// false when the path does not match. It follows the transcoder's router:
// the path is split at '/', and the verb is what follows the first ':' of
// the last segment.
func (t *template) match(path string) (captures []string, ok bool) {
	if !strings.HasPrefix(path, "/") {
		return nil, false
	}
	parts := strings.Split(path[1:], "/")
	verb := ""
	last := parts[len(parts)-1]
	if i := strings.IndexByte(last, ':'); i >= 0 {
		parts[len(parts)-1], verb = last[:i], last[i+1:]
	}
	if verb != t.verb {
		return nil, false
	}
	// "**" takes one segment or more, as in the transcoder's router.
	n := len(t.segments)
	hasRest := n > 0 && t.segments[n-1].kind == starStarSegment
	if len(parts) < n || !hasRest && len(parts) != n {
		return nil, false
	}
	for i, s := range t.segments {
		if s.kind == literalSegment && parts[i] != s.literal {
			return nil, false
		}
		if s.kind == starStarSegment {
			break
		}
	}
	captures = make([]string, len(t.vars))
	for i, v := range t.vars {
		end := v.end
		if end == -1 {
			end = len(parts)
		}
		captures[i] = strings.Join(parts[v.start:end], "/")
	}
	return captures, true
}
