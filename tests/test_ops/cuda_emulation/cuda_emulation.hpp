// Copyright (c) mmlinattn contributors. All rights reserved.
// Test support, not shipped: runs CUDA kernels as plain C++20 on the CPU so
// that the kernels of ops/csrc/common/cuda/ execute (under ASan/UBSan) on a
// machine without a GPU. Include it before the kernel header.
//
// Model: the blocks of a launch run one after another; the threads of a
// block are std::threads that meet at a std::barrier for __syncthreads();
// __shared__ arrays are function statics, shared by the threads of the
// running block (and left over from the previous block, where a GPU would
// hold garbage); threadIdx / blockIdx / blockDim / gridDim are thread_local.
// A thread that returns leaves the block's barrier (as an exited GPU thread
// no longer counts at __syncthreads()). Device intrinsics map to their libm
// counterparts (__expf -> std::exp: the emulation does not reproduce the
// approximation error of the hardware exp).
#ifndef MMLINATTN_TESTS_CUDA_EMULATION_HPP
#define MMLINATTN_TESTS_CUDA_EMULATION_HPP

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <optional>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1)
      : x(x_), y(y_), z(z_) {}
};

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

inline float __expf(float x) { return std::exp(x); }
using std::exp;
using std::min;

namespace cuda_emulation {

// The barrier of the block this thread is running.
inline thread_local std::optional<std::barrier<>>* block_barrier = nullptr;

// Runs kernel<<<grid, block>>>(args...) to completion. The arguments are
// converted to the kernel's parameter types as a real launch does.
template <typename... P, typename... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, A... args) {
  static_assert(sizeof...(P) == sizeof...(A), "argument count mismatch");
  const std::ptrdiff_t threads =
      std::ptrdiff_t(block.x) * block.y * block.z;
  std::optional<std::barrier<>> sync(std::in_place, threads);
  // Between blocks: every thread has left block b before block b + 1 starts
  // with a fresh __syncthreads() barrier.
  auto next_block = [&sync, threads]() noexcept { sync.emplace(threads); };
  std::barrier gate(threads, next_block);
  auto body = [&](unsigned t) {
    threadIdx = dim3(t % block.x, t / block.x % block.y,
                     t / (block.x * block.y));
    blockDim = block;
    gridDim = grid;
    block_barrier = &sync;
    for (unsigned z = 0; z < grid.z; ++z)
      for (unsigned y = 0; y < grid.y; ++y)
        for (unsigned x = 0; x < grid.x; ++x) {
          blockIdx = dim3(x, y, z);
          kernel(static_cast<P>(args)...);
          sync->arrive_and_drop();
          gate.arrive_and_wait();
        }
  };
  std::vector<std::jthread> pool;
  pool.reserve(threads);
  for (unsigned t = 0; t < threads; ++t) pool.emplace_back(body, t);
}

}  // namespace cuda_emulation

inline void __syncthreads() {
  (*cuda_emulation::block_barrier)->arrive_and_wait();
}

#endif  // MMLINATTN_TESTS_CUDA_EMULATION_HPP
