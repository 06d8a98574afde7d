#include "../rules/adam.h"
#include "../fused_op.h"

UNROLLOPT_REGISTER_RULE(unrollopt::rules::Adam)
UNROLLOPT_REGISTER_RULE(unrollopt::rules::AdamAmsgrad)
