/*
 * Round-robin without a key: many picks spread over both replicas (counted per DSN), the
 * real DSN (password included) is handed out, and neither the status JSON nor the metrics
 * text shows the password.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define MAX_DSNS 8

struct tally {
    char dsn[MAX_DSNS][512];
    long count[MAX_DSNS];
    int n;
};

static void count_dsn(struct tally *t, const char *dsn) {
    int i;
    for (i = 0; i < t->n; i++) {
        if (strcmp(t->dsn[i], dsn) == 0) {
            t->count[i]++;
            return;
        }
    }
    CHECK_MSG(t->n < MAX_DSNS, dsn);
    CHECK(strlen(dsn) < sizeof t->dsn[0]);
    strcpy(t->dsn[t->n], dsn);
    t->count[t->n] = 1;
    t->n++;
}

int main(void) {
    lb_balancer *lb = t_open("");
    struct tally tally;
    const long picks = t_scale(10000);
    long i;
    int k;
    char dsn[512];
    char primary[512];
    lb_route route;
    char *text;

    memset(&tally, 0, sizeof tally);
    t_wait_healthy(lb, 2, 30000);
    CHECK_OK(lb_primary_dsn(lb, primary, sizeof primary, NULL));

    for (i = 0; i < picks; i++) {
        size_t len = 0;
        CHECK_OK(lb_pick_replica(lb, NULL, dsn, sizeof dsn, &len, &route));
        CHECK(len == strlen(dsn));
        CHECK(route.role == LB_ROLE_REPLICA);
        CHECK(route.reason == LB_REASON_ROUND_ROBIN);
        count_dsn(&tally, dsn);
    }
    for (k = 0; k < tally.n; k++) {
        int port_1 = t_dsn_has_port(tally.dsn[k], t_replica_port(1));
        int port_2 = t_dsn_has_port(tally.dsn[k], t_replica_port(2));
        printf("  %ld picks: replica on port %s\n", tally.count[k],
               port_1 ? t_replica_port(1) : port_2 ? t_replica_port(2) : "?");
        CHECK_MSG(port_1 || port_2, "a pick outside the configured replicas");
        CHECK(strcmp(tally.dsn[k], primary) != 0);
        CHECK_MSG(strstr(tally.dsn[k], "password=secretpw") != NULL,
                  "the DSN handed out is the real one");
        /* Strict alternation while both stay healthy; allow a health change mid-run. */
        CHECK(tally.count[k] >= picks / 4);
    }
    CHECK_MSG(tally.n == 2, "both replicas are picked");

    /* A key with no recorded LSN: round-robin too, with its own reason. */
    CHECK_OK(lb_pick_replica(lb, "no-lsn-for-this-key", dsn, sizeof dsn, NULL, &route));
    CHECK(route.role == LB_ROLE_REPLICA && route.reason == LB_REASON_NO_LSN_RECORDED);

    text = t_status_json(lb);
    CHECK_MSG(strstr(text, "secretpw") == NULL, text);
    CHECK_MSG(strstr(text, "\"state\":\"healthy\"") != NULL, text);
    CHECK_MSG(strstr(text, t_replica_port(2)) != NULL, text);
    free(text);

    text = t_metrics_text(lb);
    CHECK_MSG(strstr(text, "secretpw") == NULL, text);
    CHECK_MSG(strstr(text, "dlb_picks_total") != NULL, text);
    CHECK_MSG(strstr(text, "reason=\"round_robin\"") != NULL, text);
    free(text);

    lb_balancer_free(lb);
    printf("test_round_robin: ok (%ld picks)\n", picks);
    return 0;
}
