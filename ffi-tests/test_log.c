/*
 * The log callback: dlb's records reach the host's callback with the level filter applied
 * and the user pointer passed through, without passwords; a NULL callback turns forwarding
 * off at once; a callback may call back into dlb, even to replace itself.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

struct log_state {
    pthread_mutex_t mutex;
    long records;
    long by_level[6];
    int saw_started;
    int saw_healthy;
    int replace_from_callback;
    int replaced;
};

static void on_log(uint32_t level, const char *msg, void *user) {
    struct log_state *s = user;
    CHECK(s != NULL);
    CHECK(level >= LB_LOG_ERROR && level <= LB_LOG_TRACE);
    CHECK(msg != NULL);
    CHECK_MSG(strstr(msg, "secretpw") == NULL, msg);
    /* Calling back into dlb from the callback is allowed. */
    CHECK(strlen(lb_version()) > 0);
    pthread_mutex_lock(&s->mutex);
    s->records++;
    s->by_level[level]++;
    if (strstr(msg, "balancer started") != NULL) {
        s->saw_started = 1;
    }
    if (strstr(msg, "healthy") != NULL) {
        s->saw_healthy = 1;
    }
    pthread_mutex_unlock(&s->mutex);
    if (s->replace_from_callback) {
        /* Replacing the callback from inside it must not wait for itself. */
        CHECK_OK(lb_set_log_callback(LB_LOG_OFF, NULL, NULL));
        pthread_mutex_lock(&s->mutex);
        s->replaced = 1;
        pthread_mutex_unlock(&s->mutex);
    }
}

/* Reads one of the counters under the lock. */
static long get(struct log_state *s, const long *field) {
    long n;
    pthread_mutex_lock(&s->mutex);
    n = *field;
    pthread_mutex_unlock(&s->mutex);
    return n;
}

static int get_flag(struct log_state *s, const int *flag) {
    int v;
    pthread_mutex_lock(&s->mutex);
    v = *flag;
    pthread_mutex_unlock(&s->mutex);
    return v;
}

int main(void) {
    static struct log_state state;
    lb_balancer *lb;
    double deadline;
    long before;
    char addr[64];

    memset(&state, 0, sizeof state);
    CHECK(pthread_mutex_init(&state.mutex, NULL) == 0);

    CHECK_STATUS(lb_set_log_callback(6, on_log, &state), LB_ERR_INVALID_ARGUMENT);
    CHECK(t_last_error_contains("level_filter"));
    CHECK_OK(lb_set_log_callback(LB_LOG_INFO, on_log, &state));

    lb = t_open("");
    /* "balancer started: primary <redacted DSN>" is logged (info) before lb_balancer_new
       returns; "replica ... healthy" by the first check. */
    CHECK(get_flag(&state, &state.saw_started));
    deadline = t_now_ms() + 30000;
    while (!get_flag(&state, &state.saw_healthy)) {
        CHECK_MSG(t_now_ms() < deadline, "no 'healthy' record");
        t_sleep_ms(10);
    }
    CHECK(get(&state, &state.by_level[LB_LOG_DEBUG]) == 0);
    CHECK(get(&state, &state.by_level[LB_LOG_TRACE]) == 0);

    /* Debug records (one per replica per check) pass once the filter allows them. */
    CHECK_OK(lb_set_log_callback(LB_LOG_DEBUG, on_log, &state));
    deadline = t_now_ms() + 30000;
    while (get(&state, &state.by_level[LB_LOG_DEBUG]) == 0) {
        CHECK_MSG(t_now_ms() < deadline, "no debug record");
        t_sleep_ms(10);
    }

    /* Off: once lb_set_log_callback returns, the callback is never called again. */
    CHECK_OK(lb_set_log_callback(LB_LOG_OFF, on_log, &state));
    before = get(&state, &state.records);
    sprintf(addr, "127.0.0.1:%s", t_replica_port(1));
    CHECK_OK(lb_report_failure(lb, addr)); /* an immediate check, which logs at debug */
    t_wait_healthy(lb, 2, 30000);
    /* Nothing can be waited for here: let several check intervals (100 ms) pass, in which
       debug records would have arrived. */
    t_sleep_ms(300);
    CHECK(get(&state, &state.records) == before);

    /* A callback that turns logging off from inside itself. */
    state.replace_from_callback = 1;
    CHECK_OK(lb_set_log_callback(LB_LOG_DEBUG, on_log, &state));
    deadline = t_now_ms() + 30000;
    while (!get_flag(&state, &state.replaced)) {
        CHECK_MSG(t_now_ms() < deadline, "no record after re-enabling");
        t_sleep_ms(10);
    }
    before = get(&state, &state.records);
    t_sleep_ms(300);
    CHECK(get(&state, &state.records) == before);

    CHECK_OK(lb_set_log_callback(LB_LOG_TRACE, NULL, NULL)); /* NULL: off */
    lb_balancer_free(lb);
    CHECK(get(&state, &state.records) == before);
    pthread_mutex_destroy(&state.mutex);
    printf("test_log: ok (%ld records)\n", before);
    return 0;
}
