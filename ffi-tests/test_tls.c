/*
 * TLS through the C API, against the TLS-only cluster of the test environment
 * (DLB_TEST_TLS_*): a balancer with sslmode=verify-ca and the test CA records and routes
 * reads; the DSNs it hands out keep every TLS key; the wrong CA fails with the cause named.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

static lb_balancer *tls_balancer(const char *ca) {
    char json[2048];
    char replicas[512];
    const char *list = t_env("DLB_TEST_TLS_REPLICAS");
    const char *comma = strchr(list, ',');
    lb_balancer *lb = NULL;
    CHECK(comma != NULL);
    snprintf(replicas, sizeof replicas, "\"%.*s\", \"%s\"", (int)(comma - list), list,
             comma + 1);
    snprintf(json, sizeof json,
             "{\"primary\": \"%s sslmode=verify-ca sslrootcert=%s\","
             " \"replicas\": {\"hosts\": [%s]},"
             " \"replica_check_interval_ms\": 100, \"probe_timeout_ms\": 2000}",
             t_env("DLB_TEST_TLS_PRIMARY"), ca, replicas);
    CHECK_OK(lb_balancer_new(json, &lb));
    return lb;
}

int main(void) {
    lb_balancer *lb = tls_balancer(t_env("DLB_TEST_TLS_CA"));
    char lsn[LB_LSN_MAX_LENGTH + 1];
    char dsn[1024];
    lb_route route = {77, 77};
    double deadline = t_now_ms() + 30000;
    char *status;

    /* Both TLS replicas become healthy: probes go over verified TLS. */
    for (;;) {
        status = t_status_json(lb);
        int healthy = strstr(status, "\"healthy_replicas\":2") != NULL;
        if (healthy) {
            free(status);
            break;
        }
        if (t_now_ms() > deadline) {
            fprintf(stderr, "status: %s\n", status);
        }
        free(status);
        CHECK_MSG(t_now_ms() < deadline, "the TLS replicas never became healthy");
        t_sleep_ms(20);
    }
    CHECK_OK(lb_record_lsn(lb, "tls:key", lsn, sizeof lsn, NULL));
    CHECK_OK(lb_pick_replica(lb, "tls:key", dsn, sizeof dsn, NULL, &route));
    CHECK(route.role == LB_ROLE_REPLICA || route.reason == LB_REASON_NOT_CAUGHT_UP);
    /* The handed-out DSN keeps the TLS settings exactly as configured. */
    CHECK_MSG(strstr(dsn, "sslmode=verify-ca") != NULL, dsn);
    CHECK_MSG(strstr(dsn, "sslrootcert=") != NULL, dsn);
    CHECK_OK(lb_pick_replica(lb, NULL, dsn, sizeof dsn, NULL, &route));
    CHECK(route.role == LB_ROLE_REPLICA);
    lb_balancer_free(lb);

    /* Another CA: the primary cannot be verified; the cause is named. */
    lb = tls_balancer(t_env("DLB_TEST_TLS_WRONG_CA"));
    CHECK_STATUS(lb_record_lsn(lb, "tls:key", lsn, sizeof lsn, NULL), LB_ERR_PRIMARY_UNAVAILABLE);
    CHECK(t_last_error_contains("unknown issuer"));
    lb_balancer_free(lb);
    printf("test_tls: ok\n");
    return 0;
}
