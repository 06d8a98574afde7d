#include "../fused_op.h"
#include "../rules/adamax.h"

UNROLLOPT_REGISTER_RULE(unrollopt::rules::Adamax)
