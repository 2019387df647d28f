#define _POSIX_C_SOURCE 200809L

#include "test_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void t_fail(const char *file, int line, const char *what, const char *detail) {
    char err[1024];
    fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what);
    if (detail != NULL) {
        fprintf(stderr, "  detail: %s\n", detail);
    }
    fprintf(stderr, "  last dlb error: %s\n", t_last_error(err, sizeof err));
    exit(1);
}

void t_fail_status(const char *file, int line, const char *what, lb_status got,
                   lb_status expected) {
    char err[1024];
    fprintf(stderr, "%s:%d: %s\n  returned %u (%s), expected %u (%s)\n  last dlb error: %s\n",
            file, line, what, (unsigned)got, lb_status_str(got), (unsigned)expected,
            lb_status_str(expected), t_last_error(err, sizeof err));
    exit(1);
}

const char *t_last_error(char *buf, size_t cap) {
    lb_last_error_message(buf, cap);
    return buf;
}

/* 1 when the last error contains `needle`; the message is copied into `*msg` (free it). */
static int last_error_find(const char *needle, char **msg) {
    size_t n = lb_last_error_length();
    char *buf = malloc(n + 1);
    CHECK(buf != NULL);
    CHECK(lb_last_error_message(buf, n + 1) == n);
    CHECK(buf[n] == '\0' && strlen(buf) == n);
    *msg = buf;
    return strstr(buf, needle) != NULL;
}

int t_last_error_contains(const char *needle) {
    char *msg;
    int found = last_error_find(needle, &msg);
    if (!found) {
        fprintf(stderr, "last error \"%s\" does not contain \"%s\"\n", msg, needle);
    }
    free(msg);
    return found;
}

int t_last_error_lacks(const char *needle) {
    char *msg;
    int found = last_error_find(needle, &msg);
    if (found) {
        fprintf(stderr, "last error \"%s\" contains \"%s\"\n", msg, needle);
    }
    free(msg);
    return !found;
}

const char *t_env(const char *name) {
    const char *v = getenv(name);
    if (v == NULL || *v == '\0') {
        fprintf(stderr,
                "%s is not set; start the test cluster and export its settings:\n"
                "  bash scripts/testenv.sh up && eval \"$(bash scripts/testenv.sh env)\"\n",
                name);
        exit(1);
    }
    return v;
}

long t_scale(long n) {
    const char *s = getenv("DLB_FFI_SCALE");
    long div = s != NULL ? strtol(s, NULL, 10) : 1;
    long r;
    if (div < 1) {
        div = 1;
    }
    r = n / div;
    return r < 1 ? 1 : r;
}

double t_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void t_sleep_ms(long ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Appends `s` as a JSON string literal body (without quotes) to `out`. */
static void json_escape(char *out, size_t cap, const char *s) {
    size_t n = strlen(out);
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        CHECK(n + 7 < cap);
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < 0x20) {
            n += (size_t)sprintf(out + n, "\\u%04x", c);
        } else {
            out[n++] = (char)c;
        }
    }
    out[n] = '\0';
}

char *t_config_json(const char *extra) {
    const char *primary = t_env("DLB_TEST_PRIMARY");
    const char *replicas = t_env("DLB_TEST_REPLICAS");
    size_t cap = 2 * (strlen(primary) + strlen(replicas) + strlen(extra)) + 512;
    char *json = malloc(cap);
    char dsn[1024];
    const char *p;
    int first = 1;
    CHECK(json != NULL);
    CHECK(strlen(primary) + 32 < sizeof dsn);
    sprintf(dsn, "%s password=secretpw", primary);
    strcpy(json, "{\"primary\": \"");
    json_escape(json, cap, dsn);
    strcat(json, "\", \"replicas\": {\"hosts\": [");
    for (p = replicas; *p != '\0';) {
        const char *end = strchr(p, ',');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        char host[256];
        CHECK(len < sizeof host);
        memcpy(host, p, len);
        host[len] = '\0';
        strcat(json, first ? "\"" : ", \"");
        json_escape(json, cap, host);
        strcat(json, "\"");
        first = 0;
        p += len;
        if (*p == ',') {
            p++;
        }
    }
    strcat(json, "]}, \"replica_check_interval_ms\": 100, \"probe_timeout_ms\": 2000");
    if (*extra != '\0') {
        strcat(json, ", ");
        strcat(json, extra);
    }
    strcat(json, "}");
    return json;
}

lb_balancer *t_open(const char *extra) {
    char *json = t_config_json(extra);
    lb_balancer *lb = NULL;
    CHECK_OK(lb_balancer_new(json, &lb));
    CHECK(lb != NULL);
    free(json);
    return lb;
}

/* Calls `get` with growing buffers until the text fits (it may grow between calls). */
static char *get_text(const lb_balancer *lb,
                      lb_status (*get)(const lb_balancer *, char *, size_t, size_t *)) {
    size_t len = 0;
    int attempt;
    CHECK_STATUS(get(lb, NULL, 0, &len), LB_ERR_BUFFER_TOO_SMALL);
    for (attempt = 0; attempt < 10; attempt++) {
        size_t cap = len + 1 + 256;
        size_t got = 0;
        char *buf = malloc(cap);
        lb_status st;
        CHECK(buf != NULL);
        st = get(lb, buf, cap, &got);
        if (st == LB_OK) {
            CHECK(got == strlen(buf));
            return buf;
        }
        CHECK_STATUS(st, LB_ERR_BUFFER_TOO_SMALL);
        CHECK(got >= cap);
        len = got;
        free(buf);
    }
    CHECK_MSG(0, "the text kept growing");
    return NULL;
}

char *t_status_json(const lb_balancer *lb) {
    return get_text(lb, lb_status_json);
}

char *t_metrics_text(const lb_balancer *lb) {
    return get_text(lb, lb_metrics_text);
}

void t_wait_healthy(const lb_balancer *lb, int n, double timeout_ms) {
    double deadline = t_now_ms() + timeout_ms;
    for (;;) {
        char *json = t_status_json(lb);
        const char *h = strstr(json, "\"healthy_replicas\":");
        int healthy = h != NULL ? atoi(h + strlen("\"healthy_replicas\":")) : -1;
        if (healthy >= n) {
            free(json);
            return;
        }
        if (t_now_ms() > deadline) {
            fprintf(stderr, "status: %s\n", json);
            free(json);
            CHECK_MSG(0, "replicas did not become healthy in time");
        }
        free(json);
        t_sleep_ms(20);
    }
}

const char *t_replica_port(int i) {
    static char ports[8][16];
    char *port;
    const char *p = t_env("DLB_TEST_REPLICAS");
    int k;
    size_t len;
    CHECK(i >= 1 && i <= 8);
    port = ports[i - 1];
    for (k = 1; k < i; k++) {
        p = strchr(p, ',');
        CHECK_MSG(p != NULL, "DLB_TEST_REPLICAS has too few entries");
        p++;
    }
    len = strcspn(p, ",");
    while (len > 0 && p[len - 1] != ':') {
        len--;
    }
    CHECK_MSG(len > 0, "DLB_TEST_REPLICAS entries must be host:port");
    p += len;
    len = strcspn(p, ",");
    CHECK(len > 0 && len < sizeof ports[0]);
    memcpy(port, p, len);
    port[len] = '\0';
    return port;
}

int t_dsn_has_port(const char *dsn, const char *port) {
    size_t n = strlen(port);
    const char *p = dsn;
    while ((p = strstr(p, "port=")) != NULL) {
        int word_start = p == dsn || p[-1] == ' ';
        p += strlen("port=");
        if (word_start && strncmp(p, port, n) == 0 && (p[n] == ' ' || p[n] == '\0')) {
            return 1;
        }
    }
    return 0;
}

uint64_t t_parse_lsn(const char *text) {
    char *end;
    unsigned long hi, lo;
    errno = 0;
    hi = strtoul(text, &end, 16);
    CHECK_MSG(errno == 0 && end != text && *end == '/', text);
    lo = strtoul(end + 1, &end, 16);
    CHECK_MSG(errno == 0 && *end == '\0', text);
    return ((uint64_t)hi << 32) | (uint64_t)lo;
}
