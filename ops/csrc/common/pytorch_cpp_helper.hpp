// Copyright (c) mmlinattn contributors. All rights reserved.
#ifndef MMLINATTN_PYTORCH_CPP_HELPER_HPP
#define MMLINATTN_PYTORCH_CPP_HELPER_HPP

#include <ATen/ATen.h>

#include <sstream>
#include <string>

// CPU kernels marked MMLINATTN_SIMD_CLONES are compiled for AVX-512, AVX2
// and baseline x86-64 and picked at load time (GCC function multiversioning
// on x86-64 Linux), so no -march flag is needed.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    defined(__linux__)
#define MMLINATTN_SIMD_CLONES                                        \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", \
                               "default")))
#else
#define MMLINATTN_SIMD_CLONES
#endif

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
