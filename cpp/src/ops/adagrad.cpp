#include "../fused_op.h"
#include "../rules/adagrad.h"

UNROLLOPT_REGISTER_RULE(unrollopt::rules::Adagrad)
