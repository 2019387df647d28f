/*
 * C helpers of the Go bindings (not part of dlb's C API).
 *
 * Each wrapper makes one lb_* call and, when it fails (other than LB_ERR_BUFFER_TOO_SMALL),
 * copies the calling thread's last error message into a malloc'd string in the same C call:
 * a goroutine may move to another OS thread between two cgo calls, and the message is per
 * thread. The caller frees `err` with free().
 *
 * The balancer is passed as an integer handle: Go cannot put a pointer to an incomplete C
 * type in an interface without allocating, which cgo's pointer check does on every call.
 */
#ifndef DLBGO_H
#define DLBGO_H

#include <stddef.h>
#include <stdint.h>

#include "dlb.h"

/* An lb_balancer pointer as an integer (0: none). */
typedef uintptr_t dlbgo_handle;

typedef struct dlbgo_result {
    lb_status status;
    /* Full text length (without the NUL) on LB_OK and LB_ERR_BUFFER_TOO_SMALL. */
    size_t len;
    /* The route of a pick (valid on LB_OK). */
    uint32_t role;
    uint32_t reason;
    /* The new balancer (dlbgo_balancer_new on LB_OK). */
    dlbgo_handle handle;
    /* The last error message on failure (malloc'd; NULL when out of memory or no failure). */
    char *err;
} dlbgo_result;

dlbgo_result dlbgo_balancer_new(const char *config_json);
void dlbgo_balancer_free(dlbgo_handle h);
dlbgo_result dlbgo_record_lsn(dlbgo_handle h, const char *key, char *buf, size_t cap);
dlbgo_result dlbgo_record_lsn_value(dlbgo_handle h, const char *key, const char *lsn);
dlbgo_result dlbgo_force_primary(dlbgo_handle h, const char *key, uint64_t ttl_ms);
dlbgo_result dlbgo_pick_replica(dlbgo_handle h, const char *key, char *buf, size_t cap);
dlbgo_result dlbgo_pick_replica_min_lsn(dlbgo_handle h, const char *min_lsn, char *buf,
                                        size_t cap);
dlbgo_result dlbgo_primary_dsn(dlbgo_handle h, char *buf, size_t cap);
dlbgo_result dlbgo_report_failure(dlbgo_handle h, const char *dsn);
dlbgo_result dlbgo_metrics_text(dlbgo_handle h, char *buf, size_t cap);
dlbgo_result dlbgo_status_json(dlbgo_handle h, char *buf, size_t cap);
dlbgo_result dlbgo_set_log_callback(uint32_t level_filter, int on);

/* A pick with options (lb_pick_replica_opts): `key` or `min_lsn` (or neither), the flags,
   budget and policy of lb_pick_opts; the host id and address go to `*info`. */
dlbgo_result dlbgo_pick_opts(dlbgo_handle h, const char *key, const char *min_lsn,
                             uint32_t flags, uint64_t budget_us, uint32_t no_caught_up,
                             char *buf, size_t cap, lb_pick_info *info);
dlbgo_result dlbgo_primary_route(dlbgo_handle h, char *buf, size_t cap, lb_pick_info *info);
dlbgo_result dlbgo_recorded_lsn(dlbgo_handle h, const char *key, char *buf, size_t cap);
dlbgo_result dlbgo_next_event(dlbgo_handle h, uint32_t timeout_ms, char *buf, size_t cap);
void dlbgo_wake_event_waiters(dlbgo_handle h);

/* Benchmark baseline: n picks without a key in a C loop (one cgo call for all of them).
   Returns the first failure, or LB_OK with `len` the last DSN's length. */
dlbgo_result dlbgo_bench_pick(dlbgo_handle h, long n);

#endif
