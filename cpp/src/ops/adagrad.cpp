#include "../rules/adagrad.h"
#include "../fused_op.h"

UNROLLOPT_REGISTER_RULE(unrollopt::rules::Adagrad)
