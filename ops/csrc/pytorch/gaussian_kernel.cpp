// Copyright (c) mmlinattn contributors. All rights reserved.
// Entry points of the Gaussian-kernel ops: input validation, device
// dispatch, the sqdist backward (two GEMMs) and the chunked fallbacks.
#include "gaussian_kernel_ops.hpp"
#include "pytorch_cpp_helper.hpp"
#include "pytorch_device_registry.hpp"

using mmlinattn::acc_type_of;
using mmlinattn::shape_str;

at::Tensor gaussian_sqdist_forward_impl(const at::Tensor& q,
                                        const at::Tensor& k, bool apply_exp) {
  return DISPATCH_DEVICE_IMPL(gaussian_sqdist_forward_impl, q, k, apply_exp);
}

at::Tensor gaussian_kernel_matmul_forward_impl(const at::Tensor& p,
                                               const at::Tensor& o,
                                               const at::Tensor& x) {
  return DISPATCH_DEVICE_IMPL(gaussian_kernel_matmul_forward_impl, p, o, x);
}

std::vector<at::Tensor> gaussian_kernel_matmul_backward_impl(
    const at::Tensor& p, const at::Tensor& o, const at::Tensor& a,
    const at::Tensor& b, bool with_kb) {
  return DISPATCH_DEVICE_IMPL(gaussian_kernel_matmul_backward_impl, p, o, a,
                              b, with_kb);
}

namespace {

// Rank, dtype and device checks shared by all entry points; raise
// ValueError / TypeError naming the shapes.
void check_tensors(const char* op,
                   const std::vector<std::pair<const char*, at::Tensor>>& ts) {
  std::string shapes;
  for (const auto& [name, t] : ts) {
    TORCH_CHECK_TYPE(t.defined(), op, ": ", name, " is undefined");
    shapes += std::string(shapes.empty() ? "" : ", ") + name + "=" +
              shape_str(t);
  }
  const auto& [first_name, first] = ts.front();
  for (const auto& [name, t] : ts) {
    TORCH_CHECK_VALUE(t.dim() == 3, op, ": expected 3-D (B*h, L, C) "
                      "tensors, got ", name, " with ", t.dim(), " dims (",
                      shapes, ")");
    TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), op, ": ", name,
                     " has dtype ", t.scalar_type(),
                     "; expected Half, BFloat16, Float or Double");
    TORCH_CHECK_TYPE(t.scalar_type() == first.scalar_type(), op,
                     ": mixed dtypes ", first_name, "=", first.scalar_type(),
                     " and ", name, "=", t.scalar_type(), " (", shapes, ")");
    TORCH_CHECK_VALUE(t.device() == first.device(), op,
                      ": tensors on different devices: ", first_name, " on ",
                      first.device(), ", ", name, " on ", t.device(), " (",
                      shapes, ")");
    TORCH_CHECK_VALUE(t.size(0) == first.size(0), op,
                      ": batch*heads differ (", shapes, ")");
  }
}

void check_size(bool ok, const char* op, const char* what,
                const std::vector<std::pair<const char*, at::Tensor>>& ts) {
  if (ok) return;
  std::string shapes;
  for (const auto& [name, t] : ts)
    shapes += std::string(shapes.empty() ? "" : ", ") + name + "=" +
              shape_str(t);
  TORCH_CHECK_VALUE(false, op, ": ", what, " (", shapes, ")");
}

// Rows of K materialised at once by the chunked fallbacks.
int64_t chunk_rows(int64_t batch, int64_t cols) {
  const int64_t budget = int64_t(1) << 24;  // elements of one K block
  return std::max<int64_t>(1, budget / std::max<int64_t>(1, batch * cols));
}

}  // namespace

at::Tensor gaussian_sqdist_forward(const at::Tensor& q, const at::Tensor& k,
                                   bool apply_exp) {
  const char* op = "gaussian_sqdist_forward";
  check_tensors(op, {{"q", q}, {"k", k}});
  check_size(q.size(2) == k.size(2), op, "q and k need the same channels",
             {{"q", q}, {"k", k}});
  if (q.numel() == 0 || k.numel() == 0) {
    // Empty output, or d == 0: every distance is 0.
    auto out = at::zeros({q.size(0), q.size(1), k.size(1)}, q.options());
    return apply_exp ? out.fill_(1) : out;
  }
  return gaussian_sqdist_forward_impl(q.contiguous(), k.contiguous(),
                                      apply_exp);
}

// Closed form for G = dL/dD (G <- -G * K / 2 when D fed exp(-D / 2)):
// dq = 2 (rowsum(G) q - G k), dk = 2 (colsum(G) k - G^T q), in fp32 (fp64).
std::vector<at::Tensor> gaussian_sqdist_backward(
    const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k,
    const c10::optional<at::Tensor>& kernel) {
  const char* op = "gaussian_sqdist_backward";
  check_tensors(op, {{"grad", grad}, {"q", q}, {"k", k}});
  const bool has_kernel = kernel.has_value() && kernel->defined();
  check_size(grad.size(1) == q.size(1) && grad.size(2) == k.size(1) &&
                 q.size(2) == k.size(2) &&
                 (!has_kernel || kernel->sizes() == grad.sizes()),
             op, "grad must be (B*h, N, M) for q (B*h, N, d), k (B*h, M, d)",
             {{"grad", grad}, {"q", q}, {"k", k}});
  const auto acc = acc_type_of(q);
  auto g = grad.to(acc);
  if (has_kernel) g = g.mul(kernel->to(acc)).mul_(-0.5);
  const auto qa = q.to(acc), ka = k.to(acc);
  auto grad_q = at::baddbmm(g.sum(2, true).mul(qa), g, ka, 1, -1).mul_(2);
  auto grad_k = at::baddbmm(g.sum(1).unsqueeze(2).mul(ka),
                            g.transpose(1, 2), qa, 1, -1)
                    .mul_(2);
  return {grad_q.to(q.scalar_type()), grad_k.to(k.scalar_type())};
}

at::Tensor gaussian_kernel_matmul_forward(const at::Tensor& p,
                                          const at::Tensor& o,
                                          const at::Tensor& x) {
  const char* op = "gaussian_kernel_matmul_forward";
  check_tensors(op, {{"p", p}, {"o", o}, {"x", x}});
  check_size(p.size(2) == o.size(2) && x.size(1) == o.size(1), op,
             "expected p (B*h, R, d), o (B*h, C, d), x (B*h, C, e)",
             {{"p", p}, {"o", o}, {"x", x}});
  if (p.numel() == 0 || o.size(1) == 0 || x.size(2) == 0 || p.size(2) == 0)
    return gaussian_kernel_matmul_forward_chunked(p, o, x);
  return gaussian_kernel_matmul_forward_impl(p.contiguous(), o.contiguous(),
                                             x.contiguous());
}

std::vector<at::Tensor> gaussian_kernel_matmul_backward(
    const at::Tensor& p, const at::Tensor& o, const at::Tensor& a,
    const at::Tensor& b, bool with_kb) {
  const char* op = "gaussian_kernel_matmul_backward";
  check_tensors(op, {{"p", p}, {"o", o}, {"a", a}, {"b", b}});
  check_size(p.size(2) == o.size(2) && a.size(1) == p.size(1) &&
                 b.size(1) == o.size(1) && a.size(2) == b.size(2),
             op,
             "expected p (B*h, R, d), o (B*h, C, d), a (B*h, R, e), "
             "b (B*h, C, e)",
             {{"p", p}, {"o", o}, {"a", a}, {"b", b}});
  if (p.numel() == 0 || o.size(1) == 0 || a.size(2) == 0 || p.size(2) == 0)
    return gaussian_kernel_matmul_backward_chunked(p, o, a, b, with_kb);
  return gaussian_kernel_matmul_backward_impl(
      p.contiguous(), o.contiguous(), a.contiguous(), b.contiguous(), with_kb);
}

at::Tensor gaussian_kernel_matmul_forward_chunked(const at::Tensor& p,
                                                  const at::Tensor& o,
                                                  const at::Tensor& x) {
  const auto acc = acc_type_of(p);
  const int64_t batch = p.size(0), rows = p.size(1);
  const auto pa = p.to(acc), oa = o.to(acc), xa = x.to(acc);
  auto y = at::zeros({batch, rows, x.size(2)}, pa.options());
  const int64_t step = chunk_rows(batch, o.size(1));
  for (int64_t r0 = 0; r0 < rows && o.size(1) > 0; r0 += step) {
    const int64_t rn = std::min(step, rows - r0);
    auto kernel = gaussian_sqdist_forward(pa.narrow(1, r0, rn), oa, true);
    y.narrow(1, r0, rn).copy_(at::bmm(kernel, xa));
  }
  return y.to(p.scalar_type());
}

std::vector<at::Tensor> gaussian_kernel_matmul_backward_chunked(
    const at::Tensor& p, const at::Tensor& o, const at::Tensor& a,
    const at::Tensor& b, bool with_kb) {
  const auto acc = acc_type_of(p);
  const int64_t batch = p.size(0), rows = p.size(1);
  const auto pa = p.to(acc), oa = o.to(acc), aa = a.to(acc), ba = b.to(acc);
  auto grad_p = at::zeros_like(pa);
  auto kb = with_kb ? at::zeros({batch, rows, b.size(2)}, pa.options())
                    : at::Tensor();
  const int64_t step = chunk_rows(batch, o.size(1));
  for (int64_t r0 = 0; r0 < rows && o.size(1) > 0; r0 += step) {
    const int64_t rn = std::min(step, rows - r0);
    const auto p_rows = pa.narrow(1, r0, rn);
    auto kernel = gaussian_sqdist_forward(p_rows, oa, true);
    auto s = at::bmm(aa.narrow(1, r0, rn), ba.transpose(1, 2)).mul_(kernel);
    grad_p.narrow(1, r0, rn)
        .copy_(at::baddbmm(s.sum(2, true).mul(p_rows), s, oa, 1, -1).neg_());
    if (with_kb) kb.narrow(1, r0, rn).copy_(at::bmm(kernel, ba));
  }
  return {grad_p.to(p.scalar_type()),
          with_kb ? kb.to(p.scalar_type()) : at::Tensor()};
}
