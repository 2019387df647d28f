// dlb.h compiled as C++ (cpp_compat): extern "C" linkage, no C-only constructs.
#include "dlb.h"

#include <cstring>

static_assert(sizeof(lb_route) == 2 * sizeof(uint32_t), "lb_route layout");

int main() {
    lb_balancer *lb = nullptr;
    lb_status st = lb_balancer_new(nullptr, &lb);
    return st == LB_ERR_INVALID_ARGUMENT && lb == nullptr &&
                   std::strcmp(lb_status_str(st), "invalid argument") == 0
               ? 0
               : 1;
}
