/* C helpers of the Go bindings: see dlbgo.h. */
#include <stdlib.h>

#include "dlbgo.h"
#include "_cgo_export.h"

#define LB(h) ((const lb_balancer *)(h))

/* The result of `status`, with the last error message attached on failure. */
static dlbgo_result finish(lb_status status) {
    dlbgo_result r = {0};
    r.status = status;
    if (status != LB_OK && status != LB_ERR_BUFFER_TOO_SMALL) {
        size_t n = lb_last_error_length();
        r.err = malloc(n + 1);
        if (r.err != NULL) {
            lb_last_error_message(r.err, n + 1);
        }
    }
    return r;
}

dlbgo_result dlbgo_balancer_new(const char *config_json) {
    lb_balancer *lb = NULL;
    dlbgo_result r = finish(lb_balancer_new(config_json, &lb));
    if (r.status == LB_OK) {
        r.handle = (dlbgo_handle)lb;
    }
    return r;
}

void dlbgo_balancer_free(dlbgo_handle h) {
    lb_balancer_free((lb_balancer *)h);
}

dlbgo_result dlbgo_record_lsn(dlbgo_handle h, const char *key, char *buf, size_t cap) {
    size_t len = 0;
    dlbgo_result r = finish(lb_record_lsn(LB(h), key, buf, cap, &len));
    r.len = len;
    return r;
}

dlbgo_result dlbgo_record_lsn_value(dlbgo_handle h, const char *key, const char *lsn) {
    return finish(lb_record_lsn_value(LB(h), key, lsn));
}

dlbgo_result dlbgo_force_primary(dlbgo_handle h, const char *key, uint64_t ttl_ms) {
    return finish(lb_force_primary(LB(h), key, ttl_ms));
}

static dlbgo_result routed(lb_status status, size_t len, lb_route route) {
    dlbgo_result r = finish(status);
    r.len = len;
    if (status == LB_OK) {
        r.role = route.role;
        r.reason = route.reason;
    }
    return r;
}

dlbgo_result dlbgo_pick_replica(dlbgo_handle h, const char *key, char *buf, size_t cap) {
    size_t len = 0;
    lb_route route = {0, 0};
    lb_status st = lb_pick_replica(LB(h), key, buf, cap, &len, &route);
    return routed(st, len, route);
}

dlbgo_result dlbgo_pick_replica_min_lsn(dlbgo_handle h, const char *min_lsn, char *buf,
                                        size_t cap) {
    size_t len = 0;
    lb_route route = {0, 0};
    lb_status st = lb_pick_replica_min_lsn(LB(h), min_lsn, buf, cap, &len, &route);
    return routed(st, len, route);
}

dlbgo_result dlbgo_primary_dsn(dlbgo_handle h, char *buf, size_t cap) {
    size_t len = 0;
    dlbgo_result r = finish(lb_primary_dsn(LB(h), buf, cap, &len));
    r.len = len;
    return r;
}

dlbgo_result dlbgo_report_failure(dlbgo_handle h, const char *dsn) {
    return finish(lb_report_failure(LB(h), dsn));
}

dlbgo_result dlbgo_metrics_text(dlbgo_handle h, char *buf, size_t cap) {
    size_t len = 0;
    dlbgo_result r = finish(lb_metrics_text(LB(h), buf, cap, &len));
    r.len = len;
    return r;
}

dlbgo_result dlbgo_status_json(dlbgo_handle h, char *buf, size_t cap) {
    size_t len = 0;
    dlbgo_result r = finish(lb_status_json(LB(h), buf, cap, &len));
    r.len = len;
    return r;
}

/* Forwards dlb's log records to the Go handler (dlbgoLog, exported by log.go). */
static void log_trampoline(uint32_t level, const char *msg, void *user) {
    (void)user;
    dlbgoLog(level, (char *)msg);
}

dlbgo_result dlbgo_set_log_callback(uint32_t level_filter, int on) {
    return finish(lb_set_log_callback(level_filter, on ? log_trampoline : NULL, NULL));
}

dlbgo_result dlbgo_bench_pick(dlbgo_handle h, long n) {
    char dsn[1024];
    size_t len = 0;
    lb_route route = {0, 0};
    long i;
    for (i = 0; i < n; i++) {
        lb_status st = lb_pick_replica(LB(h), NULL, dsn, sizeof dsn, &len, &route);
        if (st != LB_OK) {
            return routed(st, len, route);
        }
    }
    return routed(LB_OK, len, route);
}

static dlbgo_result picked(lb_status status, size_t len, const lb_pick_info *info) {
    dlbgo_result r = finish(status);
    r.len = len;
    if (status == LB_OK) {
        r.role = info->role;
        r.reason = info->reason;
    }
    return r;
}

dlbgo_result dlbgo_pick_opts(dlbgo_handle h, const char *key, const char *min_lsn,
                             uint32_t flags, uint64_t budget_us, uint32_t no_caught_up,
                             char *buf, size_t cap, lb_pick_info *info) {
    size_t len = 0;
    lb_pick_opts opts = {0};
    opts.struct_size = sizeof opts;
    opts.flags = flags;
    opts.budget_us = budget_us;
    opts.no_caught_up = no_caught_up;
    lb_status st = lb_pick_replica_opts(LB(h), key, min_lsn, &opts, buf, cap, &len, info);
    return picked(st, len, info); /* after the call: it sets len */
}

dlbgo_result dlbgo_primary_route(dlbgo_handle h, char *buf, size_t cap, lb_pick_info *info) {
    size_t len = 0;
    lb_status st = lb_primary_route(LB(h), buf, cap, &len, info);
    return picked(st, len, info);
}

dlbgo_result dlbgo_recorded_lsn(dlbgo_handle h, const char *key, char *buf, size_t cap) {
    size_t len = 0;
    dlbgo_result r = finish(lb_recorded_lsn(LB(h), key, buf, cap, &len));
    r.len = len;
    return r;
}

dlbgo_result dlbgo_next_event(dlbgo_handle h, uint32_t timeout_ms, char *buf, size_t cap) {
    size_t len = 0;
    dlbgo_result r = finish(lb_next_event(LB(h), timeout_ms, buf, cap, &len));
    r.len = len;
    return r;
}

void dlbgo_wake_event_waiters(dlbgo_handle h) {
    lb_wake_event_waiters(LB(h));
}
