// Copyright (c) mmlinattn contributors. All rights reserved.
// 512-bit vectors of GCC's vector extension for the CPU kernels: one vector
// holds kLanes<T> elements of T whatever the clone's vector width (GCC lowers
// it to 2 or 4 narrower registers in the AVX2 and baseline clones of
// MMLINATTN_SIMD_CLONES). The helpers are forced inline so that they are
// compiled into each clone; they never cross an ABI boundary, so GCC's note on
// passing AVX-512 vectors (-Wpsabi) does not apply to the files using them.
#ifndef MMLINATTN_CPU_VECTOR_HPP
#define MMLINATTN_CPU_VECTOR_HPP

#include <cstdint>
#include <cstring>

#pragma GCC diagnostic ignored "-Wpsabi"

namespace mmlinattn {
namespace cpu {

template <typename T>
constexpr int64_t kLanes = 64 / sizeof(T);

template <typename T>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(64)));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(64)));
};
template <typename T>
using Vec = typename VecOf<T>::type;

template <typename T>
__attribute__((always_inline)) inline Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
__attribute__((always_inline)) inline void store(T* p, Vec<T> v) {
  std::memcpy(p, &v, sizeof(v));
}

// The first min(count, lanes) elements of v to p (a row's last, partial,
// vector).
template <typename T>
__attribute__((always_inline)) inline void store_first(T* p, Vec<T> v,
                                                       int64_t count) {
  if (count >= kLanes<T>)
    store(p, v);
  else
    std::memcpy(p, &v, sizeof(T) * count);
}

}  // namespace cpu
}  // namespace mmlinattn

#endif  // MMLINATTN_CPU_VECTOR_HPP
