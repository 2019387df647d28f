/*
 * dlb.h included from two translation units (this one and two_tu_other.c), twice in this
 * one: the include guard works and the header defines nothing that would be duplicated at
 * link time (only declarations, typedefs and macros).
 */
#include <stdio.h>
#include <string.h>

#include "dlb.h"
#include "dlb.h" /* twice on purpose */

const char *other_tu_version(void);
lb_status other_tu_status(void);

int main(void) {
    lb_route route = {LB_ROLE_REPLICA, LB_REASON_CAUGHT_UP_LIVE};
    if (strcmp(other_tu_version(), lb_version()) != 0) {
        fprintf(stderr, "lb_version() differs between translation units\n");
        return 1;
    }
    if (other_tu_status() != LB_ERR_INVALID_ARGUMENT) {
        fprintf(stderr, "lb_balancer_new(NULL, NULL) from the other unit returned %u\n",
                (unsigned)other_tu_status());
        return 1;
    }
    if (sizeof route != 2 * sizeof(uint32_t)) {
        fprintf(stderr, "lb_route has padding\n");
        return 1;
    }
    printf("test_two_tu: ok (%s, %s)\n", lb_role_str(route.role), lb_reason_str(route.reason));
    return 0;
}
