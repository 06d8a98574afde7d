#include "../rules/sgd.h"
#include "../fused_op.h"

UNROLLOPT_REGISTER_RULE(unrollopt::rules::Sgd)
UNROLLOPT_REGISTER_RULE(unrollopt::rules::SgdMomentum)
