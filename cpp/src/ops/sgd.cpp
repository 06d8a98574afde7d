#include "../fused_op.h"
#include "../rules/sgd.h"

UNROLLOPT_REGISTER_RULE(unrollopt::rules::Sgd)
UNROLLOPT_REGISTER_RULE(unrollopt::rules::SgdMomentum)
