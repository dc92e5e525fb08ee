// Copyright (c) mmlinattn contributors. All rights reserved.
// CPU kernel of the Newton-Schulz steps (see newton_schulz_ops.hpp). SOFT
// iterates 20 times on (B * heads, 49, 49) stacks: two batched GEMM calls per
// step spend most of their time in dispatch and in streaming the stack
// through the caches. Here one thread runs all steps of a matrix on four
// cache-resident copies (A, V, V A, next V) whose rows are padded to whole
// vectors with zeros; the products are register tiles of 4 rows x up to 4
// vectors, each entry summed over k in order with one fused multiply-add per
// term.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu_tile.hpp"
#include "newton_schulz_ops.hpp"
#include "pytorch_cpp_helper.hpp"
#include "pytorch_device_registry.hpp"

namespace {

using mmlinattn::cpu::kLanes;
using mmlinattn::cpu::load;
using mmlinattn::cpu::store;
using mmlinattn::cpu::Vec;

// out = a b (m x m, row stride ld), or out = 2 e - a b if Residual.
template <typename T, bool Residual>
__attribute__((always_inline)) inline void product(const T* a, const T* b,
                                                   const T* e, T* out,
                                                   int64_t m, int64_t ld) {
  constexpr int64_t L = kLanes<T>;
  mmlinattn::cpu::tiled_product<T>(
      a, ld, 1, b, ld, m, m, ld / L,
      [&](int64_t i, int64_t v, Vec<T> acc) __attribute__((always_inline)) {
        const int64_t at = i * ld + v * L;
        if constexpr (Residual)
          store(out + at, T(2) * load(e + at) - acc);
        else
          store(out + at, acc);
      });
}

// All num_iter steps of one matrix; work holds 4 m x ld matrices whose
// padding columns are zero (they stay zero: each product's padding columns
// are sums of zeros).
template <typename T>
MMLINATTN_SIMD_CLONES void iterate_matrix(const T* inv, const T* mat, T* out,
                                          int64_t m, int64_t ld,
                                          int64_t num_iter, T* work) {
  T* a = work;
  T* v = a + m * ld;
  T* va = v + m * ld;
  T* next = va + m * ld;
  for (int64_t i = 0; i < m; ++i) {
    std::memcpy(a + i * ld, mat + i * m, sizeof(T) * m);
    std::memcpy(v + i * ld, inv + i * m, sizeof(T) * m);
  }
  for (int64_t step = 0; step < num_iter; ++step) {
    product<T, false>(v, a, nullptr, va, m, ld);
    product<T, true>(va, v, v, next, m, ld);
    std::swap(v, next);
  }
  for (int64_t i = 0; i < m; ++i)
    std::memcpy(out + i * m, v + i * ld, sizeof(T) * m);
}

at::Tensor newton_schulz_steps_cpu(const at::Tensor& inv,
                                   const at::Tensor& mat, int64_t num_iter) {
  const int64_t batch = inv.size(0), m = inv.size(1);
  auto out = at::empty_like(inv);
  AT_DISPATCH_FLOATING_TYPES(inv.scalar_type(), "newton_schulz_steps_cpu", [&] {
    constexpr int64_t L = kLanes<scalar_t>;
    const int64_t ld = (m + L - 1) / L * L;
    const scalar_t* ip = inv.data_ptr<scalar_t>();
    const scalar_t* mp = mat.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> work(4 * m * ld, scalar_t(0));
      for (int64_t b = begin; b < end; ++b)
        iterate_matrix<scalar_t>(ip + b * m * m, mp + b * m * m,
                                 op + b * m * m, m, ld, num_iter,
                                 work.data());
    });
  });
  return out;
}

}  // namespace

REGISTER_DEVICE_IMPL(newton_schulz_steps_impl, CPU, newton_schulz_steps_cpu);
