// Copyright (c) mmlinattn contributors. All rights reserved.
// Device-agnostic entry points of the focusing function of FLatten (Han et
// al., ICCV 2023), written row by row without the max-free overflow of the
// paper's form:
//
//   t = (relu(x) + 1e-6) / s,   m = max_c t,   tau = t / m,
//   phi_p(x) = tau^p * (m ||tau|| / ||tau^p||)        (= ||t|| t^p / ||t^p||)
//
// x is a (R, C) row-major view (unit channel stride, any row stride), s a
// contiguous (C,) positive scale, p > 0. The backward recomputes t from x:
//
//   g_t = (<g, tau^p> / (a b)) tau + (p a / b) tau^(p-1)
//         (g - (<g, tau^p> / b^2) tau^p),   a = ||tau||, b = ||tau^p||
//   dx  = g_t / s where x > 0, else 0;  ds = -sum_rows g_t t / s,
//
// ds summed per block of kFocusingRowsPerBlock rows into (blocks, C)
// partials (a fixed partition, so the sum does not depend on the threads).
// Float and double; every reduction accumulates in the input type.
#ifndef MMLINATTN_FOCUSING_OPS_HPP
#define MMLINATTN_FOCUSING_OPS_HPP

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

constexpr int64_t kFocusingRowsPerBlock = 64;

at::Tensor focusing_forward_impl(const at::Tensor& x, const at::Tensor& scale,
                                 double p);

// {grad_x (R, C), scale partials (blocks, C) or undefined}
std::vector<at::Tensor> focusing_backward_impl(const at::Tensor& grad,
                                               const at::Tensor& x,
                                               const at::Tensor& scale,
                                               double p, bool with_scale);

#endif  // MMLINATTN_FOCUSING_OPS_HPP
