#pragma once
// Every difference between the torch versions unrollopt supports (2.11 to 2.14)
// that its code meets, in one place. Each is told apart by torch's own
// declarations, not by version numbers, so that a torch in between needs nothing
// here.

#include <memory>
#include <type_traits>
#include <utility>

#include <c10/util/intrusive_ptr.h>
#include <torch/csrc/autograd/edge.h>

namespace unrollopt::torch_compat {

// How autograd holds a node (torch::autograd::Node): a std::shared_ptr in
// torch 2.11, a c10::intrusive_ptr in 2.13 and 2.14 (where Node derives from
// intrusive_ptr_target). An edge's `function` has that type in every version;
// set_history and collect_next_edges take it.
using NodePtr = decltype(torch::autograd::Edge::function);
inline constexpr bool kIntrusiveNodes =
    !std::is_same_v<NodePtr, std::shared_ptr<torch::autograd::Node>>;

// A new autograd node of type T (derived from Node), held as this torch holds
// nodes: c10::make_intrusive<T>() or std::make_shared<T>().
template <class T, class... Args>
auto make_node(Args&&... args) {
  if constexpr (kIntrusiveNodes) {
    return c10::make_intrusive<T>(std::forward<Args>(args)...);
  } else {
    return std::make_shared<T>(std::forward<Args>(args)...);
  }
}

}  // namespace unrollopt::torch_compat
