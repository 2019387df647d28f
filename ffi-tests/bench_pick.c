/*
 * lb_pick_replica(lb, NULL, ...) through the C ABI: a fixed number of non-sticky picks on one
 * thread, against the test cluster with both replicas healthy. Reports ns per pick and
 * picks per second (the DSN is copied into the caller's buffer each time, the route filled).
 *
 * Usage: bench_pick [ITERATIONS]   (default 5000000); run by `bash ffi-tests/run.sh bench`.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

int main(int argc, char **argv) {
    const long iterations = argc > 1 ? strtol(argv[1], NULL, 10) : 5000000L;
    const long warmup = iterations / 10;
    lb_balancer *lb;
    char dsn[512];
    lb_route route;
    long i, on_replica = 0;
    double start, elapsed_ms;

    CHECK(iterations > 0);
    lb = t_open("");
    t_wait_healthy(lb, 2, 30000);

    for (i = 0; i < warmup; i++) {
        CHECK_OK(lb_pick_replica(lb, NULL, dsn, sizeof dsn, NULL, &route));
    }
    start = t_now_ms();
    for (i = 0; i < iterations; i++) {
        if (lb_pick_replica(lb, NULL, dsn, sizeof dsn, NULL, &route) != LB_OK) {
            CHECK_MSG(0, "pick failed");
        }
        on_replica += route.role == LB_ROLE_REPLICA;
    }
    elapsed_ms = t_now_ms() - start;
    if (on_replica != iterations) {
        printf("warning: %ld picks went to the primary (a replica left the rotation)\n",
               iterations - on_replica);
    }

    printf("lb_pick_replica (no key, C ABI): %ld picks in %.1f ms: %.1f ns/pick, %.2f M picks/s\n",
           iterations, elapsed_ms, elapsed_ms * 1e6 / (double)iterations,
           (double)iterations / elapsed_ms / 1e3);
    lb_balancer_free(lb);
    return 0;
}
