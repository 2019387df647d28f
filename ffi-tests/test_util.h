/*
 * Tiny test helpers for the dlb C API tests: fatal checks, the test cluster's configuration
 * from the environment, bounded polling, and buffer helpers.
 *
 * Every check failure prints where, what, the status and dlb's last error message, then
 * exits with status 1.
 */
#ifndef DLB_TEST_UTIL_H
#define DLB_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "dlb.h"

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            t_fail(__FILE__, __LINE__, #cond, NULL);                                           \
        }                                                                                      \
    } while (0)

#define CHECK_MSG(cond, detail)                                                                \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            t_fail(__FILE__, __LINE__, #cond, (detail));                                       \
        }                                                                                      \
    } while (0)

/* `call` must return `expected` (an lb_status). */
#define CHECK_STATUS(call, expected)                                                           \
    do {                                                                                       \
        lb_status t_st_ = (call);                                                              \
        if (t_st_ != (lb_status)(expected)) {                                                  \
            t_fail_status(__FILE__, __LINE__, #call, t_st_, (lb_status)(expected));            \
        }                                                                                      \
    } while (0)

#define CHECK_OK(call) CHECK_STATUS(call, LB_OK)

void t_fail(const char *file, int line, const char *what, const char *detail);
void t_fail_status(const char *file, int line, const char *what, lb_status got,
                   lb_status expected);

/* The calling thread's last dlb error, copied (truncated if need be) into `buf`. */
const char *t_last_error(char *buf, size_t cap);

/* True when this thread's last dlb error message contains `needle` (else says so). */
int t_last_error_contains(const char *needle);

/* True when this thread's last dlb error message does not contain `needle` (else says so). */
int t_last_error_lacks(const char *needle);

/* getenv() or fail, telling how to set the test environment up. */
const char *t_env(const char *name);

/* Iteration scale for slow runners (valgrind): DLB_FFI_SCALE, default 1 (a divisor). */
long t_scale(long n);

/* Milliseconds on a monotonic clock. */
double t_now_ms(void);

/* Sleeps for `ms` milliseconds (poll loops only, always with a deadline). */
void t_sleep_ms(long ms);

/*
 * The configuration JSON for the test cluster: DLB_TEST_PRIMARY plus " password=secretpw"
 * (trust auth ignores it, so it only tests that secrets stay out of logs, metrics and status),
 * DLB_TEST_REPLICAS, replica_check_interval_ms 100 and generous probe timeouts (valgrind),
 * and `extra` (more JSON members, e.g. "\"max_lag_bytes\": 1", or "" for none).
 * Returns a malloc()ed string.
 */
char *t_config_json(const char *extra);

/* lb_balancer_new(t_config_json(extra)) or fail. */
lb_balancer *t_open(const char *extra);

/* Waits until lb_status_json() reports at least `n` healthy replicas; fails after
   `timeout_ms`. */
void t_wait_healthy(const lb_balancer *lb, int n, double timeout_ms);

/* lb_status_json() / lb_metrics_text() into a malloc()ed string (size query, then retry). */
char *t_status_json(const lb_balancer *lb);
char *t_metrics_text(const lb_balancer *lb);

/* The port of replica `i` (1-based, at most 8) of DLB_TEST_REPLICAS, as text, in a static
   buffer of its own (one per `i`: results for different replicas can be kept together). */
const char *t_replica_port(int i);

/* True when the libpq key=value DSN `dsn` has `port=<port>` as one of its words. */
int t_dsn_has_port(const char *dsn, const char *port);

/* Parses an "X/Y" LSN; fails on malformed input. */
uint64_t t_parse_lsn(const char *text);

#endif /* DLB_TEST_UTIL_H */
