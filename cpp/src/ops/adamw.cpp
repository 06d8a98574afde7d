#include "../fused_op.h"
#include "../rules/adam.h"

UNROLLOPT_REGISTER_RULE(unrollopt::rules::AdamW)
UNROLLOPT_REGISTER_RULE(unrollopt::rules::AdamWAmsgrad)
