/*
 * The C API's contract: version, status codes, argument checking (NULL, invalid UTF-8,
 * malformed LSN and configuration), the output buffer rules (cap 0, 1, exact, exact + 1),
 * the last error, lb_report_failure, lb_dsn_redact, lb_is_plain_read and
 * lb_balancer_free(NULL).
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

static void test_version(void) {
    char expected[64];
    sprintf(expected, "%d.%d.%d", LB_VERSION_MAJOR, LB_VERSION_MINOR, LB_VERSION_PATCH);
    CHECK_MSG(strcmp(lb_version(), expected) == 0, lb_version());
    CHECK(lb_version() == lb_version());
}

static void test_status_strings(void) {
    lb_status st;
    CHECK(strcmp(lb_status_str(LB_OK), "ok") == 0);
    CHECK(strcmp(lb_status_str(LB_ERR_BUFFER_TOO_SMALL), "buffer too small") == 0);
    CHECK(strcmp(lb_status_str(9999), "unknown status") == 0);
    for (st = LB_OK; st <= LB_ERR_LOGGER_UNAVAILABLE; st++) {
        CHECK(lb_status_str(st) != NULL && strlen(lb_status_str(st)) > 0);
        CHECK(strcmp(lb_status_str(st), "unknown status") != 0);
    }
    CHECK(lb_status_is_retryable(LB_ERR_PRIMARY_UNAVAILABLE));
    CHECK(lb_status_is_retryable(LB_ERR_NO_CAUGHT_UP_REPLICA));
    CHECK(!lb_status_is_retryable(LB_ERR_INVALID_CONFIG));
    CHECK(strcmp(lb_reason_str(LB_REASON_ROUND_ROBIN), "round_robin") == 0);
    CHECK(strcmp(lb_reason_str(LB_REASON_NOT_CAUGHT_UP), "not_caught_up") == 0);
    CHECK(strcmp(lb_reason_str(LB_REASON_REPLICA_UNAVAILABLE), "replica_unavailable") == 0);
    CHECK(strcmp(lb_reason_str(12345), "unknown") == 0);
    CHECK(strcmp(lb_role_str(LB_ROLE_PRIMARY), "primary") == 0);
    CHECK(strcmp(lb_role_str(LB_ROLE_REPLICA), "replica") == 0);
}

static void test_config_errors(void) {
    static char dummy;
    lb_balancer *const sentinel = (lb_balancer *)&dummy;
    lb_balancer *lb = sentinel; /* must stay untouched on failure */
    char *json;

    CHECK_STATUS(lb_balancer_new(NULL, &lb), LB_ERR_INVALID_ARGUMENT);
    CHECK(t_last_error_contains("config_json"));
    CHECK_STATUS(lb_balancer_new("{}", NULL), LB_ERR_INVALID_ARGUMENT);
    CHECK(t_last_error_contains("`out`"));

    CHECK_STATUS(lb_balancer_new("{", &lb), LB_ERR_INVALID_CONFIG);
    CHECK(t_last_error_contains("invalid configuration"));
    CHECK_STATUS(lb_balancer_new("{}", &lb), LB_ERR_INVALID_CONFIG);
    CHECK(t_last_error_contains("primary"));
    CHECK_STATUS(lb_balancer_new("{\"primary\": \"host=x\", \"pool\": {\"max_size\": \"ten\"}}",
                                 &lb),
                 LB_ERR_INVALID_CONFIG);
    CHECK(t_last_error_contains("pool.max_size"));
    CHECK_STATUS(lb_balancer_new("{\"primary\": \"host=x\", \"replicas\": {\"hosts\": "
                                 "[\"a:1\", \"a:1\"]}}",
                                 &lb),
                 LB_ERR_INVALID_CONFIG);
    CHECK(t_last_error_contains("replicas.hosts[1]"));
    CHECK_STATUS(lb_balancer_new("{\"primary\": \"host=x\", \"bogus_field\": 1}", &lb),
                 LB_ERR_INVALID_CONFIG);
    CHECK(t_last_error_contains("bogus_field"));
    /* A bad configuration with a password: the message must not show it. */
    CHECK_STATUS(lb_balancer_new("{\"primary\": \"host=x password=secretpw\", "
                                 "\"replica_check_interval_ms\": 1}",
                                 &lb),
                 LB_ERR_INVALID_CONFIG);
    CHECK(t_last_error_contains("replica_check_interval_ms"));
    CHECK(t_last_error_lacks("secretpw"));
    CHECK_STATUS(lb_balancer_new("{\"primary\": \"\xff\"}", &lb), LB_ERR_INVALID_ARGUMENT);
    CHECK(t_last_error_contains("`config_json` is not valid UTF-8"));

    json = t_config_json("\"max_lag_bytes\": -1");
    CHECK_STATUS(lb_balancer_new(json, &lb), LB_ERR_INVALID_CONFIG);
    CHECK(t_last_error_contains("max_lag_bytes"));
    free(json);
    CHECK(lb == sentinel);
}

static void test_null_handle(void) {
    char buf[64];
    size_t len = 12345;
    lb_route route = {77, 77};

    CHECK_STATUS(lb_pick_replica(NULL, NULL, buf, sizeof buf, &len, &route),
                 LB_ERR_INVALID_ARGUMENT);
    CHECK(t_last_error_contains("lb_pick_replica: argument `lb` is NULL"));
    CHECK(len == 12345 && route.role == 77);
    CHECK_STATUS(lb_pick_replica_min_lsn(NULL, "0/1", buf, sizeof buf, &len, NULL),
                 LB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(lb_record_lsn(NULL, "k", buf, sizeof buf, &len), LB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(lb_record_lsn_value(NULL, "k", "0/1"), LB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(lb_force_primary(NULL, "k", 1000), LB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(lb_primary_dsn(NULL, buf, sizeof buf, &len), LB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(lb_report_failure(NULL, "x"), LB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(lb_metrics_text(NULL, buf, sizeof buf, &len), LB_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(lb_status_json(NULL, buf, sizeof buf, &len), LB_ERR_INVALID_ARGUMENT);
    CHECK(t_last_error_contains("lb_status_json: argument `lb` is NULL"));
    CHECK_STATUS(lb_metrics_json(NULL, buf, sizeof buf, &len), LB_ERR_INVALID_ARGUMENT);
    CHECK(t_last_error_contains("lb_metrics_json: argument `lb` is NULL"));
    CHECK(len == 12345);
    lb_balancer_free(NULL);
}

static void test_arguments(const lb_balancer *lb) {
    char buf[256];
    char *long_key;
    size_t len = 0;
    lb_route route = {77, 77};

    /* NULL where a value is required. */
    CHECK_STATUS(lb_record_lsn(lb, NULL, buf, sizeof buf, &len), LB_ERR_INVALID_ARGUMENT);
    CHECK(t_last_error_contains("`key` is NULL"));
    CHECK_STATUS(lb_record_lsn_value(lb, NULL, "0/1"), LB_ERR_INVALID_ARGUMENT);
    CHECK(t_last_error_contains("`key` is NULL"));
    CHECK_STATUS(lb_record_lsn_value(lb, "k", NULL), LB_ERR_INVALID_ARGUMENT);
    CHECK(t_last_error_contains("`lsn` is NULL"));
    CHECK_STATUS(lb_pick_replica_min_lsn(lb, NULL, buf, sizeof buf, &len, &route),
                 LB_ERR_INVALID_ARGUMENT);
    CHECK(t_last_error_contains("`min_lsn` is NULL"));
    CHECK_STATUS(lb_report_failure(lb, NULL), LB_ERR_INVALID_ARGUMENT);
    CHECK(t_last_error_contains("`dsn` is NULL"));
    CHECK_STATUS(lb_pick_replica(lb, NULL, NULL, 10, &len, &route), LB_ERR_INVALID_ARGUMENT);
    CHECK(t_last_error_contains("`dsn_buf` is NULL but its capacity is 10"));
    CHECK_STATUS(lb_force_primary(lb, "k", 0), LB_ERR_INVALID_ARGUMENT);
    CHECK(t_last_error_contains("`ttl_ms`"));

    /* Invalid UTF-8. */
    CHECK_STATUS(lb_pick_replica(lb, "user:\xc3\x28", buf, sizeof buf, &len, &route),
                 LB_ERR_INVALID_ARGUMENT);
    CHECK(t_last_error_contains("`key` is not valid UTF-8 (at byte 5)"));
    CHECK_STATUS(lb_record_lsn_value(lb, "\xff", "0/1"), LB_ERR_INVALID_ARGUMENT);
    CHECK(t_last_error_contains("`key` is not valid UTF-8"));
    CHECK_STATUS(lb_report_failure(lb, "host=\xfe"), LB_ERR_INVALID_ARGUMENT);
    CHECK(route.role == 77 && route.reason == 77);

    /* Malformed LSNs. */
    CHECK_STATUS(lb_record_lsn_value(lb, "k", "16-B374D848"), LB_ERR_INVALID_LSN);
    CHECK(t_last_error_contains("invalid LSN"));
    CHECK_STATUS(lb_record_lsn_value(lb, "k", "123456789/0"), LB_ERR_INVALID_LSN);
    CHECK_STATUS(lb_record_lsn_value(lb, "k", ""), LB_ERR_INVALID_LSN);
    CHECK_STATUS(lb_pick_replica_min_lsn(lb, "G/0", buf, sizeof buf, &len, &route),
                 LB_ERR_INVALID_LSN);
    CHECK(route.role == 77);

    /* Keys: empty and too long. */
    CHECK_STATUS(lb_pick_replica(lb, "", buf, sizeof buf, &len, &route), LB_ERR_INVALID_KEY);
    CHECK(t_last_error_contains("key is empty"));
    long_key = malloc(LB_MAX_KEY_LENGTH + 2);
    CHECK(long_key != NULL);
    memset(long_key, 'k', LB_MAX_KEY_LENGTH + 1);
    long_key[LB_MAX_KEY_LENGTH + 1] = '\0';
    CHECK_STATUS(lb_record_lsn_value(lb, long_key, "0/1"), LB_ERR_INVALID_KEY);
    CHECK(t_last_error_contains("1025 bytes"));
    long_key[LB_MAX_KEY_LENGTH] = '\0';
    CHECK_OK(lb_record_lsn_value(lb, long_key, "0/1"));
    free(long_key);
}

static void test_buffers(const lb_balancer *lb) {
    char dsn[512];
    char small[8];
    char *exact;
    size_t len = 0, len2 = 0;
    lb_route route = {77, 77};

    /* lb_primary_dsn: cap 0 (size query), 1, exact length (no room for the NUL), len + 1. */
    CHECK_STATUS(lb_primary_dsn(lb, NULL, 0, &len), LB_ERR_BUFFER_TOO_SMALL);
    CHECK(len > 10);
    CHECK(t_last_error_contains("are needed"));
    CHECK(t_last_error_lacks("secretpw"));
    memset(small, 'x', sizeof small);
    CHECK_STATUS(lb_primary_dsn(lb, small, 1, &len2), LB_ERR_BUFFER_TOO_SMALL);
    CHECK(len2 == len && small[0] == 'x');
    exact = malloc(len + 1);
    CHECK(exact != NULL);
    memset(exact, 'x', len + 1);
    CHECK_STATUS(lb_primary_dsn(lb, exact, len, &len2), LB_ERR_BUFFER_TOO_SMALL);
    CHECK(len2 == len && exact[0] == 'x' && exact[len - 1] == 'x');
    CHECK_OK(lb_primary_dsn(lb, exact, len + 1, &len2));
    CHECK(len2 == len && strlen(exact) == len);
    CHECK_MSG(strstr(exact, "password=secretpw") != NULL, "the real DSN is handed out");
    /* len may be NULL. */
    CHECK_OK(lb_primary_dsn(lb, dsn, sizeof dsn, NULL));
    CHECK(strcmp(dsn, exact) == 0);
    CHECK_STATUS(lb_primary_dsn(lb, small, sizeof small, NULL), LB_ERR_BUFFER_TOO_SMALL);
    free(exact);

    /* lb_pick_replica: the route is written only with the DSN. */
    CHECK_STATUS(lb_pick_replica(lb, NULL, NULL, 0, &len, &route), LB_ERR_BUFFER_TOO_SMALL);
    CHECK(len > 10 && route.role == 77 && route.reason == 77);
    CHECK_STATUS(lb_pick_replica(lb, NULL, small, 1, &len, &route), LB_ERR_BUFFER_TOO_SMALL);
    CHECK(small[0] == 'x' && route.role == 77);
    /* Replica DSNs of the test cluster all have the same length: exact then exact + 1. */
    exact = malloc(len + 1);
    CHECK(exact != NULL);
    CHECK_STATUS(lb_pick_replica(lb, NULL, exact, len, &len2, &route), LB_ERR_BUFFER_TOO_SMALL);
    CHECK(len2 == len && route.role == 77);
    CHECK_OK(lb_pick_replica(lb, NULL, exact, len + 1, &len2, &route));
    CHECK(len2 == len && strlen(exact) == len);
    CHECK(route.role == LB_ROLE_REPLICA && route.reason == LB_REASON_ROUND_ROBIN);
    free(exact);
    /* route and len may be NULL. */
    CHECK_OK(lb_pick_replica(lb, NULL, dsn, sizeof dsn, NULL, NULL));

    /* lb_record_lsn: the LSN is recorded, then the buffer found too small. */
    CHECK_STATUS(lb_record_lsn(lb, "buf-key", NULL, 0, &len), LB_ERR_BUFFER_TOO_SMALL);
    CHECK(len >= 3 && len <= LB_LSN_MAX_LENGTH);
    {
        char lsn[LB_LSN_MAX_LENGTH + 1];
        CHECK_OK(lb_record_lsn(lb, "buf-key", lsn, sizeof lsn, &len2));
        CHECK(len2 == strlen(lsn) && t_parse_lsn(lsn) > 0);
    }

    /* The last error: truncated copies are NUL-terminated, the full length is returned. */
    CHECK_STATUS(lb_record_lsn_value(lb, "k", "nope"), LB_ERR_INVALID_LSN);
    len = lb_last_error_length();
    CHECK(len > 10);
    memset(small, 'x', sizeof small);
    CHECK(lb_last_error_message(small, sizeof small) == len);
    CHECK(strlen(small) == sizeof small - 1);
    CHECK(lb_last_error_message(NULL, 0) == len);
    CHECK(lb_last_error_message(small, 0) == len);
    /* Successful calls leave it. */
    CHECK_OK(lb_primary_dsn(lb, dsn, sizeof dsn, NULL));
    CHECK(lb_last_error_length() == len);
}

/* A text that grows between calls: asks its size, then retries with slack. */
static char *t_text(lb_status (*get)(const lb_balancer *, char *, size_t, size_t *),
                    const lb_balancer *lb) {
    size_t len = 0;
    char *buf;
    CHECK_STATUS(get(lb, NULL, 0, &len), LB_ERR_BUFFER_TOO_SMALL);
    buf = malloc(len + 4096);
    CHECK(buf != NULL);
    CHECK_OK(get(lb, buf, len + 4096, &len));
    CHECK(strlen(buf) == len);
    return buf;
}

/* lb_metrics_json: the typed snapshot lb_metrics_text renders; with a prefix and constant
   labels from the configuration, and histograms that move. */
static void test_metrics(void) {
    lb_balancer *lb = t_open("\"metrics\": {\"prefix\": \"c_dlb_\", \"labels\": {\"svc\": \"c\"}}");
    char lsn[LB_LSN_MAX_LENGTH + 1];
    char dsn[512];
    char *json, *text;
    t_wait_healthy(lb, 2, 30000);
    CHECK_OK(lb_record_lsn(lb, "m-key", lsn, sizeof lsn, NULL));
    CHECK_OK(lb_pick_replica(lb, "m-key", dsn, sizeof dsn, NULL, NULL));
    json = t_text(lb_metrics_json, lb);
    CHECK_MSG(strncmp(json, "{\"version\":1,", 13) == 0, json);
    CHECK(strstr(json, "\"primary_up\":true") != NULL);
    CHECK(strstr(json, "\"healthy_replicas\":2") != NULL);
    CHECK(strstr(json, "\"sticky_pick_seconds\":{\"buckets\":[{\"le\":0.0001,") != NULL);
    CHECK(strstr(json, "secretpw") == NULL);
    free(json);
    text = t_text(lb_metrics_text, lb);
    CHECK_MSG(strstr(text, "\nc_dlb_primary_up{svc=\"c\"} 1\n") != NULL, text);
    CHECK(strstr(text, "\ndlb_") == NULL);
    CHECK(strstr(text, "c_dlb_sticky_pick_duration_seconds_bucket{svc=\"c\",le=\"+Inf\"} 1\n") != NULL);
    free(text);
    lb_balancer_free(lb);
}

static void test_report_failure(const lb_balancer *lb) {
    char dsn[512];
    char addr[64];
    CHECK_OK(lb_primary_dsn(lb, dsn, sizeof dsn, NULL));
    CHECK_OK(lb_report_failure(lb, dsn));
    CHECK_OK(lb_pick_replica(lb, NULL, dsn, sizeof dsn, NULL, NULL));
    CHECK_OK(lb_report_failure(lb, dsn));
    sprintf(addr, "127.0.0.1:%s", t_replica_port(2));
    CHECK_OK(lb_report_failure(lb, addr));
    CHECK_STATUS(lb_report_failure(lb, "host=10.1.2.3 port=5432 password=hunter2"),
                 LB_ERR_UNKNOWN_HOST);
    CHECK(t_last_error_lacks("hunter2"));
    CHECK_STATUS(lb_report_failure(lb, "127.0.0.1:1"), LB_ERR_UNKNOWN_HOST);
}

/* lb_dsn_redact needs no balancer: both syntaxes, the buffer rules, arguments, and nothing
   of a DSN it cannot parse. */
static void test_dsn_redact(void) {
    static const char kv[] = "host=db1 port=5433 user=app password='s3 cr\\'t' dbname=app";
    static const char kv_redacted[] = "host=db1 port=5433 user=app password=******** dbname=app";
    static const char url[] = "postgres://app:hunter2@[::1]:5434/app?password=hunter2";
    char buf[256];
    char small[8];
    size_t len = 0, len2 = 0;

    CHECK_OK(lb_dsn_redact(kv, buf, sizeof buf, &len));
    CHECK_MSG(strcmp(buf, kv_redacted) == 0, buf);
    CHECK(len == strlen(kv_redacted));
    CHECK_OK(lb_dsn_redact(url, buf, sizeof buf, NULL));
    CHECK_MSG(strcmp(buf, "postgres://app:********@[::1]:5434/app?password=********") == 0, buf);
    /* Not a DSN dlb can parse: the placeholder, never the text. */
    CHECK_OK(lb_dsn_redact("host=db1 password=hunter2 port=x", buf, sizeof buf, &len));
    CHECK_MSG(strcmp(buf, "********") == 0 && len == 8, buf);

    /* cap 0 (size query), 1, exact length (no room for the NUL), len + 1. */
    CHECK_STATUS(lb_dsn_redact(kv, NULL, 0, &len), LB_ERR_BUFFER_TOO_SMALL);
    CHECK(len == strlen(kv_redacted));
    CHECK(t_last_error_contains("lb_dsn_redact"));
    CHECK(t_last_error_lacks("s3 cr"));
    memset(small, 'x', sizeof small);
    CHECK_STATUS(lb_dsn_redact(kv, small, 1, &len2), LB_ERR_BUFFER_TOO_SMALL);
    CHECK(len2 == len && small[0] == 'x');
    memset(buf, 'x', sizeof buf);
    CHECK_STATUS(lb_dsn_redact(kv, buf, len, &len2), LB_ERR_BUFFER_TOO_SMALL);
    CHECK(len2 == len && buf[0] == 'x' && buf[len - 1] == 'x');
    CHECK_OK(lb_dsn_redact(kv, buf, len + 1, &len2));
    CHECK(len2 == len && strcmp(buf, kv_redacted) == 0);

    CHECK_STATUS(lb_dsn_redact(NULL, buf, sizeof buf, &len), LB_ERR_INVALID_ARGUMENT);
    CHECK(t_last_error_contains("`dsn` is NULL"));
    CHECK_STATUS(lb_dsn_redact(kv, NULL, 8, &len), LB_ERR_INVALID_ARGUMENT);
    CHECK(t_last_error_contains("`buf`"));
    CHECK_STATUS(lb_dsn_redact("host=db1 password=caf\xe9", buf, sizeof buf, NULL),
                 LB_ERR_INVALID_ARGUMENT);
    CHECK(t_last_error_contains("UTF-8"));
}

/* lb_is_plain_read needs no balancer, reads `len` bytes (no NUL needed), never fails. */
#define PLAIN(sql) lb_is_plain_read((sql), sizeof(sql) - 1)
static void test_is_plain_read(void) {
    static const char both[] = "SELECT 1; LISTEN c";
    CHECK(PLAIN("SELECT v FROM t WHERE id = $1"));
    CHECK(PLAIN("SHOW search_path;"));
    CHECK(PLAIN("SELECT 'caf\xe9'")); /* not UTF-8: bytes are fine */
    CHECK(!PLAIN("SET search_path = x"));
    CHECK(!PLAIN(both));
    CHECK(lb_is_plain_read(both, 8)); /* "SELECT 1" */
    CHECK(!PLAIN(""));
    CHECK(!lb_is_plain_read(NULL, 4));
}

int main(void) {
    lb_balancer *lb;
    test_version();
    test_status_strings();
    test_config_errors();
    test_null_handle();
    test_dsn_redact();
    test_is_plain_read();

    lb = t_open("");
    t_wait_healthy(lb, 2, 30000);
    test_arguments(lb);
    test_buffers(lb);
    test_report_failure(lb);
    lb_balancer_free(lb);
    test_metrics();
    printf("test_api: ok\n");
    return 0;
}
