#include "../fused_op.h"
#include "../rules/radam.h"

UNROLLOPT_REGISTER_RULE(unrollopt::rules::Radam)
