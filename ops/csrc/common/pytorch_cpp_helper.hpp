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

// The inputs of the float32 / float64 CPU kernels: `a` of one of those
// dtypes and `b` of a's dtype and device; the errors name the op, the
// tensors and the fix.
inline void check_float_pair(const char* op, const char* a_name,
                             const at::Tensor& a, const char* b_name,
                             const at::Tensor& b) {
  TORCH_CHECK_TYPE(a.scalar_type() == at::kFloat ||
                       a.scalar_type() == at::kDouble,
                   op, ": ", a_name, " has dtype ", a.scalar_type(),
                   "; expected Float or Double (cast half precision to "
                   "float32 first)");
  TORCH_CHECK_TYPE(b.scalar_type() == a.scalar_type(), op, ": ", b_name,
                   " has dtype ", b.scalar_type(), ", ", a_name, " ",
                   a.scalar_type(), "; cast them to one dtype");
  TORCH_CHECK_VALUE(b.device() == a.device(), op, ": ", a_name, " on ",
                    a.device(), ", ", b_name, " on ", b.device());
}

// Accumulation dtype: fp64 for fp64 inputs, fp32 otherwise.
inline at::ScalarType acc_type_of(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace mmlinattn

#endif  // MMLINATTN_PYTORCH_CPP_HELPER_HPP
