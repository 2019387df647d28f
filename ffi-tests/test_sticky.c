/*
 * Primary sticking against a replica whose WAL replay is paused.
 *
 * ffi-tests/run.sh pauses replay on replica DLB_FFI_PAUSED_REPLICA, writes on the primary
 * (so the primary's WAL position moves past what that replica has replayed), passes the
 * replica's replay LSN as DLB_FFI_PAUSED_LSN, and resumes replay afterwards. The paused
 * replica stays healthy (its lag is far below the thresholds), so round-robin still uses it;
 * sticky picks must never return it.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

static const char *paused_port;
static const char *caught_up_port;

/* One sticky pick (key, or min_lsn when key is NULL): never the paused replica. Returns 1
   when it went to the caught-up replica. */
static int sticky_pick(const lb_balancer *lb, const char *key, const char *min_lsn) {
    char dsn[512];
    lb_route route = {77, 77};
    if (key != NULL) {
        CHECK_OK(lb_pick_replica(lb, key, dsn, sizeof dsn, NULL, &route));
    } else {
        CHECK_OK(lb_pick_replica_min_lsn(lb, min_lsn, dsn, sizeof dsn, NULL, &route));
    }
    if (t_dsn_has_port(dsn, paused_port)) {
        char *status = t_status_json(lb);
        fprintf(stderr, "sticky pick (%s) -> paused replica, role %s, reason %s\nstatus: %s\n",
                key != NULL ? key : min_lsn, lb_role_str(route.role),
                lb_reason_str(route.reason), status);
        free(status);
        CHECK_MSG(0, "a sticky pick returned the paused replica");
    }
    if (route.role == LB_ROLE_REPLICA) {
        CHECK(route.reason == LB_REASON_CAUGHT_UP_CACHED ||
              route.reason == LB_REASON_CAUGHT_UP_LIVE);
        CHECK(t_dsn_has_port(dsn, caught_up_port));
        return 1;
    }
    CHECK(route.role == LB_ROLE_PRIMARY && route.reason == LB_REASON_NOT_CAUGHT_UP);
    return 0;
}

/* Picks until the caught-up replica is chosen (it replays within milliseconds), then many
   more; none may be the paused replica. */
static void check_sticky(const lb_balancer *lb, const char *key, const char *min_lsn) {
    double deadline = t_now_ms() + 30000;
    int i, on_replica = 0;
    const int picks = (int)t_scale(500);
    while (!sticky_pick(lb, key, min_lsn)) {
        CHECK_MSG(t_now_ms() < deadline, "the streaming replica never caught up");
        t_sleep_ms(10);
    }
    for (i = 0; i < picks; i++) {
        on_replica += sticky_pick(lb, key, min_lsn);
    }
    printf("  %s: %d/%d picks on the caught-up replica, the rest on the primary\n",
           key != NULL ? key : min_lsn, on_replica, picks);
    CHECK(on_replica > 0);
}

int main(void) {
    const int paused = atoi(t_env("DLB_FFI_PAUSED_REPLICA"));
    const uint64_t paused_lsn = t_parse_lsn(t_env("DLB_FFI_PAUSED_LSN"));
    lb_balancer *lb, *strict;
    char lsn[LB_LSN_MAX_LENGTH + 1];
    char dsn[512], primary[512];
    size_t len = 0;
    lb_route route;
    int i, saw_paused = 0;

    CHECK(paused == 1 || paused == 2);
    paused_port = t_replica_port(paused);
    caught_up_port = t_replica_port(3 - paused);

    lb = t_open("");
    t_wait_healthy(lb, 2, 30000);

    /* The write's position: past what the paused replica has replayed. */
    CHECK_OK(lb_record_lsn(lb, "user:42", lsn, sizeof lsn, &len));
    CHECK(len == strlen(lsn));
    printf("  recorded %s for user:42; paused replica replayed %s\n", lsn,
           t_env("DLB_FFI_PAUSED_LSN"));
    CHECK_MSG(t_parse_lsn(lsn) > paused_lsn, "run.sh must write on the primary after pausing");
    check_sticky(lb, "user:42", NULL);

    /* A causal token carried by the caller, recorded for another key or used directly. */
    CHECK_OK(lb_record_lsn_value(lb, "user:43", lsn));
    check_sticky(lb, "user:43", NULL);
    check_sticky(lb, NULL, lsn);

    /* The paused replica is still healthy and in the round-robin rotation. */
    for (i = 0; i < 20; i++) {
        CHECK_OK(lb_pick_replica(lb, NULL, dsn, sizeof dsn, NULL, &route));
        CHECK(route.role == LB_ROLE_REPLICA);
        saw_paused |= t_dsn_has_port(dsn, paused_port);
    }
    CHECK_MSG(saw_paused, "the paused replica left the rotation; the test proves nothing");

    /* Forced primary. */
    CHECK_OK(lb_primary_dsn(lb, primary, sizeof primary, NULL));
    CHECK_OK(lb_force_primary(lb, "user:44", 60000));
    CHECK_OK(lb_pick_replica(lb, "user:44", dsn, sizeof dsn, NULL, &route));
    CHECK(route.role == LB_ROLE_PRIMARY && route.reason == LB_REASON_FORCED_PRIMARY);
    CHECK(strcmp(dsn, primary) == 0);

    /* No replica has replayed an LSN from the far future: primary, or the retryable error. */
    CHECK_OK(lb_pick_replica_min_lsn(lb, "FFFFFFFF/0", dsn, sizeof dsn, NULL, &route));
    CHECK(route.role == LB_ROLE_PRIMARY && route.reason == LB_REASON_NOT_CAUGHT_UP);
    strict = t_open("\"no_caught_up_replica\": \"error\", \"sticky_check_budget_ms\": 0");
    route.role = 77;
    CHECK_STATUS(lb_pick_replica_min_lsn(strict, "FFFFFFFF/0", dsn, sizeof dsn, NULL, &route),
                 LB_ERR_NO_CAUGHT_UP_REPLICA);
    CHECK(route.role == 77);
    CHECK(lb_status_is_retryable(LB_ERR_NO_CAUGHT_UP_REPLICA));
    CHECK(t_last_error_contains("FFFFFFFF/0"));
    lb_balancer_free(strict);

    /* A store that fails after the LSN was read (a Redis at a dead port): LB_ERR_STORE, with
       the LSN written to the buffer, a causal token. */
    {
        lb_balancer *down = t_open(
            "\"lsn_store\": {\"redis\": {\"url\": \"redis://127.0.0.1:1\", \"op_timeout_ms\": 200}}");
        char token[LB_LSN_MAX_LENGTH + 1] = "";
        size_t token_len = 0;
        CHECK_STATUS(lb_record_lsn(down, "user:45", token, sizeof token, &token_len),
                     LB_ERR_STORE);
        CHECK(token_len > 0 && token_len == strlen(token) && strchr(token, '/') != NULL);
        CHECK(t_last_error_contains(token));
        CHECK_OK(lb_pick_replica_min_lsn(down, token, dsn, sizeof dsn, NULL, &route));
        CHECK(route.reason != LB_REASON_FORCED_PRIMARY);
        CHECK_OK(lb_record_lsn_value(lb, "user:45", token));
        /* Too small a buffer: still LB_ERR_STORE, the length only. */
        token_len = 0;
        CHECK_STATUS(lb_record_lsn(down, "user:45", token, 2, &token_len), LB_ERR_STORE);
        CHECK(token_len > 2);
        lb_balancer_free(down);
    }

    lb_balancer_free(lb);
    printf("test_sticky: ok\n");
    return 0;
}
