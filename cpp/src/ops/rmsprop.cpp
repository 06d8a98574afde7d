#include "../rules/rmsprop.h"
#include "../fused_op.h"

UNROLLOPT_REGISTER_RULE(unrollopt::rules::Rmsprop)
UNROLLOPT_REGISTER_RULE(unrollopt::rules::RmspropCentered)
UNROLLOPT_REGISTER_RULE(unrollopt::rules::RmspropMomentum)
UNROLLOPT_REGISTER_RULE(unrollopt::rules::RmspropCenteredMomentum)
