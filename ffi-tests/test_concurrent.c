/*
 * One balancer shared by several pthreads: non-sticky and sticky picks, failing calls whose
 * last error must stay per thread, status and metrics readers, failure reports, and a log
 * callback receiving records from dlb's threads meanwhile.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define PICKERS 8

static lb_balancer *lb;
static char replica_dsn[2][512];
static char primary_dsn[512];
static long iterations;

static pthread_mutex_t log_mutex = PTHREAD_MUTEX_INITIALIZER;
static long log_records;

static void on_log(uint32_t level, const char *msg, void *user) {
    CHECK(level >= LB_LOG_ERROR && level <= LB_LOG_TRACE);
    CHECK(msg != NULL && strstr(msg, "secretpw") == NULL);
    CHECK(user == &log_records);
    pthread_mutex_lock(&log_mutex);
    log_records++;
    pthread_mutex_unlock(&log_mutex);
}

static void *picker(void *arg) {
    const int id = (int)(size_t)arg;
    char key[32], bad_lsn[32], dsn[512];
    lb_route route;
    long i;
    sprintf(key, "thread:%d", id);
    sprintf(bad_lsn, "bad-lsn-of-thread-%d", id);
    CHECK_OK(lb_record_lsn_value(lb, key, "0/1"));
    for (i = 0; i < iterations; i++) {
        size_t len = 0;
        CHECK_OK(lb_pick_replica(lb, NULL, dsn, sizeof dsn, &len, &route));
        CHECK(len == strlen(dsn));
        CHECK_MSG(strcmp(dsn, replica_dsn[0]) == 0 || strcmp(dsn, replica_dsn[1]) == 0, dsn);
        CHECK(route.role == LB_ROLE_REPLICA && route.reason == LB_REASON_ROUND_ROBIN);
        if (i % 64 == 0) {
            /* Every replica has replayed 0/1. */
            CHECK_OK(lb_pick_replica(lb, key, dsn, sizeof dsn, NULL, &route));
            CHECK(route.role == LB_ROLE_REPLICA);
            CHECK(route.reason == LB_REASON_CAUGHT_UP_CACHED);
            /* This thread's error, whatever the others do meanwhile. */
            CHECK_STATUS(lb_record_lsn_value(lb, key, bad_lsn), LB_ERR_INVALID_LSN);
            CHECK(t_last_error_contains(bad_lsn));
        }
        if (i % 1024 == 0) {
            /* Reporting the primary wakes the monitor but takes no replica out of rotation
             * (a reported replica would leave it until its next good probe). */
            CHECK_OK(lb_report_failure(lb, primary_dsn));
        }
    }
    return NULL;
}

static void *reader(void *arg) {
    long i;
    (void)arg;
    for (i = 0; i < t_scale(200); i++) {
        char *text = i % 2 ? t_status_json(lb) : t_metrics_text(lb);
        CHECK(strstr(text, "secretpw") == NULL);
        free(text);
    }
    return NULL;
}

int main(void) {
    pthread_t threads[PICKERS + 1];
    int i, seen = 0;
    double start;

    iterations = t_scale(20000);
    CHECK_OK(lb_set_log_callback(LB_LOG_DEBUG, on_log, &log_records));
    lb = t_open("");
    t_wait_healthy(lb, 2, 30000);
    CHECK_OK(lb_primary_dsn(lb, primary_dsn, sizeof primary_dsn, NULL));

    /* The two replica DSNs (alternating round-robin). */
    for (i = 0; i < 10 && seen < 2; i++) {
        char dsn[512];
        CHECK_OK(lb_pick_replica(lb, NULL, dsn, sizeof dsn, NULL, NULL));
        if (seen == 0 || strcmp(dsn, replica_dsn[0]) != 0) {
            strcpy(replica_dsn[seen++], dsn);
        }
    }
    CHECK(seen == 2);

    start = t_now_ms();
    for (i = 0; i < PICKERS; i++) {
        CHECK(pthread_create(&threads[i], NULL, picker, (void *)(size_t)i) == 0);
    }
    CHECK(pthread_create(&threads[PICKERS], NULL, reader, NULL) == 0);
    for (i = 0; i <= PICKERS; i++) {
        CHECK(pthread_join(threads[i], NULL) == 0);
    }
    printf("  %d threads x %ld picks in %.0f ms\n", PICKERS, iterations, t_now_ms() - start);

    lb_balancer_free(lb);
    CHECK_OK(lb_set_log_callback(LB_LOG_OFF, NULL, NULL));
    pthread_mutex_lock(&log_mutex);
    printf("  %ld log records forwarded\n", log_records);
    CHECK(log_records > 0);
    pthread_mutex_unlock(&log_mutex);
    printf("test_concurrent: ok\n");
    return 0;
}
