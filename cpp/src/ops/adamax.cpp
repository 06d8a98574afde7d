#include "../rules/adamax.h"
#include "../fused_op.h"

UNROLLOPT_REGISTER_RULE(unrollopt::rules::Adamax)
