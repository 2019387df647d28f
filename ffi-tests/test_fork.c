/*
 * fork(): a child must not use a balancer its parent made (no monitor thread there, the
 * parent's sockets): calls that route or do I/O say so (LB_ERR_FORKED); a balancer made in
 * the child works; freeing the inherited one in the child leaves the parent's intact.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"

static int child(lb_balancer *inherited) {
    char dsn[512], lsn[LB_LSN_MAX_LENGTH + 1];
    lb_route route;
    lb_balancer *own;
    CHECK_STATUS(lb_pick_replica(inherited, NULL, dsn, sizeof dsn, NULL, &route),
                 LB_ERR_FORKED);
    CHECK(t_last_error_contains("before a fork"));
    CHECK_STATUS(lb_record_lsn(inherited, "fork:key", lsn, sizeof lsn, NULL), LB_ERR_FORKED);
    CHECK_STATUS(lb_pick_replica(inherited, "fork:key", dsn, sizeof dsn, NULL, &route),
                 LB_ERR_FORKED);
    CHECK(!lb_status_is_retryable(LB_ERR_FORKED));
    own = t_open("");
    CHECK_OK(lb_record_lsn(own, "fork:key", lsn, sizeof lsn, NULL));
    CHECK_OK(lb_pick_replica(own, "fork:key", dsn, sizeof dsn, NULL, &route));
    lb_balancer_free(own);
    lb_balancer_free(inherited); /* releases nothing of the parent's */
    return 0;
}

int main(void) {
    lb_balancer *lb = t_open("");
    char dsn[512], lsn[LB_LSN_MAX_LENGTH + 1];
    lb_route route;
    int status = 0;
    pid_t pid;

    CHECK_OK(lb_pick_replica(lb, NULL, dsn, sizeof dsn, NULL, &route));
    fflush(NULL);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        _exit(child(lb));
    }
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child failed");
    /* The parent's balancer is untouched. */
    CHECK_OK(lb_record_lsn(lb, "fork:parent", lsn, sizeof lsn, NULL));
    CHECK_OK(lb_pick_replica(lb, "fork:parent", dsn, sizeof dsn, NULL, &route));
    lb_balancer_free(lb);
    printf("test_fork: ok\n");
    return 0;
}
