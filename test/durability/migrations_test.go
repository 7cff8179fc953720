package durability

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"

	"github.com/cloudstate-go/cloudstate/internal/testenv"
	"github.com/cloudstate-go/cloudstate/internal/testproc"
	pb "github.com/cloudstate-go/cloudstate/samples/shoppingcart/shoppingcartpb"
)

// migrationRow is one applied migration.
type migrationRow struct {
	version   int
	appliedAt time.Time
}

// migrationState returns the applied migrations and the store's tables
// in schema.
func migrationState(t *testing.T, dsn, schema string) ([]migrationRow, []string) {
	t.Helper()
	ctx := bounded(t, 30*time.Second)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT version, applied_at FROM cloudstate_schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatalf("read the applied migrations: %v", err)
	}
	applied, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (migrationRow, error) {
		var m migrationRow
		err := r.Scan(&m.version, &m.appliedAt)
		return m, err
	})
	if err != nil {
		t.Fatal(err)
	}
	rows, err = conn.Query(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name`, schema)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return applied, tables
}

var storeTables = []string{"cloudstate_schema_migrations", "entity_values", "journal", "snapshots"}

// checkMigrated fails unless schema holds every store table and each
// migration was applied exactly once, in order from 1.
func checkMigrated(t *testing.T, dsn, schema string) []migrationRow {
	t.Helper()
	applied, tables := migrationState(t, dsn, schema)
	if !slices.Equal(tables, storeTables) {
		t.Errorf("tables in %s: %v, want %v", schema, tables, storeTables)
	}
	if len(applied) == 0 {
		t.Fatalf("no migration recorded in %s", schema)
	}
	for i, m := range applied {
		if m.version != i+1 {
			t.Errorf("applied migrations %v, want versions 1..%d once each", applied, len(applied))
			break
		}
	}
	return applied
}

// addAndGet adds product to cart through conn and returns the cart.
func addAndGet(t *testing.T, conn *grpc.ClientConn, cart, product string) *pb.Cart {
	t.Helper()
	c := pb.NewShoppingCartClient(conn)
	if _, err := c.AddItem(bounded(t, callTimeout), &pb.AddLineItem{UserId: cart, ProductId: product, Name: "P", Quantity: 1}); err != nil {
		t.Fatalf("AddItem(%s, %s): %v", cart, product, err)
	}
	got, err := c.GetCart(bounded(t, callTimeout), &pb.GetShoppingCart{UserId: cart})
	if err != nil {
		t.Fatalf("GetCart(%s): %v", cart, err)
	}
	return got
}

// TestMigrationsFreshThenMigrated starts a proxy on an empty schema, which
// it must migrate, then another one on the migrated schema, which must
// find nothing to do and see the first one's data.
func TestMigrationsFreshThenMigrated(t *testing.T) {
	t.Parallel()
	dsn, schema := testenv.PostgresSchema(t)
	_, fnPort := startFunction(t)

	first := startProxy(t, fnPort, 0, dsn)
	first.waitReady(t, 20*time.Second)
	applied := checkMigrated(t, dsn, schema)
	if got := addAndGet(t, dial(t, first.addr), "m", "first"); len(got.GetItems()) != 1 {
		t.Fatalf("cart after one add: %v", got)
	}
	first.stopAndCheck(t)

	second := startProxy(t, fnPort, 0, dsn)
	second.waitReady(t, 20*time.Second)
	again := checkMigrated(t, dsn, schema)
	if !slices.Equal(again, applied) {
		t.Errorf("a proxy on a migrated schema changed the migrations: %v, before %v", again, applied)
	}
	if got := addAndGet(t, dial(t, second.addr), "m", "second"); len(got.GetItems()) != 2 {
		t.Errorf("cart after a restart and a second add: %v, want both items", got)
	}
	second.stopAndCheck(t)
}

// TestMigrationsTwoProxiesAtOnce starts two proxies at the same moment on
// an empty schema: one migrates, the other waits for it, and both become
// ready and serve.
func TestMigrationsTwoProxiesAtOnce(t *testing.T) {
	t.Parallel()
	dsn, schema := testenv.PostgresSchema(t)
	_, fnPort := startFunction(t)

	// Starting a process takes a millisecond or so, far less than a proxy
	// needs to get to its store, so the two race for the migration.
	ports := []int{testproc.FreePort(t), testproc.FreePort(t)}
	proxies := []*proxy{startProxy(t, fnPort, ports[0], dsn), startProxy(t, fnPort, ports[1], dsn)}
	for i, p := range proxies {
		p.waitReady(t, 30*time.Second)
		if got := addAndGet(t, dial(t, p.addr), fmt.Sprintf("c%d", i), "x"); len(got.GetItems()) != 1 {
			t.Errorf("proxy %d: cart after one add: %v", i, got)
		}
	}
	checkMigrated(t, dsn, schema)
	for _, p := range proxies {
		p.stopAndCheck(t)
	}
}
