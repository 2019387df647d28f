package dlbsql

import "testing"

func TestSessionNeutral(t *testing.T) {
	for _, c := range []struct {
		q    string
		inTx bool
		want bool
	}{
		{"SELECT 1", false, true},
		{"  select * from t;  ", false, true},
		{"-- a comment\nINSERT INTO t VALUES (1)", false, true},
		{"/* c */ UPDATE t SET x = 1", false, true},
		{"WITH a AS (SELECT 1) DELETE FROM t", false, true},
		{"SELECT template FROM t", false, true},
		{"CREATE TABLE t (temp int)", false, false},
		{"CREATE TABLE t (x int)", false, true},
		{"CREATE TEMP TABLE t (x int)", false, false},
		{"SELECT * INTO TEMPORARY t FROM u", false, false},
		{"SET search_path = x", false, false},
		{"set local statement_timeout = 1", false, true},
		{"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", false, true},
		{"RESET ALL", false, false},
		{"BEGIN", false, false},
		{"COMMIT", false, false},
		{"SELECT set_config('search_path', 'x', false)", false, false},
		{"SELECT pg_advisory_lock(1)", false, false},
		{"SELECT pg_try_advisory_lock_shared(1)", false, false},
		{"SELECT pg_advisory_xact_lock(1)", false, true},
		{"SELECT 1; SET x = 1", false, false},
		{"LISTEN ch", false, false},
		{"PREPARE p AS SELECT 1", false, false},
		{"DECLARE c CURSOR WITH HOLD FOR SELECT 1", false, false},
		{"DO $$ BEGIN END $$", false, false},
		{"SAVEPOINT a", true, true},
		{"SAVEPOINT a", false, false},
		{"ROLLBACK TO SAVEPOINT a", true, true},
		{"ROLLBACK", true, false},
		{"/* unterminated", false, false},
		{"", false, false},
	} {
		if got := sessionNeutral(c.q, c.inTx); got != c.want {
			t.Errorf("sessionNeutral(%q, %v) = %v, want %v", c.q, c.inTx, got, c.want)
		}
	}
}

func BenchmarkSessionNeutral(b *testing.B) {
	q := "SELECT id, name, created_at FROM repositories WHERE namespace_id = $1 AND name = $2 LIMIT 1"
	for i := 0; i < b.N; i++ {
		if !sessionNeutral(q, false) {
			b.Fatal("not neutral")
		}
	}
}
