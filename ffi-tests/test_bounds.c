/*
 * Bad input never aborts, hangs or prints: configurations past a bound fail promptly with
 * LB_ERR_INVALID_CONFIG naming the field (they used to abort the process on a huge allocation,
 * take seconds, or make calls block for ever), and a panic caught at the C boundary reaches
 * the log callback and nothing reaches stderr.
 *
 * Each case runs in a child process (fork + waitpid) under an alarm: an abort, a crash or a
 * hang fails that case and the others still run.
 */
#define _POSIX_C_SOURCE 200809L

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"

/* Built with the `ffi-test-hooks` feature (ffi-tests/run.sh); not in dlb.h. */
lb_status lb_test_panic(const char *message);

#define PRIMARY "host=127.0.0.1 port=1 user=dlb password=secretpw dbname=dlb"
/* A case still running after this many seconds is killed and fails ("hung"): a rejected
   configuration that once took 13.6 s or aborted must not hang. No timing threshold below it:
   how long a case takes is printed, not asserted (machines and valgrind vary). */
#define CASE_ALARM_S 120

static int failures;

/* Runs `body(arg)` in a child process; a non-zero exit, a signal or the alarm fails it. */
static void in_child(const char *name, void (*body)(const char *), const char *arg) {
    pid_t pid;
    int status = 0;
    double start = t_now_ms();

    fflush(NULL);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        alarm(CASE_ALARM_S);
        body(arg);
        fflush(NULL);
        exit(0);
    }
    CHECK(waitpid(pid, &status, 0) == pid);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        printf("ok   %s (%.0f ms)\n", name, t_now_ms() - start);
        return;
    }
    failures++;
    if (WIFSIGNALED(status)) {
        printf("FAIL %s: killed by signal %d%s\n", name, WTERMSIG(status),
               WTERMSIG(status) == SIGALRM ? " (hung)"
               : WTERMSIG(status) == SIGABRT ? " (aborted)"
                                             : "");
    } else {
        printf("FAIL %s: exit status %d\n", name, WEXITSTATUS(status));
    }
}

/* `extra`: "<field>\n<JSON members after the primary>". The call must fail promptly with
   LB_ERR_INVALID_CONFIG naming <field>, without the password. */
static void rejected(const char *spec) {
    const char *members = strchr(spec, '\n');
    char field[128];
    char *json;
    size_t n;
    lb_balancer *lb = NULL;

    CHECK(members != NULL && (size_t)(members - spec) < sizeof field);
    memcpy(field, spec, (size_t)(members - spec));
    field[members - spec] = '\0';
    members++;
    n = strlen(PRIMARY) + strlen(members) + 64;
    json = malloc(n);
    CHECK(json != NULL);
    snprintf(json, n, "{\"primary\": \"%s\", %s}", PRIMARY, members);
    CHECK_STATUS(lb_balancer_new(json, &lb), LB_ERR_INVALID_CONFIG);
    CHECK(lb == NULL);
    CHECK(t_last_error_contains(field));
    CHECK(t_last_error_contains("must be at most"));
    CHECK(t_last_error_lacks("secretpw"));
    free(json);
}

/* 50,000 replica hosts: rejected by the count limit before any per-host work (duplicate
   detection ran first and was quadratic: 2.8 s). */
static void many_hosts(const char *unused) {
    enum { HOSTS = 50000 };
    size_t cap = (size_t)HOSTS * 32 + 256, len = 0;
    char *members = malloc(cap);
    int i;

    (void)unused;
    CHECK(members != NULL);
    len += (size_t)snprintf(members + len, cap - len, "replicas.hosts\n\"replicas\": {\"hosts\": [");
    for (i = 0; i < HOSTS; i++) {
        len += (size_t)snprintf(members + len, cap - len, "%s\"10.%d.%d.%d:5432\"", i ? ", " : "",
                                i >> 16, (i >> 8) & 255, i & 255);
    }
    snprintf(members + len, cap - len, "]}");
    rejected(members);
    free(members);
}

/* A configuration at the bounds works: max_size and min_idle 1000 (connections are opened
   in the background, so a few only before the balancer is freed). */
static void at_the_bounds(const char *unused) {
    lb_balancer *lb = t_open("\"pool\": {\"max_size\": 1000, \"checkout_timeout_ms\": 600000}, "
                             "\"sticky_check_budget_ms\": 60000");
    (void)unused;
    lb_balancer_free(lb);
}

struct log_seen {
    int panics;
    int secret;
    char first[512];
};

static void on_log(uint32_t level, const char *msg, void *user) {
    struct log_seen *s = user;
    if (strstr(msg, "lb_test_panic: panic at ") != NULL && level == LB_LOG_ERROR) {
        if (s->panics++ == 0) {
            snprintf(s->first, sizeof s->first, "%s", msg);
        }
    }
    if (strstr(msg, "secretpw") != NULL) {
        s->secret = 1;
    }
}

/* A panic caught at the boundary: LB_ERR_PANIC, the last error, an error-level log record
   (password redacted), and not one byte on stderr (the default panic hook prints there). */
static void panic_is_quiet(const char *unused) {
    static struct log_seen seen;
    FILE *capture = tmpfile();
    int saved;
    lb_status st;
    struct stat sb;

    (void)unused;
    CHECK(capture != NULL);
    CHECK_OK(lb_set_log_callback(LB_LOG_ERROR, on_log, &seen));
    fflush(stderr);
    saved = dup(2);
    CHECK(saved >= 0);
    CHECK(dup2(fileno(capture), 2) == 2);
    st = lb_test_panic("boom: redis://user:secretpw@cache:6379");
    fflush(stderr);
    CHECK(dup2(saved, 2) == 2);
    close(saved);

    CHECK_STATUS(st, LB_ERR_PANIC);
    CHECK(fstat(fileno(capture), &sb) == 0);
    if (sb.st_size != 0) {
        char text[512] = {0};
        rewind(capture);
        CHECK(fread(text, 1, sizeof text - 1, capture) > 0);
        CHECK_MSG(sb.st_size == 0, text);
    }
    CHECK(t_last_error_contains("lb_test_panic: panic: boom: redis://***@cache:6379"));
    CHECK(t_last_error_lacks("secretpw"));
    CHECK_MSG(seen.panics == 1, "one error-level record of the panic, with its location");
    CHECK_MSG(strstr(seen.first, "boom: redis://***@cache:6379") != NULL, seen.first);
    CHECK(!seen.secret);
    /* Later calls are unaffected. */
    CHECK(strlen(lb_version()) > 0);
    CHECK_OK(lb_set_log_callback(LB_LOG_OFF, NULL, NULL));
    fclose(capture);
}

int main(void) {
    static const char *const cases[][2] = {
        {"pool.max_size 100000000 (aborted)", "pool.max_size\n\"pool\": {\"max_size\": 100000000}"},
        {"pool.max_size = min_idle = 10000000 (13.6 s)",
         "pool.max_size\n\"pool\": {\"max_size\": 10000000, \"min_idle\": 10000000}"},
        {"lsn_store.redis.pool_size 4294967295 (aborted)",
         "lsn_store.redis.pool_size\n\"lsn_store\": {\"redis\": {\"url\": "
         "\"redis://:secretpw@127.0.0.1:1\", \"pool_size\": 4294967295}}"},
        {"pool.checkout_timeout_ms u64::MAX (record_lsn blocked for ever)",
         "pool.checkout_timeout_ms\n\"pool\": {\"checkout_timeout_ms\": 18446744073709551615}"},
        {"probe_timeout_ms 2^63 (overflowed * 10)",
         "probe_timeout_ms\n\"probe_timeout_ms\": 9223372036854775808"},
        {"sticky_check_budget_ms 1 day", "sticky_check_budget_ms\n\"sticky_check_budget_ms\": 86400000"},
        {"lsn_store.redis.op_timeout_ms 1 hour",
         "lsn_store.redis.op_timeout_ms\n\"lsn_store\": {\"redis\": {\"url\": "
         "\"redis://127.0.0.1:1\", \"op_timeout_ms\": 3600000}}"},
    };
    size_t i;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        in_child(cases[i][0], rejected, cases[i][1]);
    }
    in_child("50,000 replica hosts (2.8 s)", many_hosts, NULL);
    in_child("a configuration at the bounds", at_the_bounds, NULL);
    in_child("a panic at the boundary: log callback, no stderr", panic_is_quiet, NULL);
    printf("test_bounds: %d failed\n", failures);
    return failures == 0 ? 0 : 1;
}
