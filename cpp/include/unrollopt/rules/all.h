#pragma once
// Every optimizer rule, and X(rule) for each: the one list the kernels
// (CPU and CUDA) are instantiated from and the operators registered from
// (cpp/CMakeLists.txt reads the list and makes one registering source per rule);
// and every optimizer of the C++ API, X(Name) for unrollopt::Name (from
// NameOptions, declared with its rules) and unrollopt::optim::Name.

#include "adadelta.h"
#include "adagrad.h"
#include "adam.h"
#include "adamax.h"
#include "adan.h"
#include "lion.h"
#include "nadam.h"
#include "radam.h"
#include "rmsprop.h"
#include "sgd.h"

#define UNROLLOPT_FOR_EACH_RULE(X)             \
  X(unrollopt::rules::Adadelta)                \
  X(unrollopt::rules::Adagrad)                 \
  X(unrollopt::rules::Adam)                    \
  X(unrollopt::rules::AdamW)                   \
  X(unrollopt::rules::AdamAmsgrad)             \
  X(unrollopt::rules::AdamWAmsgrad)            \
  X(unrollopt::rules::Adamax)                  \
  X(unrollopt::rules::Adan)                    \
  X(unrollopt::rules::Lion)                    \
  X(unrollopt::rules::Nadam)                   \
  X(unrollopt::rules::Radam)                   \
  X(unrollopt::rules::Rmsprop)                 \
  X(unrollopt::rules::RmspropCentered)         \
  X(unrollopt::rules::RmspropMomentum)         \
  X(unrollopt::rules::RmspropCenteredMomentum) \
  X(unrollopt::rules::Sgd)                     \
  X(unrollopt::rules::SgdMomentum)

#define UNROLLOPT_FOR_EACH_OPTIMIZER(X) \
  X(Adam)                               \
  X(AdamW)                              \
  X(Adamax)                             \
  X(RAdam)                              \
  X(NAdam)                              \
  X(RMSprop)                            \
  X(Adagrad)                            \
  X(Adadelta)                           \
  X(Lion)                               \
  X(Adan)                               \
  X(Sgd)
