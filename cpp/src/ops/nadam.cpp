#include "../fused_op.h"
#include "../rules/nadam.h"

UNROLLOPT_REGISTER_RULE(unrollopt::rules::Nadam)
