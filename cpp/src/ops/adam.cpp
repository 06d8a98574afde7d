#include "../fused_op.h"
#include "../rules/adam.h"

UNROLLOPT_REGISTER_RULE(unrollopt::rules::Adam)
UNROLLOPT_REGISTER_RULE(unrollopt::rules::AdamAmsgrad)
