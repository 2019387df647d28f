/*
 * dlb from C: open a balancer, record a write's LSN, pick sticky and non-sticky reads.
 *
 * Build (from the repository root, after `cargo build`; `--release` for production):
 *
 *   cc -std=c99 -Wall -Iinclude examples/c/dlb_example.c target/debug/libdlb.a \
 *      -lgcc_s -lutil -lrt -lpthread -lm -ldl -o dlb_example          # static
 *   cc -std=c99 -Wall -Iinclude examples/c/dlb_example.c -Ltarget/debug -ldlb \
 *      -Wl,-rpath,"$PWD/target/debug" -o dlb_example                     # shared
 *
 * (`cargo rustc --lib -- --print native-static-libs` prints the libraries a static link
 * needs on your platform.)
 *
 * Run: ./dlb_example '{"primary": "host=db1 user=app dbname=app",
 *                      "replicas": {"hosts": ["db2", "db3"]}}'
 *  or: DLB_CONFIG_JSON='{...}' ./dlb_example
 */
#include <stdio.h>
#include <stdlib.h>

#include "dlb.h"

/* dlb's warnings and errors go to the host program's logger; here, stderr. */
static void log_to_stderr(uint32_t level, const char *msg, void *user) {
    (void)user;
    fprintf(stderr, "dlb[%s]: %s\n", level <= LB_LOG_ERROR ? "error" : "warn", msg);
}

/* Prints why the last call failed (the message never contains a password). */
static int fail(const char *what, lb_status status) {
    char msg[512];
    lb_last_error_message(msg, sizeof msg);
    fprintf(stderr, "%s: %s: %s\n", what, lb_status_str(status), msg);
    return 1;
}

/*
 * Picks a host for a read of `key` (NULL: no sticking) and returns its DSN in a malloc()ed
 * string, growing the buffer when a DSN is longer than expected.
 */
static lb_status pick(const lb_balancer *lb, const char *key, char **dsn, lb_route *route) {
    size_t cap = 256, len = 0;
    for (;;) {
        char *buf = malloc(cap);
        lb_status st;
        if (buf == NULL) {
            abort();
        }
        st = lb_pick_replica(lb, key, buf, cap, &len, route);
        if (st == LB_OK) {
            *dsn = buf;
            return LB_OK;
        }
        free(buf);
        if (st != LB_ERR_BUFFER_TOO_SMALL) {
            return st;
        }
        cap = len + 1;
    }
}

int main(int argc, char **argv) {
    const char *config = argc > 1 ? argv[1] : getenv("DLB_CONFIG_JSON");
    lb_balancer *lb = NULL;
    char lsn[LB_LSN_MAX_LENGTH + 1];
    char *dsn = NULL;
    lb_route route;
    lb_status st;
    int i;

    if (config == NULL) {
        fprintf(stderr, "usage: %s CONFIG_JSON (or set DLB_CONFIG_JSON)\n", argv[0]);
        return 2;
    }
    printf("dlb %s\n", lb_version());
    lb_set_log_callback(LB_LOG_WARN, log_to_stderr, NULL);

    st = lb_balancer_new(config, &lb);
    if (st != LB_OK) {
        return fail("lb_balancer_new", st);
    }

    /* After a write for user 42 commits on the primary, remember where the WAL was. */
    st = lb_record_lsn(lb, "user:42", lsn, sizeof lsn, NULL);
    if (st != LB_OK) {
        lb_balancer_free(lb);
        return fail("lb_record_lsn", st);
    }
    printf("recorded LSN %s for user:42\n", lsn);

    /* Reads for user 42 only go to replicas that have replayed that write. */
    st = pick(lb, "user:42", &dsn, &route);
    if (st != LB_OK) {
        lb_balancer_free(lb);
        return fail("lb_pick_replica", st);
    }
    /* Hand `dsn` to the driver, e.g. PQconnectdb(dsn); never log it (it has the password). */
    printf("sticky read for user:42 -> %s (%s)\n", lb_role_str(route.role),
           lb_reason_str(route.reason));
    free(dsn);

    /* Other reads: round-robin over the healthy replicas. */
    for (i = 0; i < 4; i++) {
        st = pick(lb, NULL, &dsn, &route);
        if (st != LB_OK) {
            lb_balancer_free(lb);
            return fail("lb_pick_replica", st);
        }
        printf("read %d -> %s (%s)\n", i, lb_role_str(route.role), lb_reason_str(route.reason));
        free(dsn);
    }

    lb_balancer_free(lb);
    lb_set_log_callback(LB_LOG_OFF, NULL, NULL);
    return 0;
}
