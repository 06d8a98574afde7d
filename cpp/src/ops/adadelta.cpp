#include "../fused_op.h"
#include "../rules/adadelta.h"

UNROLLOPT_REGISTER_RULE(unrollopt::rules::Adadelta)
