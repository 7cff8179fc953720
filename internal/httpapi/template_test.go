package httpapi

import (
	"net/url"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/api/annotations"
)

func TestParseTemplate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		key  string
		vars []string // field path [start,end)
	}{
		{"/a", "/a", nil},
		{"/v1/shelves/{shelf}/books/{book}", "/v1/shelves/*/books/*", []string{"shelf[2,3)", "book[4,5)"}},
		{"/v1/{name=shelves/*/books/*}", "/v1/shelves/*/books/*", []string{"name[1,5)"}},
		{"/v1/{name=**}", "/v1/**", []string{"name[1,-1)"}},
		{"/v1/{a.b.c}:get", "/v1/*:get", []string{"a.b.c[1,2)"}},
		{"/*/**", "/*/**", nil},
		{"/a%20b/c-d_e.f~g", "/a%20b/c-d_e.f~g", nil},
		{"/pkg.Service/Method", "/pkg.Service/Method", nil},
	} {
		tmpl, err := parseTemplate(tc.in)
		if err != nil {
			t.Errorf("parseTemplate(%q): %v", tc.in, err)
			continue
		}
		if got := tmpl.key(); got != tc.key {
			t.Errorf("parseTemplate(%q).key() = %q, want %q", tc.in, got, tc.key)
		}
		var vars []string
		for _, v := range tmpl.vars {
			vars = append(vars, strings.Join(v.fieldPath, ".")+"["+strconv.Itoa(v.start)+","+strconv.Itoa(v.end)+")")
		}
		if strings.Join(vars, " ") != strings.Join(tc.vars, " ") {
			t.Errorf("parseTemplate(%q) vars %q, want %q", tc.in, vars, tc.vars)
		}
	}
}

func TestTemplateMatch(t *testing.T) {
	for _, tc := range []struct {
		tmpl, path string
		want       []string // captures; nil means no match
	}{
		{"/cart/{user_id}/items/add", "/cart/u1/items/add", []string{"u1"}},
		{"/cart/{user_id}/items/add", "/cart//items/add", []string{""}},
		{"/cart/{user_id}/items/add", "/cart/u1/items", nil},
		{"/cart/{user_id}/items/add", "/cart/u1/items/add:x", nil},
		{"/carts/{user_id}", "/carts/", []string{""}},
		{"/carts/{user_id}", "/carts/a%2Fb", []string{"a%2Fb"}},
		{"/v1/{name=shelves/*}/books", "/v1/shelves/7/books", []string{"shelves/7"}},
		{"/files/{path=**}", "/files/a/b/c", []string{"a/b/c"}},
		{"/files/{path=**}", "/files", nil},
		{"/files/{path=**}", "/files/", []string{""}},
		{"/v1/{name}:cancel", "/v1/op:cancel", []string{"op"}},
		{"/v1/{name}:cancel", "/v1/op", nil},
		{"/v1/{name}", "v1/x", nil},
	} {
		tmpl, err := parseTemplate(tc.tmpl)
		if err != nil {
			t.Fatalf("parseTemplate(%q): %v", tc.tmpl, err)
		}
		got, ok := tmpl.match(tc.path)
		if !ok {
			if tc.want != nil {
				t.Errorf("%s does not match %s, want captures %q", tc.tmpl, tc.path, tc.want)
			}
			continue
		}
		if tc.want == nil || strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("%s matching %s captured %q, want %q", tc.tmpl, tc.path, got, tc.want)
		}
	}
}

func TestEmptyVariable(t *testing.T) {
	api, err := Compile(testFiles(".test.Msg", ".test.Msg", with(post("/things/{name}/parts/{inner.id}", "*"), func(r *annotations.HttpRule) {
		r.AdditionalBindings = []*annotations.HttpRule{get("/things/{name}")}
	})), []string{"test.S"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, path, want string
	}{
		{"POST", "/things//parts/p", "name"},
		{"POST", "/things/t/parts/", "inner.id"},
		{"GET", "/things/", "name"},
		{"GET", "/things//parts/p", ""}, // no GET binding of that shape
		{"POST", "/things/t/parts/p", ""},
		{"POST", "/elsewhere//x", ""},
	} {
		got, ok := api.EmptyVariable(tc.method, tc.path)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("EmptyVariable(%s %s) = %q, %v; want %q", tc.method, tc.path, got, ok, tc.want)
		}
	}
}

// FuzzParseTemplate: the parser never panics, and what it accepts has a
// key that parses again to the same key.
func FuzzParseTemplate(f *testing.F) {
	for _, s := range []string{"/a", "/v1/{name=shelves/*}/b:c", "/{a.b}/**", "/{x=**}", "no/slash", "/{", "/a:", "/%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tmpl, err := parseTemplate(s)
		if err != nil {
			return
		}
		again, err := parseTemplate(tmpl.key())
		if err != nil {
			t.Fatalf("key %q of %q does not parse: %v", tmpl.key(), s, err)
		}
		if again.key() != tmpl.key() {
			t.Fatalf("key %q of %q parses to key %q", tmpl.key(), s, again.key())
		}
		_, _ = tmpl.match(s)
	})
}

func TestIgnoresBody(t *testing.T) {
	files := testFiles(".test.Msg", ".test.Msg", with(post("/things/{name}", ""), func(r *annotations.HttpRule) {
		r.AdditionalBindings = []*annotations.HttpRule{post("/things/special", "*"), get("/things/{name}")}
	}))
	api, err := Compile(files, []string{"test.S"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, path string
		want         bool
	}{
		{"POST", "/things/a", true},
		{"POST", "/things/special", false}, // a rule with a body matches too
		{"GET", "/things/a", true},
		{"POST", "/test.S/other", false}, // the default binding takes a body
		{"POST", "/elsewhere", false},
	} {
		if got := api.IgnoresBody(tc.method, tc.path); got != tc.want {
			t.Errorf("IgnoresBody(%s %s) = %v, want %v", tc.method, tc.path, got, tc.want)
		}
	}
}

func TestQueryFilter(t *testing.T) {
	api, err := Compile(testFiles(".test.Msg", ".test.Msg", with(get("/things/{name}/{inner.id}"), func(r *annotations.HttpRule) {
		r.AdditionalBindings = []*annotations.HttpRule{post("/things/{name}", "*"), post("/parts/{count}", "inner")}
	})), []string{"test.S"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, path string
		dropAll      bool
		drop         string
	}{
		{"GET", "/things/a/b", false, "name name inner.id inner.id"},
		{"POST", "/things/a", true, ""},
		{"POST", "/parts/3", false, "count count"},
		{"GET", "/elsewhere", false, ""},
	} {
		dropAll, drop := api.QueryFilter(tc.method, tc.path)
		if dropAll != tc.dropAll || strings.Join(drop, " ") != tc.drop {
			t.Errorf("QueryFilter(%s %s) = %v, %q; want %v, %q", tc.method, tc.path, dropAll, drop, tc.dropAll, tc.drop)
		}
	}
}

func TestQueryConflict(t *testing.T) {
	api, err := Compile(testFiles(".test.Msg", ".test.Msg", get("/things/{name}")), []string{"test.S"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, path, query string
		want                QueryParamConflict // zero: no conflict
	}{
		{"GET", "/things/a", "illegal_repeated=x&illegalRepeated=y",
			QueryParamConflict{First: "illegalRepeated", Second: "illegal_repeated", Field: "illegal_repeated"}},
		{"GET", "/things/a", "inner.deeper.id=x&inner.deeper.id=y", QueryParamConflict{}}, // one spelling, repeated
		{"GET", "/things/a", "illegal_repeated=x&count=1&inner.id=i", QueryParamConflict{}},
		{"GET", "/things/a", "colour=red&Colour=blue", QueryParamConflict{}},                // unknown: the transcoder reports it
		{"POST", "/things/a", "illegal_repeated=x&illegalRepeated=y", QueryParamConflict{}}, // no binding for POST
	} {
		q, err := url.ParseQuery(tc.query)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := api.QueryConflict(tc.method, tc.path, q)
		if ok != (tc.want != QueryParamConflict{}) || got != tc.want {
			t.Errorf("QueryConflict(%s %s?%s) = %+v, %v; want %+v", tc.method, tc.path, tc.query, got, ok, tc.want)
		}
	}
}
