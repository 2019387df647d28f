/*
 * The C API added in 0.3: host events (queue, callback, wake-up), the log queue, picks with
 * options and the host's id and address, the primary's route, and lb_recorded_lsn; their
 * argument checks (NULL, small buffers, bad options).
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define BUF 4096

/* The number after `"field":` in a JSON object, or 0. */
static unsigned long long json_u64(const char *json, const char *field) {
    char pattern[64];
    const char *p;
    snprintf(pattern, sizeof pattern, "\"%s\":", field);
    p = strstr(json, pattern);
    return p ? strtoull(p + strlen(pattern), NULL, 10) : 0;
}

static void test_arguments(const lb_balancer *lb) {
    char buf[BUF];
    size_t len = 0;
    lb_pick_opts opts;
    lb_pick_info info;

    CHECK_STATUS(lb_next_event(NULL, 0, buf, sizeof buf, &len), LB_ERR_INVALID_ARGUMENT);
    CHECK(t_last_error_contains("`lb`"));
    CHECK_STATUS(lb_next_event(lb, 0, NULL, 8, &len), LB_ERR_INVALID_ARGUMENT);
    CHECK(t_last_error_contains("`buf`"));
    CHECK_STATUS(lb_set_event_callback(NULL, NULL, NULL), LB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(lb_wake_event_waiters(NULL), LB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(lb_recorded_lsn(NULL, "k", buf, sizeof buf, &len), LB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(lb_recorded_lsn(lb, NULL, buf, sizeof buf, &len), LB_ERR_INVALID_ARGUMENT);
    CHECK(t_last_error_contains("`key`"));
    CHECK_STATUS(lb_recorded_lsn(lb, "", buf, sizeof buf, &len), LB_ERR_INVALID_KEY);
    CHECK_STATUS(lb_primary_route(NULL, buf, sizeof buf, &len, &info), LB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(lb_pick_replica_opts(NULL, NULL, NULL, NULL, buf, sizeof buf, &len, &info),
                 LB_ERR_INVALID_ARGUMENT);
    /* Both a key and a token: one pick for both (0.3), the token checked as alone. */
    CHECK_STATUS(lb_pick_replica_opts(lb, "k", "nope", NULL, buf, sizeof buf, &len, &info),
                 LB_ERR_INVALID_LSN);
    CHECK_STATUS(lb_pick_replica_opts(lb, "", "0/1", NULL, buf, sizeof buf, &len, &info),
                 LB_ERR_INVALID_KEY);
    CHECK_STATUS(lb_pick_replica_opts(lb, NULL, "nope", NULL, buf, sizeof buf, &len, &info),
                 LB_ERR_INVALID_LSN);

    memset(&opts, 0, sizeof opts);
    CHECK_STATUS(lb_pick_replica_opts(lb, NULL, NULL, &opts, buf, sizeof buf, &len, &info),
                 LB_ERR_INVALID_ARGUMENT);
    CHECK(t_last_error_contains("struct_size"));
    opts.struct_size = sizeof opts;
    opts.flags = 0x80;
    CHECK_STATUS(lb_pick_replica_opts(lb, NULL, NULL, &opts, buf, sizeof buf, &len, &info),
                 LB_ERR_INVALID_ARGUMENT);
    CHECK(t_last_error_contains("flags"));
    opts.flags = 0;
    opts.no_caught_up = 7;
    CHECK_STATUS(lb_pick_replica_opts(lb, NULL, NULL, &opts, buf, sizeof buf, &len, &info),
                 LB_ERR_INVALID_ARGUMENT);
    CHECK(t_last_error_contains("no_caught_up"));

    CHECK_STATUS(lb_log_queue_enable(LB_LOG_TRACE + 1), LB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(lb_next_log(0, NULL, 8, &len), LB_ERR_INVALID_ARGUMENT);
}

/* The start-up check queued one `added` event per replica: their host ids go to `ids`. */
static void test_added_events(const lb_balancer *lb, unsigned long long ids[2]) {
    char buf[BUF];
    size_t len = 0, need;
    int i;

    /* Too small: the event stays first in the queue, its length is reported. */
    CHECK_STATUS(lb_next_event(lb, 10000, NULL, 0, &len), LB_ERR_BUFFER_TOO_SMALL);
    CHECK(len > 10);
    need = len;
    CHECK_STATUS(lb_next_event(lb, 0, buf, need, &len), LB_ERR_BUFFER_TOO_SMALL);
    CHECK(len == need);
    for (i = 0; i < 2; i++) {
        CHECK_OK(lb_next_event(lb, 10000, buf, i == 0 ? need + 1 : sizeof buf, &len));
        CHECK(strlen(buf) == len);
        CHECK_MSG(strstr(buf, "\"event\":\"added\"") != NULL, buf);
        CHECK_MSG(strstr(buf, "\"role\":\"replica\"") != NULL, buf);
        CHECK_MSG(strstr(buf, "\"dropped\":0") != NULL, buf);
        CHECK_MSG(strstr(buf, t_replica_port(1)) || strstr(buf, t_replica_port(2)), buf);
        CHECK_MSG(strstr(buf, "secretpw") == NULL, buf);
        ids[i] = json_u64(buf, "host_id");
        CHECK_MSG(ids[i] != 0, buf);
    }
    CHECK(ids[0] != ids[1]);
    /* Nothing more: an empty string. */
    buf[0] = 'x';
    CHECK_OK(lb_next_event(lb, 0, buf, sizeof buf, &len));
    CHECK(len == 0 && buf[0] == '\0');
}

static void test_picks(const lb_balancer *lb, const unsigned long long ids[2]) {
    char dsn[BUF], lsn[LB_LSN_MAX_LENGTH + 1];
    size_t len = 0;
    lb_pick_opts opts;
    lb_pick_info info;
    int i, seen[2] = {0, 0};

    for (i = 0; i < 8; i++) {
        CHECK_OK(lb_pick_replica_opts(lb, NULL, NULL, NULL, dsn, sizeof dsn, &len, &info));
        CHECK(info.role == LB_ROLE_REPLICA && info.reason == LB_REASON_ROUND_ROBIN);
        CHECK_MSG(info.host_id == ids[0] || info.host_id == ids[1], info.addr);
        seen[info.host_id == ids[1]] = 1;
        /* The address is the DSN's host:port. */
        CHECK_MSG(strchr(info.addr, ':') && t_dsn_has_port(dsn, strchr(info.addr, ':') + 1),
                  info.addr);
    }
    CHECK(seen[0] && seen[1]);

    CHECK_OK(lb_primary_route(lb, dsn, sizeof dsn, &len, &info));
    CHECK(info.role == LB_ROLE_PRIMARY && info.reason == LB_REASON_WRITE);
    CHECK(info.host_id != 0 && info.host_id != ids[0] && info.host_id != ids[1]);
    CHECK_STATUS(lb_primary_route(lb, dsn, 1, &len, &info), LB_ERR_BUFFER_TOO_SMALL);

    memset(&opts, 0, sizeof opts);
    opts.struct_size = sizeof opts;
    /* Cached only, with the in-memory store: a key with nothing recorded goes round-robin. */
    opts.flags = LB_PICK_CACHED_ONLY;
    CHECK_OK(lb_pick_replica_opts(lb, "ev:none", NULL, &opts, dsn, sizeof dsn, &len, &info));
    CHECK(info.role == LB_ROLE_REPLICA && info.reason == LB_REASON_NO_LSN_RECORDED);
    /* An LSN no replica has: the policy of this call decides, whatever the configuration. */
    opts.flags = 0;
    opts.budget_us = 50000;
    opts.no_caught_up = LB_NO_CAUGHT_UP_ERROR;
    CHECK_STATUS(lb_pick_replica_opts(lb, NULL, "FFFFFFFF/0", &opts, dsn, sizeof dsn, &len,
                                      &info),
                 LB_ERR_NO_CAUGHT_UP_REPLICA);
    opts.no_caught_up = LB_NO_CAUGHT_UP_PRIMARY;
    CHECK_OK(lb_pick_replica_opts(lb, NULL, "FFFFFFFF/0", &opts, dsn, sizeof dsn, &len, &info));
    CHECK(info.role == LB_ROLE_PRIMARY && info.reason == LB_REASON_NOT_CAUGHT_UP);
    /* A key with nothing recorded and a token no replica has: the token decides. */
    CHECK_OK(lb_pick_replica_opts(lb, "ev:none", "FFFFFFFF/0", &opts, dsn, sizeof dsn, &len,
                                  &info));
    CHECK(info.role == LB_ROLE_PRIMARY && info.reason == LB_REASON_NOT_CAUGHT_UP);
    /* ... and a token every replica has: a replica. */
    CHECK_OK(lb_pick_replica_opts(lb, "ev:none", "0/1", &opts, dsn, sizeof dsn, &len, &info));
    CHECK(info.role == LB_ROLE_REPLICA);

    /* lb_recorded_lsn: nothing, then what lb_record_lsn recorded. */
    CHECK_OK(lb_recorded_lsn(lb, "ev:never", lsn, sizeof lsn, &len));
    CHECK(len == 0 && lsn[0] == '\0');
    CHECK_OK(lb_record_lsn(lb, "ev:1", lsn, sizeof lsn, &len));
    {
        char got[LB_LSN_MAX_LENGTH + 1];
        CHECK_OK(lb_recorded_lsn(lb, "ev:1", got, sizeof got, &len));
        CHECK_MSG(strcmp(got, lsn) == 0, got);
        CHECK_STATUS(lb_recorded_lsn(lb, "ev:1", got, 2, &len), LB_ERR_BUFFER_TOO_SMALL);
        CHECK(len == strlen(lsn));
    }
}

struct waiter {
    const lb_balancer *lb;
    lb_status status;
    size_t len;
    volatile int done;
};

static void *wait_event(void *arg) {
    struct waiter *w = arg;
    char buf[BUF];
    w->status = lb_next_event(w->lb, 600000, buf, sizeof buf, &w->len);
    w->done = 1;
    return NULL;
}

/* lb_wake_event_waiters() ends a long wait (polled: a wake before the wait starts is lost). */
static void test_wake(const lb_balancer *lb) {
    struct waiter w = {lb, 99, 99, 0};
    pthread_t t;
    double deadline = t_now_ms() + 30000;
    CHECK(pthread_create(&t, NULL, wait_event, &w) == 0);
    while (!w.done && t_now_ms() < deadline) {
        CHECK_OK(lb_wake_event_waiters(lb));
        t_sleep_ms(5);
    }
    CHECK_MSG(w.done, "lb_next_event still waiting after lb_wake_event_waiters");
    pthread_join(t, NULL);
    CHECK(w.status == LB_OK && w.len == 0);
}

static void count_event(const char *json, void *user) {
    int *n = user;
    if (strstr(json, "\"event\":\"added\"")) {
        (*n)++;
    }
}

/* A callback set later first receives what was queued. */
static void test_callback(void) {
    lb_balancer *lb = t_open("");
    int added = 0;
    CHECK_OK(lb_set_event_callback(lb, count_event, &added));
    CHECK(added == 2);
    CHECK_OK(lb_set_event_callback(lb, NULL, NULL));
    lb_balancer_free(lb);
}

static void test_log_queue(void) {
    char buf[BUF];
    size_t len = 0, need;
    double deadline;
    lb_balancer *lb;
    int found = 0;

    CHECK_OK(lb_log_queue_enable(LB_LOG_INFO));
    lb = t_open("");
    /* The balancer logs its start at info level. */
    deadline = t_now_ms() + 10000;
    while (!found && t_now_ms() < deadline) {
        lb_status st = lb_next_log(100, NULL, 0, &len);
        if (st == LB_OK) {
            continue; /* nothing yet */
        }
        CHECK(st == LB_ERR_BUFFER_TOO_SMALL && len > 0);
        need = len;
        CHECK_OK(lb_next_log(0, buf, need + 1, &len));
        CHECK(len == need);
        CHECK_MSG(strstr(buf, "secretpw") == NULL, buf);
        CHECK_MSG(strstr(buf, "\"level\":\"") && strstr(buf, "\"target\":\""), buf);
        found = strstr(buf, "balancer started") != NULL;
        if (found) {
            CHECK_MSG(strstr(buf, "\"level\":\"info\"") && strstr(buf, "\"target\":\"dlb\""), buf);
        }
    }
    CHECK_MSG(found, "no \"balancer started\" record in the log queue");
    lb_wake_log_waiters();
    /* Off: emptied, and nothing more comes. */
    CHECK_OK(lb_log_queue_enable(LB_LOG_OFF));
    lb_balancer_free(lb);
    CHECK_OK(lb_next_log(0, buf, sizeof buf, &len));
    CHECK(len == 0);
}

int main(void) {
    lb_balancer *lb;
    unsigned long long ids[2];
    lb = t_open("");
    test_arguments(lb);
    test_added_events(lb, ids);
    t_wait_healthy(lb, 2, 30000);
    test_picks(lb, ids);
    test_wake(lb);
    lb_balancer_free(lb);
    test_callback();
    test_log_queue();
    printf("test_events: ok\n");
    return 0;
}
