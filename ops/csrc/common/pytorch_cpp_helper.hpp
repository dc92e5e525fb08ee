// Copyright (c) mmlinattn contributors. All rights reserved.
#ifndef MMLINATTN_PYTORCH_CPP_HELPER_HPP
#define MMLINATTN_PYTORCH_CPP_HELPER_HPP

#include <ATen/ATen.h>

#include <sstream>
#include <string>

namespace mmlinattn {

inline std::string shape_str(const at::Tensor& t) {
  std::ostringstream ss;
  ss << t.sizes();
  return ss.str();
}

// Accumulation dtype: fp64 for fp64 inputs, fp32 otherwise.
inline at::ScalarType acc_type_of(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace mmlinattn

#endif  // MMLINATTN_PYTORCH_CPP_HELPER_HPP
