// Copyright (c) mmlinattn contributors. All rights reserved.
// Device-agnostic entry point of the Newton-Schulz steps of SOFT's
// pseudo-inverse (Lu et al., NeurIPS 2021):
//
//   V <- 2 V - (V A) V,   num_iter times,
//
// on stacks inv V (batch, m, m) and mat A (batch, m, m), contiguous, of one
// float dtype. Each matrix is iterated to the end by one thread with its
// iterates in cache, instead of two batched GEMM calls per step. Every entry
// is summed over k in order with one fused multiply-add per term, and the
// step's epilogue is 2 V - (V A) V, so the result does not depend on the
// threads. Float and double; sums accumulate in the input type.
#ifndef MMLINATTN_NEWTON_SCHULZ_OPS_HPP
#define MMLINATTN_NEWTON_SCHULZ_OPS_HPP

#include <ATen/ATen.h>

#include <cstdint>

at::Tensor newton_schulz_steps_impl(const at::Tensor& inv,
                                    const at::Tensor& mat, int64_t num_iter);

#endif  // MMLINATTN_NEWTON_SCHULZ_OPS_HPP
