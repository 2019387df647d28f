/* The second translation unit of test_two_tu. */
#include "dlb.h"

const char *other_tu_version(void);
lb_status other_tu_status(void);

const char *other_tu_version(void) {
    return lb_version();
}

lb_status other_tu_status(void) {
    return lb_balancer_new(NULL, NULL);
}
