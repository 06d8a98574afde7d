#include "../fused_op.h"
#include "../rules/adamw.h"

UNROLLOPT_REGISTER_RULE(unrollopt::rules::AdamW)
