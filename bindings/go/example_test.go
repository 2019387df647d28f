package dlb_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	dlb "github.com/dlb-project/dlb/bindings/go"
)

// Read-your-writes: record the write's position for the key it affects, then read from a
// replica that has replayed it.
func Example() {
	b, err := dlb.Open(context.Background(), `{"primary": "host=db1 port=5432 user=app dbname=app",
		"replicas": {"hosts": ["db2:5432", "db3:5432"]}}`)
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	// ... write on the primary (b.PrimaryDSN()), commit, then:
	key := "repo:group/project"
	if _, err := b.RecordLSN(context.Background(), key); err != nil {
		log.Fatal(err)
	}
	route, err := b.PickReplica(context.Background(), key)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("reading from", route) // e.g. "replica (caught_up_cached)"; never the DSN
	// db, err := sql.Open("postgres", route.DSN)
}

func ExampleOpen_invalidConfig() {
	_, err := dlb.Open(context.Background(), `{"primary": "host=db1", "pool": {"max_size": 0}}`)
	fmt.Println(errors.Is(err, dlb.ErrInvalidConfig))
	fmt.Println(err)
	// Output:
	// true
	// dlb: Open: invalid configuration: pool.max_size: must be at least 1 (got 0)
}

func ExampleError() {
	_, err := dlb.Open(context.Background(), `{"primary": "host=db1", "replicas": {"hosts": ["db2", "db2"]}}`)
	var e *dlb.Error
	if errors.As(err, &e) {
		fmt.Printf("op %s, code %d (%s), retryable %v\n", e.Op, uint32(e.Code), e.Code.String(), dlb.IsRetryable(err))
		fmt.Println(e.Message)
	}
	// Output:
	// op Open, code 2 (invalid configuration), retryable false
	// invalid configuration: replicas.hosts[1]: duplicate replica db2:5432
}
